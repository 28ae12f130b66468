"""``seacast train``: train a model of an experiment config with one of the update rules."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seacast.cli.common import SetOption, app, console, handle_errors, out
from seacast.config import MODEL_NAMES, TRAINER_NAMES


@app.command("train")
@handle_errors
def train_command(
    config: Annotated[
        Path,
        typer.Option(
            "--config",
            "-c",
            help="Experiment config (YAML), e.g. configs/experiments/twin_demo.yaml.",
        ),
    ],
    model: Annotated[
        str | None,
        typer.Option(
            "--model", "-m", help="Model, overrides model.name: " + ", ".join(MODEL_NAMES) + "."
        ),
    ] = None,
    trainer: Annotated[
        str | None,
        typer.Option(
            "--trainer",
            "-t",
            help="Update rule, overrides trainer.name: " + ", ".join(TRAINER_NAMES) + ".",
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
    progress: Annotated[
        bool, typer.Option("--progress/--no-progress", help="Show the progress bar.")
    ] = True,
    set_: SetOption = None,
) -> None:
    """Train a U-Net on a store's samples and write runs/<name>/ (checkpoints, metrics.csv, meta.json).

    Runs data-parallel under torchrun (backprop with DistributedDataParallel):
    torchrun --standalone --nproc_per_node 2 -m seacast.cli train --config ...

    Example: seacast train --config configs/experiments/twin_demo.yaml --model res_3ddr_unet --trainer backprop
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
    result = train(experiment, resume=resume, progress=progress, overwrite=overwrite)
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
