"""``seacast fetch`` and ``seacast login``: thin wrappers over :mod:`seacast.fetch` and the Copernicus source."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from seacast.cli.common import SetOption, app, console, handle_errors, out
from seacast.config import DataConfig, load_config
from seacast.errors import CredentialsError, check_writable

DEFAULT_DATA_CONFIG = Path("configs/data/nws_dutch_coast.yaml")


def resolve_data_config(value: Path) -> Path:
    """A path as given, or a bare name such as ``nws_multiyear`` for ``configs/data/nws_multiyear.yaml``."""
    if value.exists() or value.suffix:
        return value
    shipped = Path("configs/data") / f"{value}.yaml"
    return shipped if shipped.exists() else value


@app.command(
    "fetch",
    epilog=(
        "Examples:\n\n"
        "  seacast fetch --config configs/data/twin_dutch_coast.yaml\n\n"
        "  seacast fetch --config configs/data/nws_dutch_coast.yaml --dry-run\n\n"
        "  seacast fetch --config nws_multiyear --set months=2015-01:2015-12   # needs-network"
    ),
)
@handle_errors(
    interrupted="complete months are kept (the month in progress is discarded); "
    "rerun the same command to resume",
    elsewhere="--set raw_dir=DIR",
)
def fetch_command(
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="Data config (YAML), or the name of one in configs/data/."
        ),
    ] = DEFAULT_DATA_CONFIG,
    overrides: SetOption = None,
    dry_run: Annotated[
        bool,
        typer.Option(
            "--dry-run",
            help="Print the plan (datasets x months, estimated size) and stop; no network.",
        ),
    ] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Fetch every month again, even the complete ones.")
    ] = False,
) -> None:
    """Download raw NetCDF files, one per dataset and month, under data/raw/<source>/.

    Complete months (listed in data/raw/<source>/manifest.json) are skipped, so
    a killed or repeated fetch resumes where it stopped.

    Example: seacast fetch --config configs/data/nws_dutch_coast.yaml --dry-run
    """
    from seacast.fetch import fetch, format_bytes, plan

    cfg = load_config(DataConfig, resolve_data_config(config), overrides)
    if not dry_run:
        check_writable(cfg.raw_dir, "--set raw_dir=DIR")
    if dry_run:
        the_plan = plan(cfg, force=force)
        out.print(the_plan.table())
        for note in the_plan.notes:
            out.print(f"  {note}", highlight=False)
        return
    result = fetch(cfg, force=force, show_progress=True, console=console)
    total = sum(p.stat().st_size for p in result.paths if p.exists())
    out.print(
        f"fetched {result.fetched} month file(s), {result.already_complete} already complete; "
        f"{len(result.paths)} file(s), {format_bytes(total)} under {Path(cfg.raw_dir) / result.source}",
        highlight=False,
    )


@app.command(
    "login",
    epilog=(
        "Examples:\n\n"
        "  seacast login                    # needs-network: asks for both, password hidden\n\n"
        "  seacast login --username jdoe    # needs-network: asks for the password\n\n"
        "  COPERNICUSMARINE_SERVICE_USERNAME=jdoe COPERNICUSMARINE_SERVICE_PASSWORD=... "
        "seacast login   # needs-network"
    ),
)
@handle_errors(interrupted="no credentials were stored; run seacast login again")
def login_command(
    username: Annotated[
        str | None,
        typer.Option(
            "--username",
            "-u",
            envvar="COPERNICUSMARINE_SERVICE_USERNAME",
            help="Copernicus Marine username.",
        ),
    ] = None,
    password: Annotated[
        str | None,
        typer.Option(
            "--password",
            "-p",
            envvar="COPERNICUSMARINE_SERVICE_PASSWORD",
            help="Copernicus Marine password (asked with hidden input when omitted in a terminal).",
        ),
    ] = None,
) -> None:
    """Check your Copernicus Marine credentials and store them for `seacast fetch`.

    They go to the toolbox's credentials file (~/.copernicusmarine/), which
    seacast and copernicusmarine both read. Register for free at
    https://data.marine.copernicus.eu/register.

    Example: seacast login --username jdoe   # needs-network
    """
    from seacast.sources.copernicus import login

    interactive = sys.stdin.isatty()
    if (not username or not password) and not interactive:
        raise CredentialsError(
            "seacast login needs a username and a password, and cannot ask for them outside a terminal",
            "run it in a terminal, or pass --username and --password "
            "(or set COPERNICUSMARINE_SERVICE_USERNAME and COPERNICUSMARINE_SERVICE_PASSWORD)",
        )
    if not username:
        username = typer.prompt("Copernicus Marine username")
    if not password:
        password = typer.prompt("Copernicus Marine password", hide_input=True)
    path = login(username or "", password or "")
    out.print(f"logged in as {username}; credentials stored in {path}", highlight=False)
