"""The seacast Zarr store: layout, writing, appending, validation and statistics.

A store is an xarray Dataset in Zarr format 3 with dims ``(time, latitude, longitude)``:

* one float32 data variable per CMEMS variable, NaN on land;
* ``sea_mask`` (latitude, longitude), bool, True on sea;
* ``time`` encoded as int64 ``hours since 1970-01-01`` (daily stores too);
* chunks spanning all of space and ``chunk_hours`` time steps;
* attrs holding JSON strings: ``seacast_stats`` ({var: {min, max, mean, std}} over the
  statistics period), ``seacast_config`` (the DataConfig dict), ``seacast_gaps``
  (list of ``[start_iso, end_iso]`` missing ranges), ``seacast_step_hours`` and
  ``seacast_fingerprint``.

Public functions:

* :func:`open_store` - open and validate a store (DataError naming the problem).
* :func:`store_variables`, :func:`store_stats`, :func:`store_fingerprint`,
  :func:`store_gaps`, :func:`store_step_hours`, :func:`store_config` - read its metadata.
* :func:`write_new_store` - write a dataset as a new store, atomically (temp dir, rename);
  :func:`create_store`, :func:`temporary_store_path` and :func:`replace_store` are its pieces.
* :func:`append_to_store` - append later time steps (``append_dim="time"``).
* :func:`finalise_store` - recompute statistics, gaps and fingerprint and write the attrs last.
* :func:`compute_stats`, :func:`find_gaps`, :func:`compute_fingerprint` - the pieces behind it.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import hashlib
import json
import os
import shutil
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr
import zarr

from seacast.errors import DataError
from seacast.interrupts import check_interrupt
from seacast.locks import exclusive_lock
from seacast.timeaxis import times_to_hours as time_hours  # noqa: F401 (the one conversion, old name)

TIME_UNITS = "hours since 1970-01-01"
STORE_DIMS = ("time", "latitude", "longitude")
ATTR_STATS = "seacast_stats"
ATTR_CONFIG = "seacast_config"
ATTR_GAPS = "seacast_gaps"
ATTR_STEP = "seacast_step_hours"
ATTR_FINGERPRINT = "seacast_fingerprint"
ATTR_STATS_PERIOD = "seacast_stats_period"
REQUIRED_ATTRS = (ATTR_STATS, ATTR_CONFIG, ATTR_GAPS, ATTR_STEP, ATTR_FINGERPRINT)


# --------------------------------------------------------------------------- reading


def open_store(path: Path | str) -> xr.Dataset:
    """Open a seacast store lazily (dask) and check it follows the store contract.

    Raises DataError naming what is wrong (missing store, wrong dims, dtypes, attrs...).
    """
    path = Path(path)
    if not path.exists() and _siblings(path, "old"):
        with store_write_lock(path):  # a killed swap left the store aside: put it back
            pass
    if not path.exists():
        raise DataError(
            f"store {path} does not exist",
            "make it with `seacast regrid --config configs/data/<name>.yaml`",
        )
    try:
        ds = xr.open_zarr(path, consolidated=False, zarr_format=3)
    except Exception as exc:  # zarr raises several unrelated types
        raise DataError(
            f"{path} cannot be opened as a Zarr v3 store ({type(exc).__name__}: {exc})",
            "remake it with `seacast regrid ... --overwrite`",
        ) from None
    validate_store(ds, str(path))
    return ds


def validate_store(ds: xr.Dataset, name: str = "store") -> None:
    """Check ``ds`` against the store contract; DataError on the first problem found."""
    fix = "remake the store with `seacast regrid ... --overwrite`"
    for dim in STORE_DIMS:
        if dim not in ds.dims:
            raise DataError(f"{name} has no '{dim}' dimension (dims: {dict(ds.sizes)})", fix)
    if "sea_mask" not in ds.data_vars:
        raise DataError(f"{name} has no 'sea_mask' variable", fix)
    if ds["sea_mask"].dims != ("latitude", "longitude") or ds["sea_mask"].dtype != bool:
        raise DataError(
            f"{name}: sea_mask must be bool (latitude, longitude), got {ds['sea_mask'].dtype} {ds['sea_mask'].dims}",
            fix,
        )
    variables = store_variables(ds)
    if not variables:
        raise DataError(f"{name} holds no data variables besides sea_mask", fix)
    for var in variables:
        da = ds[var]
        if da.dims != STORE_DIMS:
            raise DataError(
                f"{name}: variable {var} has dims {da.dims}, expected {STORE_DIMS}", fix
            )
        if da.dtype != np.float32:
            raise DataError(f"{name}: variable {var} is {da.dtype}, expected float32", fix)
    if not np.issubdtype(ds["time"].dtype, np.datetime64):
        raise DataError(f"{name}: time is {ds['time'].dtype}, not decoded datetimes", fix)
    times = ds["time"].values
    if len(times) > 1 and not (np.diff(times) > np.timedelta64(0, "ns")).all():
        raise DataError(f"{name}: time is not strictly increasing (duplicates or disorder)", fix)
    missing = [key for key in REQUIRED_ATTRS if key not in ds.attrs]
    if missing:
        raise DataError(f"{name} lacks the attrs {missing}", fix)
    for key in REQUIRED_ATTRS:
        try:
            json.loads(ds.attrs[key])
        except (TypeError, json.JSONDecodeError):
            raise DataError(f"{name}: attr {key} is not a JSON string", fix) from None
    stats = json.loads(ds.attrs[ATTR_STATS])
    lacking = [v for v in variables if v not in stats]
    if lacking:
        raise DataError(f"{name}: seacast_stats lacks {lacking}", fix)


def store_variables(ds: xr.Dataset) -> list[str]:
    """The data variables of the store (everything except ``sea_mask``).

    Ordered as in the config's ``variables`` (Zarr does not keep insertion order),
    then any others alphabetically, so channel order is stable across opens.
    """
    present = [str(v) for v in ds.data_vars if v != "sea_mask" and ds[v].dims == STORE_DIMS]
    try:
        order = [str(v) for v in json.loads(ds.attrs.get(ATTR_CONFIG, "{}")).get("variables", [])]
    except (TypeError, AttributeError, json.JSONDecodeError):
        order = []
    return [v for v in order if v in present] + sorted(v for v in present if v not in order)


def _attr_json(ds: xr.Dataset, key: str) -> Any:
    if key not in ds.attrs:
        raise DataError(
            f"the store has no '{key}' attr", "remake it with `seacast regrid ... --overwrite`"
        )
    return json.loads(ds.attrs[key])


def store_stats(ds: xr.Dataset) -> dict[str, dict[str, float]]:
    """``{var: {min, max, mean, std}}`` over the statistics period, from the attrs."""
    return {k: {s: float(x) for s, x in v.items()} for k, v in _attr_json(ds, ATTR_STATS).items()}


def store_config(ds: xr.Dataset) -> dict[str, Any]:
    """The DataConfig dict that made the store."""
    return _attr_json(ds, ATTR_CONFIG)


def store_gaps(ds: xr.Dataset) -> list[list[str]]:
    """Missing time ranges, each ``[first_missing_iso, last_missing_iso]``."""
    return _attr_json(ds, ATTR_GAPS)


def store_step_hours(ds: xr.Dataset) -> float:
    """The regular time step of the store, in hours."""
    return float(_attr_json(ds, ATTR_STEP))


def store_fingerprint(ds: xr.Dataset) -> str:
    """A short hash that changes whenever the store's config, grid, times or statistics change."""
    if ATTR_FINGERPRINT in ds.attrs:
        value = json.loads(ds.attrs[ATTR_FINGERPRINT])
        if value:
            return str(value)
    return compute_fingerprint(ds)


