"""The raw NetCDF layout shared by every fetch source, and its manifest.

Layout: ``<raw_dir>/<source>/<dataset>/<YYYY-MM>.nc`` plus
``<raw_dir>/<source>/manifest.json``, which lists the files that are complete.
Every file is written to a temporary name in the same folder, checked, then
renamed into place, so a killed fetch never leaves a half-written month that
looks complete. A month is complete when the manifest lists it, it is not the
month in progress, and its file still has the size recorded (a file truncated
later is fetched again).

Offers:

* :class:`MonthFile`: one raw file (source, dataset, month) and its path.
* :class:`Manifest`: which month files are complete, with what request.
* :func:`write_month_atomic`: temp name -> check -> rename -> manifest.
* :func:`check_month_file`: opens, has the variables, has the month's time steps.
* :func:`expected_times`, :func:`temporary_path` (and :func:`atomic_write_text`,
  re-exported from :mod:`seacast.atomic`).
* :func:`remove_leftovers`: the temporary files a killed fetch left behind.
* :func:`fetch_lock`: one fetch per source folder at a time (cron-safe).
* :func:`utc_now`, :func:`in_progress`: the present hour, and whether a month is still running.
"""

from __future__ import annotations

import contextlib
import glob
import json
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from seacast.atomic import atomic_write_text, publish
from seacast.errors import DataError
from seacast.interrupts import safe_points
from seacast.locks import exclusive_lock


def utc_now() -> pd.Timestamp:
    """The present time in UTC, as a naive Timestamp (the raw files' time axis is naive UTC)."""
    return pd.Timestamp.now(tz="UTC").tz_localize(None)


def in_progress(month: str, now: pd.Timestamp | None = None) -> bool:
    """True for the current (UTC) month or a later one: its data are still arriving."""
    return month >= (now or utc_now()).strftime("%Y-%m")


@dataclass(frozen=True)
class MonthFile:
    """One raw file: a dataset of a source for one calendar month."""

    source: str
    dataset: str
    month: str  # YYYY-MM

    def path(self, raw_dir: Path) -> Path:
        return Path(raw_dir) / self.source / self.dataset / f"{self.month}.nc"

    @property
    def key(self) -> str:
        return f"{self.dataset}/{self.month}"


class Manifest:
    """``manifest.json`` of one source folder: which month files are complete."""

    def __init__(self, raw_dir: Path, source: str) -> None:
        self.path = Path(raw_dir) / source / "manifest.json"
        self.entries: dict[str, dict[str, Any]] = {}
        if self.path.exists():
            try:
                self.entries = json.loads(self.path.read_text()).get("complete", {})
            except json.JSONDecodeError:
                # a manifest is only a cache of what is on disk; rebuild rather than fail
                self.entries = {}

    def is_complete(self, item: MonthFile, raw_dir: Path, request: str | None = None) -> bool:
        """True if ``item`` is recorded and on disk (and, given ``request``, was made by that request).

        A month recorded ``in_progress`` (the current month, fetched up to now) is never
        complete, nor is a file whose size is not the one recorded (truncated or replaced
        since it was checked).
        """
        entry = self.entries.get(item.key)
        path = item.path(raw_dir)
        if entry is None or entry.get("in_progress") or not path.exists():
            return False
        recorded = entry.get("bytes")
        if isinstance(recorded, int) and path.stat().st_size != recorded:
            return False
        return request is None or entry.get("request") in (None, request)

    def mark_complete(self, item: MonthFile, **info: Any) -> None:
        self.entries[item.key] = info
        self.save()

    def forget(self, item: MonthFile) -> None:
        if self.entries.pop(item.key, None) is not None:
            self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(
            self.path, json.dumps({"complete": self.entries}, indent=2, sort_keys=True)
        )


def temporary_path(final: Path) -> Path:
    """The temporary name a file is written to before it is renamed to ``final``.

    It keeps the ``.nc`` suffix because the Copernicus toolbox appends ``.nc``
    to any output name that lacks it.
    """
    return final.with_name(f".{final.stem}.partial{final.suffix}")


def _remove_temporaries(tmp: Path) -> None:
    """Remove ``tmp`` and the files made from its name: the Copernicus toolbox downloads
    to ``<tmp>.<random>`` (its own mkstemp) and renames that to ``tmp`` only at the end."""
    tmp.unlink(missing_ok=True)
    for stray in tmp.parent.glob(glob.escape(tmp.name) + ".*"):
        stray.unlink(missing_ok=True)


def remove_leftovers(raw_dir: Path, source: str) -> list[Path]:
    """Delete the temporary files a killed fetch left in ``<raw_dir>/<source>/``; returns them.

    Those are ``.<YYYY-MM>.partial.nc`` (ours), ``.<YYYY-MM>.partial.nc.<random>`` (the
    Copernicus toolbox's) and ``.manifest.json.<random>.tmp``. Call it only under
    :func:`fetch_lock`: another fetch may be writing them.
    """
    folder = Path(raw_dir) / source
    patterns = (".*.partial.nc", ".*.partial.nc.*")
    found = [p for pattern in patterns for p in folder.glob(f"*/{pattern}")]
    found += list(folder.glob(".manifest.json.*.tmp"))
    for path in found:
        path.unlink(missing_ok=True)
    return sorted(found)


