"""The typer app and what every command shares: --set overrides, error printing."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console

from seacast import __version__
from seacast.errors import SeacastError

console = Console(stderr=True)
out = Console()

app = typer.Typer(
    name="seacast",
    help=(
        "Forecast hourly coastal sea fields (zos, uo, vo, so, thetao) with 3DDR U-Nets.\n\n"
        "Stages: fetch -> regrid -> train -> forecast / evaluate. "
        "Example: seacast pipeline run demo"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="Override a config field, e.g. --set months=2024-01:2024-03 (repeatable).",
        metavar="KEY=VALUE",
    ),
]

F = TypeVar("F", bound=Callable[..., Any])


def handle_errors(func: F) -> F:
    """Print a SeacastError as its message (problem and fix) and exit 1, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except SeacastError as exc:
            console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True)
            raise typer.Exit(1) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        out.print(f"seacast {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """seacast: coastal sea forecasting with U-Nets, backprop and zeroth-order training."""
