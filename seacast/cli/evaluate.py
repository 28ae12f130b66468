"""``seacast evaluate``: score runs on their test split against persistence, climatology and the tide."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from seacast.cli.common import app, console, handle_errors, out
from seacast.errors import ConfigError


@app.command("evaluate")
@handle_errors(
    interrupted="no report was written (it comes after the scoring); rerun the same command",
    elsewhere="--out DIR",
)
def evaluate_command(
    runs: Annotated[
        list[Path] | None,
        typer.Argument(help="Run folders (runs/<name>) to score and compare.", show_default=False),
    ] = None,
    run_options: Annotated[
        list[Path] | None,
        typer.Option("--run", "-r", help="A run folder (repeatable; same as the arguments)."),
    ] = None,
    split: Annotated[
        Literal["test", "validation", "all"],
        typer.Option(
            "--split",
            help="Which split of the store to score on; 'all' scores every time of a held-out "
            "--store (another year or twin seed), with the references fitted on the run's own "
            "training period.",
        ),
    ] = "test",
    by: Annotated[
        Literal["season", "all", "split"],
        typer.Option(
            "--by",
            help="Group by meteorological season of the init time, 'all', or the split's own windows.",
        ),
    ] = "season",
    name: Annotated[
        str | None,
        typer.Option(
            "--name", help="Report folder name under --reports (derived from the runs if empty)."
        ),
    ] = None,
    reports_dir: Annotated[
        Path, typer.Option("--reports", help="Parent folder of the report.")
    ] = Path("reports"),
    out_dir: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Report folder (instead of --reports/--name)."),
    ] = None,
    store: Annotated[
        Path | None,
        typer.Option("--store", help="Store to score on; each run's own store if empty."),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", min=1, help="Samples per forward pass.")
    ] = 8,
    which: Annotated[
        Literal["best", "last"], typer.Option("--checkpoint", help="Checkpoint of each run.")
    ] = "best",
    figures: Annotated[
        bool, typer.Option("--figures/--no-figures", help="Draw the figures.")
    ] = True,
    every: Annotated[
        int,
        typer.Option(
            "--every",
            min=1,
            help="Score init times every N hours only (cheaper; 1 scores them all).",
        ),
    ] = 1,
    adapt: Annotated[
        Literal["gain"] | None,
        typer.Option(
            "--adapt",
            help="'gain': also score each run with a base as 'forecast --adapt zo' forecasts "
            "it (<run>+gain: the base gain refitted at each init time on the weeks before it).",
        ),
    ] = None,
    adapt_hours: Annotated[
        int,
        typer.Option("--adapt-hours", min=1, help="With --adapt: hours before each init time."),
    ] = 56 * 24,
) -> None:
    """Score runs on the store's test period against persistence, climatology and the tide.

    MSE, RMSE, MAE, bias per variable, lead time and season. Writes "skill vs the best
    reference", comparison tables in the paper's layout (rows model x trainer and the
    references, columns variable x season), figures and index.md to reports/<name>/.

    Example: seacast evaluate runs/demo-res_3ddr_unet-backprop --split test --by season --every 6 --out reports/example
    """
    from seacast.evaluation.evaluate import evaluate_runs
    from seacast.evaluation.report import (
        best_reference_table,
        comparison_table,
        describe_split,
        lead_times_of,
        markdown_table,
    )

    all_runs = [*(runs or []), *(run_options or [])]
    if not all_runs:
        raise ConfigError(
            "no run folders given",
            "pass them as arguments or with --run, e.g. seacast evaluate runs/demo-res_3ddr_unet-backprop",
        )
    results = evaluate_runs(
        all_runs,
        split=split,
        by=by,
        out_dir=out_dir,
        name=name,
        reports_dir=reports_dir,
        store_path=store,
        batch_size=batch_size,
        which=which,
        figures=figures,
        every_hours=every,
        adapt=adapt,
        adapt_hours=adapt_hours,
    )
    out.print(
        f"Skill vs the best reference ({describe_split(split)}; RMSE, skill 1 - MSE/MSE_best, seasons won):",
        highlight=False,
    )
    out.print(
        markdown_table(best_reference_table(results)),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    lead = lead_times_of(results)[0]
    out.print(f"RMSE at +{lead} h ({describe_split(split)}):", highlight=False)
    out.print(
        markdown_table(comparison_table(results, "rmse", lead)),
        highlight=False,
        markup=False,
        soft_wrap=True,
    )
    console.print(f"report written to {results.out_dir}/index.md ({len(results.files)} files)")
