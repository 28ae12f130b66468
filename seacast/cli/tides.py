"""``seacast tides``: fit a store's harmonic tidal constants and look at them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import numpy as np
import typer

from seacast.cli.common import app, console, handle_errors, out
from seacast.errors import ConfigError, DataError, check_writable

if TYPE_CHECKING:
    import xarray as xr

    from seacast.tides import TidalConstants

PERIOD_FORM = "START:END with inclusive dates, e.g. --period 2024-01-01:2024-09-13"


def parse_period(text: str, first_hour: int, last_hour: int) -> tuple[int, int]:
    """``START:END`` -> inclusive (start, end) hours since 1970.

    Each side is a date at any resolution pandas reads (``2024``, ``2024-03``, ``2024-03-01``,
    ``2024-03-01T06:00``) and covers all of it, so ``2024-01:2024-03`` ends on 31 March 23:00.
    An empty side is the store's first or last hour.
    """
    import pandas as pd

    def bad(why: str) -> ConfigError:
        return ConfigError(f"--period '{text}' {why}", f"give it as {PERIOD_FORM}")

    def hour(side: str, end: bool) -> int:
        try:
            period = pd.Period(side)
        except (ValueError, TypeError, OverflowError) as exc:
            raise ValueError(f"'{side}' is not a date ({exc})") from None
        stamp = period.end_time.floor("h") if end else period.start_time.ceil("h")
        return int((stamp - pd.Timestamp("1970-01-01")) // pd.Timedelta(hours=1))

    # times have colons too: use the one colon where both sides read as dates
    reasons = []
    for match in re.finditer(r":(?=\s*\d{4}|\s*$)", text):  # END starts with its year
        start, end = text[: match.start()].strip(), text[match.end() :].strip()
        try:
            lo = hour(start, end=False) if start else first_hour
            hi = hour(end, end=True) if end else last_hour
        except ValueError as exc:
            reasons.append(str(exc))
            continue
        if lo > hi:
            raise bad("ends before it starts")
        return lo, hi
    detail = f": {reasons[0]}" if len(reasons) == 1 else ""
    raise bad(f"is not two dates joined by ':'{detail}")


def _names(text: str, option: str) -> list[str]:
    names = [part.strip() for part in text.split(",") if part.strip()]
    if not names:
        raise ConfigError(f"{option} '{text}' names nothing", f"give a comma list to {option}")
    return list(dict.fromkeys(names))


def _lead_times(text: str) -> list[int]:
    try:
        leads = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(
            f"--lead-times '{text}' is not a comma list of whole hours",
            "give e.g. --lead-times 6,12,24",
        ) from None
    if any(lead < 1 for lead in leads):
        raise ConfigError(
            f"--lead-times '{text}' has a lead time under 1 h", "give positive hours, e.g. 6,12,24"
        )
    return sorted(set(leads))


def _point_text(lat: float, lon: float) -> str:
    return f"{lat:.4f},{lon:.4f}"


def nearest_sea_point(
    store: xr.Dataset, point: str | None
) -> tuple[tuple[int, int], tuple[float, float] | None]:
    """Grid indices of the sea point nearest ``LAT,LON`` (the grid's middle if None), and the request."""
    lat = np.asarray(store["latitude"].values, dtype=float)
    lon = np.asarray(store["longitude"].values, dtype=float)
    sea = np.asarray(store["sea_mask"].values, dtype=bool)
    if not sea.any():
        raise DataError("the store has no sea point", "remake it with a grid that covers sea")

    def edges(centres: np.ndarray) -> tuple[float, float]:
        half = abs(float(centres[1] - centres[0])) / 2 if len(centres) > 1 else 0.0
        return float(centres.min()) - half, float(centres.max()) + half

    (lat_lo, lat_hi), (lon_lo, lon_hi) = edges(lat), edges(lon)
    requested: tuple[float, float] | None = None
    if point is None:
        target = (float(lat.mean()), float(lon.mean()))
    else:
        try:
            target = tuple(float(part) for part in point.split(","))  # type: ignore[assignment]
        except ValueError:
            target = ()  # type: ignore[assignment]
        if len(target) != 2 or not all(np.isfinite(target)):
            raise ConfigError(
                f"--point '{point}' is not LAT,LON in degrees",
                f"give e.g. --point {_point_text(lat.mean(), lon.mean())}",
            )
        if not (lat_lo <= target[0] <= lat_hi and lon_lo <= target[1] <= lon_hi):
            raise ConfigError(
                f"--point {point} is outside the store's grid, which covers "
                f"latitude {lat_lo:.4f}..{lat_hi:.4f} and longitude {lon_lo:.4f}..{lon_hi:.4f}",
                "give a point inside those bounds (seacast info STORE shows the grid)",
            )
        requested = target
    yy, xx = np.meshgrid(lat, lon, indexing="ij")
    scale = np.cos(np.deg2rad(target[0]))  # a degree of longitude is shorter than one of latitude
    distance = np.hypot(yy - target[0], (xx - target[1]) * scale)
    distance[~sea] = np.inf
    i, j = np.unravel_index(int(np.argmin(distance)), distance.shape)
    return (int(i), int(j)), requested


def _figure_variables(variables: list[str]) -> list[str]:
    return [v for v in variables if v == "zos"] or variables[:1]


def _map_constituent(tides: TidalConstants) -> str:
    from seacast.tides import MAIN_CONSTITUENTS

    present = [c for c in MAIN_CONSTITUENTS if c in tides.constituents]
    return (present or tides.constituents)[0]


def _decimals(values: np.ndarray) -> int:
    """Decimals that give the largest of ``values`` four significant digits."""
    finite = np.abs(values[np.isfinite(values)])
    top = float(finite.max()) if finite.size else 0.0
    return int(np.clip(3 - np.floor(np.log10(top)), 0, 8)) if top > 0 else 4


def _summary(
    tides: TidalConstants,
    cell: tuple[int, int],
    units: dict[str, str],
    store_path: Path,
) -> None:
    from rich.table import Table

    from seacast.tides import MAIN_CONSTITUENTS

    i, j = cell
    lat, lon = float(tides.latitude[i]), float(tides.longitude[j])
    shown = [c for c in MAIN_CONSTITUENTS if c in tides.constituents] or list(tides.constituents)
    out.print(
        f"[bold]{store_path}[/]: tides fitted on {tides.period[0]} .. {tides.period[1]}, "
        f"{tides.fit_hours} hours, {len(tides.constituents)} constituents ({tides.selection})",
        highlight=False,
    )
    out.print(
        f"amplitude A and Greenwich phase lag g (as 'A g°') of the main constituents at "
        f"{_point_text(lat, lon)} (row {i}, column {j}):",
        highlight=False,
    )
    rows = [tides.constituents.index(name) for name in shown]
    amplitude, phase = tides.amplitude[rows, :, i, j], tides.phase[rows, :, i, j]
    cells: dict[str, list[str]] = {}
    for c, var in enumerate(tides.variables):
        digits = _decimals(amplitude[:, c])
        cells[var] = []
        for a, g in zip(amplitude[:, c], phase[:, c], strict=True):
            text = f"{a:.{digits}f}"
            # a phase is only meaningful where there is an amplitude to speak of
            shown_phase = f"{g:5.1f}°" if np.isfinite(a) and float(text) != 0.0 else "     -"
            cells[var].append(f"{text} {shown_phase}")
    # as many variables per table as the console's width holds
    per_table = max(1, (out.width - 14) // 22)
    for start in range(0, len(tides.variables), per_table):
        chosen = tides.variables[start : start + per_table]
        table = Table()
        table.add_column("constituent", no_wrap=True)
        for var in chosen:
            unit = f" ({units[var]})" if units[var] else ""
            table.add_column(f"{var}{unit}", justify="right", no_wrap=True)
        for r, name in enumerate(shown):
            table.add_row(name, *(cells[var][r] for var in chosen))
        out.print(table)
    if tides.damping_lead_times:
        out.print(
            "anomaly (obs - tide) over the fit: its std, and the damping α of the persisted "
            "anomaly, tide(t0+L) + α (obs(t0) - tide(t0)), per lead time L:",
            highlight=False,
        )
        damping = Table()
        damping.add_column("variable", no_wrap=True)
        damping.add_column("std", justify="right", no_wrap=True)
        for lead in tides.damping_lead_times:
            damping.add_column(f"α +{lead} h", justify="right", no_wrap=True)
        for c, var in enumerate(tides.variables):
            unit = f" {units[var]}" if units[var] else ""
            damping.add_row(
                var,
                f"{tides.anomaly_std[c]:.3g}{unit}",
                *(f"{alpha:.3f}" for alpha in tides.damping[:, c]),
            )
        out.print(damping)


@app.command("tides")
@handle_errors(
    interrupted="nothing was written (tides.nc and the maps come at the end); "
    "rerun the same command",
    elsewhere="--out DIR",
)
def tides_command(
    store: Annotated[Path, typer.Argument(help="A Zarr store made by `seacast regrid`.")],
    period: Annotated[
        str | None,
        typer.Option(
            "--period",
            help="Fit period START:END, inclusive dates (e.g. 2024-01-01:2024-09-13); "
            "the whole store if empty.",
            metavar="START:END",
        ),
    ] = None,
    variables: Annotated[
        str | None,
        typer.Option(
            "--variables", help="Comma list of variables to fit (all the store's if empty)."
        ),
    ] = None,
    constituents: Annotated[
        str,
        typer.Option(
            "--constituents",
            help="'auto' (those the period resolves, Rayleigh criterion) or a comma list, e.g. M2,S2,K1,O1.",
        ),
    ] = "auto",
    long_period: Annotated[
        bool,
        typer.Option(
            "--long-period/--no-long-period",
            help="With auto: also fit SA, SSA, MSM, MM, MSF, MF (weather-dominated on a shelf).",
        ),
    ] = False,
    lead_times: Annotated[
        str,
        typer.Option(
            "--lead-times", help="Comma list of lead times (hours) for the anomaly damping factor."
        ),
    ] = "6,12,24",
    point: Annotated[
        str | None,
        typer.Option(
            "--point",
            help="LAT,LON of the point to tabulate (snapped to the nearest sea point); "
            "the sea point nearest the grid's middle if empty.",
            metavar="LAT,LON",
        ),
    ] = None,
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Output folder (reports/tides/<store name> if empty)."),
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")
    ] = True,
) -> None:
    """Fit harmonic tidal constants of a store and show them at one point.

    Writes tides.nc (every constituent, variable and grid point; the anomaly damping per lead time).

    Draws cotidal_<variable>.png (M2 amplitude, phase lines) for zos, else the first variable.

    Example: seacast tides data/twin_dutch_coast.zarr --period 2024-01-01:2024-09-13 --point 52.5,4.2
    """
    from seacast.plots import units_of
    from seacast.progress import progress_bar
    from seacast.store import open_store, store_variables, time_hours
    from seacast.tide_plots import cotidal_map
    from seacast.tides import TIDES_FILE, fit_tides

    ds = open_store(store)
    hours = time_hours(ds["time"].values)
    if len(hours) == 0:
        raise DataError(f"store {store} holds no times", "append data to it (seacast regrid)")
    first, last = int(hours[0]), int(hours[-1])
    periods = [parse_period(period, first, last) if period else (first, last)]
    available = store_variables(ds)
    chosen = _names(variables, "--variables") if variables else available
    unknown = [v for v in chosen if v not in available]
    if unknown:
        raise ConfigError(
            f"--variables {unknown} are not in the store (it has {', '.join(available)})",
            f"name some of those, e.g. --variables {','.join(available[:2])}",
        )
    names: str | list[str] = (
        "auto" if constituents.strip().lower() == "auto" else _names(constituents, "--constituents")
    )
    leads = _lead_times(lead_times)
    cell, requested = nearest_sea_point(ds, point)
    folder = out_dir or Path("reports") / "tides" / Path(store).stem
    check_writable(folder, "--out DIR")  # before the fit, not after it

    with progress_bar("tide fit", console=console, enabled=progress) as bar:
        task = bar.add_task("", total=None)

        def on_chunk(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        tides = fit_tides(
            ds,
            chosen,
            periods,
            constituents=names,
            long_period=long_period,
            lead_times=leads,
            on_chunk=on_chunk,
        )

    units = {var: units_of(var, dict(ds[var].attrs)) for var in chosen}
    lat, lon = float(tides.latitude[cell[0]]), float(tides.longitude[cell[1]])
    written = [tides.save(folder / TIDES_FILE)]
    sea = np.asarray(ds["sea_mask"].values, dtype=bool)
    constituent = _map_constituent(tides)
    for var in _figure_variables(chosen):
        written.append(
            cotidal_map(
                tides,
                var,
                sea,
                folder / f"cotidal_{var}.png",
                constituent,
                units=units[var],
                point=(lat, lon),
            )
        )

    if requested is None:
        where = "the sea point nearest the grid's middle"
    else:
        where = f"the sea point nearest the requested {_point_text(*requested)}"
    out.print(f"point: {_point_text(lat, lon)} ({where})", highlight=False)
    _summary(tides, cell, units, store)
    out.print(f"written: {', '.join(str(p) for p in written)}", highlight=False)
