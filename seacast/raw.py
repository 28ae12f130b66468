"""The raw NetCDF layout shared by every fetch source, and its manifest.

Layout: ``<raw_dir>/<source>/<dataset>/<YYYY-MM>.nc`` plus
``<raw_dir>/<source>/manifest.json``, which lists the files that are complete.
Every file is written to a temporary name in the same folder, checked, then
renamed into place, so a killed fetch never leaves a half-written month that
looks complete.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from seacast.errors import DataError


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

    def is_complete(self, item: MonthFile, raw_dir: Path) -> bool:
        return item.key in self.entries and item.path(raw_dir).exists()

    def mark_complete(self, item: MonthFile, **info: Any) -> None:
        self.entries[item.key] = info
        self.save()

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps({"complete": self.entries}, indent=2, sort_keys=True))


def atomic_write_text(path: Path, text: str) -> None:
    """Write text to ``path`` through a temporary file and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temporary_path(final: Path) -> Path:
    """The temporary name a file is written to before it is renamed to ``final``."""
    return final.with_name(f".{final.name}.partial")


def check_month_file(path: Path, variables: Iterable[str], month: str, step_hours: float = 1.0) -> xr.Dataset:
    """Open a month file and check it has ``variables`` and a complete time axis.

    Returns the (lazily opened) dataset's summary-free copy; raises DataError naming the file.
    """
    try:
        with xr.open_dataset(path) as ds:
            ds = ds.load() if ds.nbytes < 2e8 else ds
            missing = [v for v in variables if v not in ds.data_vars]
            if missing:
                raise DataError(
                    f"{path} lacks variable(s) {missing}; it has {sorted(ds.data_vars)}",
                    "check the variable names in the config (CMEMS names, or a files.rename mapping)",
                )
            if "time" not in ds.coords or ds.sizes.get("time", 0) == 0:
                raise DataError(f"{path} has no time steps for {month}", "the source returned an empty month; fetch it again later")
            times = ds["time"].values
            expected = expected_times(month, step_hours)
            if len(times) != len(expected) or not np.array_equal(np.sort(times), expected):
                raise DataError(
                    f"{path} has {len(times)} time steps, expected {len(expected)} for {month} every {step_hours:g} h",
                    "the month is incomplete upstream; fetch it again once the source has the whole month",
                )
            return ds
    except DataError:
        raise
    except Exception as exc:  # netCDF4/h5 errors have no common base
        raise DataError(f"{path} cannot be opened as NetCDF ({exc})", "delete the file and fetch it again") from None


def expected_times(month: str, step_hours: float = 1.0) -> np.ndarray:
    """Every time step of a calendar month, as datetime64[ns]."""
    import pandas as pd

    start = pd.Timestamp(f"{month}-01")
    end = start + pd.offsets.MonthBegin(1)
    return pd.date_range(start, end, freq=pd.Timedelta(hours=step_hours), inclusive="left").values.astype("datetime64[ns]")


def write_month_atomic(
    item: MonthFile,
    raw_dir: Path,
    write: Callable[[Path], None],
    variables: Iterable[str],
    manifest: Manifest,
    step_hours: float = 1.0,
    check_times: bool = True,
) -> Path:
    """Write one month file: ``write(tmp)``, check it, rename it into place, record it.

    On any failure the temporary file is removed and nothing complete changes.
    """
    final = item.path(raw_dir)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temporary_path(final)
    tmp.unlink(missing_ok=True)
    try:
        write(tmp)
        if check_times:
            check_month_file(tmp, list(variables), item.month, step_hours)
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    manifest.mark_complete(item, bytes=final.stat().st_size)
    return final
