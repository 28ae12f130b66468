"""The forecast file schema (WeatherBench 2 layout): :func:`forecast_dataset`, physical values with
CF attrs and provenance.
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from seacast import __version__
from seacast.cf import CF_ATTRS
from seacast.errors import DataError


def forecast_dataset(
    values: np.ndarray,
    *,
    init_time: Any,
    lead_hours: list[int],
    latitude: np.ndarray,
    longitude: np.ndarray,
    variables: list[str],
    sea_mask: np.ndarray,
    variable_attrs: dict[str, dict[str, Any]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> xr.Dataset:
    """A forecast file's dataset from physical ``values [n_lead, C, H, W]`` for one init time.

    Land (``~sea_mask``) is set to NaN whatever ``values`` holds there. ``provenance``
    entries become global attrs (non-strings stored as JSON so NetCDF accepts them).
    """
    values = np.asarray(values, dtype=np.float32)
    sea = np.asarray(sea_mask, dtype=bool)
    if values.shape != (len(lead_hours), len(variables), *sea.shape):
        raise DataError(
            f"forecast values {values.shape} do not match lead times x variables x grid "
            f"{(len(lead_hours), len(variables), *sea.shape)}",
            "pass values shaped [n_lead, n_variables, n_lat, n_lon]",
        )
    values = np.where(sea[None, None], values, np.nan).astype(np.float32)
    ds = xr.Dataset(
        _data_vars(values, variables, sea, variable_attrs or {}),
        coords=_coords(init_time, lead_hours, latitude, longitude),
    )
    ds = ds.assign_coords(valid_time=ds["init_time"] + ds["lead_time"])
    ds["valid_time"].attrs = {
        "long_name": "time the forecast is valid for",
        "standard_name": "time",
    }
    ds.attrs = {
        "Conventions": "CF-1.10",
        "title": "seacast forecast",
        "source": f"seacast {__version__}",
        "date_created": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "featureType": "grid",
    }
    for key, value in (provenance or {}).items():
        ds.attrs[key] = (
            value if isinstance(value, str | int | float) else json.dumps(value, default=str)
        )
    for name in ("init_time", "valid_time"):
        ds[name].encoding = {"units": "hours since 1970-01-01", "dtype": "int64"}
    ds["lead_time"].encoding = {"units": "hours", "dtype": "int64"}
    return ds


def _data_vars(
    values: np.ndarray,
    variables: list[str],
    sea: np.ndarray,
    variable_attrs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """The forecast fields with their CF attrs (the store's win), and ``sea_mask`` as CF flags."""
    dims = ("init_time", "lead_time", "latitude", "longitude")
    data_vars: dict[str, Any] = {}
    for k, var in enumerate(variables):
        attrs = {**CF_ATTRS.get(var, {}), **variable_attrs.get(var, {})}
        attrs.setdefault("long_name", var)
        attrs["coverage_content_type"] = "modelResult"
        data_vars[var] = (dims, values[None, :, k], attrs)
    data_vars["sea_mask"] = (
        ("latitude", "longitude"),
        sea.astype(np.int8),
        {
            "long_name": "sea mask",
            "flag_values": np.array([0, 1], dtype=np.int8),
            "flag_meanings": "land sea",
        },
    )
    return data_vars


def _coords(
    init_time: Any, lead_hours: list[int], latitude: np.ndarray, longitude: np.ndarray
) -> dict[str, Any]:
    """The init time, lead times and grid as CF coordinates."""
    init = np.array([pd.Timestamp(init_time).to_datetime64()], dtype="datetime64[ns]")
    lead = np.array([np.timedelta64(int(h), "h") for h in lead_hours], dtype="timedelta64[ns]")
    return {
        "init_time": (
            "init_time",
            init,
            {
                "long_name": "forecast initialisation time",
                "standard_name": "forecast_reference_time",
            },
        ),
        "lead_time": (
            "lead_time",
            lead,
            {"long_name": "forecast lead time", "standard_name": "forecast_period"},
        ),
        "latitude": (
            "latitude",
            np.asarray(latitude),
            {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"},
        ),
        "longitude": (
            "longitude",
            np.asarray(longitude),
            {"standard_name": "longitude", "units": "degrees_east", "axis": "X"},
        ),
    }
