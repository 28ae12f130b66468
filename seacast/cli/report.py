"""``seacast report``: the report page (HTML and Markdown) from existing runs, evaluations and forecasts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seacast.cli.common import app, console, handle_errors
from seacast.errors import ConfigError


@app.command("report")
@handle_errors(
    interrupted="the report pages are written whole or not at all; rerun the same command",
    elsewhere="--out DIR",
)
def report_command(
    runs: Annotated[
        list[str] | None,
        typer.Argument(
            help="Run folders (runs/<name>) or globs of them, e.g. 'runs/demo-*'.",
            show_default=False,
        ),
    ] = None,
    out_dir: Annotated[
        Path,
        typer.Option("--out", "-o", help="Folder of the pages: DIR/index.html and DIR/index.md."),
    ] = Path("reports/report"),
    evaluations: Annotated[
        list[str] | None,
        typer.Option(
            "--evaluation",
            "-e",
            help="An evaluation folder written by `seacast evaluate`, or a glob (repeatable).",
        ),
    ] = None,
    forecasts: Annotated[
        list[str] | None,
        typer.Option(
            "--forecast",
            "-f",
            help=(
                "A forecast folder, file or glob of its plots (repeatable); the maps are redrawn "
                "one lead time at a time from the forecast datasets there."
            ),
        ),
    ] = None,
    title: Annotated[str, typer.Option("--title", help="Page title.")] = "seacast report",
) -> None:
    """Build the report page a forecaster opens from existing runs and evaluations.

    Writes DIR/index.html, one self-contained page (figures embedded, no
    network): skill against the best reference as a coloured table, the
    forecast maps with a lead-time selector, the training curves, the
    evaluation figures, the full tables folded away and each run's config,
    data provenance and code version; and DIR/index.md beside it. What is
    missing becomes a note in the page. A pipeline's report stage writes the
    same pages.

    Example: seacast report runs/demo-res_3ddr_unet-backprop --evaluation reports/example --forecast forecasts/demo --out reports/example-page
    """
    from seacast.html_report import write_report_pages

    if not runs and not evaluations and not forecasts:
        raise ConfigError(
            "nothing to report: no runs, --evaluation or --forecast given",
            "name them, e.g. seacast report 'runs/demo-*' --evaluation reports/demo/evaluation "
            "--forecast forecasts/demo --out reports/demo",
        )
    pages = write_report_pages(
        out_dir / "index.md",
        title=title,
        runs=list(runs or []),
        evaluations=list(evaluations or []),
        forecasts=list(forecasts or []),
        workdir=Path("."),
    )
    console.print(f"report written to {pages.html} (and {pages.markdown.name} beside it)")
