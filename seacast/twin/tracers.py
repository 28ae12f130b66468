"""Salinity and temperature of the twin: upwind advection-diffusion on the C-grid.

Offers :class:`Tracers` (salinity ``so`` and temperature ``thetao`` with their
boundary values), :func:`river_discharge` (seasonal Rhine/Meuse discharge) and
:func:`equilibrium_temperature` (the seasonal target the temperature relaxes to,
warmer near the coast in summer and colder in winter).

Advection uses the mean volume fluxes of the dynamics over the tracer step, in the
upwind advective form ``V dS/dt = sum_in F (S_neighbour - S)``: a convex combination
under the CFL limit, so the tracers never leave the range of their initial,
boundary and river values.
"""

from __future__ import annotations

import numpy as np

from seacast.twin.grid import TwinGrid

SALINITY_BACKGROUND = 34.5
SALINITY_BOUNDS = (0.0, 36.0)
RIVER_MEAN_DISCHARGE = 2200.0  # m3/s, Rhine + Meuse
RIVER_MIXING_DEPTH = 8.0  # m: the layer the river water first mixes into at the mouth
DIFFUSIVITY = 30.0  # m2/s, horizontal
TEMPERATURE_BOUNDS = (-2.0, 30.0)


def day_of_year(hours: float) -> float:
    """Days since 1 January (fractional) for ``hours`` since 2000-01-01 (a year of 365.25 days)."""
    return (hours / 24.0) % 365.25


def river_discharge(hours: float, mean: float = RIVER_MEAN_DISCHARGE) -> float:
    """Rhine/Meuse discharge (m3/s): high in late winter, low in late summer."""
    return mean * (1.0 + 0.4 * np.cos(2.0 * np.pi * (day_of_year(hours) - 45.0) / 365.25))


def equilibrium_temperature(grid: TwinGrid, hours: float) -> np.ndarray:
    """Seasonal temperature (degrees C) the water relaxes to; shallow coastal water swings more."""
    season = np.cos(2.0 * np.pi * (day_of_year(hours) - 222.0) / 365.25)
    coastal = np.exp(-grid.coast_distance_km / 30.0)
    mean = 10.8 + 0.7 * coastal
    amplitude = 5.0 + 3.5 * coastal
    return mean + amplitude * season


