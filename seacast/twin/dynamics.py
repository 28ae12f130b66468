"""Depth-averaged shallow-water dynamics of the twin on an Arakawa C-grid.

Offers :class:`ShallowWater`: elevation at cell centres, velocities on cell faces,
a forward-backward time step (continuity first, then momentum with the new
elevation) with nonlinear continuity (total depth in the fluxes), Coriolis
alternating u-first and v-first, implicit quadratic bottom friction, wind stress,
the inverse-barometer pressure gradient and Flather radiation at the open faces.
All arrays are float64 and preallocated: the step runs tens of thousands of times
per simulated month, so it avoids temporaries where numpy allows.
"""

from __future__ import annotations

import numpy as np

from seacast.twin.grid import GRAVITY, OMEGA, TwinGrid
from seacast.twin.weather import RHO_WATER

BOTTOM_DRAG = 2.5e-3  # quadratic bottom drag coefficient


def stable_time_step(grid: TwinGrid, cfl: float) -> float:
    """Largest forward-backward gravity-wave step on this grid, times ``cfl`` (s)."""
    speed = np.sqrt(GRAVITY * (grid.depth[grid.sea].max() + 3.0))
    dx_min = float(grid.dx.min())
    return cfl / (speed * np.sqrt(1.0 / dx_min**2 + 1.0 / grid.dy**2))


