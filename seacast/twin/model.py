"""The twin as one object that runs hour by hour: grid, dynamics, forcing, tracers.

Offers :class:`TwinModel` (built from a :class:`~seacast.config.DataConfig`),
whose :meth:`TwinModel.advance_hour` runs the internal sub-steps of one hour
and :meth:`TwinModel.snapshot` returns the hourly fields at cell centres.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from seacast.config import DataConfig
from seacast.errors import DataError
from seacast.twin.dynamics import ShallowWater, stable_time_step
from seacast.twin.grid import GRAVITY, TwinGrid, build_grid
from seacast.twin.output import FORECAST_SERIES
from seacast.twin.tides import BoundaryTide, hours_since_epoch
from seacast.twin.tracers import Tracers, river_discharge
from seacast.twin.weather import MEAN_SEA_LEVEL_PRESSURE, RHO_WATER, Weather

BLOWUP_ELEVATION = 20.0  # m: no tide or surge here comes near; beyond it the run is broken


@dataclass
class Snapshot:
    """The fields of one hour at cell centres (float64, NaN on land)."""

    zos: np.ndarray
    uo: np.ndarray
    vo: np.ndarray
    so: np.ndarray
    thetao: np.ndarray
    # the weather forecast for this hour at each age, by file name (output.FORECAST_SERIES):
    # msl (Pa), iews, inss (N m-2), everywhere
    forecast: dict[str, np.ndarray] = field(default_factory=dict)

    def get(self, name: str) -> np.ndarray:
        """The field written as ``name`` (an ocean variable or a forecast series)."""
        return self.forecast[name] if name in self.forecast else getattr(self, name)


class TwinModel:
    """The North Sea twin, started at rest at ``start`` (a full hour)."""

    def __init__(
        self, cfg: DataConfig, start: pd.Timestamp, end: pd.Timestamp | None = None
    ) -> None:
        twin = cfg.twin
        box = cfg.bbox
        self.grid: TwinGrid = build_grid(
            box.lat_min,
            box.lat_max,
            box.lon_min,
            box.lon_max,
            tuple(twin.shape),
            closed=twin.closed_basin,
            river=twin.river,
        )
        self.time = pd.Timestamp(start).floor("h")
        self.hours = hours_since_epoch(self.time)
        dt_max = stable_time_step(self.grid, twin.cfl)
        self.substeps = max(1, int(np.ceil(3600.0 / dt_max)))
        self.dt = 3600.0 / self.substeps
        self.dynamics = ShallowWater(self.grid, self.dt)
        self.tide = BoundaryTide(self.grid.boundary, scale=twin.tide_scale) if twin.tides else None
        end = pd.Timestamp(end) if end is not None else self.time + pd.Timedelta(days=40)
        self.weather = Weather(self.grid, twin.seed, self.time, end, enabled=twin.weather)
        self.tracers = Tracers(self.grid, self.hours, river=twin.river)
        self.river_cell = self.tracers.river_cell
        self._boundary_cells = self.grid.boundary.cells
        self._pressure, self._tau_x, self._tau_y = self.weather.fields(self.hours)
        self.tracer_substeps = 0

    # ------------------------------------------------------------------ stepping
    def advance_hour(self) -> None:
        """Run one hour of sub-steps; forcing is linear in time between the full hours."""
        dyn = self.dynamics
        n = self.substeps
        start_seconds = self.hours * 3600.0
        p1, tx1, ty1 = self.weather.fields(self.hours + 1.0)
        p0, tx0, ty0 = self._pressure, self._tau_x, self._tau_y
        if self.river_cell is not None:
            j, i = self.river_cell
            dyn.source_cell = (j, i)
            dyn.source_rate = river_discharge(self.hours + 0.5) / self.grid.area[j, i]
        weather_on = self.weather.enabled
        if weather_on:
            # forcing at the middle of the first sub-step, then constant increments
            first = 0.5 / n
            dyn.set_pressure(p0 + first * (p1 - p0))
            dyn.set_wind_stress(tx0 + first * (tx1 - tx0), ty0 + first * (ty1 - ty0))
            d_p = (p1 - p0)[:, :] / (n * RHO_WATER * GRAVITY)
            d_tu = 0.5 * self.dt * ((tx1 - tx0)[:, :-1] + (tx1 - tx0)[:, 1:]) / n
            d_tv = 0.5 * self.dt * ((ty1 - ty0)[:-1] + (ty1 - ty0)[1:]) / n
            ib0 = -p0.ravel()[self._boundary_cells] / (RHO_WATER * GRAVITY)
            ib1 = -p1.ravel()[self._boundary_cells] / (RHO_WATER * GRAVITY)
            ib = ib0 + first * (ib1 - ib0)
            d_ib = (ib1 - ib0) / n
        else:
            ib = np.zeros(self.grid.boundary.size)
        for k in range(n):
            if self.tide is not None:
                np.add(
                    ib, self.tide.elevation(start_seconds + (k + 1) * self.dt), out=dyn.eta_boundary
                )
            else:
                dyn.eta_boundary[:] = ib
            dyn.step()
            if weather_on:
                dyn.p_eta += d_p
                dyn.tau_u += d_tu
                dyn.tau_v += d_tv
                ib += d_ib
        self._pressure, self._tau_x, self._tau_y = p1, tx1, ty1
        fx, fy = dyn.take_mean_fluxes()
        self.tracer_substeps += self.tracers.step(fx, fy, dyn.eta, 3600.0, self.hours + 0.5)
        self.hours += 1.0
        self.time += pd.Timedelta(hours=1)
        peak = float(np.abs(dyn.eta).max())
        if not np.isfinite(peak) or peak > BLOWUP_ELEVATION:
            raise DataError(
                f"the twin became unstable at {self.time} (|zos| = {peak:.3g} m)",
                "lower twin.cfl (e.g. 0.5) or use a coarser twin.shape",
            )

    def snapshot(self) -> Snapshot:
        """The current fields at cell centres, NaN on land."""
        sea = self.grid.sea
        dyn = self.dynamics
        u, v = self._centre_velocities()
        forecast: dict[str, np.ndarray] = {}
        issued: dict[float, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for name, (variable, age) in FORECAST_SERIES.items():
            if age not in issued:
                issued[age] = self.weather.fields(self.hours, known_at=self.hours - age)
            pressure, tau_x, tau_y = issued[age]
            forecast[name] = {
                "msl": MEAN_SEA_LEVEL_PRESSURE + pressure,
                "iews": RHO_WATER * tau_x,
                "inss": RHO_WATER * tau_y,
            }[variable]
        return Snapshot(
            zos=np.where(sea, dyn.eta, np.nan),
            uo=np.where(sea, u, np.nan),
            vo=np.where(sea, v, np.nan),
            so=self.tracers.salinity.copy(),
            thetao=self.tracers.temperature.copy(),
            forecast=forecast,
        )

    def _centre_velocities(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean of the open faces of each cell (a wall is not a zero velocity to average in)."""
        grid, dyn = self.grid, self.dynamics
        open_u = grid.wet_u.astype(float)
        open_u.ravel()[grid.boundary.u_faces] = 1.0
        open_v = grid.wet_v.astype(float)
        open_v.ravel()[grid.boundary.v_faces] = 1.0
        n_u = np.maximum(open_u[:, :-1] + open_u[:, 1:], 1.0)
        n_v = np.maximum(open_v[:-1] + open_v[1:], 1.0)
        return (dyn.u[:, :-1] + dyn.u[:, 1:]) / n_u, (dyn.v[:-1] + dyn.v[1:]) / n_v

    def volume(self) -> float:
        """Water volume above the rest level, m3 (constant in a closed basin without river)."""
        return self.grid.sea_volume(self.dynamics.eta)
