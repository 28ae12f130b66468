"""Raw NetCDF files -> the seacast Zarr store, on a regular latitude/longitude grid.

The work is split into *units*, one per calendar month (the raw layout's
``<raw_dir>/<source>/<dataset>/<YYYY-MM>.nc``; the files of all datasets of a month
are merged). Units are regridded in parallel with dask (threads, or a
``dask.distributed`` scheduler) and written in time order, so memory holds only a few
months of *target-grid* frames; source files are read a block of time steps at a time.

Rules (the store contract is in :mod:`seacast.store`):

* Regridding uses xarray-regrid, NaN-aware: conservative keeps a target cell when at
  least ``grid.min_sea_fraction`` of its area is sea; bilinear normalises by the sea
  weight; nearest takes the nearest source cell.
* Variables with a depth axis take the shallowest level.
* ``sea_mask`` comes from the regridded data (sea where every variable is finite).
* The store keeps the source's regular step; mixing steps is an error.
* Time steps already in the store are skipped (regridding twice changes nothing);
  later steps are appended; earlier ones rebuild the store in a temporary directory.
* Duplicated or unsorted times are sorted and de-duplicated (first occurrence wins)
  and reported; frames that are all NaN are dropped and reported; missing steps are
  recorded as gaps, never filled.
* The store records the DataConfig; a store made with a different grid, box or
  variables is refused unless ``overwrite``.

Public functions: :func:`regrid_config` (the ``--config`` form), :func:`regrid_files`
(the direct form), :func:`target_grid`, :func:`regrid_frames`, :func:`raw_units`,
and the :class:`RegridReport` they return.
"""

from __future__ import annotations

import gc
import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr
import xarray_regrid  # noqa: F401  (registers the .regrid accessor)

from seacast.config import BBox, DataConfig, FilesSource, GridConfig, StoreConfig, to_dict
from seacast.errors import DataError
from seacast.interrupts import check_interrupt, safe_points
from seacast.raw import expected_times
from seacast.sources import raw_source
from seacast.store import (
    ATTR_CONFIG,
    ATTR_GAPS,
    append_to_store,
    create_store,
    finalise_store,
    open_store,
    replace_store,
    staged_copy,
    store_gaps,
    store_step_hours,
    store_write_lock,
    temporary_store_path,
)

# Coordinate names other products use, mapped to the CMEMS ones on read.
COORD_ALIASES = {
    "lat": "latitude",
    "lon": "longitude",
    "nav_lat": "latitude",
    "nav_lon": "longitude",
    "deptht": "depth",
}
# Config keys that define what a store holds; a store made with other values is refused.
STORE_DEFINING_KEYS = ("bbox", "variables", "grid", "store.chunk_hours")
BLOCK_BYTES = 16 * 2**20  # source bytes per variable read and regridded at once (bounds memory)
ProgressFn = Callable[[str, int, int], None]


# --------------------------------------------------------------------------- report


@dataclass
class RegridReport:
    """What a regrid did and found; the CLI prints :meth:`messages`."""

    store: Path
    created: bool = False
    rebuilt: bool = False
    units: list[str] = field(default_factory=list)
    frames_written: int = 0
    frames_already_present: int = 0
    step_hours: float = 1.0
    duplicates: dict[str, int] = field(default_factory=dict)
    unsorted: list[str] = field(default_factory=list)
    all_nan_frames: list[str] = field(default_factory=list)
    grids: dict[str, list[str]] = field(default_factory=dict)
    gaps: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def messages(self) -> list[str]:
        """Human-readable lines, most important first."""
        lines = []
        if self.frames_written == 0:
            lines.append(
                f"{self.store}: nothing new ({self.frames_already_present} time steps already in the store)"
            )
        else:
            verb = "created" if self.created else "rebuilt" if self.rebuilt else "appended to"
            lines.append(
                f"{verb} {self.store}: {self.frames_written} time steps every {self.step_hours:g} h "
                f"from {len(self.units)} unit(s) ({', '.join(self.units)})"
            )
            if self.frames_already_present:
                lines.append(
                    f"skipped {self.frames_already_present} time steps already in the store"
                )
        for name, count in self.duplicates.items():
            lines.append(f"{name}: dropped {count} duplicated time step(s) (kept the first)")
        for name in self.unsorted:
            lines.append(f"{name}: times were not in order; sorted them")
        if self.all_nan_frames:
            shown = ", ".join(self.all_nan_frames[:5]) + (
                " ..." if len(self.all_nan_frames) > 5 else ""
            )
            lines.append(
                f"dropped {len(self.all_nan_frames)} all-NaN frame(s), recorded as gaps: {shown}"
            )
        if len(self.grids) > 1:
            lines.append(
                f"the inputs use {len(self.grids)} different source grids; all were regridded to the same target grid:"
            )
            lines.extend(f"  {grid}: {', '.join(files)}" for grid, files in self.grids.items())
        if self.gaps:
            shown = ", ".join(f"{a} .. {b}" for a, b in self.gaps[:5]) + (
                " ..." if len(self.gaps) > 5 else ""
            )
            lines.append(f"{len(self.gaps)} gap(s) in the store (recorded, not filled): {shown}")
        lines.extend(self.warnings)
        return lines


