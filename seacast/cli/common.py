"""The typer app and what every command shares: --set overrides, error and Ctrl-C printing.

Exit status of every command: 0 success, 1 a problem named with its fix (a
:class:`SeacastError` or an ``OSError``), 2 a command line that does not parse
(click's usage error), 130 interrupted (Ctrl-C, or a SIGTERM, handled the same way).
``forecast --latest`` adds 10 and 11.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Annotated, Any, TypeVar, overload

import click
import typer
from rich.console import Console
from rich.markup import escape

from seacast import __version__
from seacast.errors import SeacastError, os_error
from seacast.interrupts import terminate_as_interrupt

console = Console(stderr=True)
out = Console()

EXIT_FAILURE = 1
EXIT_USAGE = 2  # click's status for a command line it cannot parse
EXIT_INTERRUPTED = 130  # 128 + SIGINT, what shells report for Ctrl-C

app = typer.Typer(
    name="seacast",
    help=(
        "Forecast hourly coastal sea fields (zos, uo, vo, so, thetao) with 3DDR U-Nets.\n\n"
        "Stages: fetch -> regrid -> train -> forecast / evaluate. "
        "Exit status: 0 done, 1 a problem (the message names it and the fix), 2 a wrong "
        "command line, 130 interrupted.\n\n"
        "Example: seacast pipeline run demo --jobs 2   # slow: the whole demo, about 10 minutes"
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def set_option(example: str) -> Any:
    """The ``--set KEY=VALUE`` option, with an example valid for the command's config."""
    return Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help=f"Override a config field, e.g. --set {example} (repeatable).",
            metavar="KEY=VALUE",
        ),
    ]


SetOption = set_option("months=2024-01:2024-03")  # data configs (fetch, regrid)
ExperimentSetOption = set_option("trainer.epochs=1")  # experiment configs (train, gradcheck)

F = TypeVar("F", bound=Callable[..., Any])

NOTHING_CHANGED = "nothing was changed; rerun the same command"


def fail(exc: SeacastError) -> typer.Exit:
    """Print ``exc`` as ``error: problem`` and its ``Fix:`` line, and return the exit to raise."""
    # soft_wrap: the terminal wraps long lines, rich adds no newlines; escape: [32, 32] is text
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, soft_wrap=True)
    return typer.Exit(EXIT_FAILURE)


def _quiet_shutdown() -> None:
    """After Ctrl-C, keep worker threads, asyncio and interpreter shutdown from printing tracebacks.

    The command has already said what was kept; a second traceback from a dask or
    toolbox thread that dies with the process only hides that line.
    """
    sys.unraisablehook = lambda _unraisable: None  # "Exception ignored in ..." at shutdown
    threading.excepthook = lambda _args: None  # "Exception in thread ..." from pool workers
    logging.getLogger("asyncio").setLevel(logging.CRITICAL)  # "Task was destroyed ..."
    for name in ("distributed", "copernicusmarine"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def _silence_stdout() -> None:
    """stdout's reader went away (``seacast info ... | head``): drop further output quietly."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real stdout (tests): nothing to redirect
        pass


@overload
def handle_errors(func: F) -> F: ...


@overload
def handle_errors(
    func: None = None,
    *,
    interrupted: str | Callable[[], str] = NOTHING_CHANGED,
    elsewhere: str | None = None,
) -> Callable[[F], F]: ...


def handle_errors(
    func: F | None = None,
    *,
    interrupted: str | Callable[[], str] = NOTHING_CHANGED,
    elsewhere: str | None = None,
) -> F | Callable[[F], F]:
    """Turn what a user can cause into one message and an exit status, without a traceback.

    * :class:`SeacastError`: its problem and fix, exit 1.
    * ``OSError`` (permission, full disk, missing folder, read-only file system, network):
      the path, what the errno means and what to do, exit 1; ``elsewhere`` says how the
      command writes to another place (e.g. ``--out DIR``).
    * Ctrl-C or SIGTERM: one line ``interrupted: <interrupted>`` (what was kept, how to resume),
      exit 130;
      ``interrupted`` may be a function, called then, for a hint that depends on what exists.

    Use as ``@handle_errors`` or ``@handle_errors(interrupted=..., elsewhere=...)``.
    """

    def decorate(function: F) -> F:
        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                with terminate_as_interrupt():
                    return function(*args, **kwargs)
            except SeacastError as exc:
                raise fail(exc) from None
            except (KeyboardInterrupt, click.exceptions.Abort):  # Abort: Ctrl-C at a prompt
                _quiet_shutdown()
                hint = interrupted() if callable(interrupted) else interrupted
                console.print(f"interrupted: {hint}", highlight=False, markup=False, soft_wrap=True)
                raise typer.Exit(EXIT_INTERRUPTED) from None
            except BrokenPipeError:
                _silence_stdout()
                raise typer.Exit(EXIT_FAILURE) from None
            except OSError as exc:
                raise fail(os_error(exc, elsewhere)) from None

        wrapper.__doc__ = reflow_help(inspect.getdoc(function) or "")
        return wrapper  # type: ignore[return-value]

    return decorate(func) if func is not None else decorate


def reflow_help(doc: str) -> str:
    """A command's docstring with each prose paragraph on one line, so the terminal wraps it.

    Rich keeps the docstring's own line breaks and wraps long lines again at the terminal's
    width, which leaves one-word lines. ``Example`` paragraphs, lists and indented blocks
    keep their lines.
    """
    paragraphs = doc.split("\n\n")
    out = []
    for paragraph in paragraphs:
        lines = paragraph.splitlines()
        keep = (
            not lines
            or lines[0].lstrip().startswith("Example")
            or any(line.startswith((" ", "*", "-", "|")) for line in lines)
        )
        out.append(paragraph if keep else " ".join(line.strip() for line in lines))
    return "\n\n".join(out)


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
