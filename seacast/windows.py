"""Samples: a torch Dataset of (lags in, lead times out) windows over a Zarr store.

A sample with init time t0 holds

* ``x`` ``[C, lags, H, W]``: the ``lags`` frames ending at t0 (inclusive); with weather
  forcing (``samples.forcing``, :mod:`seacast.forcing`) ``[C + n_forcing, lags, H, W]``, the
  forcing channels being the forecast ahead of t0 in ``lags`` block means;
* ``y`` ``[n_lead, C, H, W]``: the frames at t0 + each lead time;
* ``sea_mask`` ``[H, W]`` bool (True on sea) and ``init_time`` (int64 hours since 1970).

``x`` and ``y`` are model values made by the run's :class:`~seacast.encoding.SampleEncoding`:
fields normalised with the store's statistics, or (tide-aware runs) anomalies obs - tide
normalised by their std; land is 0 in both. Frames are read lazily, only those a sample
needs; each DataLoader worker opens its own handle.

Offered:

* :class:`~seacast.normalise.Normaliser` - re-exported from :mod:`seacast.normalise`, where it lives.
* :class:`Timeline` - the store's times and gaps; which init times have a whole window.
* :class:`WindowDataset` - the torch Dataset for a list of init times.
* :class:`SampleSets` and :func:`open_samples` - train / validation / test datasets of a
  :class:`~seacast.config.SamplesConfig` (splits from :mod:`seacast.splits`).
* :func:`make_loader` - a DataLoader with workers suited to these datasets.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader, Dataset, Sampler

from seacast.config import SamplesConfig
from seacast.errors import ConfigError
from seacast.forcing import ForcingInputs
from seacast.normalise import MINMAX_LOW as MINMAX_LOW  # re-exported: the old import path
from seacast.normalise import Normaliser
from seacast.seasons import season_of_hours
from seacast.splits import Selection, SplitPlan, plan_split
from seacast.timeaxis import stamp_to_hour, times_to_hours

PRELOAD_CHUNK_FRAMES = (
    168  # frames encoded at a time while preloading (bounds the float64 tide temporaries)
)
log = logging.getLogger("seacast.windows")


# --------------------------------------------------------------------------- timeline


@dataclass
class Timeline:
    """The store's times (int64 hours since 1970), its step and its recorded gaps."""

    hours: np.ndarray
    step_hours: float
    gaps: list[tuple[int, int]] = field(default_factory=list)

    @classmethod
    def from_store(cls, ds: xr.Dataset) -> Timeline:
        from seacast.store import store_gaps, store_step_hours

        gaps = [(stamp_to_hour(start), stamp_to_hour(end)) for start, end in store_gaps(ds)]
        return cls(times_to_hours(ds["time"].values), store_step_hours(ds), gaps)

    def steps(self, hours: float, what: str) -> int:
        """``hours`` as a whole number of store steps (ConfigError if it is not one)."""
        steps = hours / self.step_hours
        if abs(steps - round(steps)) > 1e-9:
            raise ConfigError(
                f"{what} {hours} h is not a multiple of the store's step ({self.step_hours} h)",
                f"use multiples of {self.step_hours} h",
            )
        return int(round(steps))

    def select(
        self, selection: Selection, lags: int, lead_steps: Sequence[int]
    ) -> tuple[np.ndarray, int]:
        """Init-time indices whose whole window lies in ``selection``, and how many were skipped for gaps.

        A candidate is an init time whose nominal window (``lags`` steps back, the longest lead
        ahead) lies inside one of the selection's ranges (and in its season, if any). It is
        skipped when its window crosses a recorded gap or a missing time.
        """
        hours = self.hours
        n = len(hours)
        step = self.step_hours
        back, ahead = lags - 1, max(lead_steps)
        start_h = hours - back * step
        end_h = hours + ahead * step
        candidate = np.zeros(n, dtype=bool)
        for lo, hi in selection.ranges:
            candidate |= (start_h >= lo) & (end_h <= hi)
        if selection.season is not None:
            candidate &= season_of_hours(hours) == selection.season

        index = np.arange(n)
        first, last = index - back, index + ahead
        inside = (first >= 0) & (last < n)
        contiguous = np.zeros(n, dtype=bool)
        ok = np.where(inside)[0]
        # with no missing time in between, the span of indices matches the span of hours
        contiguous[ok] = np.isclose(hours[last[ok]] - hours[first[ok]], (back + ahead) * step)
        clear = np.ones(n, dtype=bool)
        for gap_start, gap_end in self.gaps:
            clear &= ~((gap_start <= end_h) & (gap_end >= start_h))
        valid = candidate & inside & contiguous & clear
        return index[valid], int(candidate.sum() - valid.sum())