# --------------------------------------------------------------------------- source files


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


# --------------------------------------------------------------------------- memory


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): the allocator returns memory on its own terms
        return None


_LIBC = _libc()


def _large_arrays_from_mmap() -> None:
    """Make glibc serve arrays >= 1 MiB from mmap, so freed blocks go back to the OS.

    glibc otherwise raises that threshold after the first frees and serves later
    blocks from the heap, where freed source blocks fragment: a month of 300 x 330
    frames then left ~1.5 GB resident instead of ~0.5 GB.
    """
    if _LIBC is not None:
        _LIBC.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def _release_memory() -> None:
    """Free loaded source blocks now and hand the pages back to the OS.

    xarray objects sit in reference cycles, so a block is freed only at the next
    full garbage collection: without ``gc.collect()`` a month of 300 x 330 frames
    piled up ~0.8 GB of blocks already regridded.
    """
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)


# --------------------------------------------------------------------------- regridding


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


# --------------------------------------------------------------------------- parallel map


def _map_ordered(
    func: Callable[[Any], UnitResult],
    items: list[Any],
    dask_address: str | None,
    workers: int | None,
) -> Iterator[UnitResult]:
    """Run ``func`` over ``items`` with dask, a window of a few at a time, yielding in order.

    The window bounds memory: only that many regridded units are held at once.
    """
    if not items:
        return
    if dask_address:
        try:
            from dask.distributed import Client
        except ImportError:  # pragma: no cover - distributed is a dependency
            raise DataError(
                "dask.distributed is not installed", "pip install 'dask[distributed]'"
            ) from None
        try:
            client = Client(dask_address, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise DataError(
                f"cannot reach the dask scheduler at {dask_address} ({exc})",
                "start it (dask scheduler / dask worker) or drop --dask-address to use local threads",
            ) from None
        try:
            window = max(1, min(8, sum(client.nthreads().values()) or 1))
            for start in range(0, len(items), window):
                futures = client.map(func, items[start : start + window], pure=False)
                yield from client.gather(futures)
        finally:
            client.close()
        return
    window = workers or max(1, min(4, os.cpu_count() or 1))
    for start in range(0, len(items), window):
        batch = [dask.delayed(func)(item) for item in items[start : start + window]]
        yield from dask.compute(*batch, scheduler="threads", num_workers=window)


# --------------------------------------------------------------------------- the store side


def _defining(config: dict[str, Any]) -> dict[str, Any]:
    """The config values that define what a store holds (see STORE_DEFINING_KEYS)."""
    result = {}
    for key in STORE_DEFINING_KEYS:
        node: Any = config
        for part in key.split("."):
            node = node.get(part) if isinstance(node, dict) else None
        result[key] = node
    return result


def _check_same_store(stored: dict[str, Any], new: dict[str, Any], path: Path) -> None:
    a, b = _defining(stored), _defining(new)
    diffs = [
        f"{k}: store has {json.dumps(a[k])}, now {json.dumps(b[k])}" for k in a if a[k] != b[k]
    ]
    if diffs:
        raise DataError(
            f"the store {path} was made with a different config:\n    " + "\n    ".join(diffs),
            "pass --overwrite to remake it, or write to another store path",
        )


def _merged_months(
    stored: dict[str, Any] | None, config: DataConfig, times: np.ndarray
) -> dict[str, str]:
    """The month range covering the stored config, this config and the data."""
    months = [config.months.start, config.months.end]
    if stored and isinstance(stored.get("months"), dict):
        months += [stored["months"].get("start"), stored["months"].get("end")]
    if len(times):
        months += [f"{pd.Timestamp(times.min()):%Y-%m}", f"{pd.Timestamp(times.max()):%Y-%m}"]
    months = [m for m in months if m]
    return {"start": min(months), "end": max(months)}


def _sea_mask(data: xr.Dataset) -> xr.DataArray:
    """Sea where every variable is finite in at least half the frames."""
    masks = [data[v].notnull().mean("time") >= 0.5 for v in data.data_vars]
    mask = masks[0]
    for m in masks[1:]:
        mask = mask & m
    return mask.astype(bool)


def _unit_step(units: list[Unit], stored_step: float | None) -> float:
    steps: dict[float, list[str]] = {}
    for unit in units:
        for f in unit.files:
            if f.step_hours is not None:
                steps.setdefault(round(f.step_hours, 6), []).append(str(f.path))
    if len(steps) > 1:
        detail = "; ".join(f"{s:g} h: {', '.join(files[:3])}" for s, files in sorted(steps.items()))
        raise DataError(
            f"the inputs mix time steps ({detail})",
            "regrid hourly and daily data into separate stores",
        )
    if steps:
        step = next(iter(steps))
    else:
        all_times = np.unique(np.concatenate([u.times for u in units]))
        diffs = np.diff(all_times) / np.timedelta64(1, "h")
        step = float(diffs.min()) if len(diffs) else (stored_step or 1.0)
    if stored_step is not None and abs(stored_step - step) > 1e-6:
        raise DataError(
            f"the inputs are every {step:g} h but the store is every {stored_step:g} h",
            "regrid them into another store, or pass --overwrite",
        )
    return float(step)


def _first_valid_frame_mask(
    unit: Unit, variables: Sequence[str], target: xr.Dataset, method: str, min_sea_fraction: float
) -> xr.DataArray | None:
    """Sea cells (all variables finite) of the first frame of ``unit`` that is not all NaN."""
    masks = []
    for source in unit.files:
        wanted = [v for v in variables if v in source.variables]
        if not wanted:
            continue
        with _open(source.path) as ds:
            prepared = _prepare_source(ds, wanted, target)
            if prepared.sizes["latitude"] < 2 or prepared.sizes["longitude"] < 2:
                return None  # process_unit reports this with the file name
            for index in np.argsort(source.times, kind="stable")[:24]:
                try:
                    frame = regrid_frames(
                        prepared.isel(time=[int(index)]).load(), target, method, min_sea_fraction
                    )
                except DataError:
                    raise
                except Exception:  # unreadable: process_unit names the file
                    return None
                finite = [frame[v].isel(time=0).notnull() for v in wanted]
                if all(bool(m.any()) for m in finite):
                    masks.extend(finite)
                    break
    if not masks:
        return None
    mask = masks[0]
    for m in masks[1:]:
        mask = mask & m
    return mask


def regrid_units(
    units: list[Unit],
    config: DataConfig,
    *,
    overwrite: bool = False,
    dask_address: str | None = None,
    workers: int | None = None,
    span: tuple[Any, Any] | None = None,
    progress: ProgressFn | None = None,
) -> RegridReport:
    """Regrid ``units`` into the store ``config.store.path`` (create, append or rebuild)."""
    path = Path(config.store.path)
    report = RegridReport(store=path)
    if not units:
        raise DataError(
            "no input files to regrid", "fetch data first (seacast fetch) or give NetCDF files"
        )
    variables = list(config.variables)
    for unit in units:
        _check_unit_variables(unit, variables)
        for f in unit.files:
            report.grids.setdefault(f.grid, []).append(f.path.name)

    with store_write_lock(path), safe_points():
        _regrid_locked(units, config, report, overwrite, dask_address, workers, span, progress)
    _coverage_warning(report, path)
    return report


def _regrid_locked(
    units: list[Unit],
    config: DataConfig,
    report: RegridReport,
    overwrite: bool,
    dask_address: str | None,
    workers: int | None,
    span: tuple[Any, Any] | None,
    progress: ProgressFn | None,
) -> None:
    """:func:`regrid_units` holding the store lock: every write goes to a sibling, swapped in last."""
    path = Path(config.store.path)
    existing, stored_config = _existing_store(path, config, overwrite)
    step = _unit_step(units, store_step_hours(existing) if existing is not None else None)
    report.step_hours = step
    have = existing["time"].values if existing is not None else np.array([], dtype="datetime64[ns]")

    incoming = np.unique(np.concatenate([u.times for u in units]))
    new_times = incoming[~np.isin(incoming, have)]
    report.frames_already_present = int(len(incoming) - len(new_times))
    stored = dict(to_dict(config))
    stored["months"] = _merged_months(stored_config, config, np.union1d(have, new_times))
    if existing is not None and len(new_times) == 0:
        report.gaps = _nothing_new(existing, path, config, stored, stored_config, step, span)
        return

    todo = [u for u in units if np.isin(u.times, new_times).any()]
    rebuild = existing is not None and len(have) > 0 and bool((new_times < have[-1]).any())
    report.created = existing is None
    report.rebuilt = rebuild
    target = target_grid(config.bbox, config.grid.shape)
    mask: xr.DataArray | None = existing["sea_mask"].load() if existing is not None else None
    run_mask = _run_sea_mask(todo, config, target) if mask is None and len(todo) > 1 else None
    fresh = existing is None or rebuild
    # an append goes to a hard-linked copy that is swapped in whole: a kill never leaves half of it
    target_path = temporary_store_path(path) if fresh else staged_copy(path)
    write = _StoreWrite(
        config, report, existing, have, rebuild, target_path, target, mask, run_mask
    )
    try:
        _write_months(todo, write, dask_address, workers, progress)
        if not write.written:
            raise _nothing_written(report, config)
        attrs = finalise_store(
            target_path,
            config=stored,
            stats_period=config.store.stats_period,
            step_hours=step,
            span=span,
        )
        report.gaps = attrs[ATTR_GAPS]
        if existing is not None:
            existing.close()
        replace_store(target_path, path)
    finally:
        if target_path.exists():
            shutil.rmtree(target_path, ignore_errors=True)


def _existing_store(
    path: Path, config: DataConfig, overwrite: bool
) -> tuple[xr.Dataset | None, dict[str, Any] | None]:
    """The store at ``path`` and the config it records (None, None for a new or overwritten one).

    A store made with another grid, box or variables is refused (see :func:`_check_same_store`).
    """
    if not path.exists() or overwrite:
        return None, None
    existing = open_store(path)
    stored_config = json.loads(existing.attrs[ATTR_CONFIG])
    _check_same_store(stored_config, to_dict(config), path)
    return existing, stored_config


def _nothing_new(
    existing: xr.Dataset,
    path: Path,
    config: DataConfig,
    stored: dict[str, Any],
    stored_config: dict[str, Any] | None,
    step: float,
    span: tuple[Any, Any] | None,
) -> list[list[str]]:
    """No new frame: the store's gaps, after new statistics if the config changed."""
    if stored_config is None or stored_config == stored:
        return store_gaps(existing)
    # e.g. another stats_period: new statistics, same frames
    attrs = finalise_store(
        path, config=stored, stats_period=config.store.stats_period, step_hours=step, span=span
    )
    return attrs[ATTR_GAPS]


def _run_sea_mask(todo: list[Unit], config: DataConfig, target: xr.Dataset) -> xr.DataArray | None:
    """Sea where every month's first valid frame has data.

    Months may come on different source grids with different coasts: so no month
    leaves NaN on a sea cell.
    """
    run_mask: xr.DataArray | None = None
    for unit in todo:
        check_interrupt()
        unit_mask = _first_valid_frame_mask(
            unit, list(config.variables), target, config.grid.method, config.grid.min_sea_fraction
        )
        if unit_mask is not None:
            run_mask = unit_mask if run_mask is None else run_mask & unit_mask
    return run_mask


@dataclass
class _StoreWrite:
    """One regrid's writes into ``target_path``: what they merge with and the sea mask they share."""

    config: DataConfig
    report: RegridReport
    existing: xr.Dataset | None
    have: np.ndarray  # times already in the store
    rebuild: bool  # new times before stored ones: every month is rewritten
    target_path: Path
    target: xr.Dataset  # the target grid
    mask: xr.DataArray | None  # the store's sea mask, fixed by the first month written
    run_mask: xr.DataArray | None  # sea in every month of this run (several months only)
    written: bool = False

    @property
    def fresh(self) -> bool:
        """Whether the first month creates the store (new or rebuilt) rather than appending."""
        return self.existing is None or self.rebuild


def _write_months(
    todo: list[Unit],
    write: _StoreWrite,
    dask_address: str | None,
    workers: int | None,
    progress: ProgressFn | None,
) -> None:
    """Regrid ``todo`` in parallel and write the months in time order (merged with the stored ones in a rebuild)."""
    config = write.config
    variables = list(config.variables)

    def work(unit: Unit) -> UnitResult:
        _large_arrays_from_mmap()  # here too: a distributed worker is another process
        with dask.config.set(scheduler="synchronous"):
            return process_unit(
                unit,
                variables,
                write.target,
                config.grid.method,
                config.grid.min_sea_fraction,
                write.have,
            )

    # in a rebuild the stored frames are rewritten month by month, merged with the new ones
    stored_months = {f"{pd.Timestamp(t):%Y-%m}" for t in write.have} if write.rebuild else set()
    keys = sorted({u.key for u in todo} | stored_months)
    by_key = {u.key: u for u in todo}
    results = _map_ordered(work, [by_key[k] for k in keys if k in by_key], dask_address, workers)
    for done, key in enumerate(keys, start=1):
        check_interrupt()
        parts = _month_parts(key, write, next(results) if key in by_key else None)
        if progress:
            progress(key, done, len(keys))
        if not parts:
            continue
        data = xr.concat(parts, dim="time").sortby("time") if len(parts) > 1 else parts[0]
        data = _masked(data, key, write)
        del parts
        _release_memory()
        if not write.written and write.fresh:
            create_store(
                write.target_path,
                data.assign(sea_mask=write.mask),
                chunk_hours=config.store.chunk_hours,
            )
        else:
            append_to_store(write.target_path, data)
        write.written = True


def _month_parts(key: str, write: _StoreWrite, result: UnitResult | None) -> list[xr.Dataset]:
    """The frames of month ``key`` to write: the stored ones (in a rebuild) and the new ones.

    Records what the unit's regrid found in the report.
    """
    parts = []
    if write.rebuild and write.existing is not None:
        month = pd.Period(key, freq="M")
        old = write.existing.drop_vars("sea_mask").sel(time=slice(month.start_time, month.end_time))
        if old.sizes["time"]:
            parts.append(old.load())
    if result is not None:
        report = write.report
        report.duplicates.update(result.duplicates)
        report.unsorted.extend(result.unsorted)
        report.all_nan_frames.extend(result.all_nan_frames)
        if result.data is not None:
            parts.append(result.data)
            report.units.append(key)
            report.frames_written += int(result.data.sizes["time"])
    return parts


def _masked(data: xr.Dataset, key: str, write: _StoreWrite) -> xr.Dataset:
    """``data`` NaN off the store's sea mask (made from the first month written); warns of sea holes."""
    config = write.config
    variables = list(config.variables)
    if write.mask is None:
        mask = _sea_mask(data)
        if write.run_mask is not None:
            mask = mask & write.run_mask
        if not bool(mask.any()):
            raise DataError(
                f"no sea cell in the box {config.bbox.model_dump()} for {key}: every value is NaN",
                "check that the bbox overlaps the data (see the files' latitude/longitude range)",
            )
        write.mask = mask
    mask = write.mask
    data = data.where(mask)
    holes = int((data[variables[0]].isnull() & mask).any("time").sum())
    for var in variables[1:]:
        holes = max(holes, int((data[var].isnull() & mask).any("time").sum()))
    if holes:
        write.report.warnings.append(
            f"{key}: {holes} sea cell(s) are NaN in some frames (a source with another coast or "
            "missing values); left as NaN, not filled"
        )
    return data


def _nothing_written(report: RegridReport, config: DataConfig) -> DataError:
    """The error when every frame of the inputs was all NaN or already stored."""
    nan_frames = report.all_nan_frames
    listed = ", ".join(nan_frames[:3]) + (
        f" and {len(nan_frames) - 3} more" if len(nan_frames) > 3 else ""
    )
    return DataError(
        "every frame of the inputs is NaN or already in the store: nothing to write"
        + (f" ({len(nan_frames)} all-NaN frame(s): {listed})" if nan_frames else ""),
        "check that the files hold data inside the bbox "
        f"{config.bbox.model_dump()} (e.g. ncdump -h, or xarray), and fetch them again if not",
    )


def _coverage_warning(report: RegridReport, path: Path) -> None:
    ds = open_store(path)
    fraction = float(ds["sea_mask"].mean())
    if fraction < 1:
        report.warnings.append(
            f"sea fraction of the grid: {fraction:.1%} (the rest is land or outside the data)"
        )


# --------------------------------------------------------------------------- entry points


def raw_units(config: DataConfig) -> list[Unit]:
    """The month units of ``config``'s raw layout (``<raw_dir>/<source>/<dataset>/<YYYY-MM>.nc``)."""
    root = Path(config.raw_dir) / config.source
    datasets = raw_source(config.source).datasets(config)
    units = []
    for month in config.months.months():
        paths = [root / d / f"{month}.nc" for d in datasets if (root / d / f"{month}.nc").exists()]
        if paths:
            units.append(Unit(month, [scan_file(p, config.variables) for p in paths]))
    if not units:
        raise DataError(
            f"no raw files for months {config.months} under {root}/<dataset>/<YYYY-MM>.nc",
            f"run `seacast fetch --config <the data config>` first, or check raw_dir ({config.raw_dir})",
        )
    return units


def _span(config: DataConfig, step_hours: float) -> tuple[Any, Any]:
    return expected_times(config.months.start, step_hours)[0], expected_times(
        config.months.end, step_hours
    )[-1]


def regrid_config(
    config: DataConfig,
    *,
    overwrite: bool = False,
    dask_address: str | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> RegridReport:
    """Regrid the raw months of a data config into its store."""
    units = raw_units(config)
    step = _unit_step(units, None)
    return regrid_units(
        units,
        config,
        overwrite=overwrite,
        dask_address=dask_address,
        workers=workers,
        span=_span(config, step),
        progress=progress,
    )


def regrid_files(
    inputs: Sequence[Path | str],
    out: Path | str,
    *,
    bbox: BBox,
    shape: tuple[int, int],
    variables: Sequence[str] | None = None,
    method: str = "conservative",
    min_sea_fraction: float = GridConfig.model_fields["min_sea_fraction"].default,
    chunk_hours: int = 24,
    stats_period: tuple[str, str] | None = None,
    overwrite: bool = False,
    dask_address: str | None = None,
    workers: int | None = None,
    progress: ProgressFn | None = None,
) -> RegridReport:
    """Regrid NetCDF files directly into the store ``out``; files are grouped by the month of their first time."""
    paths = [Path(p) for p in inputs]
    scanned = [scan_file(p, variables) for p in paths]
    if variables is None:
        variables = []
        for f in scanned:
            variables += [v for v in f.variables if v not in variables]
        if not variables:
            raise DataError(
                f"no (time, latitude, longitude) variables in {', '.join(map(str, paths))}",
                "name the variables with --variables",
            )
    groups: dict[str, list[SourceFile]] = {}
    for f in scanned:
        if len(f.times) == 0:
            raise DataError(f"{f.path} has no time steps", "remove it from the inputs")
        groups.setdefault(f"{pd.Timestamp(f.times.min()):%Y-%m}", []).append(f)
    units = [Unit(key, files) for key, files in sorted(groups.items())]
    times = np.concatenate([u.times for u in units])
    config = DataConfig(
        name=Path(out).stem,
        source="files",
        files=FilesSource(glob=" ".join(str(p) for p in paths)),
        bbox=bbox,
        months=f"{pd.Timestamp(times.min()):%Y-%m}:{pd.Timestamp(times.max()):%Y-%m}",
        variables=list(variables),
        grid=GridConfig(shape=shape, method=method, min_sea_fraction=min_sea_fraction),
        store=StoreConfig(path=Path(out), chunk_hours=chunk_hours, stats_period=stats_period),
    )
    return regrid_units(
        units,
        config,
        overwrite=overwrite,
        dask_address=dask_address,
        workers=workers,
        progress=progress,
    )
