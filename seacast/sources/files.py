"""``source: files``: local NetCDF files, renamed to CMEMS names and split by month.

The files matched by ``files.glob`` are opened lazily, their variables and
coordinates renamed with ``files.rename`` (e.g. ``lat -> latitude``,
``swh -> VHM0``), and each configured month is written, through
:func:`seacast.raw.write_month_atomic`, to
``<raw_dir>/files/<files.dataset>/<YYYY-MM>.nc``. Times present in several
files are taken once (from the first file in name order).

A month is complete when the manifest lists it with the fingerprint of the files that
hold its times (their names, sizes and modification times) and of the renames:
:func:`plan_files` and :func:`fetch_files` both decide it so, so ``--dry-run`` lists
exactly the months a fetch writes.

Offers :func:`fetch_files`, :func:`plan_files`, :func:`matched_files`,
:func:`open_source_file` (one file, checked and renamed) and :data:`RAW_SOURCE` (the
:class:`~seacast.sources.base.RawSource` of ``files``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from seacast.config import DataConfig, FilesSource
from seacast.errors import ConfigError, DataError
from seacast.interrupts import check_interrupt
from seacast.raw import Manifest, MonthFile, write_month_atomic
from seacast.sources.base import (
    MarineClient,
    PlannedFile,
    ProgressCallback,
    format_bytes,
    no_progress,
)

SOURCE = "files"
REQUIRED_COORDS = ("time", "latitude", "longitude")


class SourceFileError(DataError):
    """An input file that cannot be read: stops the fetch, naming the file."""


def _settings(cfg: DataConfig) -> FilesSource:
    if cfg.files is None:
        raise ConfigError(
            "source is 'files' but the config has no 'files:' section",
            "add files.glob (and files.rename)",
        )
    return cfg.files


def matched_files(cfg: DataConfig) -> list[Path]:
    """The NetCDF files matched by ``files.glob``, in name order; an error if there are none."""
    pattern = _settings(cfg).glob
    paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True) if Path(p).is_file())
    if not paths:
        raise DataError(
            f"no files match files.glob '{pattern}' (relative to {Path.cwd()})",
            "check the pattern, e.g. --set files.glob='incoming/*.nc'",
        )
    return paths


def open_source_file(path: Path, settings: FilesSource) -> xr.Dataset:
    """Open one input file lazily, rename it to CMEMS names and keep the wanted variables.

    Raises a DataError naming the file when it cannot be opened, lacks a
    coordinate, or lacks a variable (listing the variables it has).
    """
    try:
        ds = xr.open_dataset(path)
    except Exception as exc:  # netCDF4/h5py/scipy errors share no base
        raise SourceFileError(
            f"{path} cannot be opened as NetCDF ({type(exc).__name__}: {exc}); it looks truncated or corrupt",
            "copy or download that file again, or move it out of the files.glob pattern",
        ) from None
    mapping = {
        old: new for old, new in settings.rename.items() if old in ds.variables or old in ds.dims
    }
    try:
        ds = ds.rename(mapping)
    except ValueError as exc:
        ds.close()
        raise DataError(
            f"files.rename {mapping} does not apply to {path}: {exc}",
            "fix the files.rename mapping",
        ) from None
    names = sorted({*map(str, ds.variables), *map(str, ds.dims)})
    for coord in REQUIRED_COORDS:
        if coord not in ds.variables:
            ds.close()
            raise DataError(
                f"{path} has no '{coord}' coordinate after renaming; it has {names}",
                f"map its name with files.rename, e.g. files.rename={{lat: latitude, lon: longitude}} (needs {coord})",
            )
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        ds.close()
        raise DataError(
            f"{path}: 'time' is not a CF-decodable datetime axis", "give the time variable CF units"
        )
    present = sorted(str(v) for v in ds.data_vars)
    wanted = settings.variables or [str(v) for v in ds.data_vars if "time" in ds[v].dims]
    missing = [v for v in wanted if v not in ds.data_vars]
    if missing:
        ds.close()
        raise DataError(
            f"{path} lacks variable(s) {missing}; the variables there are {present}",
            "add a files.rename entry (source name -> CMEMS name, e.g. swh: VHM0) or correct files.variables",
        )
    if not wanted:
        ds.close()
        raise DataError(
            f"{path} has no time-varying variable; it has {present}",
            "point files.glob at the data files",
        )
    return ds[wanted]


def _month_slice(ds: xr.Dataset, month: str) -> xr.Dataset:
    start = pd.Timestamp(f"{month}-01")
    end = start + pd.offsets.MonthBegin(1)
    times = ds["time"].values
    return ds.isel(
        time=np.flatnonzero((times >= start.to_datetime64()) & (times < end.to_datetime64()))
    )


def _fingerprint(settings: FilesSource, pieces: list[Path]) -> str:
    """What decides a month file: the mapping, the variables and the input files (name, size, mtime)."""
    stats = [(str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in pieces]
    payload = {
        "rename": settings.rename,
        "variables": settings.variables,
        "step": settings.step_hours,
        "files": stats,
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def _write_month(pieces: list[tuple[Path, xr.Dataset]], month: str, tmp: Path) -> None:
    parts = []
    for path, ds in pieces:
        try:
            parts.append(_month_slice(ds, month).load())
        except Exception as exc:  # a file truncated after its header opens, then fails here
            raise SourceFileError(
                f"{path} cannot be read ({type(exc).__name__}: {exc}); it looks truncated or corrupt",
                "copy or download that file again, or move it out of the files.glob pattern",
            ) from None
    merged = (
        parts[0] if len(parts) == 1 else xr.concat(parts, dim="time", join="outer", data_vars="all")
    )
    merged = merged.sortby("time")
    _, first = np.unique(merged["time"].values, return_index=True)
    merged = merged.isel(time=np.sort(first))
    merged.attrs["seacast_source_files"] = json.dumps([p.name for p, _ in pieces])
    encoding: dict[str, dict[str, object]] = {
        name: {"dtype": "float32", "zlib": True, "complevel": 1, "_FillValue": np.float32(np.nan)}
        for name in merged.data_vars
        if np.issubdtype(merged[name].dtype, np.floating)
    }
    encoding["time"] = {"units": "seconds since 1970-01-01 00:00:00", "dtype": "int64"}
    for var in merged.variables.values():
        var.encoding = {}
    merged.to_netcdf(tmp, encoding=encoding)


@contextlib.contextmanager
def _opened_sources(
    cfg: DataConfig, settings: FilesSource
) -> Iterator[list[tuple[Path, xr.Dataset]]]:
    """Every matched file, opened lazily and checked (a DataError naming a bad one); all closed on exit."""
    opened: list[tuple[Path, xr.Dataset]] = []
    try:
        for path in matched_files(cfg):
            check_interrupt()  # Ctrl-C is held by seacast fetch: stop between files
            opened.append((path, open_source_file(path, settings)))
        yield opened
    finally:
        for _, ds in opened:
            ds.close()


def _month_pieces(
    opened: list[tuple[Path, xr.Dataset]], month: str
) -> list[tuple[Path, xr.Dataset]]:
    """The opened files holding times of ``month``."""
    return [(p, ds) for p, ds in opened if _month_slice(ds, month).sizes["time"] > 0]


def _is_complete(
    manifest: Manifest,
    item: MonthFile,
    raw_dir: Path,
    request: str,
    pieces: list[tuple[Path, xr.Dataset]],
    force: bool,
) -> bool:
    """The one test of a complete month (plan and fetch): on disk, made by the same files and renames."""
    return not force and bool(pieces) and manifest.is_complete(item, raw_dir, request)


def plan_files(cfg: DataConfig, force: bool = False) -> list[PlannedFile]:
    """Every month file the fetch would write (sizes are unknown before reading the files).

    Opens the matched files for their time axes: which files hold a month decides its
    fingerprint, as in :func:`fetch_files`.
    """
    settings = _settings(cfg)
    manifest = Manifest(cfg.raw_dir, SOURCE)
    planned = []
    with _opened_sources(cfg, settings) as opened:
        for month in cfg.months.months():
            item = MonthFile(SOURCE, settings.dataset, month)
            pieces = _month_pieces(opened, month)
            request = _fingerprint(settings, [p for p, _ in pieces])
            planned.append(
                PlannedFile(
                    source=SOURCE,
                    dataset=settings.dataset,
                    month=month,
                    variables=tuple(settings.variables),
                    path=item.path(cfg.raw_dir),
                    estimated_bytes=None,
                    complete=_is_complete(manifest, item, cfg.raw_dir, request, pieces, force),
                )
            )
    return planned


def fetch_files(
    cfg: DataConfig, force: bool = False, progress: ProgressCallback = no_progress
) -> list[Path]:
    """Write every configured month from the local files; return the month files.

    Every input file is opened and checked before anything is written. Months
    the files do not cover (or cover in part, unless ``files.partial_months``)
    are reported together at the end, after the others are written.
    """
    settings = _settings(cfg)
    manifest = Manifest(cfg.raw_dir, SOURCE)
    with _opened_sources(cfg, settings) as opened:
        variables = settings.variables or sorted({str(v) for _, ds in opened for v in ds.data_vars})
        written: list[Path] = []
        failures: list[str] = []
        for month in cfg.months.months():
            check_interrupt()  # and between months
            item = MonthFile(SOURCE, settings.dataset, month)
            pieces = _month_pieces(opened, month)
            fingerprint = _fingerprint(settings, [p for p, _ in pieces])
            if _is_complete(manifest, item, cfg.raw_dir, fingerprint, pieces, force):
                written.append(item.path(cfg.raw_dir))
                progress(f"{settings.dataset} {month}")
                continue
            if not pieces:
                first = min(ds["time"].values.min() for _, ds in opened)
                last = max(ds["time"].values.max() for _, ds in opened)
                failures.append(
                    f"{month}: no data in the {len(opened)} file(s) matching '{settings.glob}' "
                    f"(they cover {pd.Timestamp(first):%Y-%m-%d %H:%M} to {pd.Timestamp(last):%Y-%m-%d %H:%M})"
                )
                progress(f"{settings.dataset} {month}")
                continue
            try:
                written.append(
                    write_month_atomic(
                        item,
                        cfg.raw_dir,
                        lambda tmp, pieces=pieces, month=month: _write_month(pieces, month, tmp),
                        variables,
                        manifest,
                        step_hours=settings.step_hours,
                        check_times=not settings.partial_months,
                        info={"request": fingerprint, "source_files": [str(p) for p, _ in pieces]},
                    )
                )
            except SourceFileError:
                raise
            except DataError as exc:
                failures.append(f"{month}: {exc.problem}")
            progress(f"{settings.dataset} {month}")
    if failures:
        raise DataError(
            f"{len(failures)} month(s) could not be written from the local files:\n    - "
            + "\n    - ".join(failures),
            "narrow months to what the files cover, add the missing files, or set files.partial_months=true "
            "to accept months covered in part",
        )
    return written


class LocalFilesRaw:
    """``source: files`` as a :class:`~seacast.sources.base.RawSource`."""

    name = SOURCE

    def plan(self, cfg: DataConfig, force: bool = False) -> list[PlannedFile]:
        return plan_files(cfg, force)

    def notes(self, cfg: DataConfig) -> list[str]:
        paths = matched_files(cfg)
        total = sum(p.stat().st_size for p in paths)
        return [
            f"{len(paths)} file(s) match '{_settings(cfg).glob}' ({format_bytes(total)} in all)"
        ]

    def fetch(
        self,
        cfg: DataConfig,
        *,
        force: bool = False,
        progress: ProgressCallback = no_progress,
        client: MarineClient | None = None,
        log: Callable[[str], None] | None = None,
    ) -> list[Path]:
        return fetch_files(cfg, force=force, progress=progress)

    def datasets(self, cfg: DataConfig) -> list[str]:
        return [_settings(cfg).dataset]


RAW_SOURCE = LocalFilesRaw()
