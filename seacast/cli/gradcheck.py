"""``seacast gradcheck``: how close each zeroth-order estimate is to the true gradient."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from seacast.cli.common import ExperimentSetOption, app, console, handle_errors, out


@app.command("gradcheck")
@handle_errors(interrupted="nothing was written (gradcheck only prints); rerun the same command")
def gradcheck_command(
    config: Annotated[Path, typer.Option("--config", "-c", help="Experiment config (YAML).")],
    probes: Annotated[int, typer.Option(min=1, help="Probes each rule averages over.")] = 16,
    batch: Annotated[
        int | None,
        typer.Option(min=1, help="Samples in the fixed batch (default: trainer.batch_size)."),
    ] = None,
    run: Annotated[
        Path | None,
        typer.Option(help="Check at a trained run's best weights instead of the initial ones."),
    ] = None,
    set_: ExperimentSetOption = None,
) -> None:
    """Print, for each zeroth-order rule, the cosine between its gradient estimate and backprop's.

    Uses a fixed batch from the experiment's training split and the rule options of
    its trainer section (probes replaced by --probes), with the model in eval mode.
    The cost column is in forward-pass equivalents.

    Example: seacast gradcheck --config configs/experiments/twin_demo.yaml --probes 4

    Example: seacast gradcheck --config configs/experiments/twin_demo.yaml --run runs/demo-res_3ddr_unet-backprop --probes 4
    """
    from seacast.config import ExperimentConfig, load_config
    from seacast.training.gradcheck import batch_from_experiment, gradcheck_table, gradient_check

    experiment = load_config(ExperimentConfig, config, set_)
    with console.status("reading the batch and building the model"):
        model, x, y, loss_fn = batch_from_experiment(experiment, batch)
    if run is not None:
        from seacast.training.checkpoint import load_run

        model.load_state_dict(load_run(run, "best", device=experiment.device).model.state_dict())
    with console.status(f"estimating gradients ({probes} probes per rule)"):
        rows = gradient_check(
            model, x, y, loss_fn, probes=probes, cfg=experiment.trainer, seed=experiment.seed
        )
    out.print(gradcheck_table(rows, probes))
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    out.print(f"batch {tuple(x.shape)}, {trainable:,} trainable parameters")
