"""``seacast fetch``: plan, then write the raw month files of one data config.

Offers:

* :func:`plan`: the month files a fetch would write (dataset x month), which are
  complete already and their estimated size. Offline: it reads only the config,
  the manifest and (for ``files``) the matched files' time axes.
* :func:`fetch`: run the plan through the config's source (``copernicus``,
  ``files`` or ``twin``, a :class:`~seacast.sources.base.RawSource` found by
  :func:`seacast.sources.raw_source`) under a lock, with a rich progress bar. Ctrl-C stops it
  at the next safe point (within a second or so), removes the temporary files it
  was writing, releases the lock and raises KeyboardInterrupt.
* :class:`FetchPlan` (with :meth:`FetchPlan.table`) and :class:`FetchResult`.
"""

from __future__ import annotations

import contextlib
import logging
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console
from rich.table import Table

from seacast.config import DataConfig
from seacast.interrupts import safe_points
from seacast.progress import progress_bar
from seacast.raw import fetch_lock, remove_leftovers
from seacast.sources import raw_source
from seacast.sources.base import MarineClient, PlannedFile, ProgressCallback
from seacast.sources.base import format_bytes as format_bytes  # re-exported: the old import path

logger = logging.getLogger("seacast")


@dataclass
class FetchPlan:
    """What a fetch of one config would do."""

    source: str
    files: list[PlannedFile]
    notes: list[str] = field(default_factory=list)

    @property
    def todo(self) -> list[PlannedFile]:
        return [f for f in self.files if not f.complete]

    @property
    def estimated_bytes(self) -> int | None:
        sizes = [f.estimated_bytes for f in self.todo]
        return None if any(s is None for s in sizes) else sum(s or 0 for s in sizes)

    def table(self) -> Table:
        """The plan as a rich table: one row per dataset, months, size to fetch."""
        table = Table(title=f"fetch plan ({self.source})")
        table.add_column("dataset", overflow="fold", ratio=3)
        table.add_column("variables", overflow="fold", ratio=1)
        table.add_column("months", overflow="fold", ratio=2)
        table.add_column("to fetch", justify="right", ratio=1)
        table.add_column("est. size", justify="right", no_wrap=True)
        datasets: dict[str, list[PlannedFile]] = {}
        for planned in self.files:
            datasets.setdefault(planned.dataset, []).append(planned)
        for dataset, files in datasets.items():
            months = sorted(f.month for f in files)
            todo = [f for f in files if not f.complete]
            sizes = [f.estimated_bytes for f in todo]
            size = (
                "?" if any(s is None for s in sizes) else format_bytes(sum(s or 0 for s in sizes))
            )
            table.add_row(
                dataset,
                ", ".join(files[0].variables) or "all",
                f"{months[0]}..{months[-1]}",
                f"{len(todo)}/{len(files)}",
                size,
            )
        total = self.estimated_bytes
        table.caption = (
            f"{len(self.todo)} of {len(self.files)} month file(s) to fetch, "
            f"about {format_bytes(total) if total is not None else '? (unknown before reading the files)'}"
        )
        return table


@dataclass
class FetchResult:
    """What a fetch did: the month files on disk and how many were new."""

    source: str
    paths: list[Path]
    already_complete: int
    fetched: int


def plan(cfg: DataConfig, force: bool = False) -> FetchPlan:
    """The fetch plan of ``cfg``; never imports the Copernicus toolbox nor touches the network."""
    source = raw_source(cfg.source)
    files = source.plan(cfg, force)
    return FetchPlan(source.name, files, source.notes(cfg))


@contextlib.contextmanager
def _progress_bar(
    total: int, show: bool, console: Console
) -> Iterator[tuple[ProgressCallback, Callable[[str], None]]]:
    """A rich bar over the month files; yields the advance callback and a logger printing above it."""
    with progress_bar(
        "[bold]fetch[/]", "{task.description}", eta=False, console=console, enabled=show
    ) as bar:
        task = bar.add_task("", total=total)

        def advance(label: str) -> None:
            bar.update(task, advance=1, description=label)

        def log(message: str) -> None:
            if show:
                bar.console.print(message, markup=False, highlight=False)
            # cron runs log to a file through the "seacast" logger; with no handler at all,
            # Python's last-resort handler prints to stderr, which the bar has done already
            if not show or _logged_elsewhere():
                logger.warning(message)

        yield advance, log


def _logged_elsewhere() -> bool:
    """True if a "seacast" record reaches a handler that does not print to this terminal (a log file)."""
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            # a StreamHandler's stream, or a rich RichHandler's console file
            stream = getattr(handler, "stream", None) or getattr(
                getattr(handler, "console", None), "file", None
            )
            if isinstance(handler, logging.FileHandler) or stream not in (sys.stderr, sys.stdout):
                return True
        current = current.parent if current.propagate else None
    return False


def fetch(
    cfg: DataConfig,
    force: bool = False,
    client: MarineClient | None = None,
    show_progress: bool = False,
    console: Console | None = None,
) -> FetchResult:
    """Write every month file of ``cfg`` that is not complete (all of them with ``force``).

    One fetch per source folder runs at a time (a lock file), so overlapping
    cron runs are safe; a killed fetch resumes where it stopped (the temporary
    files it left are removed first, under the lock). ``client`` replaces the
    Copernicus toolbox (tests inject a fake).

    Ctrl-C is deferred to safe points (between simulated hours, NetCDF pieces,
    polls of a download), never inside a NetCDF write, which would hang; the
    temporary files are removed, the lock released, and KeyboardInterrupt raised.
    """
    console = console or Console(stderr=True)
    the_plan = plan(cfg, force=force)
    already = len(the_plan.files) - len(the_plan.todo)
    with (
        fetch_lock(cfg.raw_dir, cfg.source),
        safe_points(),
        _progress_bar(len(the_plan.files), show_progress, console) as (advance, log),
    ):
        for leftover in remove_leftovers(cfg.raw_dir, cfg.source):
            logger.info("removed %s, left by a killed fetch", leftover)
        source = raw_source(cfg.source)
        paths = source.fetch(cfg, force=force, progress=advance, client=client, log=log)
    logger.info(
        "fetch %s: %d month file(s) fetched, %d already complete",
        cfg.name,
        len(the_plan.todo),
        already,
    )
    return FetchResult(cfg.source, list(paths), already, len(the_plan.todo))
