"""Weather-forecast inputs: the forcing ahead of the init time, as extra input channels.

The sea at t0 says little about the anomaly a day later: that is set by weather still to
come (``benchmarks/twin_predictability.py``). Operational surge models are driven by a
weather forecast, and so can these models be. The variables of ``samples.forcing`` (for the
twin: ``msl``, ``iews``, ``inss``) are read at t0 + 1 h ... t0 + the longest lead time,
averaged into ``lags`` consecutive blocks (the input's time axis), and appended to the sea
channels: ``x [C + n_forcing, lags, H, W]``. The first C channels stay the sea, so the
model's base term is unchanged.

The store's forcing series must be a forecast known at t0 for every hour read: the twin
writes the forecast issued 24 h before each hour (:data:`seacast.twin.weather.FORECAST_AGE_HOURS`),
so the frames up to t0 + 24 h were all issued by t0. An analysis (the weather as it
happened) would leak the future into the input.

Offers :class:`ForcingInputs` (variables, normaliser, block averaging), :func:`block_weights`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from seacast.normalise import Normaliser


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
    """How a sample's forcing channels are made from the store's forcing frames."""

    variables: list[str]
    normaliser: Normaliser  # z-score with the store's statistics
    horizon_steps: int  # frames read after t0: the longest lead time, in store steps
    blocks: int  # the input's lags

    @classmethod
    def from_stats(
        cls, stats: dict, variables: Sequence[str], horizon_steps: int, blocks: int
    ) -> ForcingInputs:
        return cls(
            list(variables),
            Normaliser.from_stats(stats, variables, "zscore"),
            horizon_steps,
            blocks,
        )

    def offsets(self) -> np.ndarray:
        """Store-index offsets from t0 of the frames read: 1 ... horizon_steps."""
        return np.arange(1, self.horizon_steps + 1)

    def encode(self, frames: np.ndarray, sea_mask: np.ndarray) -> torch.Tensor:
        """Physical ``frames [T, F, H, W]`` -> normalised float32, 0 on land as every input (so a
        sum over the grid is one over the sea, as the regressed base's basin means are)."""
        tensor = self.normaliser.normalise(torch.from_numpy(np.asarray(frames, np.float32)))
        sea = torch.from_numpy(np.asarray(sea_mask, dtype=bool))
        return torch.where(sea, torch.nan_to_num(tensor, nan=0.0), 0.0)

    def channels(self, encoded: torch.Tensor) -> torch.Tensor:
        """Encoded frames ``[horizon_steps, F, H, W]`` -> block means ``[F, blocks, H, W]``."""
        weights = torch.from_numpy(block_weights(self.horizon_steps, self.blocks))
        return torch.einsum("kt,tfhw->fkhw", weights.to(encoded.dtype), encoded).contiguous()

    def read(self, store: Any, indices: np.ndarray, sea_mask: np.ndarray) -> torch.Tensor:
        """The encoded forcing frames ``[len(indices), F, H, W]`` of an open store."""
        from seacast.tides import _read  # the store's one frame reader (contiguous: one slice)

        return self.encode(_read(store, self.variables, np.asarray(indices)), sea_mask)

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
        }

    @classmethod
    def from_dict(cls, data: dict) -> ForcingInputs:
        return cls(
            list(data["variables"]),
            Normaliser.from_dict(data["normaliser"]),
            int(data["horizon_steps"]),
            int(data["blocks"]),
        )