# --------------------------------------------------------------------------- dataset


class WindowDataset(Dataset):
    """Samples at the given init-time indices of a store; frames read lazily per sample."""

    def __init__(
        self,
        store_path: Path | str,
        variables: Sequence[str],
        lags: int,
        lead_steps: Sequence[int],
        init_indices: np.ndarray,
        hours: np.ndarray,
        normaliser: Normaliser,
        sea_mask: np.ndarray,
        skipped: int = 0,
        encoding: Any = None,
        forcing: ForcingInputs | None = None,
    ) -> None:
        from seacast.encoding import SampleEncoding

        self.store_path = Path(store_path)
        self.variables = list(variables)
        self.lags = lags
        self.lead_steps = np.asarray(lead_steps, dtype=np.int64)
        self.init_indices = np.asarray(init_indices, dtype=np.int64)
        self.hours = hours
        self.normaliser = normaliser
        self.sea_mask = np.asarray(sea_mask, dtype=bool)
        self.skipped = skipped
        self.encoding: SampleEncoding = encoding or SampleEncoding(normaliser, self.sea_mask)
        self.forcing = forcing
        self._mask_tensor = torch.from_numpy(self.sea_mask)
        self._ds: xr.Dataset | None = None
        self._pid: int | None = None
        self._memory: tuple[int, torch.Tensor] | None = None  # (first time index, encoded frames)
        self._forcing_memory: torch.Tensor | None = None  # encoded forcing frames, same span

    def derived(self, init_indices: np.ndarray | None = None, **changes: Any) -> WindowDataset:
        """A dataset like this one with other init times, normaliser or encoding."""
        args = {
            "store_path": self.store_path,
            "variables": self.variables,
            "lags": self.lags,
            "lead_steps": self.lead_steps,
            "init_indices": self.init_indices if init_indices is None else init_indices,
            "hours": self.hours,
            "normaliser": self.normaliser,
            "sea_mask": self.sea_mask,
            "skipped": self.skipped,
            "encoding": self.encoding,
            "forcing": self.forcing,
        }
        return WindowDataset(**(args | changes))

    @property
    def in_channels(self) -> int:
        """Channels of ``x``: the variables, then the forcing."""
        return len(self.variables) + (len(self.forcing.variables) if self.forcing else 0)

    def __len__(self) -> int:
        return len(self.init_indices)

    @property
    def init_hours(self) -> np.ndarray:
        """Init times of the samples, int64 hours since 1970."""
        return self.hours[self.init_indices]

    @property
    def frame_span(self) -> tuple[int, int]:
        """First and last store time index any sample reads (inclusive)."""
        first = int(self.init_indices.min()) - self.lags + 1
        return first, int(self.init_indices.max()) + int(self.lead_steps.max())

    def preload(self, max_gb: float = 4.0) -> bool:
        """Read and encode every frame the samples need once, if that takes at most ``max_gb``.

        Returns whether it did; otherwise (or with ``max_gb`` 0) samples keep reading lazily.
        """
        if self._memory is not None or len(self) == 0 or max_gb <= 0:
            return self._memory is not None
        first, last = self.frame_span
        n_frames = last - first + 1
        forcing_series = len(self.forcing.series) if self.forcing else 0
        size = n_frames * (len(self.variables) + forcing_series) * self.sea_mask.size * 4
        if size > max_gb * 1e9:
            log.info(
                "split of %.1f GB > preload_gb %.1f: reading frames lazily", size / 1e9, max_gb
            )
            return False
        encoded = torch.empty((n_frames, len(self.variables), *self.sea_mask.shape))
        for lo in range(0, n_frames, PRELOAD_CHUNK_FRAMES):
            hi = min(lo + PRELOAD_CHUNK_FRAMES, n_frames)
            index = np.arange(first + lo, first + hi)
            encoded[lo:hi] = self.encoding.encode(self.frames(index), self.hours[index])
        if self.forcing is not None:
            self._forcing_memory = self.forcing.encode(
                self.frames(np.arange(first, last + 1), self.forcing.series), self.sea_mask
            )
        self._memory = (first, encoded)
        return True

    def thinned(self, every_hours: int) -> WindowDataset:
        """The samples whose init time is a multiple of ``every_hours`` (hours since 1970), for cheaper scoring."""
        if every_hours <= 1:
            return self
        keep = self.init_indices[self.hours[self.init_indices] % every_hours == 0]
        return self.derived(keep).sharing_memory(self)

    def sharing_memory(self, other: WindowDataset) -> WindowDataset:
        """Use ``other``'s preloaded frames when they cover this dataset's samples."""
        if other._memory is not None and len(self):
            first, frames = other._memory
            lo, hi = self.frame_span
            if lo >= first and hi < first + len(frames):
                self._memory = other._memory
                self._forcing_memory = other._forcing_memory
        return self

    def __getstate__(self) -> dict[str, Any]:
        # a worker opens its own handle: never pickle an open store
        state = self.__dict__.copy()
        state["_ds"] = None
        state["_pid"] = None
        return state

    def _handle(self) -> xr.Dataset:
        if self._ds is None or self._pid != os.getpid():
            # no dask: plain lazy backend arrays, so isel reads just the chunks a sample touches
            self._ds = xr.open_zarr(self.store_path, consolidated=False, zarr_format=3, chunks=None)
            self._pid = os.getpid()
        return self._ds

    def frames(
        self, time_indices: np.ndarray, variables: Sequence[str] | None = None
    ) -> np.ndarray:
        """Raw physical frames ``[len(time_indices), C, H, W]`` of ``variables`` (default: the
        samples' own; NaN on land)."""
        ds = self._handle()
        index = np.asarray(time_indices)
        if index.size and index[-1] - index[0] == index.size - 1:
            index = slice(int(index[0]), int(index[-1]) + 1)  # contiguous: one slice read
        stacked = [ds[var].variable[index].values for var in variables or self.variables]
        return np.stack(stacked, axis=1)

    def __getitem__(self, item: int) -> dict[str, torch.Tensor]:
        t0 = int(self.init_indices[item])
        wanted = np.concatenate([np.arange(t0 - self.lags + 1, t0 + 1), t0 + self.lead_steps])
        # [lags + n_lead, C, H, W] model values
        if self._memory is not None:
            first, memory = self._memory
            frames = memory[torch.from_numpy(wanted - first)]
        else:
            frames = self.encoding.encode(self.frames(wanted), self.hours[wanted])
        x = frames[: self.lags].permute(1, 0, 2, 3).contiguous()  # [C, lags, H, W]
        y = frames[self.lags :].contiguous()  # [n_lead, C, H, W]
        if self.forcing is not None:
            if self._memory is not None and self._forcing_memory is not None:
                x = self.forcing.with_channels(x, self._forcing_memory, t0 - self._memory[0])
            else:
                span = np.arange(t0, t0 + self.forcing.horizon_steps + 1)
                encoded = self.forcing.encode(self.frames(span, self.forcing.series), self.sea_mask)
                x = self.forcing.with_channels(x, encoded, 0)
        return {
            "x": x,
            "y": y,
            "sea_mask": self._mask_tensor,
            "init_time": torch.tensor(int(self.hours[t0]), dtype=torch.int64),
        }


