"""``seacast train``: train a model of an experiment config with one of the update rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from seacast.cli.common import ExperimentSetOption, app, console, handle_errors, out
from seacast.config import MODEL_NAMES, TRAINER_NAMES

# Literal: click checks the value and lists the choices; a short metavar and the names in the
# help text keep the option table readable at 80 columns (rich cuts long words with "…")
ModelName = Literal[MODEL_NAMES]  # type: ignore[valid-type]
TrainerName = Literal[TRAINER_NAMES]  # type: ignore[valid-type]

_run_dir: list[Path] = []  # the run folder of this invocation, for the Ctrl-C hint


def _interrupted() -> str:
    from seacast.training.checkpoint import LAST

    if not _run_dir:
        return "nothing was written; rerun the same command"
    last = _run_dir[-1] / LAST
    if last.is_file():
        return (
            f"the last checkpoint {last} (the end of the last finished epoch) is kept; "
            "rerun the same command with --resume to continue"
        )
    return "no epoch had finished, so there is nothing to resume; rerun the same command"


@app.command("train")
@handle_errors(interrupted=_interrupted, elsewhere="--set runs_dir=DIR")
def train_command(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="Experiment config (YAML), e.g. one in configs/experiments/.",
        ),
    ],
    model: Annotated[
        ModelName | None,
        typer.Option(
            "--model",
            "-m",
            metavar="NAME",
            help="The U-Net (overrides model.name): " + ", ".join(MODEL_NAMES),
            show_default=False,
        ),
    ] = None,
    trainer: Annotated[
        TrainerName | None,
        typer.Option(
            "--trainer",
            "-t",
            metavar="RULE",
            help="Update rule (overrides trainer.name): " + ", ".join(TRAINER_NAMES),
            show_default=False,
        ),
    ] = None,
    name: Annotated[
        str | None,
        typer.Option("--name", "-n", help="Run name (the folder under runs_dir); overrides name."),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue the run from its checkpoint_last.pt.")
    ] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing run of the same name.")
    ] = False,
    no_progress: Annotated[
        bool, typer.Option("--no-progress", help="No progress bar (as in the pipelines' logs).")
    ] = False,
    set_: ExperimentSetOption = None,
) -> None:
    """Train a U-Net on a store's samples and write runs/<name>/ (checkpoints, metrics.csv, meta.json).

    Runs data-parallel under torchrun (backprop with DistributedDataParallel):
    torchrun --standalone --nproc_per_node 2 -m seacast.cli train --config ...

    Example: seacast train --config configs/experiments/twin_demo.yaml --model res_3ddr_unet --trainer backprop --name example

    Example: seacast train --config configs/experiments/twin_demo.yaml --name example --resume
    """
    from seacast.config import ExperimentConfig, load_config
    from seacast.training.loop import train

    overrides = list(set_ or [])
    if model is not None:
        overrides.append(f"model.name={model}")
    if trainer is not None:
        overrides.append(f"trainer.name={trainer}")
    if name is not None:
        overrides.append(f"name={name}")
    experiment = load_config(ExperimentConfig, config, overrides)
    _run_dir[:] = [Path(experiment.runs_dir) / experiment.name]
    result = train(experiment, resume=resume, progress=not no_progress, overwrite=overwrite)
    if result.meta.get("world_size", 1) > 1 and not _is_rank_zero():
        return
    console.print(
        f"{result.stopped}: {result.epochs} epochs, {result.steps} steps; "
        f"best validation loss {result.best_val:.6g} at epoch {result.best_epoch}"
    )
    out.print(str(result.run_dir))


def _is_rank_zero() -> bool:
    import os

    return os.environ.get("RANK", "0") == "0"