# --------------------------------------------------------------------------- metadata pieces


def infer_step_hours(times: np.ndarray) -> float | None:
    """The most common positive spacing of sorted ``times`` in hours (None if < 2 times)."""
    if len(times) < 2:
        return None
    diffs = np.diff(np.sort(np.asarray(times, dtype="datetime64[ns]"))) / np.timedelta64(1, "h")
    diffs = diffs[diffs > 0]
    if len(diffs) == 0:
        return None
    values, counts = np.unique(diffs, return_counts=True)
    return float(values[np.argmax(counts)])


def find_gaps(
    times: np.ndarray, step_hours: float, span: tuple[Any, Any] | None = None
) -> list[list[str]]:
    """Missing ranges of a regular axis, ``[[first_missing, last_missing], ...]`` in ISO.

    ``span`` (first, last expected time) also reports missing steps before the first
    or after the last time.
    """
    times = np.sort(np.asarray(times, dtype="datetime64[ns]"))
    if len(times) == 0:
        return [] if span is None else [[_iso(span[0]), _iso(span[1])]]
    step = np.timedelta64(int(round(step_hours * 3600)), "s").astype("timedelta64[ns]")
    start = times[0] if span is None else min(times[0], np.datetime64(pd.Timestamp(span[0]), "ns"))
    end = times[-1] if span is None else max(times[-1], np.datetime64(pd.Timestamp(span[1]), "ns"))
    n = int((end - start) // step) + 1
    expected = start + np.arange(n) * step
    missing = np.setdiff1d(expected, times)
    if len(missing) == 0:
        return []
    breaks = np.where(np.diff(missing) != step)[0] + 1
    return [[_iso(run[0]), _iso(run[-1])] for run in np.split(missing, breaks)]


def _iso(value: Any) -> str:
    return pd.Timestamp(value).isoformat()


def compute_stats(
    ds: xr.Dataset, period: tuple[str, str] | None = None, block_bytes: int = 128 * 2**20
) -> tuple[dict[str, dict[str, float]], list[str]]:
    """Per-variable ``{min, max, mean, std}`` over sea (finite) values in ``period`` (inclusive).

    Returns the stats and the period actually used (all times when ``period`` is None
    or selects nothing). Reads blocks of about ``block_bytes`` and merges running
    moments (Chan et al.), so memory stays bounded whatever the store's length.
    """
    selected = ds
    if period is not None:
        start, end = pd.Timestamp(period[0]), pd.Timestamp(period[1])
        if len(str(period[1])) <= 10:  # a date means the whole day
            end = end + pd.Timedelta(days=1) - pd.Timedelta(seconds=1)
        selected = ds.sel(time=slice(start, end))
        if selected.sizes["time"] == 0:
            selected = ds
    frame_bytes = 4 * selected.sizes["latitude"] * selected.sizes["longitude"]
    block = max(1, block_bytes // max(frame_bytes, 1))
    stats = {}
    for var in store_variables(selected):
        count, mean, m2 = 0, 0.0, 0.0
        low, high = np.inf, -np.inf
        for begin in range(0, selected.sizes["time"], block):
            check_interrupt()
            values = np.asarray(
                selected[var].isel(time=slice(begin, begin + block)).values, dtype=np.float64
            )
            values = values[np.isfinite(values)]
            if values.size == 0:
                continue
            n_b, mean_b = values.size, float(values.mean())
            m2_b = float(((values - mean_b) ** 2).sum())
            delta, total = mean_b - mean, count + n_b
            mean += delta * n_b / total
            m2 += m2_b + delta**2 * count * n_b / total
            count = total
            low, high = min(low, float(values.min())), max(high, float(values.max()))
        if count == 0:
            stats[var] = {
                "min": float("nan"),
                "max": float("nan"),
                "mean": float("nan"),
                "std": float("nan"),
            }
        else:
            stats[var] = {"min": low, "max": high, "mean": mean, "std": float(np.sqrt(m2 / count))}
    times = selected["time"].values
    used = [_iso(times[0]), _iso(times[-1])] if len(times) else []
    return stats, used


def compute_fingerprint(ds: xr.Dataset) -> str:
    """Hash of config, variables, grid, time axis summary, gaps and statistics."""
    times = ds["time"].values
    summary = {
        "config": ds.attrs.get(ATTR_CONFIG, ""),
        "stats": ds.attrs.get(ATTR_STATS, ""),
        "gaps": ds.attrs.get(ATTR_GAPS, ""),
        "variables": store_variables(ds),
        "latitude": [
            float(ds["latitude"][0]),
            float(ds["latitude"][-1]),
            int(ds.sizes["latitude"]),
        ],
        "longitude": [
            float(ds["longitude"][0]),
            float(ds["longitude"][-1]),
            int(ds.sizes["longitude"]),
        ],
        "time": [_iso(times[0]), _iso(times[-1]), len(times)] if len(times) else [],
    }
    return hashlib.sha256(json.dumps(summary, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- writing


def _normalise_frames(ds: xr.Dataset) -> xr.Dataset:
    """Cast to the store layout: float32 vars in (time, lat, lon), bool sea_mask, no stray attrs."""
    out = ds.copy()
    for var in list(out.data_vars):
        if var == "sea_mask":
            out[var] = out[var].astype(bool)
        else:
            out[var] = out[var].transpose(*STORE_DIMS).astype(np.float32)
    for name in list(out.variables):
        out[name].encoding = {}
    return out.transpose("time", "latitude", "longitude")


def _encoding(ds: xr.Dataset, chunk_hours: int) -> dict[str, dict[str, Any]]:
    ny, nx = ds.sizes["latitude"], ds.sizes["longitude"]
    encoding: dict[str, dict[str, Any]] = {
        "time": {
            "units": TIME_UNITS,
            "dtype": "int64",
            "calendar": "proleptic_gregorian",
            "chunks": (max(chunk_hours, 1024),),
        },
        "sea_mask": {"chunks": (ny, nx)},
    }
    for var in store_variables(ds):
        encoding[var] = {"chunks": (chunk_hours, ny, nx), "dtype": "float32"}
    return encoding


def create_store(
    path: Path | str,
    ds: xr.Dataset,
    *,
    chunk_hours: int = 24,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``ds`` (with ``sea_mask``) as a store at ``path`` directly (``path`` must not exist).

    Prefer :func:`write_new_store`, which goes through a temporary directory.
    """
    path = Path(path)
    data = _normalise_frames(ds)
    if "sea_mask" not in data.data_vars:
        raise DataError(
            f"cannot create {path}: the data has no sea_mask", "add a bool sea_mask (True on sea)"
        )
    data.attrs = {k: json.dumps(v) for k, v in (attrs or {}).items()}
    data.to_zarr(
        path, mode="w-", zarr_format=3, consolidated=False, encoding=_encoding(data, chunk_hours)
    )
    return path


def temporary_store_path(path: Path | str) -> Path:
    """A fresh sibling directory name to build a store in before :func:`replace_store`."""
    path = Path(path)
    return path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")


def _siblings(path: Path, kind: str) -> list[Path]:
    """Leftovers of earlier writes next to ``path``: ``kind`` is ``tmp`` or ``old``."""
    return sorted(path.parent.glob(f".{path.name}.{kind}-*"), key=lambda p: p.stat().st_mtime)


def staged_copy(path: Path | str) -> Path:
    """A sibling copy of the store ``path`` made of hard links, to append to and then swap in.

    Cheap (one link per chunk file) and safe: zarr replaces every file it writes through
    a temporary name and a rename, which breaks the link, so the original never changes.
    """
    path = Path(path)
    tmp = temporary_store_path(path)
    try:
        shutil.copytree(path, tmp, copy_function=os.link)
    except OSError:  # another file system under the store, or no hard links: copy instead
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(path, tmp)
    return tmp


_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one atomic step (Linux renameat2); False where that is unavailable."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    renameat2.argtypes = [
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_int,
        ctypes.c_char_p,
        ctypes.c_uint,
    ]
    if renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def replace_store(tmp: Path | str, path: Path | str) -> Path:
    """Move the finished store ``tmp`` to ``path``, replacing any store there.

    Where the file system can swap two directories atomically, that is one step, so a
    reader or a kill sees either the old store or the new one. Elsewhere the old store is
    renamed aside first and deleted after the new one is in place; a kill between the two
    renames leaves it aside, and :func:`recover_store` puts it back.
    """
    tmp, path = Path(tmp), Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        os.replace(tmp, path)
    elif _exchange(tmp, path):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the old store
    else:
        trash = path.with_name(f".{path.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(path, trash)
        os.replace(tmp, path)
        shutil.rmtree(trash, ignore_errors=True)
    return path


def recover_store(path: Path | str) -> list[Path]:
    """Undo what a killed write left next to the store ``path``; call it holding the store lock.

    A store renamed aside by an unfinished swap is put back (the state before that write),
    and unfinished temporary stores are deleted. Returns the paths removed or restored.
    """
    path = Path(path)
    touched: list[Path] = []
    old = _siblings(path, "old")
    if old and not path.exists():
        os.replace(old.pop(), path)
        touched.append(path)
    for leftover in old + _siblings(path, "tmp"):
        shutil.rmtree(leftover, ignore_errors=True)
        touched.append(leftover)
    return touched


def store_lock_path(path: Path | str) -> Path:
    """The lock file every writer of the store ``path`` holds: a sibling, so swaps keep it."""
    path = Path(path)
    return path.with_name(f".{path.name}.lock")


@contextlib.contextmanager
def store_write_lock(path: Path | str) -> Iterator[Path]:
    """Hold the store's lock (regrid, forecast --update) and clear what a killed write left."""
    path = Path(path)
    with exclusive_lock(
        store_lock_path(path),
        f"regrid or forecast --update is writing the store {path}",
        "wait for it to finish (the lock is released when it exits), then run again",
    ) as lock:
        recover_store(path)
        yield lock


def write_new_store(
    path: Path | str,
    ds: xr.Dataset,
    *,
    chunk_hours: int = 24,
    attrs: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> Path:
    """Write ``ds`` (with ``sea_mask``) as a new store: into a temp dir, then renamed into place.

    ``attrs`` values are JSON-encoded. Call :func:`finalise_store` afterwards to add
    statistics, gaps and fingerprint.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise DataError(
            f"store {path} already exists", "pass --overwrite to replace it, or choose another path"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_store_path(path)
    try:
        create_store(tmp, ds, chunk_hours=chunk_hours, attrs=attrs)
        replace_store(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return path


def append_to_store(path: Path | str, ds: xr.Dataset) -> int:
    """Append time steps later than the store's last time; returns how many were written.

    Times already in the store are skipped (so appending the same data twice changes
    nothing). Times earlier than the store's end that are not in it cannot be appended;
    they raise DataError (the caller rebuilds the store instead).
    """
    path = Path(path)
    with xr.open_zarr(path, consolidated=False, zarr_format=3) as existing:
        have = existing["time"].values
        store_vars = store_variables(existing)
    data = _normalise_frames(ds.drop_vars("sea_mask", errors="ignore"))
    if sorted(store_variables(data)) != sorted(store_vars):
        raise DataError(
            f"the new data has variables {store_variables(data)}, the store {path} has {store_vars}",
            "regrid with the same variables, or pass --overwrite to remake the store",
        )
    new = data.sel(time=~data["time"].isin(have))
    if new.sizes["time"] == 0:
        return 0
    if len(have) and new["time"].values[0] <= have[-1]:
        raise DataError(
            f"cannot append times from {_iso(new['time'].values[0])}: the store {path} already reaches {_iso(have[-1])}",
            "rebuild the store (seacast regrid rebuilds automatically) or pass --overwrite",
        )
    new[store_vars].to_zarr(path, mode="a", append_dim="time", zarr_format=3, consolidated=False)
    return int(new.sizes["time"])


def write_attrs(path: Path | str, attrs: Mapping[str, Any]) -> None:
    """Set store attrs (each value JSON-encoded) in place; the last step of every write."""
    group = zarr.open_group(str(path), mode="r+", zarr_format=3)
    group.attrs.update({k: json.dumps(v) for k, v in attrs.items()})


def finalise_store(
    path: Path | str,
    *,
    config: Mapping[str, Any] | None = None,
    stats_period: tuple[str, str] | None = None,
    step_hours: float | None = None,
    span: tuple[Any, Any] | None = None,
    extra_attrs: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Recompute statistics, gaps and fingerprint from the stored data and write all attrs.

    ``span`` (first, last expected time) lets gaps include missing steps at either end.
    Returns the attrs written (decoded).
    """
    path = Path(path)
    ds = xr.open_zarr(path, consolidated=False, zarr_format=3, chunks=None)
    times = ds["time"].values
    if step_hours is None:
        step_hours = (
            float(json.loads(ds.attrs[ATTR_STEP]))
            if ATTR_STEP in ds.attrs
            else infer_step_hours(times)
        )
    if step_hours is None:
        step_hours = 1.0
    if config is None:
        config = json.loads(ds.attrs.get(ATTR_CONFIG, "{}"))
    stats, used = compute_stats(ds, stats_period)
    gaps = find_gaps(times, step_hours, span)
    if ATTR_GAPS in ds.attrs and span is None:
        # keep gaps recorded earlier at the ends (e.g. a missing first day) that data never filled
        recorded = json.loads(ds.attrs[ATTR_GAPS])
        gaps = _merge_gaps(recorded, gaps, times)
    attrs: dict[str, Any] = {
        ATTR_STATS: stats,
        ATTR_CONFIG: dict(config),
        ATTR_GAPS: gaps,
        ATTR_STEP: step_hours,
        ATTR_STATS_PERIOD: used,
        **dict(extra_attrs or {}),
    }
    encoded = {k: json.dumps(v) for k, v in attrs.items()}
    probe = ds.copy()
    probe.attrs = {**ds.attrs, **encoded}
    attrs[ATTR_FINGERPRINT] = compute_fingerprint(probe)
    write_attrs(path, attrs)
    ds.close()
    return attrs


def _merge_gaps(
    recorded: list[list[str]], found: list[list[str]], times: np.ndarray
) -> list[list[str]]:
    """Recorded gaps that still hold no data, plus newly found ones, sorted and unique."""
    result = {tuple(g) for g in found}
    times = np.asarray(times, dtype="datetime64[ns]")
    for start, end in recorded:
        lo, hi = np.datetime64(pd.Timestamp(start), "ns"), np.datetime64(pd.Timestamp(end), "ns")
        inside = times[(times >= lo) & (times <= hi)]
        if len(inside) == 0:
            result.add((start, end))
    return [list(g) for g in sorted(result)]
