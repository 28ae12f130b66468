"""The regridding itself: the target grid, a source cut to the box, NaN-aware xarray-regrid, and
one unit regridded block by block of time steps.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr
import xarray_regrid  # noqa: F401  (registers the .regrid accessor)

from seacast.config import BBox
from seacast.errors import DataError
from seacast.interrupts import check_interrupt
from seacast.regrid.memory import _release_memory
from seacast.regrid.scan import NETCDF_LOCK, SourceFile, Unit, _open

BLOCK_BYTES = 16 * 2**20  # source bytes per variable read and regridded at once (bounds memory)


def target_grid(bbox: BBox, shape: tuple[int, int]) -> xr.Dataset:
    """The store grid: ``shape`` cell centres evenly spread over ``bbox``."""
    ny, nx = shape
    dlat = (bbox.lat_max - bbox.lat_min) / ny
    dlon = (bbox.lon_max - bbox.lon_min) / nx
    lat = bbox.lat_min + dlat * (np.arange(ny) + 0.5)
    lon = bbox.lon_min + dlon * (np.arange(nx) + 0.5)
    return xr.Dataset(
        coords={
            "latitude": ("latitude", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "longitude": (
                "longitude",
                lon,
                {"units": "degrees_east", "standard_name": "longitude"},
            ),
        }
    )


def _prepare_source(ds: xr.Dataset, variables: Sequence[str], target: xr.Dataset) -> xr.Dataset:
    """Wanted variables at the surface, ascending coords, longitudes in the target's convention, cut to the box."""
    ds = ds[list(variables)]
    if "depth" in ds.dims:
        ds = ds.isel(depth=int(np.argmin(np.abs(ds["depth"].values)))).drop_vars(
            "depth", errors="ignore"
        )
    tlon = target["longitude"].values
    lon = ds["longitude"].values
    if tlon.min() < 0 and lon.max() > 180:
        ds = ds.assign_coords(longitude=((ds["longitude"] + 180) % 360) - 180)
    elif tlon.max() > 180 and lon.min() < 0:
        ds = ds.assign_coords(longitude=ds["longitude"] % 360)
    for coord in ("latitude", "longitude"):
        values = ds[coord].values
        if len(values) > 1 and not (np.diff(values) > 0).all():
            ds = ds.sortby(coord)
    # keep a margin of a few cells so edge target cells see all their source cells
    cut = {}
    for coord in ("latitude", "longitude"):
        src, tgt = ds[coord].values, target[coord].values
        res_src = float(np.median(np.diff(src))) if len(src) > 1 else 0.0
        res_tgt = float(np.median(np.diff(tgt))) if len(tgt) > 1 else 0.0
        margin = 2 * max(res_src, res_tgt)
        cut[coord] = slice(tgt.min() - margin, tgt.max() + margin)
    return ds.sel(cut)


def regrid_frames(
    source: xr.Dataset, target: xr.Dataset, method: str, min_sea_fraction: float
) -> xr.Dataset:
    """Regrid loaded frames (time, latitude, longitude) to ``target``, NaN-aware, as float32."""
    if source.sizes.get("latitude", 0) < 2 or source.sizes.get("longitude", 0) < 2:
        raise DataError(
            "the source grid has fewer than 2 cells across the box in latitude or longitude",
            "choose a bbox inside the data (see the source's latitude/longitude range)",
        )
    if method == "conservative":
        out = source.regrid.conservative(
            target, latitude_coord="latitude", skipna=True, nan_threshold=1.0 - min_sea_fraction
        )
    elif method == "bilinear":
        # interpolate the sea values and the sea weight, then normalise: coastal cells survive
        valid = source.notnull().astype(np.float32)
        value = source.fillna(0).regrid.linear(target)
        weight = valid.regrid.linear(target)
        out = (value / weight).where(weight >= min_sea_fraction)
    elif method == "nearest":
        out = source.regrid.nearest(target)
    else:
        raise DataError(
            f"unknown regrid method '{method}'", "use conservative, bilinear or nearest"
        )
    out = out.assign_coords(latitude=target["latitude"], longitude=target["longitude"])
    return out.astype(np.float32).transpose("time", "latitude", "longitude")


@dataclass
class UnitResult:
    """A regridded unit: frames on the target grid plus what was found on the way."""

    key: str
    data: xr.Dataset | None
    duplicates: dict[str, int]
    unsorted: list[str]
    all_nan_frames: list[str]


