"""Tidal forcing at the open boundaries of the twin.

Offers :data:`CONSTITUENTS` (M2, S2, N2, K1, O1 with periods, amplitudes and
phases), :func:`hours_since_epoch` and :class:`BoundaryTide`, which gives the
tidal elevation on every open-boundary cell as a Kelvin-like wave that travels
anticlockwise along the box edge (north along the west edge, east along the
north edge), as the tide does along the continental North Sea coast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from seacast.twin.grid import GRAVITY, OpenBoundary

EPOCH = pd.Timestamp("2000-01-01T00:00:00")


@dataclass(frozen=True)
class Constituent:
    name: str
    period_hours: float
    amplitude_m: float  # at the open boundary
    phase_deg: float  # at the south-west corner, relative to EPOCH

    @property
    def omega(self) -> float:
        """Angular frequency in rad/s."""
        return 2.0 * np.pi / (self.period_hours * 3600.0)


# Boundary amplitudes chosen so that the Dutch coast sees an M2 amplitude of ~0.6-0.9 m,
# as at Hoek van Holland and Den Helder; M2 dominates, S2 gives the spring-neap cycle.
CONSTITUENTS: tuple[Constituent, ...] = (
    Constituent("M2", 12.4206012, 0.85, 0.0),
    Constituent("S2", 12.0000000, 0.23, 40.0),
    Constituent("N2", 12.6583475, 0.15, 330.0),
    Constituent("K1", 23.9344721, 0.09, 190.0),
    Constituent("O1", 25.8193387, 0.10, 30.0),
)


def hours_since_epoch(time: pd.Timestamp) -> float:
    """Hours from 2000-01-01 00:00 UTC: the tide and the weather are functions of absolute time."""
    return (pd.Timestamp(time) - EPOCH) / pd.Timedelta(hours=1)


class BoundaryTide:
    """Tidal elevation on the open-boundary cells as ``A cos(omega t - k s - phase)``.

    ``s`` is the distance along the boundary and ``k = omega / sqrt(g H)`` the wave
    number of a shallow-water wave, so the tide arrives at the west edge first and
    reaches the north-east corner hours later.
    """

    def __init__(self, boundary: OpenBoundary, scale: float = 1.0) -> None:
        depth = np.maximum(boundary.depth, 1.0)
        speed = np.sqrt(GRAVITY * depth.mean()) if boundary.size else 1.0
        omegas = np.array([c.omega for c in CONSTITUENTS])
        amps = scale * np.array([c.amplitude_m for c in CONSTITUENTS])
        phases = np.deg2rad([c.phase_deg for c in CONSTITUENTS])
        lag = np.outer(boundary.perimeter_m, omegas / speed) + phases[None, :]  # (nb, K)
        # eta = sum_k A cos(w t - lag) = sum_k A cos(lag) cos(w t) + A sin(lag) sin(w t)
        self._cos = amps[None, :] * np.cos(lag)
        self._sin = amps[None, :] * np.sin(lag)
        self._omega = omegas

    def elevation(self, seconds: float) -> np.ndarray:
        """Elevation (m) on each boundary cell at ``seconds`` since :data:`EPOCH`."""
        arg = self._omega * seconds
        return self._cos @ np.cos(arg) + self._sin @ np.sin(arg)
