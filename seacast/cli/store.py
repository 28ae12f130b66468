"""``seacast regrid`` (raw NetCDF -> Zarr store) and ``seacast info`` (describe a store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from pydantic import ValidationError
from rich.table import Table

from seacast.cli.common import SetOption, app, console, handle_errors, out
from seacast.config import GRID_MULTIPLE, BBox, DataConfig, GridConfig, load_config
from seacast.errors import ConfigError, check_writable
from seacast.progress import progress_bar

REGRID_ELSEWHERE = "--set store.path=PATH (or --out PATH with input files)"


def _message(exc: ValidationError) -> str:
    """The first problem of a pydantic error, without pydantic's prefix and links."""
    return str(exc.errors()[0]["msg"]).removeprefix("Value error, ")


def _grid(shape: tuple[int, int], method: str) -> GridConfig:
    """--shape and --method of the direct form, checked as grid.shape and grid.method are."""
    try:
        return GridConfig(shape=shape, method=method)  # type: ignore[arg-type]
    except ValidationError as exc:
        item = exc.errors()[0]
        option = "--shape" if item["loc"][:1] == ("shape",) else "--method"
        fix = (
            f"give NY NX of at least 2 each, multiples of {GRID_MULTIPLE} to train on the store, "
            f"e.g. --shape {GRID_MULTIPLE} {GRID_MULTIPLE}"
            if option == "--shape"
            else "use conservative, bilinear or nearest"
        )
        shown = " ".join(map(str, shape)) if option == "--shape" else method
        raise ConfigError(f"{option} {shown} is not valid: {_message(exc)}", fix) from None


@app.command("regrid")
@handle_errors(
    interrupted="the store is as it was (a new store is written to a temporary folder first, "
    "an append writes the attributes last); rerun the same command",
    elsewhere=REGRID_ELSEWHERE,
)
def regrid_command(
    inputs: Annotated[
        list[Path] | None,
        typer.Argument(
            help="NetCDF files for the direct form (then --out, --bbox and --shape are needed).",
            show_default=False,
        ),
    ] = None,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config", "-c", help="Data config (YAML) in configs/data/; reads its raw layout."
        ),
    ] = None,
    overrides: SetOption = None,
    out_path: Annotated[
        Path | None, typer.Option("--out", help="Store to write (direct form).")
    ] = None,
    bbox: Annotated[
        tuple[float, float, float, float] | None,
        typer.Option(
            "--bbox",
            metavar="S N W E",
            help="LAT_MIN LAT_MAX LON_MIN LON_MAX of the target grid (direct form).",
            show_default=False,
        ),
    ] = None,
    shape: Annotated[
        tuple[int, int] | None,
        typer.Option(
            "--shape",
            metavar="NY NX",
            help="Cells of the target grid (direct form); multiples of 16 to train on it.",
            show_default=False,
        ),
    ] = None,
    variables: Annotated[
        str | None,
        typer.Option(
            "--variables",
            help="Comma-separated variables (direct form); all gridded ones if empty.",
        ),
    ] = None,
    method: Annotated[
        str, typer.Option("--method", help="conservative, bilinear or nearest (direct form).")
    ] = "conservative",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a store made with another config.")
    ] = False,
    dask_address: Annotated[
        str | None,
        typer.Option(
            "--dask-address",
            help="dask.distributed scheduler (e.g. tcp://host:8786); local threads if empty.",
        ),
    ] = None,
    workers: Annotated[
        int | None, typer.Option("--workers", help="Months regridded at once with local threads.")
    ] = None,
) -> None:
    """Regrid raw NetCDF files onto the store grid and write (or append to) the Zarr store.

    The U-Nets train on grids whose sizes are multiples of 16; other stores serve tides and info.

    Example: seacast regrid --config configs/data/twin_dutch_coast.yaml --set 'grid.shape=[32,32]' --set store.path=data/twin_32.zarr

    Example: seacast regrid data/raw/twin/nws_twin/2024-01.nc --out data/twin_2024-01.zarr --bbox 51 55 2.5 7.5 --shape 16 16 --variables zos,so
    """
    from seacast.regrid import regrid_config, regrid_files

    # every check before the progress bar, so a bad input is one message and nothing else
    data_config: DataConfig | None = None
    if config is not None:
        if inputs:
            raise ConfigError("give either --config or input files, not both", "drop one of them")
        data_config = load_config(DataConfig, config, overrides)
        check_writable(Path(data_config.store.path).parent, REGRID_ELSEWHERE)
        grid = data_config.grid
    else:
        if not inputs:
            raise ConfigError(
                "nothing to regrid: give --config configs/data/<name>.yaml or NetCDF files",
                "e.g. seacast regrid --config configs/data/twin_dutch_coast.yaml",
            )
        if out_path is None or bbox is None or shape is None:
            raise ConfigError(
                "the direct form needs --out, --bbox and --shape", "add the missing option(s)"
            )
        try:
            box = BBox(lat_min=bbox[0], lat_max=bbox[1], lon_min=bbox[2], lon_max=bbox[3])
        except ValidationError as exc:
            raise ConfigError(
                f"--bbox {' '.join(map(str, bbox))} is not a valid box: {_message(exc)}",
                "give LAT_MIN LAT_MAX LON_MIN LON_MAX, e.g. --bbox 51 55 2.5 7.5",
            ) from None
        grid = _grid(shape, method)
        check_writable(out_path.parent, "--out PATH")
    names = [v.strip() for v in variables.split(",") if v.strip()] if variables else None

    with progress_bar("regrid {task.description}", eta=False, console=console) as bar:
        task = bar.add_task("", total=None)

        def progress(key: str, done: int, total: int) -> None:
            bar.update(task, description=key, completed=done, total=total)

        if data_config is not None:
            report = regrid_config(
                data_config,
                overwrite=overwrite,
                dask_address=dask_address,
                workers=workers,
                progress=progress,
            )
        else:
            report = regrid_files(
                inputs or [],
                out_path,  # type: ignore[arg-type]
                bbox=box,
                shape=grid.shape,
                variables=names,
                method=grid.method,
                overwrite=overwrite,
                dask_address=dask_address,
                workers=workers,
                progress=progress,
            )
    for line in report.messages():
        out.print(line, highlight=False, markup=False, soft_wrap=True)
    if any(n % GRID_MULTIPLE for n in grid.shape):
        console.print(
            f"note: the U-Nets train only on grids whose sizes are multiples of {GRID_MULTIPLE}; "
            f"this {grid.shape[0]}x{grid.shape[1]} store serves seacast info and seacast tides",
            highlight=False,
            soft_wrap=True,
        )