# --------------------------------------------------------------------------- splits -> datasets


@dataclass
class SampleSets:
    """The datasets of one experiment and what they share."""

    train: WindowDataset
    validation: WindowDataset
    test: WindowDataset
    test_groups: dict[str, WindowDataset]
    normaliser: Normaliser
    sea_mask: np.ndarray
    timeline: Timeline
    plan: SplitPlan
    fingerprint: str
    store_path: Path

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.sea_mask.shape[0]), int(self.sea_mask.shape[1]))

    @property
    def encoding(self) -> Any:
        return self.train.encoding

    def with_tides(self, tides: Any) -> SampleSets:
        """The same splits as anomaly samples (obs - tide, scaled by the anomaly std of ``tides``)."""
        from seacast.encoding import SampleEncoding, anomaly_normaliser

        normaliser = anomaly_normaliser(tides, self.normaliser.variables)
        encoding = SampleEncoding(normaliser, self.sea_mask, tides)
        encoding.precompute(self.timeline.hours)

        return self._derived(normaliser=normaliser, encoding=encoding)

    def with_forcing(self, forcing: ForcingInputs | None) -> SampleSets:
        """The same splits with a run's forcing (its series and the scaling of the store it
        trained on), not this store's."""
        if forcing is None:
            return self
        forcing.check_store(self.train._handle())
        return self._derived(forcing=forcing)

    def _derived(self, **changes: Any) -> SampleSets:
        """Every split's dataset with ``changes`` (see :meth:`WindowDataset.derived`)."""
        return replace(
            self,
            train=self.train.derived(**changes),
            validation=self.validation.derived(**changes),
            test=self.test.derived(**changes),
            test_groups={name: ds.derived(**changes) for name, ds in self.test_groups.items()},
            normaliser=changes.get("normaliser", self.normaliser),
        )

    @property
    def skipped(self) -> dict[str, int]:
        """Samples skipped because their window crossed a gap, per split."""
        counts = {"train": self.train.skipped, "validation": self.validation.skipped}
        counts |= {f"test/{name}": ds.skipped for name, ds in self.test_groups.items()}
        return counts

    def summary(self) -> dict[str, Any]:
        return {
            "train": len(self.train),
            "validation": len(self.validation),
            "test": {name: len(ds) for name, ds in self.test_groups.items()},
            "skipped_for_gaps": self.skipped,
            "preset": self.plan.preset,
        }