class Tracers:
    """Salinity and temperature fields and their update over one tracer step."""

    def __init__(self, grid: TwinGrid, hours: float, river: bool = True) -> None:
        self.grid = grid
        self.sea = grid.sea
        ny, nx = grid.shape
        self.river_cell = grid.river_cell if river else None
        self.temperature = np.where(grid.sea, equilibrium_temperature(grid, hours), np.nan)
        # start from a plausible plume so a short spin-up already shows one
        salinity = np.full((ny, nx), SALINITY_BACKGROUND)
        if self.river_cell is not None:
            lat2, lon2 = np.meshgrid(grid.lat, grid.lon, indexing="ij")
            j, i = self.river_cell
            dist_km = 111.0 * np.hypot(
                lat2 - grid.lat[j], (lon2 - grid.lon[i]) * np.cos(np.deg2rad(grid.lat[j]))
            )
            salinity -= (
                6.0 * np.exp(-dist_km / 25.0) * (river_discharge(hours) / RIVER_MEAN_DISCHARGE)
            )
        self.salinity = np.where(grid.sea, salinity, np.nan)
        # face masks for diffusion (interior wet faces plus open faces)
        self.diff_u = grid.wet_u.astype(float)
        self.diff_v = grid.wet_v.astype(float)
        b = grid.boundary
        self.diff_u.ravel()[b.u_faces] = 1.0
        self.diff_v.ravel()[b.v_faces] = 1.0
        self.dx2 = (grid.dx**2)[:, None]
        self.dy2 = grid.dy**2
        depth = grid.depth
        # temperature relaxes faster where the water is shallow (5 days at 20 m)
        self.relax_rate = np.where(grid.sea, 1.0 / (5.0 * 86400.0 * depth / 20.0), 0.0)

    def step(
        self, fx: np.ndarray, fy: np.ndarray, eta: np.ndarray, seconds: float, hours: float
    ) -> int:
        """Advance both tracers by ``seconds`` with mean volume fluxes ``fx``, ``fy``; returns the sub-steps used."""
        grid = self.grid
        volume = grid.area * np.maximum(grid.depth + eta, 1.0)
        f_w_in = np.maximum(fx[:, :-1], 0.0)  # through the west face, eastward = inflow
        f_e_in = -np.minimum(fx[:, 1:], 0.0)
        f_s_in = np.maximum(fy[:-1], 0.0)
        f_n_in = -np.minimum(fy[1:], 0.0)
        inflow = f_w_in + f_e_in + f_s_in + f_n_in
        # the out-going fluxes bound the step too (a cell cannot lose more than it holds)
        outflow = (
            np.maximum(-fx[:, :-1], 0.0)
            + np.maximum(fx[:, 1:], 0.0)
            + np.maximum(-fy[:-1], 0.0)
            + np.maximum(fy[1:], 0.0)
        )
        rate = np.where(self.sea, np.maximum(inflow, outflow) / volume, 0.0)
        diff_rate = 4.0 * DIFFUSIVITY * (1.0 / self.dx2.min() + 1.0 / self.dy2)
        n_sub = max(1, int(np.ceil(seconds * (float(rate.max()) + diff_rate) / 0.9)))
        dt = seconds / n_sub
        t_eq = equilibrium_temperature(grid, hours)
        t_boundary = np.where(self.sea, t_eq, np.nan)
        relax = self.relax_rate
        river = self._river_rate(hours) if self.river_cell is not None else 0.0
        for _ in range(n_sub):
            self.salinity = self._advect(
                self.salinity, SALINITY_BACKGROUND, dt, volume, f_w_in, f_e_in, f_s_in, f_n_in
            )
            self.temperature = self._advect(
                self.temperature, t_boundary, dt, volume, f_w_in, f_e_in, f_s_in, f_n_in
            )
            if self.river_cell is not None:
                j, i = self.river_cell
                self.salinity[j, i] /= 1.0 + dt * river  # fresh water replaces salt water
            self.temperature += dt * relax * (t_eq - self.temperature) / (1.0 + dt * relax)
        np.clip(self.salinity, *SALINITY_BOUNDS, out=self.salinity)
        np.clip(self.temperature, *TEMPERATURE_BOUNDS, out=self.temperature)
        self.salinity[~self.sea] = np.nan
        self.temperature[~self.sea] = np.nan
        return n_sub

    def _river_rate(self, hours: float) -> float:
        j, i = self.river_cell
        plume_volume = self.grid.area[j, i] * min(RIVER_MIXING_DEPTH, float(self.grid.depth[j, i]))
        return river_discharge(hours) / plume_volume

    def _advect(self, field, boundary, dt, volume, f_w_in, f_e_in, f_s_in, f_n_in) -> np.ndarray:
        ny, nx = field.shape
        pad = np.empty((ny + 2, nx + 2))
        pad[1:-1, 1:-1] = np.where(self.sea, field, 0.0)
        # ghost cells carry the boundary value (used only where a face is open)
        if np.ndim(boundary) == 0:
            pad[0, :] = pad[-1, :] = pad[:, 0] = pad[:, -1] = boundary
        else:
            b = np.where(self.sea, boundary, 0.0)
            pad[0, 1:-1], pad[-1, 1:-1] = b[0], b[-1]
            pad[1:-1, 0], pad[1:-1, -1] = b[:, 0], b[:, -1]
        centre = pad[1:-1, 1:-1]
        west, east = pad[1:-1, :-2], pad[1:-1, 2:]
        south, north = pad[:-2, 1:-1], pad[2:, 1:-1]
        advect = (
            f_w_in * (west - centre)
            + f_e_in * (east - centre)
            + f_s_in * (south - centre)
            + f_n_in * (north - centre)
        )
        diffuse = DIFFUSIVITY * (
            (self.diff_u[:, :-1] * (west - centre) + self.diff_u[:, 1:] * (east - centre))
            / self.dx2
            + (self.diff_v[:-1] * (south - centre) + self.diff_v[1:] * (north - centre)) / self.dy2
        )
        out = centre + dt * (advect / volume + diffuse)
        return np.where(self.sea, out, np.nan)
