"""``seacast regrid`` (raw NetCDF -> Zarr store) and ``seacast info`` (describe a store)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import pandas as pd
import typer
from rich.table import Table

from seacast.cli.common import SetOption, app, console, handle_errors, out
from seacast.config import BBox, DataConfig, load_config
from seacast.errors import ConfigError
from seacast.progress import progress_bar


@app.command("regrid")
@handle_errors
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
            "--config", "-c", help="Data config (configs/data/<name>.yaml); reads its raw layout."
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
            help="LAT_MIN LAT_MAX LON_MIN LON_MAX of the target grid (direct form).",
            show_default=False,
        ),
    ] = None,
    shape: Annotated[
        tuple[int, int] | None,
        typer.Option("--shape", help="NY NX of the target grid (direct form).", show_default=False),
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

    Example: seacast regrid --config configs/data/demo.yaml --set months=2024-01:2024-03

    Example: seacast regrid med.nc --out data/med.zarr --bbox 35.05 35.6 26.25 27.0 --shape 8 8
    """
    from seacast.regrid import regrid_config, regrid_files

    with progress_bar("regrid {task.description}", eta=False, console=console) as bar:
        task = bar.add_task("", total=None)

        def progress(key: str, done: int, total: int) -> None:
            bar.update(task, description=key, completed=done, total=total)

        if config is not None:
            if inputs:
                raise ConfigError(
                    "give either --config or input files, not both", "drop one of them"
                )
            data_config = load_config(DataConfig, config, overrides)
            report = regrid_config(
                data_config,
                overwrite=overwrite,
                dask_address=dask_address,
                workers=workers,
                progress=progress,
            )
        else:
            if not inputs:
                raise ConfigError(
                    "nothing to regrid: give --config configs/data/<name>.yaml or NetCDF files",
                    "e.g. seacast regrid --config configs/data/demo.yaml",
                )
            if out_path is None or bbox is None or shape is None:
                raise ConfigError(
                    "the direct form needs --out, --bbox and --shape", "add the missing option(s)"
                )
            try:
                box = BBox(lat_min=bbox[0], lat_max=bbox[1], lon_min=bbox[2], lon_max=bbox[3])
            except ValueError as exc:
                raise ConfigError(
                    f"--bbox {bbox} is not a valid box: {exc}",
                    "give LAT_MIN LAT_MAX LON_MIN LON_MAX",
                ) from None
            if method not in ("conservative", "bilinear", "nearest"):
                raise ConfigError(
                    f"--method {method} is unknown", "use conservative, bilinear or nearest"
                )
            names = [v.strip() for v in variables.split(",") if v.strip()] if variables else None
            report = regrid_files(
                inputs,
                out_path,
                bbox=box,
                shape=shape,
                variables=names,
                method=method,
                overwrite=overwrite,
                dask_address=dask_address,
                workers=workers,
                progress=progress,
            )
    for line in report.messages():
        out.print(line, highlight=False, markup=False, soft_wrap=True)


@app.command("info")
@handle_errors
def info_command(
    store: Annotated[Path, typer.Argument(help="A Zarr store made by `seacast regrid`.")],
) -> None:
    """Describe a store: variables, grid, time span and step, gaps, sea fraction, statistics.

    Example: seacast info data/demo.zarr
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
