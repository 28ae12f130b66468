"""Meteorological seasons and the groupings of init times, defined once for splits and evaluation.

Offers:

* :data:`SEASONS` - the meteorological seasons in calendar order (DJF, MAM, JJA, SON).
* :data:`GROUPINGS` - the groupings ``seacast evaluate --by`` accepts: ``season``, ``all`` and
  ``split`` (the split's own test windows, e.g. the paper's).
* :func:`season_of` - the meteorological season of each time (by month).
* :func:`season_of_hours` - the same for times given in hours since 1970.
* :func:`group_labels` - the label of each init time for a grouping.
* :func:`group_names` - the labels a grouping can produce, in display order.
* :func:`check_grouping` - a clear error for an unknown grouping.

A sample belongs to the season of its *init time*, as the architecture notes say:
a 72 h forecast issued on 30 November counts for SON even though it verifies in December.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from seacast.errors import ConfigError
from seacast.timeaxis import hours_to_times

SEASONS: tuple[str, ...] = ("DJF", "MAM", "JJA", "SON")
GROUPINGS: tuple[str, ...] = ("season", "all", "split")
Grouping = Literal["season", "all", "split"]

# month number (1..12) -> season label
_MONTH_TO_SEASON = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM"}
_MONTH_TO_SEASON |= {6: "JJA", 7: "JJA", 8: "JJA", 9: "SON", 10: "SON", 11: "SON"}


def season_of(times: Sequence | np.ndarray | pd.DatetimeIndex) -> np.ndarray:
    """Meteorological season label (``DJF``, ``MAM``, ``JJA``, ``SON``) of each time."""
    months = pd.DatetimeIndex(np.atleast_1d(np.asarray(times, dtype="datetime64[ns]"))).month
    return np.array([_MONTH_TO_SEASON[int(m)] for m in months], dtype=object)


def season_of_hours(hours: Sequence | np.ndarray) -> np.ndarray:
    """Meteorological season ('DJF', 'MAM', 'JJA', 'SON') of each time in hours since 1970."""
    return season_of(hours_to_times(hours))


def check_grouping(by: str) -> None:
    """Raise a clear error for an unknown grouping."""
    if by not in GROUPINGS:
        raise ConfigError(
            f"unknown grouping '{by}'", f"use --by with one of: {', '.join(GROUPINGS)}"
        )


def group_names(by: str, split_groups: Sequence[str] = ()) -> tuple[str, ...]:
    """Every label grouping ``by`` can produce, in display order.

    ``split_groups`` are the split's own group names, the labels of ``by="split"``.
    """
    check_grouping(by)
    if by == "season":
        return SEASONS
    if by == "all":
        return ("all",)
    return tuple(split_groups)


def group_labels(
    times: Sequence | np.ndarray | pd.DatetimeIndex, by: str, split_group: str | None = None
) -> np.ndarray:
    """The group label of each init time for grouping ``by``.

    For ``by="split"`` every time gets ``split_group``, the name of the split window it comes from.
    """
    check_grouping(by)
    if by == "season":
        return season_of(times)
    n = len(np.atleast_1d(np.asarray(times)))
    if by == "all":
        return np.array(["all"] * n, dtype=object)
    if split_group is None:
        raise ConfigError(
            "grouping 'split' labels samples by the split window they come from",
            "pass the window's name as split_group",
        )
    return np.array([split_group] * n, dtype=object)
