"""``seacast pipeline run|show|list``: run the YAML recipes in ``pipelines/``."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from seacast.cli.common import app, console, handle_errors, out
from seacast.pipeline import (
    PipelineResult,
    display_command,
    find_pipeline,
    load_pipeline,
    run_pipeline,
    show_plan,
)

pipeline_app = typer.Typer(
    help=(
        "Run a pipeline (pipelines/NAME.yaml): its stages in order, skipping those that are up to date.\n\n"
        "Example: seacast pipeline show demo"
    ),
    no_args_is_help=True,
)
app.add_typer(pipeline_app, name="pipeline")

NameArg = Annotated[
    str,
    typer.Argument(help="Pipeline name (a file stem under pipelines/) or a path to a YAML file."),
]
VarOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        "--var",
        help="Set a pipeline variable, e.g. --set DATA=copernicus (repeatable).",
        metavar="NAME=VALUE",
    ),
]
OnlyOption = Annotated[
    list[str] | None,
    typer.Option(
        "--only",
        help="Run only this stage (repeatable); a foreach stage's name selects all its copies.",
    ),
]
FromOption = Annotated[
    str | None, typer.Option("--from", help="Start at this stage and run all after it.")
]
ForceOption = Annotated[
    bool, typer.Option("--force", help="Rerun the selected stages even when up to date.")
]


def _print_summary(result: PipelineResult) -> None:
    table = Table(title=f"pipeline {result.pipeline}", title_justify="left")
    table.add_column("stage")
    table.add_column("kind")
    table.add_column("status")
    table.add_column("time", justify="right")
    colour = {"ran": "green", "skipped": "dim", "failed": "bold red", "not run": "yellow"}
    for stage in result.stages:
        seconds = f"{stage.seconds:.1f} s" if stage.status in ("ran", "failed") else ""
        table.add_row(
            escape(stage.name), stage.kind, f"[{colour[stage.status]}]{stage.status}[/]", seconds
        )
    console.print(table)
    console.print(f"total {result.seconds:.1f} s")
    for report in result.reports:
        page = report.with_name("index.html")  # the page to open, written beside the Markdown
        shown = page if report.suffix == ".md" and page.is_file() else report
        out.print(f"report: {os.path.relpath(shown)}", highlight=False)


@pipeline_app.command("run")
@handle_errors(
    interrupted="finished stages are kept and recorded (the stage that was running is not); "
    "rerun the same command to continue"
)
def run_command(
    name: NameArg,
    set_vars: VarOption = None,
    only: OnlyOption = None,
    start: FromOption = None,
    force: ForceOption = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Print the plan (as `show`) and run nothing.")
    ] = False,
    jobs: Annotated[
        int,
        typer.Option(
            "--jobs",
            "-j",
            min=1,
            help="Run up to N copies of a foreach stage at once (each gets cores/N threads).",
        ),
    ] = 1,
) -> None:
    """Run the stages of a pipeline in order; a failed stage stops it (finished stages are kept).

    Example: seacast pipeline run demo --only fetch --only regrid

    Example: seacast pipeline run demo --from train --force --jobs 2   # slow: retrains the demo's five runs
    """
    if dry_run:
        show_command(name, set_vars, only, start, force)
        return
    path = find_pipeline(name)
    pipeline = load_pipeline(path, set_vars)
    console.print(
        f"[bold]pipeline {pipeline.name}[/] ({path}): {escape(pipeline.description)}",
        highlight=False,
    )
    result = run_pipeline(
        pipeline,
        path,
        Path.cwd(),
        only=only,
        start=start,
        force=force,
        jobs=jobs,
        echo=lambda msg: console.print(msg, highlight=False, soft_wrap=True),
    )
    _print_summary(result)
    if result.error is not None:
        raise result.error


@pipeline_app.command("show")
@handle_errors
def show_command(
    name: NameArg,
    set_vars: VarOption = None,
    only: OnlyOption = None,
    start: FromOption = None,
    force: ForceOption = False,
) -> None:
    """Print the plan: each stage, its commands, and whether it is up to date or will run, and why.

    Example: seacast pipeline show demo
    """
    path = find_pipeline(name)
    pipeline = load_pipeline(path, set_vars)
    plan = show_plan(pipeline, path, Path.cwd(), only=only, start=start, force=force)
    out.print(f"[bold]pipeline {pipeline.name}[/] ({path})", highlight=False, soft_wrap=True)
    if pipeline.description:
        out.print(pipeline.description, highlight=False, soft_wrap=True, markup=False)
    will_run = sum(not status.up_to_date for _, status in plan)
    for stage, status in plan:
        mark = "[dim]up to date[/]" if status.up_to_date else "[bold cyan]will run[/]"
        out.print(
            f"\n[bold]{escape(stage.name)}[/] ({stage.kind}) {mark}: {escape(status.reason)}",
            highlight=False,
            soft_wrap=True,
        )
        if stage.description:
            out.print(f"  {stage.description}", highlight=False, soft_wrap=True, markup=False)
        for command in stage.commands:
            out.print(
                f"  $ {display_command(command)}", highlight=False, soft_wrap=True, markup=False
            )
        if stage.report is not None:
            out.print(f"  report -> {stage.report.path}", highlight=False, soft_wrap=True)
        for label, items in (
            ("config", stage.config),
            ("inputs", stage.inputs),
            ("outputs", stage.outputs),
        ):
            if items:
                out.print(
                    f"  {label}: {', '.join(items)}", highlight=False, soft_wrap=True, markup=False
                )
    out.print(f"\n{will_run} of {len(plan)} stages will run.", highlight=False, soft_wrap=True)


@pipeline_app.command("list")
@handle_errors
def list_command() -> None:
    """List the pipelines under pipelines/ with their descriptions.

    Example: seacast pipeline list
    """
    files = sorted(Path("pipelines").glob("*.y*ml"))
    if not files:
        out.print("no pipelines in ./pipelines")
        return
    for path in files:
        try:
            description = load_pipeline(path).description
        except Exception as exc:  # list the broken one too, with its problem
            description = f"[red]invalid: {str(exc).splitlines()[0]}[/]"
        out.print(f"[bold]{path.stem}[/]: {description}", highlight=False)
