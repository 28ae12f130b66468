"""Co-tidal maps: where a constituent's tide is large, and when its high water comes.

Offers:

* :func:`cotidal_map` - one PNG of a constituent of one variable: the amplitude as a filled
  map (``cmocean.cm.amp``, units on the colorbar) under labelled lines of equal Greenwich phase
  every 30 degrees, land grey.

Phase lines are drawn as the zero crossings of ``sin(g - g0)`` where ``cos(g - g0) > 0``, so
the 360 -> 0 wrap draws no false line and lines meet cleanly at amphidromic points.
Matplotlib runs headless (Agg); the figure is written through a temporary name and a rename.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import cmocean  # noqa: E402
import matplotlib.patheffects as effects  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from seacast.atomic import atomic_path  # noqa: E402
from seacast.errors import DataError  # noqa: E402
from seacast.plots import LAND_COLOUR  # noqa: E402

if TYPE_CHECKING:
    from seacast.tides import TidalConstants

PHASE_STEP_DEGREES = 30
_HALO = [effects.withStroke(linewidth=2.2, foreground="white")]  # lines read on dark and light


def _phase_lines(ax, longitude, latitude, phase: np.ndarray, step: int) -> None:
    """Labelled lines of equal phase (degrees) every ``step`` degrees, without the wrap line."""
    radians = np.radians(phase)
    for level in range(0, 360, step):
        offset = radians - np.radians(level)
        crossing = np.where(np.cos(offset) > 0, np.sin(offset), np.nan)
        if not np.isfinite(crossing).any():
            continue
        finite = crossing[np.isfinite(crossing)]
        if finite.min() > 0 or finite.max() < 0:
            continue  # this phase does not occur on the grid
        lines = ax.contour(
            longitude,
            latitude,
            np.ma.masked_invalid(crossing),
            levels=[0.0],
            colors="k",
            linewidths=0.9,
        )
        lines.set_path_effects(_HALO)
        for label in ax.clabel(lines, fmt={0.0: f"{level}°"}, fontsize=7, inline=True):
            label.set_path_effects(_HALO)


def cotidal_map(
    tides: TidalConstants,
    variable: str,
    sea_mask: np.ndarray,
    path: Path | str,
    constituent: str = "M2",
    *,
    units: str = "",
    point: tuple[float, float] | None = None,
) -> Path:
    """Draw the co-tidal map of ``constituent`` for ``variable`` to ``path`` (PNG); returns the path.

    ``sea_mask [lat, lon]`` (False on land) greys the land; ``units`` labels the colorbar;
    ``point`` (lat, lon), if given, is marked with a cross. DataError if the constants hold
    no such variable or constituent.
    """
    if variable not in tides.variables:
        raise DataError(
            f"the tidal constants have no variable {variable} (they have {tides.variables})",
            "draw one of those, or refit the tides with it (--variables)",
        )
    if constituent not in tides.constituents:
        raise DataError(
            f"the tidal constants have no constituent {constituent} "
            f"(they have {', '.join(tides.constituents)})",
            "draw one of those, or refit with it (--constituents)",
        )
    k = tides.constituents.index(constituent)
    c = tides.variables.index(variable)
    sea = np.asarray(sea_mask, dtype=bool)
    amplitude = np.where(sea, tides.amplitude[k, c], np.nan)
    phase = np.where(sea, tides.phase[k, c], np.nan)
    latitude = np.asarray(tides.latitude, dtype=float)
    longitude = np.asarray(tides.longitude, dtype=float)

    aspect = 1 / np.cos(np.deg2rad(float(np.mean(latitude))))
    span = np.ptp(longitude) / aspect / max(float(np.ptp(latitude)), 1e-9)  # map width / height
    fig, ax = plt.subplots(
        figsize=(float(np.clip(4.8 * span + 1.8, 5.6, 11.0)), 5.2), layout="constrained"
    )
    try:
        ax.set_facecolor(LAND_COLOUR)
        finite = amplitude[np.isfinite(amplitude)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if high - low < 1e-12:
            low, high = low - 1e-6, high + 1e-6
        mesh = ax.pcolormesh(
            longitude,
            latitude,
            np.ma.masked_invalid(amplitude),
            cmap=cmocean.cm.amp.with_extremes(bad=LAND_COLOUR),
            vmin=low,
            vmax=high,
            shading="auto",
        )
        _phase_lines(ax, longitude, latitude, phase, PHASE_STEP_DEGREES)
        if point is not None:
            ax.plot(point[1], point[0], marker="x", color="tab:blue", markersize=8, mew=2)
        bar = fig.colorbar(mesh, ax=ax, shrink=0.9)
        bar.set_label(f"{constituent} amplitude" + (f" ({units})" if units else ""), fontsize=9)
        bar.ax.tick_params(labelsize=8)
        ax.set_aspect(aspect)
        ax.set_xlabel("longitude (°E)", fontsize=9)
        ax.set_ylabel("latitude (°N)", fontsize=9)
        ax.tick_params(labelsize=8)
        start, end = (p[:10] for p in tides.period)
        ax.set_title(
            f"{constituent} co-tidal map of {variable}: amplitude, and Greenwich phase\n"
            f"every {PHASE_STEP_DEGREES}° (lines); fit {start} .. {end}, {tides.fit_hours} h",
            fontsize=10,
        )
        path = Path(path)
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=110, format="png")
    finally:
        plt.close(fig)
    return path
