"""Forecast files on disk: their names, writing one, and publishing it whole by a rename or a swap."""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import xarray as xr

from seacast.atomic import publish

_SUFFIX = {"zarr": ".zarr", "netcdf": ".nc"}


def forecast_name(init: pd.Timestamp, fmt: str, adapted: bool) -> str:
    """File name of a forecast: ``<YYYY-MM-DDTHH>[-zo].zarr`` or ``.nc``."""
    return f"{init:%Y-%m-%dT%H}{'-zo' if adapted else ''}{_SUFFIX[fmt]}"


def write_dataset(ds: xr.Dataset, path: Path, fmt: str) -> None:
    """Write ``ds`` to ``path`` (which must not exist) in ``fmt``."""
    if fmt == "zarr":
        ds.to_zarr(path, mode="w-", zarr_format=3, consolidated=False)
    else:
        ds.to_netcdf(path, engine="netcdf4")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _publish(tmp: Path, final: Path) -> None:
    """Move ``tmp`` onto ``final``, never half-replaced: a file by one rename, a Zarr
    directory by the store's own swap (:func:`seacast.store.replace_store`)."""
    if tmp.is_dir():
        from seacast.store import replace_store

        replace_store(tmp, final)
    else:
        publish(tmp, final)
