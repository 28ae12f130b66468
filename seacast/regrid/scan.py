"""Opening raw NetCDF files under CMEMS coordinate names and scanning them: :class:`SourceFile`,
the month :class:`Unit`, and the lock every NetCDF open and read takes.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import xarray as xr

from seacast.errors import DataError

# Coordinate names other products use, mapped to the CMEMS ones on read.
COORD_ALIASES = {
    "lat": "latitude",
    "lon": "longitude",
    "nav_lat": "latitude",
    "nav_lon": "longitude",
    "deptht": "depth",
}


@dataclass
class SourceFile:
    """What a scan of one raw file found (times as stored, unsorted ones included)."""

    path: Path
    variables: list[str]
    times: np.ndarray
    step_hours: float | None
    grid: str


@dataclass
class Unit:
    """The files regridded and written together (one calendar month)."""

    key: str
    files: list[SourceFile]

    @property
    def times(self) -> np.ndarray:
        return np.unique(np.concatenate([f.times for f in self.files]))


# HDF5 (under netCDF4) is not thread-safe, and xarray locks reads but not opening a file:
# months opened side by side by dask threads crashed the process (bus error in get_attrs).
# Opening, reading and closing a file take this lock; regridding runs in parallel outside it.
NETCDF_LOCK = threading.RLock()


def _open(path: Path) -> xr.Dataset:
    """Open a NetCDF file lazily with CMEMS coordinate names; DataError naming the file."""
    if not path.is_file():
        raise DataError(
            f"input file {path} does not exist", "check the path, or run `seacast fetch` first"
        )
    with NETCDF_LOCK:
        return _open_unlocked(path)


def _open_unlocked(path: Path) -> xr.Dataset:
    try:
        ds = xr.open_dataset(path)
    except Exception as exc:  # netCDF4/h5netcdf/scipy errors share no base class
        raise DataError(
            f"{path} cannot be opened as NetCDF ({type(exc).__name__}: {exc})",
            "the file is truncated or corrupt: delete it and fetch it again",
        ) from None
    renames = {
        k: v for k, v in COORD_ALIASES.items() if k in ds.variables and v not in ds.variables
    }
    if renames:
        ds = ds.rename(renames)
    for coord in ("time", "latitude", "longitude"):
        if coord not in ds.coords:
            ds.close()
            raise DataError(
                f"{path} has no '{coord}' coordinate (coords: {sorted(map(str, ds.coords))})",
                "map its names to CMEMS ones (files.rename in the config)",
            )
    return ds


def _grid_signature(ds: xr.Dataset) -> str:
    lat, lon = ds["latitude"].values, ds["longitude"].values
    return (
        f"{len(lat)}x{len(lon)} lat {float(lat.min()):.4f}..{float(lat.max()):.4f} "
        f"lon {float(lon.min()):.4f}..{float(lon.max()):.4f}"
    )


def scan_file(path: Path, variables: Sequence[str] | None) -> SourceFile:
    """Read a file's metadata: which wanted variables it holds, its times, step and grid."""
    ds = _open(Path(path))
    try:
        gridded = [
            str(v) for v in ds.data_vars if {"time", "latitude", "longitude"} <= set(ds[v].dims)
        ]
        held = gridded if variables is None else [v for v in variables if v in ds.data_vars]
        try:
            times = np.asarray(ds["time"].values, dtype="datetime64[ns]")
        except (TypeError, ValueError) as exc:
            raise DataError(
                f"{path}: time cannot be read as dates ({exc})", "check the file's time units"
            ) from None
        diffs = np.diff(np.unique(times)) / np.timedelta64(1, "h")
        step = float(np.median(diffs)) if len(diffs) else None
        if len(diffs) and not np.allclose(diffs % step, 0):
            raise DataError(
                f"{path}: time steps are irregular (spacings {sorted(set(diffs.tolist()))[:5]} h)",
                "use files with one regular step (hourly or daily)",
            )
        return SourceFile(Path(path), held, times, step, _grid_signature(ds))
    finally:
        ds.close()


def _check_unit_variables(unit: Unit, variables: Sequence[str]) -> None:
    held = {v for f in unit.files for v in f.variables}
    missing = [v for v in variables if v not in held]
    if missing:
        present: set[str] = set()
        for f in unit.files:
            with _open(f.path) as ds:
                present |= {str(v) for v in ds.data_vars}
        names = ", ".join(str(f.path) for f in unit.files)
        raise DataError(
            f"variable(s) {missing} not found in {names}; the file(s) hold {sorted(present)}",
            "choose variables from that list (--variables or the config's variables), or add the dataset that has them",
        )