@contextlib.contextmanager
def fetch_lock(raw_dir: Path, source: str) -> Iterator[Path]:
    """Hold ``<raw_dir>/<source>/.fetch.lock`` so two fetches (say, overlapping cron runs) never interleave.

    A thin wrapper of :func:`seacast.locks.exclusive_lock`: a busy folder raises
    :class:`seacast.locks.LockHeld` naming the holder's pid.
    """
    folder = Path(raw_dir) / source
    with exclusive_lock(
        folder / ".fetch.lock",
        f"fetch is writing to {folder}",
        "wait for it to finish; complete months are skipped when you run again",
    ) as lock_path:
        yield lock_path


def check_month_file(
    path: Path,
    variables: Iterable[str],
    month: str,
    step_hours: float = 1.0,
    complete: bool = True,
) -> xr.Dataset:
    """Open a month file and check it has ``variables`` and the month's time steps.

    With ``complete`` every step of the month must be there; without, the steps
    must only lie in the month on the ``step_hours`` grid. The first and last
    frames of each variable must hold some data (an all-NaN frame is what a
    service returns for hours it does not have). Returns the dataset (loaded
    when small); raises DataError naming the file.
    """
    try:
        with xr.open_dataset(path) as ds:
            ds = ds.load() if ds.nbytes < 2e8 else ds
            _check_contents(path, ds, list(variables), month, step_hours, complete)
            return ds
    except DataError:
        raise
    except Exception as exc:  # netCDF4/h5 errors have no common base
        raise DataError(
            f"{path} cannot be opened as NetCDF ({exc})", "delete the file and fetch it again"
        ) from None


def _check_contents(
    path: Path, ds: xr.Dataset, variables: list[str], month: str, step_hours: float, complete: bool
) -> None:
    missing = [v for v in variables if v not in ds.data_vars]
    if missing:
        raise DataError(
            f"{path} lacks variable(s) {missing}; it has {sorted(map(str, ds.data_vars))}",
            "check the variable names in the config (CMEMS names, or a files.rename mapping)",
        )
    if "time" not in ds.coords or ds.sizes.get("time", 0) == 0:
        raise DataError(
            f"{path} has no time steps for {month} (the source returned an empty month)",
            "check that the dataset covers this month; if it is recent, fetch it again later",
        )
    times = np.sort(ds["time"].values)
    expected = expected_times(month, step_hours)
    if complete:
        if len(times) != len(expected) or not np.array_equal(times, expected):
            raise DataError(
                f"{path} has {len(times)} time steps, expected {len(expected)} for {month} every {step_hours:g} h",
                "the month is incomplete upstream; fetch it again once the source has the whole month",
            )
    else:
        stray = np.setdiff1d(times, expected)
        if len(stray):
            raise DataError(
                f"{path} has {len(stray)} time step(s) outside {month} or off the {step_hours:g}-hour grid "
                f"(first: {pd.Timestamp(stray[0])})",
                "check files.step_hours, or that the files' time axis is what the config says",
            )
    for name in variables:
        var = ds[name]
        if "time" not in var.dims:
            continue
        for index in {0, var.sizes["time"] - 1}:
            if bool(var.isel(time=index).isnull().all()):
                when = pd.Timestamp(ds["time"].values[index])
                raise DataError(
                    f"{path}: {name} is NaN everywhere at {when:%Y-%m-%d %H:%M} (an empty frame)",
                    "the source has no data for that hour yet; fetch the month again later",
                )


def expected_times(month: str, step_hours: float = 1.0) -> np.ndarray:
    """Every time step of a calendar month, as datetime64[ns]."""
    start = pd.Timestamp(f"{month}-01")
    end = start + pd.offsets.MonthBegin(1)
    return pd.date_range(
        start, end, freq=pd.Timedelta(hours=step_hours), inclusive="left"
    ).values.astype("datetime64[ns]")


def write_month_atomic(
    item: MonthFile,
    raw_dir: Path,
    write: Callable[[Path], None],
    variables: Iterable[str],
    manifest: Manifest,
    step_hours: float = 1.0,
    check_times: bool = True,
    info: dict[str, Any] | None = None,
) -> Path:
    """Write one month file: ``write(tmp)``, check it, rename it into place, record it.

    ``check_times=False`` accepts a month the data cover in part (the file is
    still checked to open, hold the variables and lie in the month). ``info``
    goes into the manifest entry; it is read after ``write``, so the writer may
    add to it (say, the dataset version the service served). On any failure (or
    an interrupt) the temporary files are removed and nothing recorded as
    complete changes.

    Ctrl-C is held for the whole call (:func:`seacast.interrupts.safe_points`):
    a KeyboardInterrupt raised inside xarray's NetCDF write or read leaves
    xarray's file lock held, and the close after it then waits forever. ``write``
    calls :func:`seacast.interrupts.check_interrupt` between pieces of work to
    stop early; otherwise the interrupt is raised once the month is settled.
    """
    final = item.path(raw_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    with safe_points():
        _remove_temporaries(tmp)  # a leftover from a killed run is never trusted
        try:
            write(tmp)
            if not tmp.exists():
                raise DataError(
                    f"nothing was written for {item.key} (the source returned no data)",
                    "check that the dataset covers this month and region",
                )
            ds = check_month_file(
                tmp, list(variables), item.month, step_hours, complete=check_times
            )
            n_times = int(ds.sizes.get("time", 0))
            ds.close()
            publish(tmp, final)
        finally:
            _remove_temporaries(tmp)
        manifest.mark_complete(
            item,
            bytes=final.stat().st_size,
            n_times=n_times,
            complete_time_axis=bool(check_times),
            written_at=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
            **(info or {}),
        )
    return final