class ShallowWater:
    """State (eta, u, v) and time stepping of the 2D shallow-water equations."""

    def __init__(self, grid: TwinGrid, dt: float) -> None:
        self.grid = grid
        self.dt = dt
        ny, nx = grid.shape
        self.eta = np.zeros((ny, nx))
        self.u = np.zeros((ny, nx + 1))
        self.v = np.zeros((ny + 1, nx))
        depth = grid.depth
        # rest depth on faces (edge faces take the adjoining cell)
        self.h_u = np.empty((ny, nx + 1))
        self.h_u[:, 1:-1] = 0.5 * (depth[:, :-1] + depth[:, 1:])
        self.h_u[:, 0], self.h_u[:, -1] = depth[:, 0], depth[:, -1]
        self.h_v = np.empty((ny + 1, nx))
        self.h_v[1:-1] = 0.5 * (depth[:-1] + depth[1:])
        self.h_v[0], self.h_v[-1] = depth[0], depth[-1]
        self.wet_u = grid.wet_u[:, 1:-1].astype(float)
        self.wet_v = grid.wet_v[1:-1, :].astype(float)
        self.dt_inv_area = np.where(grid.sea, dt / grid.area, 0.0)
        self.dx_v = grid.dx_v[:, None] * np.ones((1, nx))
        # coefficients with the time step folded in (fewer array operations per step)
        self.g_dt_dx = dt * GRAVITY / grid.dx[:, None]  # u faces lie on centre rows
        self.g_dt_dy = dt * GRAVITY / grid.dy
        lat_faces = grid.lat_faces
        self.f_dt_u = dt * 2 * OMEGA * np.sin(np.deg2rad(grid.lat))[:, None]
        self.f_dt_v = dt * 2 * OMEGA * np.sin(np.deg2rad(lat_faces[1:-1]))[:, None]
        # forcing, set by the driver: pressure as an equivalent elevation (p / (rho g)) at
        # centres, and kinematic wind stress times dt on the interior faces
        self.p_eta = np.zeros((ny, nx))
        self.tau_u = np.zeros((ny, nx - 1))
        self.tau_v = np.zeros((ny - 1, nx))
        self.source_cell: tuple[int, int] | None = None  # river: volume source in m/s at one cell
        self.source_rate = 0.0
        b = grid.boundary
        self._b_u_faces, self._b_u_cells = b.u_faces, b.u_cells
        self._b_v_faces, self._b_v_cells = b.v_faces, b.v_cells
        n_u = len(b.u_faces)
        self._b_u_coef = b.u_sign * np.sqrt(GRAVITY / np.maximum(b.depth[:n_u], 1.0))
        self._b_v_coef = b.v_sign * np.sqrt(GRAVITY / np.maximum(b.depth[n_u:], 1.0))
        self._n_u = n_u
        self.eta_boundary = np.zeros(b.size)  # external elevation at the open faces
        # volume fluxes (m3/s) accumulated for the tracers
        self.flux_x_sum = np.zeros((ny, nx + 1))
        self.flux_y_sum = np.zeros((ny + 1, nx))
        self.flux_steps = 0
        # work arrays
        self._eta_u = np.zeros((ny, nx + 1))
        self._eta_v = np.zeros((ny + 1, nx))
        self._fx = np.zeros((ny, nx + 1))
        self._fy = np.zeros((ny + 1, nx))
        self._div = np.zeros((ny, nx))
        self._zeta = np.zeros((ny, nx))
        self._wu = [np.zeros((ny, nx - 1)) for _ in range(4)]
        self._wv = [np.zeros((ny - 1, nx)) for _ in range(4)]
        self._flip = False

    # ------------------------------------------------------------------ steps
    def step(self) -> None:
        """One forward-backward step of ``dt`` seconds."""
        dt = self.dt
        eta, u, v = self.eta, self.u, self.v
        # continuity with the total depth on faces
        eu, ev = self._eta_u, self._eta_v
        np.add(eta[:, :-1], eta[:, 1:], out=eu[:, 1:-1])
        eu[:, 1:-1] *= 0.5
        eu[:, 0], eu[:, -1] = eta[:, 0], eta[:, -1]
        np.add(eta[:-1], eta[1:], out=ev[1:-1])
        ev[1:-1] *= 0.5
        ev[0], ev[-1] = eta[0], eta[-1]
        eu += self.h_u
        ev += self.h_v
        fx, fy = self._fx, self._fy
        np.multiply(u, eu, out=fx)
        fx *= self.grid.dy
        np.multiply(v, ev, out=fy)
        fy *= self.dx_v
        self.flux_x_sum += fx
        self.flux_y_sum += fy
        self.flux_steps += 1
        div = self._div
        np.subtract(fx[:, 1:], fx[:, :-1], out=div)
        div += fy[1:]
        div -= fy[:-1]
        div *= self.dt_inv_area
        eta -= div
        if self.source_cell is not None:
            eta[self.source_cell] += dt * self.source_rate
        # momentum with the new elevation; alternate the Coriolis order to stay neutral
        np.add(eta, self.p_eta, out=self._zeta)
        if self._flip:
            self._step_v(dt, ev[1:-1])
            self._step_u(dt, eu[:, 1:-1])
        else:
            self._step_u(dt, eu[:, 1:-1])
            self._step_v(dt, ev[1:-1])
        self._flip = not self._flip
        self._open_faces()

    def _step_u(self, dt: float, hu: np.ndarray) -> None:
        """Eastward velocity on the interior faces; ``hu`` is the total depth there."""
        u, v, zeta = self.u, self.v, self._zeta
        cor, force, speed, tmp = self._wu
        np.add(v[:-1, :-1], v[:-1, 1:], out=cor)
        cor += v[1:, :-1]
        cor += v[1:, 1:]
        cor *= 0.25  # v at the u faces
        ui = u[:, 1:-1]
        np.subtract(zeta[:, :-1], zeta[:, 1:], out=force)
        force *= self.g_dt_dx
        np.divide(self.tau_u, hu, out=tmp)
        force += tmp
        # |velocity| for the quadratic drag (np.hypot is several times slower)
        np.multiply(ui, ui, out=speed)
        np.multiply(cor, cor, out=tmp)
        speed += tmp
        np.sqrt(speed, out=speed)
        cor *= self.f_dt_u
        force += cor
        speed *= dt * BOTTOM_DRAG
        speed /= hu
        speed += 1.0
        force += ui
        force /= speed
        force *= self.wet_u
        u[:, 1:-1] = force

    def _step_v(self, dt: float, hv: np.ndarray) -> None:
        """Northward velocity on the interior faces; ``hv`` is the total depth there."""
        u, v, zeta = self.u, self.v, self._zeta
        cor, force, speed, tmp = self._wv
        np.add(u[:-1, :-1], u[:-1, 1:], out=cor)
        cor += u[1:, :-1]
        cor += u[1:, 1:]
        cor *= 0.25  # u at the v faces
        vi = v[1:-1]
        np.subtract(zeta[:-1], zeta[1:], out=force)
        force *= self.g_dt_dy
        np.divide(self.tau_v, hv, out=tmp)
        force += tmp
        np.multiply(vi, vi, out=speed)
        np.multiply(cor, cor, out=tmp)
        speed += tmp
        np.sqrt(speed, out=speed)
        cor *= self.f_dt_v
        force -= cor
        speed *= dt * BOTTOM_DRAG
        speed /= hv
        speed += 1.0
        force += vi
        force /= speed
        force *= self.wet_v
        v[1:-1] = force

    def _open_faces(self) -> None:
        """Flather: outward normal velocity = sqrt(g/H) (eta - eta_external)."""
        if self._n_u:
            cells = self.eta.ravel()[self._b_u_cells] - self.eta_boundary[: self._n_u]
            self.u.ravel()[self._b_u_faces] = self._b_u_coef * cells
        if len(self._b_v_faces):
            cells = self.eta.ravel()[self._b_v_cells] - self.eta_boundary[self._n_u :]
            self.v.ravel()[self._b_v_faces] = self._b_v_coef * cells

    # ------------------------------------------------------------------ helpers
    def set_wind_stress(self, tau_x: np.ndarray, tau_y: np.ndarray) -> None:
        """Kinematic wind stress at centres (m2/s2) -> interior faces, times dt."""
        np.add(tau_x[:, :-1], tau_x[:, 1:], out=self.tau_u)
        self.tau_u *= 0.5 * self.dt
        np.add(tau_y[:-1], tau_y[1:], out=self.tau_v)
        self.tau_v *= 0.5 * self.dt

    def set_pressure(self, pressure_pa: np.ndarray) -> None:
        np.divide(pressure_pa, RHO_WATER * GRAVITY, out=self.p_eta)

    def take_mean_fluxes(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean volume fluxes (m3/s) since the last call, and reset the sums."""
        n = max(self.flux_steps, 1)
        fx, fy = self.flux_x_sum / n, self.flux_y_sum / n
        self.flux_x_sum[:] = 0.0
        self.flux_y_sum[:] = 0.0
        self.flux_steps = 0
        return fx, fy

    def centre_velocities(self) -> tuple[np.ndarray, np.ndarray]:
        """u and v at cell centres (m/s), averaged from the faces."""
        return 0.5 * (self.u[:, :-1] + self.u[:, 1:]), 0.5 * (self.v[:-1] + self.v[1:])
