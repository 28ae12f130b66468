"""Named splits of a store's timeline into train, validation and test samples.

Every split lives here, in one place:

* ``paper``: the reference's split (arXiv 2011.03303), by hour index from the store's first
  time: training is the first 8760 hours, then four seasonal validation windows, each with
  a test window 24 h later (see :data:`PAPER_WINDOWS`).
* ``seasons``: train and validate on date ranges; test on a held-out range (a year) split by
  meteorological season (DJF, MAM, JJA, SON) of the init time.
* ``ranges``: three date ranges as given.
* ``fractions``: consecutive fractions of the timeline.
* ``blocks``: blocks of ``block_days`` dealt out to train, validation and test by
  ``block_cycle``, so every split holds every season (a chronological split tests one
  season only: the last one).

Offered:

* :class:`Selection` - hour ranges (plus an optional season filter) that a sample must lie in.
* :class:`SplitPlan` - the selections of train, validation and the test groups.
* :func:`plan_split` - the plan for a :class:`~seacast.config.SplitConfig` on a timeline.
* :data:`SEASONS` and :func:`season_of_hours` - the meteorological seasons, from
  :mod:`seacast.seasons` (their one definition), re-exported here.

A sample belongs to a selection when its whole window (first input frame to last target
frame) lies inside one of the selection's ranges, so no frame is shared between train and
validation or test. A season filter looks at the init time only.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from seacast.config import SplitConfig, TimeRange
from seacast.errors import ConfigError, DataError
from seacast.seasons import SEASONS, season_of_hours
from seacast.timeaxis import hour_to_stamp, stamp_to_hour

__all__ = [
    "HOURS_PER_YEAR",
    "PAPER_HOURS_NEEDED",
    "PAPER_TRAIN",
    "PAPER_WINDOWS",
    "SEASONS",
    "Selection",
    "SplitPlan",
    "plan_split",
    "season_of_hours",
]

HOURS_PER_YEAR = 8760

# (season, validation hour-index range, test hour-index range), inclusive, from reference-unets.md
PAPER_WINDOWS: tuple[tuple[str, tuple[int, int], tuple[int, int]], ...] = (
    ("spring", (9503, 10007), (10031, 10511)),
    ("summer", (11687, 12191), (12215, 12695)),
    ("autumn", (13895, 14399), (14423, 14928)),
    ("winter", (16104, 16608), (16632, 17136)),
)
PAPER_TRAIN = (0, HOURS_PER_YEAR - 1)
PAPER_HOURS_NEEDED = PAPER_WINDOWS[-1][2][1] + 1


@dataclass(frozen=True)
class Selection:
    """Inclusive ranges of hours since 1970; ``season`` keeps only init times in that season."""

    ranges: tuple[tuple[int, int], ...]
    season: str | None = None


@dataclass
class SplitPlan:
    """Train and validation selections, and the test selections by group (season or 'test')."""

    preset: str
    train: list[Selection]
    validation: list[Selection]
    test: dict[str, list[Selection]] = field(default_factory=dict)


def _range_hours(rng: TimeRange) -> tuple[int, int]:
    start = stamp_to_hour(rng.start)
    end_stamp = pd.Timestamp(rng.end)
    if len(rng.end) <= 10:  # a date alone means its whole day
        end_stamp = end_stamp + pd.Timedelta(hours=23)
    end = stamp_to_hour(end_stamp)
    if end < start:
        raise ConfigError(
            f"time range {rng.start} .. {rng.end} runs backwards", "put the earlier time first"
        )
    return start, end


def _require(cfg: SplitConfig, preset: str, *names: str) -> list[TimeRange]:
    missing = [n for n in names if getattr(cfg, n) is None]
    if missing:
        raise ConfigError(
            f"split preset '{preset}' needs the ranges {', '.join(names)}; missing: {', '.join(missing)}",
            "set them, e.g. --set samples.split.test.start=2023-12-01 --set samples.split.test.end=2024-11-30",
        )
    return [getattr(cfg, n) for n in names]


def _check_disjoint(named: dict[str, tuple[int, int]]) -> None:
    items = sorted(named.items(), key=lambda kv: kv[1][0])
    for (name_a, (_, end_a)), (name_b, (start_b, _)) in zip(items, items[1:], strict=False):
        if start_b <= end_a:
            raise ConfigError(
                f"split ranges '{name_a}' and '{name_b}' overlap: samples would leak between them",
                "make the train, validation and test ranges disjoint",
            )


def plan_split(cfg: SplitConfig, hours: np.ndarray) -> SplitPlan:
    """The split plan of ``cfg`` on a store timeline (``hours``: sorted hours since 1970)."""
    if len(hours) == 0:
        raise DataError("the store holds no times", "regrid some data into it first")
    first, last = int(hours[0]), int(hours[-1])

    if cfg.preset == "paper":
        span = last - first + 1
        if span < PAPER_HOURS_NEEDED:
            raise DataError(
                f"the paper split needs a store spanning at least {PAPER_HOURS_NEEDED} hours "
                f"(about {PAPER_HOURS_NEEDED / 24 / 30.44:.1f} months) from its first time; "
                f"this store spans {span} hours ({hour_to_stamp(first)} .. {hour_to_stamp(last)})",
                "fetch and regrid about 24 months of data, or use --set samples.split.preset=fractions",
            )

        def window(rng: tuple[int, int]) -> Selection:
            return Selection(((first + rng[0], first + rng[1]),))

        return SplitPlan(
            preset="paper",
            train=[window(PAPER_TRAIN)],
            validation=[window(val) for _, val, _ in PAPER_WINDOWS],
            test={season: [window(test)] for season, _, test in PAPER_WINDOWS},
        )

    if cfg.preset == "seasons":
        train, validation, test = (
            _range_hours(r) for r in _require(cfg, "seasons", "train", "validation", "test")
        )
        _check_disjoint({"train": train, "validation": validation, "test": test})
        return SplitPlan(
            preset="seasons",
            train=[Selection((train,))],
            validation=[Selection((validation,))],
            test={season: [Selection((test,), season)] for season in SEASONS},
        )

    if cfg.preset == "ranges":
        train, validation, test = (
            _range_hours(r) for r in _require(cfg, "ranges", "train", "validation", "test")
        )
        _check_disjoint({"train": train, "validation": validation, "test": test})
        return SplitPlan(
            preset="ranges",
            train=[Selection((train,))],
            validation=[Selection((validation,))],
            test={"test": [Selection((test,))]},
        )

    if cfg.preset == "blocks":
        return _blocks_plan(cfg, first, last)

    # fractions of the timeline, cut at whole hours
    fractions = np.asarray(cfg.fractions, dtype=float)
    if (fractions < 0).any() or fractions.sum() <= 0:
        raise ConfigError(
            f"split fractions {cfg.fractions} must be non-negative with a positive sum",
            "e.g. [0.7, 0.15, 0.15]",
        )
    fractions = fractions / fractions.sum()
    span = last - first + 1
    cut1 = first + int(round(fractions[0] * span))
    cut2 = first + int(round((fractions[0] + fractions[1]) * span))
    return SplitPlan(
        preset="fractions",
        train=[Selection(((first, cut1 - 1),))],
        validation=[Selection(((cut1, cut2 - 1),))],
        test={"test": [Selection(((cut2, last),))]},
    )


def _blocks_plan(cfg: SplitConfig, first: int, last: int) -> SplitPlan:
    """Blocks of ``block_days`` from ``first``, labelled by ``block_cycle`` in turn; neighbours
    with the same label merge, so a training window may span two training blocks."""
    block_hours = cfg.block_days * 24
    ranges: dict[str, list[tuple[int, int]]] = {"train": [], "validation": [], "test": []}
    for index, start in enumerate(range(first, last + 1, block_hours)):
        label = cfg.block_cycle[index % len(cfg.block_cycle)]
        end = min(start + block_hours - 1, last)
        runs = ranges[label]
        if runs and runs[-1][1] == start - 1:
            runs[-1] = (runs[-1][0], end)
        else:
            runs.append((start, end))

    def selection(label: str) -> list[Selection]:
        return [Selection(tuple(ranges[label]))] if ranges[label] else []

    return SplitPlan(
        preset="blocks",
        train=selection("train"),
        validation=selection("validation"),
        test={"test": selection("test")},
    )
