"""Maps of sea fields: cmocean colormaps, grey land with a coastline, units on the colorbar.

Offers:

* :data:`CF_ATTRS` - CF standard names, long names and units (defined in :mod:`seacast.cf`).
* :func:`colormap_for` - the cmocean colormap of a variable (a diverging one for errors).
* :func:`draw_field` - one field on an axis, land masked, coastline drawn along the cell edges,
  colour bar labelled with the units and arrowed where the colours are clipped.
* :func:`forecast_maps` - one PNG per variable of a forecast file, one panel per lead time.
* :func:`forecast_lead_maps` - one PNG per lead time, one panel per variable (the HTML report's
  lead-time selector shows them one at a time, on the same colour scales), and the error against
  the truth below where the truth is known.

Matplotlib runs headless (Agg); figures are closed after saving so a long cron job does not leak.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import cmocean  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import xarray as xr  # noqa: E402
from matplotlib.collections import LineCollection  # noqa: E402

from seacast.cf import CF_ATTRS  # noqa: E402 (re-exported: forecast files read it here)

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


def cell_edges(centres: np.ndarray) -> np.ndarray:
    """Edges of cells around 1-D ``centres``: midpoints inside, half a cell beyond the ends."""
    centres = np.asarray(centres, dtype=float)
    if centres.size < 2:
        return np.array([centres[0] - 0.5, centres[0] + 0.5]) if centres.size else centres
    inner = (centres[:-1] + centres[1:]) / 2
    return np.concatenate([[2 * centres[0] - inner[0]], inner, [2 * centres[-1] - inner[-1]]])


def coastline_segments(
    sea_mask: np.ndarray, lat_edges: np.ndarray, lon_edges: np.ndarray
) -> list[list[tuple[float, float]]]:
    """The land/sea boundary as segments along cell edges, the same cells the map colours.

    A contour of the mask would run through cell centres: half a cell off the coloured cells and
    stopping half a cell short of the map's edges, which left sea cells outside the coastline.
    """
    sea = np.asarray(sea_mask, dtype=bool)
    segments: list[list[tuple[float, float]]] = []
    rows, cols = np.nonzero(sea[:, 1:] != sea[:, :-1])  # a change between columns i and i+1
    for j, i in zip(rows, cols, strict=True):
        x = float(lon_edges[i + 1])
        segments.append([(x, float(lat_edges[j])), (x, float(lat_edges[j + 1]))])
    rows, cols = np.nonzero(sea[1:, :] != sea[:-1, :])  # a change between rows j and j+1
    for j, i in zip(rows, cols, strict=True):
        y = float(lat_edges[j + 1])
        segments.append([(float(lon_edges[i]), y), (float(lon_edges[i + 1]), y)])
    return segments


def _extend(values: np.ndarray, vmin: float, vmax: float) -> str:
    """Which ends of the colour bar to arrow: the colours there are clipped, not the data."""
    finite = values[np.isfinite(values)]
    below = bool(finite.size and finite.min() < vmin)
    above = bool(finite.size and finite.max() > vmax)
    return {(True, True): "both", (True, False): "min", (False, True): "max"}.get(
        (below, above), "neither"
    )


def draw_field(
    ax,
    values: np.ndarray,
    latitude: np.ndarray,
    longitude: np.ndarray,
    variable: str,
    sea_mask: np.ndarray | None = None,
    *,
    title: str = "",
    units: str | None = None,
    limits: tuple[float, float] | None = None,
    error: bool = False,
    colorbar: bool = True,
):
    """Draw one ``[lat, lon]`` field on ``ax``; land (NaN or off ``sea_mask``) grey, coastline black.

    The colour bar is labelled with ``units`` (the variable's CF units if not given) and arrowed
    at an end where values lie beyond ``limits``.
    """
    values = np.asarray(values, dtype=float)
    if sea_mask is not None:
        values = np.where(sea_mask, values, np.nan)
    vmin, vmax = limits or color_limits(values, variable, error)
    lat_edges, lon_edges = cell_edges(latitude), cell_edges(longitude)
    # explicit edges (shading "flat"): each value colours exactly its own cell, the last column too
    mesh = ax.pcolormesh(
        lon_edges,
        lat_edges,
        np.ma.masked_invalid(values),
        cmap=colormap_for(variable, error),
        vmin=vmin,
        vmax=vmax,
        shading="flat",
    )
    if sea_mask is not None and (~np.asarray(sea_mask)).any() and np.asarray(sea_mask).any():
        ax.add_collection(
            LineCollection(
                coastline_segments(sea_mask, lat_edges, lon_edges), colors="k", linewidths=0.7
            )
        )
    ax.set_xlim(lon_edges[0], lon_edges[-1])
    ax.set_ylim(lat_edges[0], lat_edges[-1])
    ax.set_aspect(1 / np.cos(np.deg2rad(float(np.mean(latitude)))))
    ax.set_title(title, fontsize=9)
    ax.tick_params(labelsize=7)
    if colorbar:
        bar = ax.figure.colorbar(mesh, ax=ax, shrink=0.85, extend=_extend(values, vmin, vmax))
        bar.set_label(units if units is not None else units_of(variable), fontsize=8)
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


def forecast_lead_maps(
    ds: xr.Dataset,
    out_dir: Path | str,
    stem: str,
    variables: Sequence[str] | None = None,
    truth: dict[int, dict[str, np.ndarray]] | None = None,
) -> dict[int, Path]:
    """One PNG per lead time of a forecast dataset (first init time), a panel per variable.

    Each variable keeps one colour scale across lead times, so flipping between them compares
    like with like. ``truth`` (``{hours: {variable: field}}``, where the valid time has passed)
    adds a second row, forecast − truth, on one error scale per variable. Files are
    ``<out_dir>/<stem>_+<hours>h.png``; returns ``{hours: path}``.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    panels = _LeadPanels.of(ds, list(variables or forecast_variables(ds)), truth or {})
    paths: dict[int, Path] = {}
    for k, hours in enumerate(panels.hours_of):
        fig = panels.figure(ds, k, hours)
        path = out_dir / f"{stem}_+{hours}h.png"
        try:
            fig.savefig(path, dpi=90)
        finally:
            plt.close(fig)
        paths[hours] = path
    return paths


@dataclass
class _LeadPanels:
    """What every lead time's figure shares: the fields, the grid, one colour scale per variable."""

    names: list[str]
    fields: dict[str, np.ndarray]  # [lead, lat, lon] per variable
    limits: dict[str, tuple[float, float]]
    hours_of: list[int]
    errors: dict[int, dict[str, np.ndarray]]  # forecast − truth, where the truth is known
    error_limits: dict[str, tuple[float, float]]
    lat: np.ndarray
    lon: np.ndarray
    sea: np.ndarray | None
    init: pd.Timestamp

    @classmethod
    def of(
        cls, ds: xr.Dataset, names: list[str], truth: dict[int, dict[str, np.ndarray]]
    ) -> _LeadPanels:
        fields = {var: ds[var].isel(init_time=0).values for var in names}
        hours_of = [_lead_hours(lead) for lead in ds["lead_time"].values]
        errors = {
            hours: {var: fields[var][k] - truth[hours][var] for var in names if var in truth[hours]}
            for k, hours in enumerate(hours_of)
            if hours in truth
        }
        return cls(
            names=names,
            fields=fields,
            limits={var: color_limits(fields[var], var) for var in names},
            hours_of=hours_of,
            errors=errors,
            error_limits={
                var: color_limits(
                    np.stack([e[var] for e in errors.values() if var in e]), var, error=True
                )
                for var in names
                if any(var in e for e in errors.values())
            },
            lat=ds["latitude"].values,
            lon=ds["longitude"].values,
            sea=ds["sea_mask"].values.astype(bool) if "sea_mask" in ds else None,
            init=pd.Timestamp(ds["init_time"].values[0]),
        )

    def figure(self, ds: xr.Dataset, k: int, hours: int) -> plt.Figure:
        """The figure of lead ``k`` (``hours``): the forecast, and its error below when any is known."""
        valid = self.init + pd.Timedelta(hours=hours)
        rows = 2 if self.error_limits else 1
        fig, axes = plt.subplots(
            rows,
            len(self.names),
            figsize=(3.4 * len(self.names), 3.3 * rows),
            squeeze=False,
            layout="constrained",
        )
        for j, var in enumerate(self.names):
            units = units_of(var, ds[var].attrs)
            draw_field(
                axes[0, j],
                self.fields[var][k],
                self.lat,
                self.lon,
                var,
                self.sea,
                title=str(ds[var].attrs.get("long_name", var)) + f" ({var})",
                units=units,
                limits=self.limits[var],
            )
            if rows == 1:
                continue
            if var in self.errors.get(hours, {}):
                draw_field(
                    axes[1, j],
                    self.errors[hours][var],
                    self.lat,
                    self.lon,
                    var,
                    self.sea,
                    title=f"{var} forecast − truth",
                    units=units,
                    limits=self.error_limits[var],
                    error=True,
                )
            else:  # this lead's valid time is not in the store yet
                axes[1, j].set_axis_off()
                axes[1, j].text(0.5, 0.5, "truth not known yet", ha="center", fontsize=8)
        fig.suptitle(
            f"+{hours} h from {self.init:%Y-%m-%d %H:%M} UTC, valid {valid:%Y-%m-%d %H:%M} UTC",
            fontsize=10,
        )
        return fig


def forecast_variables(ds: xr.Dataset) -> list[str]:
    """The forecast fields of a forecast dataset, without the tide or other companions."""
    return [
        str(v)
        for v in ds.data_vars
        if "lead_time" in ds[v].dims and not str(v).endswith(("_tide", "_base", "_spread"))
    ]
