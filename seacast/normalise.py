"""The normalisation every stage shares: the data contract between a store and a model.

A run's :class:`Normaliser` is made from the store's statistics when the run is trained,
saved in its checkpoint and reloaded for forecasts and evaluation, so physical values
and model values convert the same way everywhere. The land handling that goes with it
(land 0 in model values, NaN in physical ones) lives in one place,
:class:`seacast.encoding.SampleEncoding`, which also removes the tide for tide-aware runs.

Offers:

* :class:`Normaliser` - min-max to [0.1, 1] (the reference) or z-score, per variable.
* :data:`MINMAX_LOW` - the low end of the min-max range (0 stays free for land).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from seacast.errors import ConfigError, DataError

MINMAX_LOW = 0.1  # the reference scales to [0.1, 1], keeping 0 free for land


@dataclass
class Normaliser:
    """Per-variable affine scaling: ``normalised = (x - offset) / scale + shift``.

    ``minmax`` maps [min, max] to [0.1, 1]; ``zscore`` maps mean to 0 and std to 1.
    """

    variables: list[str]
    method: str
    offset: np.ndarray
    scale: np.ndarray
    shift: float

    @classmethod
    def from_stats(
        cls, stats: dict[str, dict[str, float]], variables: Sequence[str], method: str = "minmax"
    ) -> Normaliser:
        missing = [v for v in variables if v not in stats]
        if missing:
            raise DataError(
                f"the store has no statistics for {missing}",
                "remake the store with `seacast regrid`",
            )
        if method == "minmax":
            offset = np.array([stats[v]["min"] for v in variables], dtype=np.float64)
            span = np.array(
                [stats[v]["max"] - stats[v]["min"] for v in variables], dtype=np.float64
            )
            scale = np.where(span > 0, span, 1.0) / (1.0 - MINMAX_LOW)
            shift = MINMAX_LOW
        elif method == "zscore":
            offset = np.array([stats[v]["mean"] for v in variables], dtype=np.float64)
            std = np.array([stats[v]["std"] for v in variables], dtype=np.float64)
            scale = np.where(std > 0, std, 1.0)
            shift = 0.0
        else:
            raise ConfigError(f"unknown normalisation '{method}'", "use minmax or zscore")
        return cls(list(variables), method, offset, scale, float(shift))

    def _params(self, like: torch.Tensor, channel_dim: int) -> tuple[torch.Tensor, torch.Tensor]:
        dim = channel_dim % like.ndim
        if like.shape[dim] != len(self.variables):
            raise ValueError(
                f"axis {channel_dim} of shape {tuple(like.shape)} is not the {len(self.variables)} variables"
            )
        view = [1] * like.ndim
        view[dim] = len(self.variables)
        offset = torch.as_tensor(self.offset, dtype=like.dtype, device=like.device).view(view)
        scale = torch.as_tensor(self.scale, dtype=like.dtype, device=like.device).view(view)
        return offset, scale

    def normalise(self, x: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
        """Physical -> normalised; ``channel_dim`` is the variable axis (``[..., C, H, W]`` by default)."""
        offset, scale = self._params(x, channel_dim)
        return (x - offset) / scale + self.shift

    def denormalise(self, x: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
        """Normalised -> physical; inverse of :meth:`normalise`."""
        offset, scale = self._params(x, channel_dim)
        return (x - self.shift) * scale + offset

    def scale_like(self, x: torch.Tensor, channel_dim: int = -3) -> torch.Tensor:
        """d physical / d normalised per variable, shaped to broadcast against ``x``."""
        return self._params(x, channel_dim)[1]

    def to_dict(self) -> dict[str, Any]:
        return {
            "variables": list(self.variables),
            "method": self.method,
            "offset": [float(v) for v in self.offset],
            "scale": [float(v) for v in self.scale],
            "shift": self.shift,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Normaliser:
        return cls(
            list(data["variables"]),
            str(data["method"]),
            np.asarray(data["offset"], dtype=np.float64),
            np.asarray(data["scale"], dtype=np.float64),
            float(data["shift"]),
        )