def process_unit(
    unit: Unit,
    variables: Sequence[str],
    target: xr.Dataset,
    method: str,
    min_sea_fraction: float,
    skip_times: np.ndarray | None = None,
) -> UnitResult:
    """Regrid one unit, block by block of time steps; drops ``skip_times`` (already stored)."""
    duplicates: dict[str, int] = {}
    unsorted: list[str] = []
    pieces: dict[str, list[xr.DataArray]] = {v: [] for v in variables}
    skip = np.asarray(skip_times if skip_times is not None else [], dtype="datetime64[ns]")
    for source in unit.files:
        wanted = [v for v in variables if v in source.variables]
        if not wanted:
            continue
        times = source.times
        if len(times) > 1 and (np.diff(times) < np.timedelta64(0)).any():
            unsorted.append(str(source.path))
        keep = _first_of_each_time(times)
        if len(keep) < len(times):
            duplicates[str(source.path)] = len(times) - len(keep)
        keep = keep[~np.isin(times[keep], skip)]
        if len(keep) == 0:
            continue
        for regridded in _regrid_source(source, wanted, keep, target, method, min_sea_fraction):
            for var in wanted:
                pieces[var].append(regridded[var])
    data, all_nan = _unit_frames(pieces, variables)
    return UnitResult(unit.key, data, duplicates, unsorted, all_nan)


def _first_of_each_time(times: np.ndarray) -> np.ndarray:
    """Indices of the first occurrence of each time, in time order."""
    order = np.argsort(times, kind="stable")
    _, first = np.unique(times[order], return_index=True)
    return order[first]


def _regrid_source(
    source: SourceFile,
    wanted: list[str],
    keep: np.ndarray,
    target: xr.Dataset,
    method: str,
    min_sea_fraction: float,
) -> Iterator[xr.Dataset]:
    """The time steps ``keep`` of one file regridded, a block of at most ``BLOCK_BYTES`` at a time."""
    ds = _open(source.path)
    try:
        prepared = _prepare_source(ds, wanted, target)
        if prepared.sizes["latitude"] < 2 or prepared.sizes["longitude"] < 2:
            raise DataError(
                f"no sea cell in the box: {source.path} ({source.grid}) has fewer than 2 cells "
                f"across the target box in latitude or longitude",
                "choose a bbox inside the data's latitude/longitude range",
            )
        frame_bytes = 4 * prepared.sizes["latitude"] * prepared.sizes["longitude"]
        block_frames = max(8, BLOCK_BYTES // frame_bytes)
        for start in range(0, len(keep), block_frames):
            check_interrupt()
            frames = _read_block(prepared, np.sort(keep[start : start + block_frames]), source.path)
            regridded = regrid_frames(frames.sortby("time"), target, method, min_sea_fraction)
            del frames
            yield regridded
            del regridded
            _release_memory()
    finally:
        with NETCDF_LOCK:
            ds.close()


def _read_block(prepared: xr.Dataset, block: np.ndarray, path: Path) -> xr.Dataset:
    """Load the sorted time indices ``block``; a DataError naming ``path`` if the file is unreadable."""
    # a contiguous run reads as one slice; NetCDF reads of index lists go element by element
    index = slice(int(block[0]), int(block[-1]) + 1) if (np.diff(block) == 1).all() else block
    try:
        with NETCDF_LOCK:
            return prepared.isel(time=index).load()
    except Exception as exc:  # truncated files fail on read, not on open
        raise DataError(
            f"{path} cannot be read ({type(exc).__name__}: {exc})",
            "the file is truncated or corrupt: delete it and fetch it again",
        ) from None


def _unit_frames(
    pieces: dict[str, list[xr.DataArray]], variables: Sequence[str]
) -> tuple[xr.Dataset | None, list[str]]:
    """The regridded pieces as one dataset of ``variables`` (None if empty), and the all-NaN frames dropped."""
    arrays = {}
    for var, parts in pieces.items():
        if not parts:
            continue
        da = xr.concat(parts, dim="time") if len(parts) > 1 else parts[0]
        da = da.sortby("time")
        _, first = np.unique(da["time"].values, return_index=True)
        arrays[var] = da.isel(time=first)
    if not arrays:
        return None, []
    data = xr.Dataset(arrays).transpose("time", "latitude", "longitude")
    for var in variables:
        if var not in data:
            data[var] = xr.full_like(next(iter(arrays.values())), np.nan).reindex(time=data["time"])
    data = data[list(variables)]
    # a frame where any variable is NaN everywhere carries no data: drop it, it becomes a gap
    empty = np.zeros(data.sizes["time"], dtype=bool)
    for var in variables:
        empty |= data[var].isnull().all(dim=("latitude", "longitude")).values
    all_nan = [pd.Timestamp(t).isoformat() for t in data["time"].values[empty]]
    data = data.isel(time=~empty)
    return (data if data.sizes["time"] else None), all_nan
