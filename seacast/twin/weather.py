"""The twin's seeded weather: moving Gaussian lows over a slowly varying westerly flow.

Offers :class:`Storm`, :func:`storms_for_month` (Poisson storms, more frequent and
deeper in winter), :func:`winter_weight` and :class:`Weather`, which evaluates
sea-level pressure anomaly and surface wind stress on the grid at any hour.

Everything is a function of absolute time and the seed: each calendar month draws
its storms from its own random stream, so the weather of a month does not depend
on when a run started.

:meth:`Weather.fields` with ``known_at`` is a weather *forecast*: the storms born after
``known_at`` left out (nobody knows them yet), everything else as it will be. The twin's
files carry it at four ages (:data:`FORECAST_AGES_HOURS`: issued 6, 12, 18 and 24 h before each
hour, as from an hourly-updated weather model), the model input that operational surge models
get from a weather centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from seacast.twin.grid import EARTH_RADIUS, OMEGA, TwinGrid
from seacast.twin.tides import hours_since_epoch

RHO_AIR = 1.22  # kg/m3
RHO_WATER = 1025.0  # kg/m3
SURFACE_WIND_FACTOR = 0.7  # surface wind speed / geostrophic wind speed over sea
CROSS_ISOBAR_DEG = 20.0  # surface wind turns towards low pressure
MAX_WIND = 40.0  # m/s

STORMS_PER_MONTH_WINTER = 6.0
STORMS_PER_MONTH_SUMMER = 2.5
DEFICIT_WINTER_PA = 2600.0  # typical central pressure deficit of a winter low
DEFICIT_SUMMER_PA = 1400.0
MEAN_SEA_LEVEL_PRESSURE = 101325.0  # Pa: added to the anomaly in the files (msl)
FORECAST_AGE_HOURS = (
    24.0  # the day-ahead forecast (msl, iews, inss): issued this long before the hour
)
# the ages the files carry: a sample at t0 reads, for hour t0 + k, the freshest one issued by t0
FORECAST_AGES_HOURS = (6.0, 12.0, 18.0, FORECAST_AGE_HOURS)


def winter_weight(hours: float | np.ndarray) -> float | np.ndarray:
    """1 in mid-January, 0 in mid-July: the seasonal weight of storminess."""
    day = np.asarray(hours) / 24.0
    return 0.5 * (1.0 + np.cos(2.0 * np.pi * (day - 15.0) / 365.25))


@dataclass(frozen=True)
class Storm:
    """A Gaussian low that moves in a straight line and deepens then fills (sin^2 envelope)."""

    start_hours: float  # since EPOCH
    duration_hours: float
    deficit_pa: float
    radius_m: float
    x_mid_m: float  # centre position at mid-life, relative to the box centre
    y_mid_m: float
    vx: float  # m/s
    vy: float


def storms_for_month(seed: int, month: pd.Period) -> list[Storm]:
    """The storms born in ``month``, from the random stream ``(seed, year, month)``."""
    rng = np.random.default_rng([seed, month.year, month.month, 7919])
    start = hours_since_epoch(month.start_time)
    hours = month.days_in_month * 24.0
    weight = float(winter_weight(start + hours / 2))
    rate = STORMS_PER_MONTH_SUMMER + (STORMS_PER_MONTH_WINTER - STORMS_PER_MONTH_SUMMER) * weight
    storms = []
    for _ in range(rng.poisson(rate)):
        t0 = start + rng.uniform(0.0, hours)
        duration = rng.uniform(36.0, 84.0)
        mean_deficit = DEFICIT_SUMMER_PA + (DEFICIT_WINTER_PA - DEFICIT_SUMMER_PA) * weight
        deficit = mean_deficit * rng.lognormal(0.0, 0.35)
        radius = rng.uniform(250e3, 500e3)
        speed = rng.uniform(8.0, 16.0)
        heading = np.deg2rad(rng.normal(15.0, 25.0))  # from the west-south-west, mostly
        # the track passes the box centre at a random distance, more often to the north
        offset = rng.uniform(-350e3, 650e3)
        x_mid = -offset * np.sin(heading)
        y_mid = offset * np.cos(heading)
        storms.append(
            Storm(
                t0,
                duration,
                deficit,
                radius,
                x_mid,
                y_mid,
                speed * np.cos(heading),
                speed * np.sin(heading),
            )
        )
    return storms


class Weather:
    """Pressure anomaly and wind stress on the grid, for the hours of one run."""

    def __init__(
        self,
        grid: TwinGrid,
        seed: int,
        start: pd.Timestamp,
        end: pd.Timestamp,
        enabled: bool = True,
    ) -> None:
        self.enabled = enabled
        lat_c = 0.5 * (grid.lat[0] + grid.lat[-1])
        lon_c = 0.5 * (grid.lon[0] + grid.lon[-1])
        lat2, lon2 = np.meshgrid(grid.lat, grid.lon, indexing="ij")
        self.x = EARTH_RADIUS * np.deg2rad(lon2 - lon_c) * np.cos(np.deg2rad(lat_c))
        self.y = EARTH_RADIUS * np.deg2rad(lat2 - lat_c)
        self.f = 2.0 * OMEGA * np.sin(np.deg2rad(lat2))
        first = (pd.Timestamp(start) - pd.Timedelta(days=5)).to_period("M")
        last = pd.Timestamp(end).to_period("M")
        self.storms: list[Storm] = []
        if enabled:
            for month in pd.period_range(first, last, freq="M"):
                self.storms.extend(storms_for_month(seed, month))
        # background geostrophic wind: a westerly mean with a few random slow oscillations
        rng = np.random.default_rng([seed, 104729])
        n_modes = 10
        self._periods_h = np.exp(rng.uniform(np.log(36.0), np.log(20 * 24.0), n_modes))
        self._amp = rng.uniform(1.5, 3.5, (2, n_modes))
        self._phase = rng.uniform(0.0, 2 * np.pi, (2, n_modes))
        cos_a, sin_a = np.cos(np.deg2rad(CROSS_ISOBAR_DEG)), np.sin(np.deg2rad(CROSS_ISOBAR_DEG))
        self._turn = SURFACE_WIND_FACTOR * np.array([[cos_a, -sin_a], [sin_a, cos_a]])

    def background_wind(self, hours: float) -> tuple[float, float]:
        """Uniform geostrophic wind (m/s) of the large-scale flow at ``hours`` since EPOCH."""
        weight = float(winter_weight(hours))
        osc = self._amp * np.cos(2 * np.pi * hours / self._periods_h + self._phase)
        scale = 0.7 + 0.6 * weight
        return 4.0 + 4.0 * weight + scale * float(osc[0].sum()), scale * float(osc[1].sum())

    def fields(
        self, hours: float, known_at: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pressure anomaly (Pa) and kinematic wind stress (m2/s2, x and y) at cell centres.

        ``known_at`` (hours since EPOCH): the forecast issued then, without the storms born later.
        """
        if not self.enabled:
            zero = np.zeros_like(self.x)
            return zero, zero, zero
        ug, vg = self.background_wind(hours)
        f = self.f
        pressure = RHO_AIR * f * (vg * self.x - ug * self.y)
        dpdx = RHO_AIR * f * vg
        dpdy = -RHO_AIR * f * ug
        for storm in self.storms:
            if known_at is not None and storm.start_hours > known_at:
                continue
            age = hours - storm.start_hours
            if age < 0.0 or age > storm.duration_hours:
                continue
            envelope = np.sin(np.pi * age / storm.duration_hours) ** 2
            dt = (age - 0.5 * storm.duration_hours) * 3600.0
            xc = storm.x_mid_m + storm.vx * dt
            yc = storm.y_mid_m + storm.vy * dt
            dxs = self.x - xc
            dys = self.y - yc
            shape = np.exp(-(dxs * dxs + dys * dys) / (2.0 * storm.radius_m**2))
            p = -storm.deficit_pa * envelope * shape
            pressure = pressure + p
            dpdx = dpdx - p * dxs / storm.radius_m**2
            dpdy = dpdy - p * dys / storm.radius_m**2
        ugeo = -dpdy / (RHO_AIR * f)
        vgeo = dpdx / (RHO_AIR * f)
        wind_u = self._turn[0, 0] * ugeo + self._turn[0, 1] * vgeo
        wind_v = self._turn[1, 0] * ugeo + self._turn[1, 1] * vgeo
        speed = np.sqrt(wind_u**2 + wind_v**2)
        cap = np.minimum(1.0, MAX_WIND / np.maximum(speed, 1e-9))
        wind_u, wind_v, speed = wind_u * cap, wind_v * cap, speed * cap
        drag = (0.8 + 0.065 * speed) * 1e-3  # Wu (1982)
        factor = RHO_AIR / RHO_WATER * drag * speed
        return pressure, factor * wind_u, factor * wind_v
