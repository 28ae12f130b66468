"""The North Sea twin: a small, deterministic shallow-water simulator of the southern North Sea.

Offers :func:`simulate` (one continuous run over ``cfg.months`` after a spin-up,
yielding one CMEMS-shaped hourly Dataset per month), :class:`TwinModel` (the
hour-by-hour model, for tests and benchmarks) and :func:`build_grid`.

Parts: :mod:`~seacast.twin.grid` (box, coastline, depths), :mod:`~seacast.twin.dynamics`
(C-grid shallow water), :mod:`~seacast.twin.tides`, :mod:`~seacast.twin.weather`,
:mod:`~seacast.twin.tracers` and :mod:`~seacast.twin.output`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import xarray as xr

from seacast.config import DataConfig
from seacast.twin.grid import TwinGrid, build_grid, nearest_sea_cell
from seacast.twin.model import TwinModel
from seacast.twin.output import VARIABLES, month_dataset
from seacast.twin.tides import CONSTITUENTS

DATASET_NAME = "nws_twin"


def run_span(cfg: DataConfig) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]:
    """(model start, first written hour, end) of the run for ``cfg``: spin-up, then the months."""
    months = pd.period_range(cfg.months.start, cfg.months.end, freq="M")
    first = months[0].start_time
    end = months[-1].end_time.floor("h") + pd.Timedelta(hours=1)
    start = (first - pd.Timedelta(days=cfg.twin.spinup_days)).floor("h")
    return start, first, end


def total_hours(cfg: DataConfig) -> int:
    """Hours the model runs for ``cfg``, spin-up included (for progress bars)."""
    start, _, end = run_span(cfg)
    return int((end - start) / pd.Timedelta(hours=1))


def global_attrs(cfg: DataConfig, model: TwinModel) -> dict[str, str | int | float]:
    """Provenance attributes; nothing time-dependent, so the files are reproducible."""
    twin = cfg.twin
    return {
        "title": "seacast North Sea twin: hourly surface fields of the southern North Sea",
        "source": "seacast North Sea twin",
        "institution": "seacast",
        "Conventions": "CF-1.8",
        "comment": (
            "Synthetic data from a 2D shallow-water simulator (tides M2 S2 N2 K1 O1, seeded storms, "
            "Rhine/Meuse plume), shaped like NWSHELF_ANALYSISFORECAST_PHY_004_013 hourly files. "
            "Velocities, salinity and temperature are depth-averaged."
        ),
        "seed": int(twin.seed),
        "grid_shape": f"{twin.shape[0]}x{twin.shape[1]}",
        "bbox": f"{cfg.bbox.lat_min},{cfg.bbox.lat_max},{cfg.bbox.lon_min},{cfg.bbox.lon_max}",
        "run_start": cfg.months.start,
        "spinup_days": float(twin.spinup_days),
        "tides": "+".join(c.name for c in CONSTITUENTS) if twin.tides else "none",
        "weather": int(twin.weather),
        "river": int(twin.river),
        "closed_basin": int(twin.closed_basin),
        "time_step_seconds": float(model.dt),
    }


def simulate(
    cfg: DataConfig,
    on_hour: Callable[[int], None] | None = None,
    until: pd.Timestamp | None = None,
) -> Iterator[tuple[str, xr.Dataset]]:
    """Run the twin over ``cfg.months`` and yield ``(YYYY-MM, hourly Dataset)`` in order.

    One continuous run: the spin-up starts at rest ``cfg.twin.spinup_days`` before the
    first month, and the state carries from month to month. ``on_hour(n)`` is called
    after every ``n`` simulated hours (for progress bars). ``until`` (an hour) stops the
    run there: the month holding it ends at that hour, later months are not yielded.
    The hours written are those of the whole run (same start and end, so same storms).
    """
    start, first, end = run_span(cfg)
    model = TwinModel(cfg, start, end)
    attrs = global_attrs(cfg, model)
    ny, nx = model.grid.shape
    while model.time < first:
        model.advance_hour()
        if on_hour is not None:
            on_hour(1)
    for month in pd.period_range(cfg.months.start, cfg.months.end, freq="M"):
        times = pd.date_range(month.start_time, periods=month.days_in_month * 24, freq="h")
        if until is not None:
            times = times[times <= until]
            if not len(times):
                return
        fields = {name: np.empty((len(times), ny, nx), np.float32) for name in VARIABLES}
        for n in range(len(times)):
            # the first hour of the month is the state at 00:00, before stepping on
            snap = model.snapshot()
            for name in VARIABLES:
                fields[name][n] = snap.get(name)
            if until is not None and times[n] >= until:
                break  # never step past the last hour asked for
            model.advance_hour()
            if on_hour is not None:
                on_hour(1)
        yield month.strftime("%Y-%m"), month_dataset(model.grid, times, fields, attrs)


__all__ = [
    "DATASET_NAME",
    "TwinGrid",
    "TwinModel",
    "build_grid",
    "nearest_sea_cell",
    "run_span",
    "simulate",
    "total_hours",
]
