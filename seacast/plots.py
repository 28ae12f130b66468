"""Maps of sea fields: cmocean colormaps, grey land with a coastline, units on the colorbar.

Offers:

* :data:`CF_ATTRS` - CF standard names, long names and units of the CMEMS variables.
* :func:`colormap_for` - the cmocean colormap of a variable (a diverging one for errors).
* :func:`draw_field` - one field on an axis, land masked, coastline drawn, colorbar labelled.
* :func:`forecast_maps` - one PNG per variable of a forecast file, one panel per lead time.

Matplotlib runs headless (Agg); figures are closed after saving so a long cron job does not leak.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import cmocean  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402

CF_ATTRS: dict[str, dict[str, str]] = {
    "zos": {
        "standard_name": "sea_surface_height_above_geoid",
        "long_name": "Sea surface height",
        "units": "m",
    },
    "uo": {
        "standard_name": "eastward_sea_water_velocity",
        "long_name": "Eastward current",
        "units": "m s-1",
    },
    "vo": {
        "standard_name": "northward_sea_water_velocity",
        "long_name": "Northward current",
        "units": "m s-1",
    },
    "so": {"standard_name": "sea_water_salinity", "long_name": "Salinity", "units": "1e-3"},
    "thetao": {
        "standard_name": "sea_water_potential_temperature",
        "long_name": "Temperature",
        "units": "degrees_C",
    },
    "VHM0": {
        "standard_name": "sea_surface_wave_significant_height",
        "long_name": "Significant wave height",
        "units": "m",
    },
}

_COLORMAPS = {
    "zos": cmocean.cm.balance,
    "uo": cmocean.cm.delta,
    "vo": cmocean.cm.delta,
    "so": cmocean.cm.haline,
    "thetao": cmocean.cm.thermal,
    "VHM0": cmocean.cm.amp,
}
_DIVERGING = {"zos", "uo", "vo"}
LAND_COLOUR = "0.82"


def colormap_for(variable: str, error: bool = False):
    """cmocean colormap for ``variable`` (``balance`` for errors), with land (NaN) drawn grey."""
    cmap = cmocean.cm.balance if error else _COLORMAPS.get(variable, cmocean.cm.deep)
    return cmap.with_extremes(bad=LAND_COLOUR)


def units_of(variable: str, attrs: dict | None = None) -> str:
    """Units from the data's attrs, else the CF table."""
    return str((attrs or {}).get("units") or CF_ATTRS.get(variable, {}).get("units", ""))


def color_limits(values: np.ndarray, variable: str, error: bool = False) -> tuple[float, float]:
    """Robust limits (2-98th percentiles); symmetric about 0 for errors and signed fields."""
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return -1.0, 1.0
    if error or variable in _DIVERGING:
        bound = float(np.percentile(np.abs(finite), 98)) or 1e-6
        return -bound, bound
    lo, hi = (float(v) for v in np.percentile(finite, [2, 98]))
    return (lo, hi) if hi > lo else (lo - 1e-6, hi + 1e-6)


def draw_field(
    ax,
    values: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    variable: str,
    sea_mask: np.ndarray | None = None,
    *,
    title: str = "",
    units: str = "",
    limits: tuple[float, float] | None = None,
    error: bool = False,
    colorbar: bool = True,
):
    """Draw one ``[lat, lon]`` field on ``ax``; land (NaN or off ``sea_mask``) grey, coastline black."""
    values = np.asarray(values, dtype=float)
    if sea_mask is not None:
        values = np.where(sea_mask, values, np.nan)
    vmin, vmax = limits or color_limits(values, variable, error)
    mesh = ax.pcolormesh(
        longitude,
        latitude,
        np.ma.masked_invalid(values),
        cmap=colormap_for(variable, error),
        vmin=vmin,
        vmax=vmax,
        shading="auto",
    )
    if sea_mask is not None and (~np.asarray(sea_mask)).any() and np.asarray(sea_mask).any():
        ax.contour(
            longitude,
            latitude,
            np.asarray(sea_mask, dtype=float),
            levels=[0.5],
            colors="k",
            linewidths=0.7,
        )
    ax.set_aspect(1 / np.cos(np.deg2rad(float(np.mean(latitude)))))
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    if colorbar:
        bar = ax.figure.colorbar(mesh, ax=ax, shrink=0.85)
        bar.set_label(units, fontsize=8)
        bar.ax.tick_params(labelsize=7)
    return mesh


def _lead_hours(lead: np.timedelta64 | float) -> int:
    if isinstance(lead, np.timedelta64):
        return int(lead / np.timedelta64(1, "h"))
    return int(lead)


def forecast_maps(
    ds: xr.Dataset, out_dir: Path | str, stem: str, variables: Sequence[str] | None = None
) -> list[Path]:
    """One PNG per variable of a forecast dataset (first init time), a panel per lead time.

    Files are ``<out_dir>/<stem>_<variable>.png``; returns their paths.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sea = ds["sea_mask"].values.astype(bool) if "sea_mask" in ds else None
    lat, lon = ds["latitude"].values, ds["longitude"].values
    init = pd.Timestamp(ds["init_time"].values[0])
    leads = ds["lead_time"].values
    paths = []
    for var in variables or [v for v in ds.data_vars if "lead_time" in ds[v].dims]:
        fields = ds[var].isel(init_time=0).values
        limits = color_limits(fields, var)
        n = len(leads)
        cols = min(n, 3)
        rows = int(np.ceil(n / cols))
        fig, axes = plt.subplots(
            rows, cols, figsize=(3.6 * cols, 3.2 * rows), squeeze=False, layout="constrained"
        )
        for k, ax in enumerate(axes.flat):
            if k >= n:
                ax.set_visible(False)
                continue
            valid = init + pd.Timedelta(hours=_lead_hours(leads[k]))
            draw_field(
                ax,
                fields[k],
                lat,
                lon,
                var,
                sea,
                title=f"+{_lead_hours(leads[k])} h, valid {valid:%Y-%m-%d %H:%M}",
                units=units_of(var, ds[var].attrs),
                limits=limits,
            )
        long_name = ds[var].attrs.get("long_name", var)
        fig.suptitle(f"{long_name} ({var}) forecast from {init:%Y-%m-%d %H:%M} UTC", fontsize=10)
        path = out_dir / f"{stem}_{var}.png"
        fig.savefig(path, dpi=90)
        plt.close(fig)
        paths.append(path)
    return paths
