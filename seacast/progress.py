"""One look for every progress bar: a label, the bar, done/total, what the stage adds, time.

Bars draw on stderr, so stdout stays clean for summaries and pipes.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def progress_bar(
    label: str,
    *extra: str | ProgressColumn,
    eta: bool = True,
    console: Console | None = None,
    enabled: bool = True,
) -> Progress:
    """A rich ``Progress``: ``label``, bar, M/N, the ``extra`` columns (text templates or columns), elapsed, ETA."""
    columns: list[str | ProgressColumn] = [TextColumn(label), BarColumn(), MofNCompleteColumn()]
    columns += [TextColumn(c) if isinstance(c, str) else c for c in extra]
    columns.append(TimeElapsedColumn())
    if eta:
        columns += [TextColumn("ETA"), TimeRemainingColumn()]
    return Progress(*columns, console=console or Console(stderr=True), disable=not enabled)
