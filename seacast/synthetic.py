"""Valid example data for tests and benchmarks: synthetic stores (written through the real store
writer) and raw files shaped like Copernicus Marine downloads.

Public names:

* :func:`synthetic_dataset` - an in-memory dataset in the store layout: smooth,
  tidal-like fields (M2 and S2 waves travelling across the box plus a slow random
  component), NaN on land, and ``sea_mask``.
* :func:`synthetic_store` - the same written as a Zarr store with all attrs
  (statistics, config, gaps, step, fingerprint), ready for :func:`seacast.store.open_store`.
* :func:`cmems_like_file` - a raw NetCDF file shaped like a Copernicus Marine download
  (float32 with _FillValue, NaN land, a depth axis for 3-D variables, CF attrs), for
  regrid tests and benchmarks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from seacast.config import BBox, DataConfig, GridConfig, StoreConfig, to_dict
from seacast.store import finalise_store, write_new_store

M2_HOURS = 12.4206012
S2_HOURS = 12.0

# (mean, tidal amplitude, slow amplitude, phase offset) per variable; others use a generic profile
_PROFILES: dict[str, tuple[float, float, float, float]] = {
    "zos": (0.0, 1.0, 0.3, 0.0),
    "uo": (0.05, 0.6, 0.15, np.pi / 2),
    "vo": (-0.02, 0.4, 0.15, np.pi),
    "so": (34.5, 0.4, 0.6, np.pi / 4),
    "thetao": (11.0, 0.3, 1.5, np.pi / 3),
}


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], scale: float) -> np.ndarray:
    """Gaussian noise smoothed by a Fourier low-pass (length ``scale`` in cells, last two axes)."""
    noise = rng.standard_normal(shape)
    ky = np.fft.fftfreq(shape[-2])[:, None]
    kx = np.fft.fftfreq(shape[-1])[None, :]
    filt = np.exp(-0.5 * (ky**2 + kx**2) * (2 * np.pi * scale) ** 2)
    smooth = np.fft.ifft2(np.fft.fft2(noise) * filt).real
    std = smooth.std(axis=(-2, -1), keepdims=True)
    return smooth / np.where(std > 0, std, 1)


def _sea_mask(rng: np.random.Generator, shape: tuple[int, int], land_fraction: float) -> np.ndarray:
    """A coast along the east side with a wiggly shoreline; True on sea."""
    ny, nx = shape
    if land_fraction <= 0:
        return np.ones(shape, dtype=bool)
    x = np.linspace(0, 1, nx)[None, :].repeat(ny, axis=0)
    coast = x + 0.15 * _smooth_noise(rng, shape, scale=max(ny, nx) / 6)
    threshold = np.quantile(coast, 1 - land_fraction)
    return coast < threshold


def synthetic_dataset(
    *,
    shape: tuple[int, int] = (32, 32),
    hours: int = 24 * 40,
    variables: tuple[str, ...] | list[str] = ("uo", "vo", "so", "zos"),
    start: str = "2024-01-01",
    seed: int = 0,
    land_fraction: float = 0.2,
    step_hours: float = 1.0,
    bbox: BBox | None = None,
) -> xr.Dataset:
    """Store-layout dataset: float32 fields NaN on land plus ``sea_mask``; ``hours`` steps of ``step_hours``."""
    rng = np.random.default_rng(seed)
    bbox = bbox or BBox()
    ny, nx = shape
    dlat = (bbox.lat_max - bbox.lat_min) / ny
    dlon = (bbox.lon_max - bbox.lon_min) / nx
    lat = bbox.lat_min + dlat * (np.arange(ny) + 0.5)
    lon = bbox.lon_min + dlon * (np.arange(nx) + 0.5)
    times = pd.date_range(start, periods=hours, freq=pd.Timedelta(hours=step_hours))
    t = ((times - times[0]) / pd.Timedelta(hours=1)).to_numpy()[:, None, None]
    yy, xx = np.meshgrid(np.linspace(0, 1, ny), np.linspace(0, 1, nx), indexing="ij")
    sea = _sea_mask(rng, shape, land_fraction)

    # slow component: a few smooth random patterns whose weights drift over days
    n_modes = 3
    patterns = _smooth_noise(rng, (n_modes, ny, nx), scale=max(ny, nx) / 5)
    data_vars: dict[str, tuple] = {}
    for index, var in enumerate(variables):
        mean, tide, slow, phase = _PROFILES.get(var, (float(index), 0.5, 0.3, index * 0.7))
        # M2 travels north-east, S2 north-west: spring-neap beating and spatial structure
        m2 = np.cos(2 * np.pi * (t / M2_HOURS - 1.2 * yy - 0.8 * xx) + phase)
        s2 = 0.35 * np.cos(2 * np.pi * (t / S2_HOURS - 0.9 * yy + 0.5 * xx) + phase)
        periods = rng.uniform(72, 240, n_modes)
        phases = rng.uniform(0, 2 * np.pi, n_modes)
        weights = np.sin(2 * np.pi * t[..., 0, 0][:, None] / periods + phases)  # [time, modes]
        drift = np.einsum("tm,myx->tyx", weights, patterns) / np.sqrt(n_modes)
        field = mean + tide * (m2 + s2) * (0.6 + 0.4 * yy) + slow * drift
        field = np.where(sea, field, np.nan).astype(np.float32)
        data_vars[var] = (("time", "latitude", "longitude"), field)
    data_vars["sea_mask"] = (("latitude", "longitude"), sea)
    return xr.Dataset(
        data_vars,
        coords={
            "time": times.values.astype("datetime64[ns]"),
            "latitude": lat.astype(np.float64),
            "longitude": lon.astype(np.float64),
        },
    )


def synthetic_store(
    path: Path | str,
    *,
    shape: tuple[int, int] = (32, 32),
    hours: int = 24 * 40,
    variables: tuple[str, ...] | list[str] = ("uo", "vo", "so", "zos"),
    start: str = "2024-01-01",
    seed: int = 0,
    land_fraction: float = 0.2,
    step_hours: float = 1.0,
    chunk_hours: int = 24,
    stats_period: tuple[str, str] | None = None,
) -> Path:
    """Write a valid store of :func:`synthetic_dataset` at ``path`` (replacing one there); returns the path."""
    ds = synthetic_dataset(
        shape=shape,
        hours=hours,
        variables=variables,
        start=start,
        seed=seed,
        land_fraction=land_fraction,
        step_hours=step_hours,
    )
    times = pd.DatetimeIndex(ds["time"].values)
    config = DataConfig(
        name=Path(path).stem,
        source="twin",
        months=f"{times[0]:%Y-%m}:{times[-1]:%Y-%m}",
        variables=list(variables),
        grid=GridConfig(shape=shape),
        store=StoreConfig(path=Path(path), chunk_hours=chunk_hours, stats_period=stats_period),
    )
    write_new_store(path, ds, chunk_hours=chunk_hours, overwrite=True)
    finalise_store(path, config=to_dict(config), stats_period=stats_period, step_hours=step_hours)
    return Path(path)


_THREE_D = {"uo", "vo", "so", "thetao"}


def smooth_field(lat: np.ndarray, lon: np.ndarray, hours: np.ndarray, var: str) -> np.ndarray:
    """An analytic smooth field [time, lat, lon] (float64): a travelling tide on a mean gradient.

    Defined on coordinates, so the same field can be sampled on any grid (tests compare
    regridded values against it).
    """
    mean, tide, slow, phase = _PROFILES.get(var, (1.0, 0.5, 0.3, 0.0))
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    t = np.asarray(hours, dtype=float)[:, None, None]
    wave = np.cos(2 * np.pi * (t / M2_HOURS - 0.5 * la - 0.3 * lo) + phase)
    return mean + tide * wave + slow * np.sin(0.7 * la) * np.cos(0.5 * lo)


def cmems_like_file(
    path: Path | str,
    *,
    times: pd.DatetimeIndex | np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    variables: tuple[str, ...] | list[str] = ("uo", "vo", "so", "zos"),
    depths: tuple[float, ...] = (0.494, 1.541),
    land: np.ndarray | None = None,
) -> Path:
    """Write a CMEMS-shaped NetCDF file of :func:`smooth_field` values (deeper levels differ).

    ``land`` (bool [lat, lon]) marks land cells, written as the fill value (NaN on read).
    3-D variables (uo, vo, so, thetao) get the ``depth`` axis; others are (time, lat, lon).
    """
    times = pd.DatetimeIndex(times)
    hours = ((times - pd.Timestamp("2024-01-01")) / pd.Timedelta(hours=1)).to_numpy()
    data_vars = {}
    encoding = {}
    for var in variables:
        field = smooth_field(latitude, longitude, hours, var)
        if land is not None:
            field = np.where(land, np.nan, field)
        if var in _THREE_D:
            # deeper levels are offset so a wrong level choice is visible
            field = np.stack([field + 0.5 * level for level in range(len(depths))], axis=1)
            dims = ("time", "depth", "latitude", "longitude")
        else:
            dims = ("time", "latitude", "longitude")
        data_vars[var] = (dims, field.astype(np.float32), {"units": "1", "standard_name": var})
        encoding[var] = {"_FillValue": np.float32(9.96921e36), "dtype": "float32"}
    coords = {
        "time": times.values.astype("datetime64[ns]"),
        "latitude": (
            "latitude",
            np.asarray(latitude, dtype=np.float32),
            {"units": "degrees_north"},
        ),
        "longitude": (
            "longitude",
            np.asarray(longitude, dtype=np.float32),
            {"units": "degrees_east"},
        ),
    }
    if any(v in _THREE_D for v in variables):
        coords["depth"] = (
            "depth",
            np.asarray(depths, dtype=np.float32),
            {"units": "m", "positive": "down"},
        )
    ds = xr.Dataset(
        data_vars,
        coords=coords,
        attrs={"Conventions": "CF-1.8", "source": "seacast.synthetic test file"},
    )
    encoding["time"] = {"units": "hours since 1950-01-01", "dtype": "float64"}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.to_netcdf(path, encoding=encoding)
    return path
