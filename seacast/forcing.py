"""Weather-forecast inputs: the forcing ahead of the init time, as extra input channels.

The sea at t0 says little about the anomaly a day later: that is set by weather still to
come (``benchmarks/twin_predictability.py``). Operational surge models are driven by a
weather forecast, and so can these models be. The variables of ``samples.forcing`` (for the
twin: ``msl``, ``iews``, ``inss``) are read at t0 + 1 h ... t0 + the longest lead time,
averaged into ``lags`` consecutive blocks (the input's time axis), and appended to the sea
channels: ``x [C + n_forcing, lags, H, W]``. The first C channels stay the sea, so the
model's base term is unchanged.

The store's forcing series must be forecasts known at t0 for every hour read. A variable may
have several series, issued at different ages before each hour (``msl`` and a fresher
``msl_06h``; ``forecast_age_hours`` in their attributes): offset k h reads the freshest series
issued at least k h before its hour, that is by t0. The twin writes ages 6, 12, 18 and 24 h
(:data:`seacast.twin.weather.FORECAST_AGES_HOURS`), as an hourly-updated weather model would
give. An analysis (the weather as it happened) would leak the future into the input.

Offers :class:`ForcingInputs` (variables, normaliser, block averaging), :func:`block_weights`,
:func:`series_name`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from seacast.errors import DataError
from seacast.normalise import Normaliser


def series_name(variable: str, age_hours: float) -> str:
    """The store name of ``variable``'s forecast issued ``age_hours`` before each hour (``msl_06h``),
    a fresher series beside ``variable`` itself (for the twin, the day-ahead forecast)."""
    return f"{variable}_{int(round(age_hours)):02d}h"


def block_weights(horizon_steps: int, blocks: int) -> np.ndarray:
    """``[blocks, horizon_steps]`` averaging weights: block k is the mean of steps
    ``floor(k L / blocks) + 1 ... floor((k + 1) L / blocks)`` (at least one step each)."""
    weights = np.zeros((blocks, horizon_steps), dtype=np.float32)
    for k in range(blocks):
        lo = (k * horizon_steps) // blocks + 1
        hi = max(lo, ((k + 1) * horizon_steps) // blocks)
        weights[k, lo - 1 : hi] = 1.0 / (hi - lo + 1)
    return weights


@dataclass
class ForcingInputs:
    """How a sample's forcing channels are made from the store's forcing frames.

    Each variable is one channel. Its store ``series`` are forecasts of it issued at different
    ages before each hour (the variable itself and fresher ones named by :func:`series_name`):
    offset k of init time t0 reads the freshest series still issued by t0 (``pick``).
    """

    variables: list[str]
    normaliser: Normaliser  # z-score with the store's statistics, per variable
    horizon_steps: int  # frames read after t0: the longest lead time, in store steps
    blocks: int  # the input's lags
    series: list[str] = field(default_factory=list)  # store series read; default: the variables
    series_variable: list[int] = field(default_factory=list)  # the variable each series forecasts
    pick: np.ndarray | None = None  # [horizon_steps, F]: the series serving offset k + 1

    def __post_init__(self) -> None:
        if not self.series:
            self.series = list(self.variables)
            self.series_variable = list(range(len(self.variables)))
        if self.pick is None:
            self.pick = np.tile(np.arange(len(self.variables)), (self.horizon_steps, 1))
        self.pick = np.asarray(self.pick, dtype=np.int64)
        index = np.asarray(self.series_variable, dtype=np.int64)
        norm = self.normaliser
        self._series_normaliser = Normaliser(
            list(self.series), norm.method, norm.offset[index], norm.scale[index], norm.shift
        )

    @classmethod
    def from_stats(
        cls, stats: dict, variables: Sequence[str], horizon_steps: int, blocks: int
    ) -> ForcingInputs:
        """Each variable read from its own series only (a store without fresher ones)."""
        return cls(
            list(variables),
            Normaliser.from_stats(stats, variables, "zscore"),
            horizon_steps,
            blocks,
        )

    @classmethod
    def from_store(
        cls,
        store: Any,
        stats: dict,
        variables: Sequence[str],
        horizon_steps: int,
        blocks: int,
        step_hours: float,
    ) -> ForcingInputs:
        """The variables with every series of them the store holds, each offset served by the
        freshest one issued by t0 (``forecast_age_hours`` >= the hours ahead). A fresher series
        without that attribute has the age of its name; the variable's own series without it is
        taken as issued by every init time that reads it (the data's promise).

        DataError if no series of a variable was issued far enough ahead for the longest lead time.
        """
        names = [str(v) for v in store.data_vars]
        series: list[str] = []
        series_variable: list[int] = []
        pick = np.zeros((horizon_steps, len(variables)), dtype=np.int64)
        for f, variable in enumerate(variables):
            pattern = re.compile(rf"{re.escape(variable)}_(\d+)h")
            own = [variable] + sorted(n for n in names if pattern.fullmatch(n))
            ages = [_age_hours(store[n], pattern.fullmatch(n)) for n in own]
            first = len(series)
            series += own
            series_variable += [f] * len(own)
            for k in range(1, horizon_steps + 1):
                ahead = k * step_hours
                issued_by_t0 = [(age, j) for j, age in enumerate(ages) if age >= ahead - 1e-9]
                if not issued_by_t0:
                    raise DataError(
                        f"samples.forcing {variable!r} is a forecast issued at most "
                        f"{max(ages):g} h ahead (its series' forecast_age_hours), but the longest "
                        f"lead time reads it {horizon_steps * step_hours:g} h after the init time: "
                        "those frames were not known at t0",
                        f"use lead times up to {max(ages):g} h, or a forcing series issued "
                        "further ahead",
                    )
                pick[k - 1, f] = first + min(issued_by_t0)[1]
        return cls(
            list(variables),
            Normaliser.from_stats(stats, variables, "zscore"),
            horizon_steps,
            blocks,
            series,
            series_variable,
            pick,
        )

    def offsets(self) -> np.ndarray:
        """Store-index offsets from t0 of the frames read: 1 ... horizon_steps."""
        return np.arange(1, self.horizon_steps + 1)

    def series_read(self) -> dict[str, list[str]]:
        """The series each variable reads, freshest (first offsets) first, for reports."""
        return {
            variable: list(dict.fromkeys(self.series[j] for j in self.pick[:, f]))
            for f, variable in enumerate(self.variables)
        }

    def describe(self) -> str:
        """``msl, iews, inss``, and which series serve the hours ahead when there are several."""
        names = ", ".join(self.variables)
        read = self.series_read()
        first = self.variables[0]
        if len(read[first]) == 1:
            return names
        return (
            f"{names}, each hour ahead from the freshest forecast issued by the init time "
            f"({', '.join(read[first])} for {first})"
        )

    def encode(self, frames: np.ndarray, sea_mask: np.ndarray) -> torch.Tensor:
        """Physical ``frames [T, S, H, W]`` of the series -> normalised float32 with each series
        scaled as its variable, 0 on land as every input (so a sum over the grid is one over the
        sea, as the regressed base's basin means are)."""
        tensor = self._series_normaliser.normalise(torch.from_numpy(np.asarray(frames, np.float32)))
        sea = torch.from_numpy(np.asarray(sea_mask, dtype=bool))
        return torch.where(sea, torch.nan_to_num(tensor, nan=0.0), 0.0)

    def channels(self, encoded: torch.Tensor) -> torch.Tensor:
        """Encoded series ``[horizon_steps, S, H, W]`` -> block means ``[F, blocks, H, W]`` of
        each offset's picked series."""
        steps = torch.arange(self.horizon_steps)[:, None]
        frames = encoded[steps, torch.from_numpy(self.pick)]  # [horizon_steps, F, H, W]
        weights = torch.from_numpy(block_weights(self.horizon_steps, self.blocks))
        return torch.einsum("kt,tfhw->fkhw", weights.to(frames.dtype), frames).contiguous()

    def read(self, store: Any, indices: np.ndarray, sea_mask: np.ndarray) -> torch.Tensor:
        """The encoded series frames ``[len(indices), S, H, W]`` of an open store."""
        from seacast.tides import _read  # the store's one frame reader (contiguous: one slice)

        self.check_store(store)
        return self.encode(_read(store, self.series, np.asarray(indices)), sea_mask)

    def check_store(self, store: Any) -> None:
        """DataError unless ``store`` holds every series this forcing reads."""
        missing = [n for n in self.series if n not in store.data_vars]
        if missing:
            raise DataError(
                f"the store has no forcing series {missing}: the run reads {self.series}",
                "use a store made with the same forcing variables as the run's training store "
                "(its data config's `variables`)",
            )

    def with_channels(self, sea: torch.Tensor, encoded: torch.Tensor, init: int) -> torch.Tensor:
        """``sea [C, lags, H, W]`` with the forcing channels of init time ``init`` (an index
        into ``encoded``, whose frames must reach ``init + horizon_steps``) appended."""
        return torch.cat([sea, self.channels(encoded[init + self.offsets()])])

    def to_dict(self) -> dict:
        return {
            "variables": self.variables,
            "normaliser": self.normaliser.to_dict(),
            "horizon_steps": self.horizon_steps,
            "blocks": self.blocks,
            "series": self.series,
            "series_variable": self.series_variable,
            "pick": self.pick.tolist(),
        }

    @classmethod
    def from_dict(cls, data: dict) -> ForcingInputs:
        return cls(
            list(data["variables"]),
            Normaliser.from_dict(data["normaliser"]),
            int(data["horizon_steps"]),
            int(data["blocks"]),
            list(data.get("series", [])),
            [int(i) for i in data.get("series_variable", [])],
            np.asarray(data["pick"]) if data.get("pick") is not None else None,
        )


def _age_hours(series: Any, named: re.Match[str] | None) -> float:
    """A series' ``forecast_age_hours``; else the age in its name; else unbounded."""
    age = series.attrs.get("forecast_age_hours")
    if age is not None:
        return float(age)
    return float(named.group(1)) if named else float("inf")
