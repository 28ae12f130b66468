"""The variables' CF attributes: units, CF standard names and the CMEMS long names, the one table
that the twin's files, forecast files and the figures' labels read."""

from __future__ import annotations

CF_ATTRS: dict[str, dict[str, str]] = {
    "zos": {
        "units": "m",
        "standard_name": "sea_surface_height_above_geoid",
        "long_name": "Sea surface height above geoid",
    },
    "uo": {
        "units": "m s-1",
        "standard_name": "eastward_sea_water_velocity",
        "long_name": "Eastward velocity",
    },
    "vo": {
        "units": "m s-1",
        "standard_name": "northward_sea_water_velocity",
        "long_name": "Northward velocity",
    },
    "so": {"units": "1e-3", "standard_name": "sea_water_salinity", "long_name": "Salinity"},
    "thetao": {
        "units": "degrees_C",
        "standard_name": "sea_water_potential_temperature",
        "long_name": "Temperature",
    },
    # the twin's day-ahead weather forecast (ECMWF short names), a model input, never predicted;
    # its fresher series (msl_06h, ...) take these with the age in the long name (twin.output)
    "msl": {
        "units": "Pa",
        "standard_name": "air_pressure_at_mean_sea_level",
        "long_name": "Mean sea level pressure (day-ahead forecast)",
    },
    "iews": {
        "units": "N m-2",
        "standard_name": "surface_downward_eastward_stress",
        "long_name": "Eastward surface wind stress (day-ahead forecast)",
    },
    "inss": {
        "units": "N m-2",
        "standard_name": "surface_downward_northward_stress",
        "long_name": "Northward surface wind stress (day-ahead forecast)",
    },
    "VHM0": {
        "units": "m",
        "standard_name": "sea_surface_wave_significant_height",
        "long_name": "Significant wave height",
    },
}
