"""Stores with a known tide, written with the real store writer, for the tide tests.

``tidal_store`` builds each field from utide's own basis (exact nodal corrections), so the
constants a fit must find are known: ``amplitude * cos/sin(phase)`` per constituent, with an
amplitude and a phase that vary across the grid. An optional AR(1) anomaly with a known
coefficient stands in for the surge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seacast.config import DataConfig, GridConfig, StoreConfig, to_dict
from seacast.store import finalise_store, time_hours, write_new_store
from seacast.synthetic import synthetic_dataset
from seacast.tides import _basis, select_constituents

KNOWN = {"M2": (1.1, 40.0), "S2": (0.35, 95.0), "K1": (0.08, 200.0), "O1": (0.06, 310.0)}


def known_constituents(
    shape: tuple[int, int], variable_index: int
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Amplitude and phase (degrees) maps per constituent: a gradient across the grid."""
    yy, xx = np.meshgrid(np.linspace(0, 1, shape[0]), np.linspace(0, 1, shape[1]), indexing="ij")
    scale = 1.0 / (1 + variable_index)
    return {
        name: (amp * scale * (0.6 + 0.4 * yy), (phase + 60 * xx + 20 * variable_index) % 360)
        for name, (amp, phase) in KNOWN.items()
    }


def tidal_store(
    path: Path,
    *,
    shape: tuple[int, int] = (16, 16),
    hours: int = 24 * 40,
    variables: tuple[str, ...] = ("zos", "uo"),
    start: str = "2024-01-01",
    anomaly_ar: float | None = None,
    anomaly_std: float = 0.1,
    seed: int = 0,
) -> Path:
    """A store whose fields are ``mean + sum of KNOWN constituents`` (+ an AR(1) anomaly)."""
    ds = synthetic_dataset(shape=shape, hours=hours, variables=variables, start=start, seed=seed)
    sea = ds["sea_mask"].values.astype(bool)
    hours_1970 = time_hours(ds["time"].values).astype(np.float64)
    names, frequencies, lind = select_constituents(1.0, list(KNOWN))
    basis = _basis(hours_1970, lind, frequencies, float(ds["latitude"].mean()))
    k = len(names)
    rng = np.random.default_rng(seed)
    for index, var in enumerate(variables):
        field = np.full((hours, *shape), 0.2 * (index + 1))
        for i, (name, (amp, phase)) in enumerate(known_constituents(shape, index).items()):
            assert names[i] == name
            g = np.radians(phase)
            field += basis[:, 1 + i, None, None] * (amp * np.cos(g))
            field += basis[:, 1 + k + i, None, None] * (amp * np.sin(g))
        if anomaly_ar is not None:
            innovation = rng.standard_normal(hours) * anomaly_std * np.sqrt(1 - anomaly_ar**2)
            surge = np.zeros(hours)
            for t in range(1, hours):
                surge[t] = anomaly_ar * surge[t - 1] + innovation[t]
            field += surge[:, None, None]
        ds[var] = (
            ("time", "latitude", "longitude"),
            np.where(sea, field, np.nan).astype(np.float32),
        )
    times = pd.DatetimeIndex(ds["time"].values)
    config = DataConfig(
        name=path.stem,
        source="twin",
        months=f"{times[0]:%Y-%m}:{times[-1]:%Y-%m}",
        variables=list(variables),
        grid=GridConfig(shape=shape),
        store=StoreConfig(path=path, chunk_hours=24),
    )
    write_new_store(path, ds, chunk_hours=24, overwrite=True)
    finalise_store(path, config=to_dict(config), stats_period=None, step_hours=1.0)
    return path
