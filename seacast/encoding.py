"""How a run turns store frames into model values and back: one place for every stage.

A run's samples are either normalised fields (``model.base`` none or persistence) or
normalised *anomalies*, ``obs - tide`` (``model.base: tide``): the tide is known years ahead,
so the network need not rediscover it. :class:`SampleEncoding` does both directions, so the
training samples, the forecast's input, the ZO adaptation window and the evaluation's
de-normalisation all agree:

* :meth:`SampleEncoding.encode` - physical frames at given hours -> model values (land 0).
* :meth:`SampleEncoding.decode` - model values at given hours -> physical values (NaN on land).
* :func:`anomaly_normaliser` - the scaling of anomalies: no offset (a harmonic fit with a mean
  leaves anomalies of mean zero over its period), so the damping factor of the persisted
  anomaly is the same number in normalised and physical units.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from seacast.normalise import Normaliser
from seacast.tides import TidalConstants


def anomaly_normaliser(tides: TidalConstants, variables: Sequence[str]) -> Normaliser:
    """``a / std(a)`` per variable, with the anomaly std of the fit period."""
    std = tides.select(variables).anomaly_std
    scale = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    return Normaliser(list(variables), "anomaly", np.zeros(len(variables)), scale, 0.0)


@dataclass
class SampleEncoding:
    """Normalise (and, with ``tides``, remove the tide) on the way in; the reverse on the way out."""

    normaliser: Normaliser
    sea_mask: np.ndarray
    tides: TidalConstants | None = None
    _table_hours: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    _table_basis: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.sea_mask = np.asarray(self.sea_mask, dtype=bool)
        self._land = torch.from_numpy(~self.sea_mask)
        if self.tides is not None:
            self.tides = self.tides.select(self.normaliser.variables)

    @property
    def tide_aware(self) -> bool:
        return self.tides is not None

    def precompute(self, hours: np.ndarray) -> None:
        """Cache the tide's basis at ``hours`` (a store's timeline): samples then skip the astronomy."""
        if self.tides is None:
            return
        self._table_hours = np.asarray(hours, dtype=np.int64)
        self._table_basis = self.tides.basis(self._table_hours)

    def tide(self, hours: np.ndarray) -> np.ndarray:
        """The tide ``[*hours.shape, C, H, W]`` (float32, NaN on land)."""
        assert self.tides is not None
        hours = np.asarray(hours, dtype=np.int64)
        flat = hours.reshape(-1)
        basis = None
        if self._table_basis is not None and flat.size:
            pos = np.searchsorted(self._table_hours, flat)
            pos = np.minimum(pos, len(self._table_hours) - 1)
            if np.array_equal(self._table_hours[pos], flat):
                basis = self._table_basis[pos]
        values = self.tides.predict(flat, basis=basis)
        return values.reshape(*hours.shape, *values.shape[1:])

    def encode(self, frames: np.ndarray | torch.Tensor, hours: np.ndarray) -> torch.Tensor:
        """Physical ``frames [T, C, H, W]`` at ``hours [T]`` -> model values ``[T, C, H, W]`` (land 0)."""
        values = torch.as_tensor(np.asarray(frames, dtype=np.float32))
        if self.tides is not None:
            values = values - torch.from_numpy(self.tide(hours))
        values = self.normaliser.normalise(values, channel_dim=-3)
        return torch.nan_to_num(values, nan=0.0).masked_fill(self._land, 0.0)

    def decode(self, values: torch.Tensor, hours: np.ndarray) -> np.ndarray:
        """Model values ``[..., C, H, W]`` at ``hours`` (shaped like the leading dims) -> physical, NaN on land."""
        physical = self.normaliser.denormalise(values.detach().float().cpu(), channel_dim=-3)
        out = physical.masked_fill(self._land, float("nan")).numpy()
        if self.tides is not None:
            out = out + self.tide(np.broadcast_to(np.asarray(hours), out.shape[:-3]))
        return out
