"""Monthly datasets of the twin, shaped like the Copernicus Marine NWS hourly files.

Offers :data:`VARIABLE_ATTRS` (CMEMS names, units, standard names), :func:`month_dataset`
(hourly arrays -> xarray Dataset with CF/CMEMS attributes) and :func:`netcdf_encoding`
(a fixed encoding, so the same data always give the same bytes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from seacast.cf import CF_ATTRS
from seacast.forcing import series_name
from seacast.twin.grid import TwinGrid
from seacast.twin.weather import FORECAST_AGE_HOURS, FORECAST_AGES_HOURS

SURFACE_DEPTH = 0.0  # m: the NWS products' top level; the twin is depth-averaged
THREE_D = ("uo", "vo", "so", "thetao")
OCEAN_VARIABLES = ("zos", "uo", "vo", "so", "thetao")
# the weather forecast (seacast.twin.weather): defined over land too, never NaN. Each is written
# at every age of FORECAST_AGES_HOURS: the day-ahead one under its own name, fresher ones as msl_06h
WEATHER_VARIABLES = ("msl", "iews", "inss")
FRESHER_AGES_HOURS = tuple(a for a in FORECAST_AGES_HOURS if a != FORECAST_AGE_HOURS)
FORECAST_SERIES: dict[str, tuple[str, float]] = {  # file name -> (weather variable, age in hours)
    **{v: (v, FORECAST_AGE_HOURS) for v in WEATHER_VARIABLES},
    **{series_name(v, a): (v, a) for a in FRESHER_AGES_HOURS for v in WEATHER_VARIABLES},
}
FORCING_VARIABLES = tuple(FORECAST_SERIES)
VARIABLES = OCEAN_VARIABLES + FORCING_VARIABLES

# what CMEMS files carry beyond the CF attributes (seacast.cf.CF_ATTRS, the one table of those)
_CMEMS_EXTRAS: dict[str, dict[str, Any]] = {
    "zos": {"unit_long": "Meters"},
    "uo": {"unit_long": "Meters per second"},
    "vo": {"unit_long": "Meters per second"},
    "so": {
        "unit_long": "Practical Salinity Unit",
        "valid_min": np.float32(0.0),
        "valid_max": np.float32(50.0),
    },
    "thetao": {"unit_long": "Degrees Celsius"},
}


def _forecast_attrs(name: str) -> dict[str, Any]:
    variable, age = FORECAST_SERIES[name]
    attrs = {**CF_ATTRS[variable], "forecast_age_hours": np.float32(age)}
    if age != FORECAST_AGE_HOURS:
        attrs["long_name"] = attrs["long_name"].replace("day-ahead", f"issued {age:g} h ahead")
    return attrs


VARIABLE_ATTRS: dict[str, dict[str, Any]] = {
    **{name: {**CF_ATTRS[name], **_CMEMS_EXTRAS[name]} for name in OCEAN_VARIABLES},
    **{name: _forecast_attrs(name) for name in FORCING_VARIABLES},
}

TIME_UNITS = "hours since 1950-01-01 00:00:00"


def month_dataset(
    grid: TwinGrid, times: pd.DatetimeIndex, fields: dict[str, np.ndarray], attrs: dict[str, Any]
) -> xr.Dataset:
    """One month of hourly fields ``{var: (time, lat, lon)}`` as a CMEMS-shaped Dataset."""
    coords = {
        "time": (
            "time",
            times.values.astype("datetime64[ns]"),
            {"standard_name": "time", "long_name": "Time", "axis": "T"},
        ),
        "depth": (
            "depth",
            np.array([SURFACE_DEPTH], np.float32),
            {
                "units": "m",
                "standard_name": "depth",
                "long_name": "Depth",
                "positive": "down",
                "axis": "Z",
            },
        ),
        "latitude": (
            "latitude",
            grid.lat.astype(np.float32),
            {
                "units": "degrees_north",
                "standard_name": "latitude",
                "long_name": "Latitude",
                "axis": "Y",
            },
        ),
        "longitude": (
            "longitude",
            grid.lon.astype(np.float32),
            {
                "units": "degrees_east",
                "standard_name": "longitude",
                "long_name": "Longitude",
                "axis": "X",
            },
        ),
    }
    data_vars = {}
    for name in VARIABLES:
        values = fields[name].astype(np.float32)
        if name in THREE_D:
            data_vars[name] = (
                ("time", "depth", "latitude", "longitude"),
                values[:, None],
                VARIABLE_ATTRS[name],
            )
        else:
            data_vars[name] = (("time", "latitude", "longitude"), values, VARIABLE_ATTRS[name])
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def netcdf_encoding(ds: xr.Dataset) -> dict[str, dict[str, Any]]:
    """Fixed NetCDF4 encoding: float32 with NaN fill, zlib level 4, one day per chunk."""
    ny, nx = ds.sizes["latitude"], ds.sizes["longitude"]
    chunk_t = min(24, ds.sizes["time"])
    encoding: dict[str, dict[str, Any]] = {
        "time": {"units": TIME_UNITS, "calendar": "standard", "dtype": "float64"},
        "latitude": {"dtype": "float32", "_FillValue": None},
        "longitude": {"dtype": "float32", "_FillValue": None},
        "depth": {"dtype": "float32", "_FillValue": None},
    }
    for name in ds.data_vars:
        chunks = (chunk_t, 1, ny, nx) if ds[name].ndim == 4 else (chunk_t, ny, nx)
        encoding[name] = {
            "dtype": "float32",
            "_FillValue": np.float32(np.nan),
            "zlib": True,
            "complevel": 4,
            "chunksizes": chunks,
        }
    return encoding