@app.command("info")
@handle_errors
def info_command(
    store: Annotated[Path, typer.Argument(help="A Zarr store made by `seacast regrid`.")],
) -> None:
    """Describe a store: variables, grid, time span and step, gaps, sea fraction, statistics.

    Example: seacast info data/twin_dutch_coast.zarr
    """
    from seacast.store import (
        open_store,
        store_config,
        store_fingerprint,
        store_gaps,
        store_stats,
        store_step_hours,
        store_variables,
    )

    ds = open_store(store)
    config = store_config(ds)
    times = pd.DatetimeIndex(ds["time"].values)
    lat, lon = ds["latitude"].values, ds["longitude"].values
    out.print(f"[bold]{store}[/]  fingerprint {store_fingerprint(ds)}")
    out.print(f"variables: {', '.join(store_variables(ds))}")
    grid = config.get("grid", {})
    out.print(
        f"grid: {ds.sizes['latitude']} x {ds.sizes['longitude']}, lat {lat.min():.3f}..{lat.max():.3f}, "
        f"lon {lon.min():.3f}..{lon.max():.3f} ({grid.get('method', '?')})"
    )
    if len(times):
        out.print(
            f"time: {times[0]} .. {times[-1]}, {len(times)} steps every {store_step_hours(ds):g} h"
        )
    gaps = store_gaps(ds)
    out.print(
        f"gaps: {len(gaps)}"
        + ("" if not gaps else "  " + ", ".join(f"{a} .. {b}" for a, b in gaps[:5]))
    )
    if len(gaps) > 5:
        out.print(f"  ... and {len(gaps) - 5} more")
    out.print(f"sea fraction: {float(ds['sea_mask'].mean()):.1%}")
    period = json.loads(ds.attrs.get("seacast_stats_period", "[]"))
    table = Table(title="statistics" + (f" ({period[0]} .. {period[1]})" if period else ""))
    for column in ("variable", "min", "max", "mean", "std"):
        table.add_column(column, justify="left" if column == "variable" else "right")
    for var, stats in store_stats(ds).items():
        table.add_row(var, *(f"{stats[k]:.4g}" for k in ("min", "max", "mean", "std")))
    out.print(table)
