"""``seacast forecast`` (one forecast, or the scheduled one with --latest --update) and ``seacast cron``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal

import typer

from seacast.cli.common import app, console, fail, handle_errors, out
from seacast.errors import ConfigError, SeacastError, check_writable, os_error

FORECAST_ELSEWHERE = "--out DIR"


def check_init_time(text: str) -> str:
    """``latest`` or an ISO time on the hour (forecasts start at whole hours), as given."""
    import pandas as pd

    if text.strip().lower() == "latest":
        return "latest"
    try:
        wanted = pd.Timestamp(text)
    except (ValueError, TypeError, OverflowError):
        raise ConfigError(
            f"--init-time '{text}' is not a time",
            "write 'latest' or an ISO time on the hour, such as 2024-05-01T06",
        ) from None
    if wanted != wanted.floor("h"):
        before, after = wanted.floor("h"), wanted.ceil("h")
        raise ConfigError(
            f"--init-time '{text}' is not on the hour: forecasts start at whole hours",
            f"use --init-time {before:%Y-%m-%dT%H} or --init-time {after:%Y-%m-%dT%H}",
        )
    return text


@app.command("forecast")
@handle_errors(
    interrupted="no partial forecast is left (it is written under a temporary name, then "
    "renamed); rerun the same command",
    elsewhere=FORECAST_ELSEWHERE,
)
def forecast_command(
    run: Annotated[
        Path, typer.Option("--run", "-r", help="Run folder made by `seacast train` (runs/<name>).")
    ],
    init_time: Annotated[
        str,
        typer.Option(
            "--init-time", help="'latest' or an ISO time on the hour, e.g. 2024-05-01T06."
        ),
    ] = "latest",
    latest: Annotated[
        bool,
        typer.Option(
            "--latest", help="Forecast from the newest complete init time (as --init-time latest)."
        ),
    ] = False,
    out_dir: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for forecast files <init>.zarr / .nc.")
    ] = Path("forecasts"),
    store: Annotated[
        Path | None, typer.Option("--store", help="Store to read; the run's own store if empty.")
    ] = None,
    fmt: Annotated[
        Literal["zarr", "netcdf"], typer.Option("--format", help="zarr (default) or netcdf.")
    ] = "zarr",
    plots: Annotated[
        bool,
        typer.Option("--plots", help="Also write a PNG map per variable (a panel per lead time)."),
    ] = False,
    adapt: Annotated[
        Literal["zo"] | None,
        typer.Option(
            "--adapt", help="'zo': fine-tune a copy of the model on the latest hours first."
        ),
    ] = None,
    adapt_target: Annotated[
        Literal["auto", "gain", "network"],
        typer.Option(
            "--adapt-target",
            help="gain: the base anomaly's gain per lead time and variable, 2 forwards a sample "
            "(runs with a base); network: in-place SPSA on every weight; auto: gain where the "
            "run has a base, else network.",
        ),
    ] = "auto",
    adapt_hours: Annotated[
        int | None,
        typer.Option(
            "--adapt-hours",
            min=1,
            help="Hours of data before the init time to adapt on (gain: 1344, 8 weeks; network: 168).",
        ),
    ] = None,
    adapt_steps: Annotated[
        int,
        typer.Option(
            "--adapt-steps", min=1, help="network: ZO steps (each 2 x probes forward passes)."
        ),
    ] = 40,
    adapt_lr: Annotated[
        float | None, typer.Option("--adapt-lr", help="network: ZO learning rate (default 3e-3).")
    ] = None,
    update: Annotated[
        bool,
        typer.Option(
            "--update",
            help="First fetch what is new and append it to the store (implies --latest).",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Redo a forecast that exists already.")
    ] = False,
    which: Annotated[
        Literal["best", "last"], typer.Option("--checkpoint", help="Checkpoint of the run to use.")
    ] = "best",
    log_file: Annotated[
        Path | None, typer.Option("--log-file", help="Append log records to this file (for cron).")
    ] = None,
) -> None:
    """Forecast every lead time of a run from an init time and write <out>/<init>.zarr.

    Exit status with --latest or --update (for cron/systemd): 0 a forecast was written, 10 nothing new (it exists already), 11 another forecast holds the lock, 1 failure (no partial forecast is left). Without them: 0 when the forecast exists afterwards, 1 otherwise. Always: 2 a wrong command line, 130 interrupted.

    Example: seacast forecast --run runs/demo-res_3ddr_unet-backprop --init-time 2024-01-20T06 --plots --out forecasts/demo

    Example (the newest init time, as cron does; exit 10 if it exists): seacast forecast --run runs/demo-res_3ddr_unet-backprop --latest --out forecasts/demo --log-file logs/forecast.log

    The hourly line of `seacast cron --print` adds --update, which first fetches and appends what is new (for the twin: every month up to now).
    """
    from seacast.cron import ExitCode, scheduled_forecast, setup_file_logging

    logger = logging.getLogger("seacast")
    try:
        handler = setup_file_logging(log_file) if log_file else None
    except OSError as exc:  # name the option that chose the file, not --out
        raise os_error(exc, "--log-file FILE") from None
    options = {
        "fmt": fmt,
        "plots": plots,
        "adapt": adapt,
        "adapt_target": adapt_target,
        "adapt_hours": adapt_hours,
        "adapt_steps": adapt_steps,
        "adapt_lr": adapt_lr,
        "which": which,
    }
    scheduled = update or latest
    init_time = "latest" if scheduled else check_init_time(init_time)
    try:
        check_writable(out_dir, FORECAST_ELSEWHERE)  # before loading the run and the store
        code = scheduled_forecast(
            run,
            out_dir,
            update=update,
            force=force,
            store_path=store,
            init_time=init_time,
            **options,
        )
    except (SeacastError, OSError) as exc:  # handle_errors prints it (exit 1 = FAILURE)
        if handler is not None:  # the console line says it too
            logger.error("forecast failed: %s", exc)
        raise
    except KeyboardInterrupt:
        if handler is not None:
            logger.error("forecast interrupted; no partial forecast is left")
        raise
    except Exception as exc:  # unexpected: keep the traceback in the log for the cron case
        if handler is not None:
            logger.exception("forecast failed unexpectedly")
        raise fail(
            SeacastError(
                f"the forecast failed unexpectedly: {type(exc).__name__}: {exc}",
                "rerun with --log-file FILE to keep the traceback, and report it with that file"
                if handler is None
                else f"the traceback is in {log_file}; report it with that file",
            )
        ) from None
    finally:
        if handler is not None:
            logger.removeHandler(handler)
            handler.close()
    messages = {
        ExitCode.SUCCESS: "forecast written",
        ExitCode.NO_NEW_DATA: "nothing new: the forecast for this init time exists (use --force to redo it)",
        ExitCode.LOCKED: "another seacast forecast holds the lock: nothing done",
    }
    console.print(messages[code])
    if not scheduled:
        # by hand or from a pipeline: an existing forecast is success, a held lock an error
        code = ExitCode.FAILURE if code == ExitCode.LOCKED else ExitCode.SUCCESS
    raise typer.Exit(int(code))


@app.command("cron")
@handle_errors
def cron_command(
    run: Annotated[Path, typer.Option("--run", "-r", help="Run folder to forecast with.")],
    print_text: Annotated[
        bool, typer.Option("--print", help="Print the crontab line and systemd units.")
    ] = False,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Forecast folder.")] = Path(
        "forecasts"
    ),
    log_file: Annotated[
        Path, typer.Option("--log-file", help="Log file of the scheduled runs.")
    ] = Path("logs/forecast.log"),
    minute: Annotated[
        int, typer.Option("--minute", min=0, max=59, help="Minute past each hour for cron.")
    ] = 17,
    adapt_hours: Annotated[
        int | None,
        typer.Option(
            "--adapt-hours", help="Add --adapt zo --adapt-hours N to the scheduled command."
        ),
    ] = None,
) -> None:
    """Print a ready crontab line and a systemd service + timer for hourly forecasts (absolute paths).

    seacast never edits your crontab: paste the line with `crontab -e`, or save the units.

    Example: seacast cron --print --run runs/demo-res_3ddr_unet-backprop --out forecasts/demo
    """
    from seacast.cron import schedule_text

    if not print_text:
        console.print(
            "seacast cron only prints the schedule; add --print (nothing is installed for you)",
            soft_wrap=True,
        )
        raise typer.Exit(2)
    if not (run / "config.yaml").is_file():
        console.print(
            f"[yellow]warning:[/] {run} does not look like a run folder yet (no config.yaml)"
        )
    extra = ["--adapt", "zo", "--adapt-hours", str(adapt_hours)] if adapt_hours else []
    out.print(
        schedule_text(run, out_dir, log_file, minute=minute, extra=extra),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