def open_samples(store_path: Path | str, cfg: SamplesConfig) -> SampleSets:
    """Open a store and build the train, validation and test datasets of ``cfg``."""
    from seacast.store import open_store, store_fingerprint, store_stats, store_variables

    ds = open_store(store_path)
    available = store_variables(ds)
    for field_name, wanted in (("variables", cfg.variables), ("forcing", cfg.forcing)):
        missing = [v for v in wanted if v not in available]
        if missing:
            raise ConfigError(
                f"the store {store_path} has no variables {missing} (it has {available})",
                f"set samples.{field_name} to some of {available}, or remake the store with them "
                "in the data config's `variables`",
            )
    timeline = Timeline.from_store(ds)
    lead_steps = [timeline.steps(h, "lead time") for h in cfg.lead_times]
    stats = store_stats(ds)
    normaliser = Normaliser.from_stats(stats, cfg.variables, cfg.normalisation)
    forcing = (
        ForcingInputs.from_store(
            ds, stats, cfg.forcing, max(lead_steps), cfg.lags, timeline.step_hours
        )
        if cfg.forcing
        else None
    )
    sea_mask = np.asarray(ds["sea_mask"].values, dtype=bool)
    plan = plan_split(cfg.split, timeline.hours)

    def dataset(selections: list[Selection]) -> WindowDataset:
        chosen, skipped = [], 0
        for selection in selections:
            indices, n_skipped = timeline.select(selection, cfg.lags, lead_steps)
            chosen.append(indices)
            skipped += n_skipped
        indices = np.unique(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)
        return WindowDataset(
            store_path,
            cfg.variables,
            cfg.lags,
            lead_steps,
            indices,
            timeline.hours,
            normaliser,
            sea_mask,
            skipped,
            forcing=forcing,
        )

    groups = {name: dataset(selections) for name, selections in plan.test.items()}
    test = dataset([s for selections in plan.test.values() for s in selections])
    test.skipped = sum(g.skipped for g in groups.values())
    sets = SampleSets(
        train=dataset(plan.train),
        validation=dataset(plan.validation),
        test=test,
        test_groups=groups,
        normaliser=normaliser,
        sea_mask=sea_mask,
        timeline=timeline,
        plan=plan,
        fingerprint=store_fingerprint(ds),
        store_path=Path(store_path),
    )
    ds.close()
    return sets


def make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    sampler: Sampler | None = None,
    num_workers: int = 0,
    device: str = "cpu",
) -> DataLoader:
    """A DataLoader for window datasets: persistent workers, pinned memory on GPU, prefetch."""
    extra: dict[str, Any] = {}
    if num_workers > 0:
        extra = {"persistent_workers": True, "prefetch_factor": 4}
    return DataLoader(
        dataset,
        batch_size=batch_size,
        sampler=sampler,
        shuffle=False,
        num_workers=num_workers,
        pin_memory=str(device).startswith("cuda"),
        drop_last=False,
        **extra,
    )
