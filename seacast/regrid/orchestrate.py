"""The store side and the entry points: units regridded into a store (create, append or rebuild),
under its lock, every write to a sibling swapped in last.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dask
import numpy as np
import pandas as pd
import xarray as xr

from seacast.config import BBox, DataConfig, FilesSource, GridConfig, StoreConfig, to_dict
from seacast.errors import DataError
from seacast.interrupts import check_interrupt, safe_points
from seacast.raw import expected_times
from seacast.regrid.memory import _large_arrays_from_mmap, _release_memory
from seacast.regrid.numerics import (
    UnitResult,
    _prepare_source,
    process_unit,
    regrid_frames,
    target_grid,
)
from seacast.regrid.parallel import _map_ordered
from seacast.regrid.report import RegridReport
from seacast.regrid.scan import SourceFile, Unit, _check_unit_variables, _open, scan_file
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

# Config keys that define what a store holds; a store made with other values is refused.
STORE_DEFINING_KEYS = ("bbox", "variables", "grid", "store.chunk_hours")


ProgressFn = Callable[[str, int, int], None]


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
