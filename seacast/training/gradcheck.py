"""How good is each zeroth-order estimate? Cosine to the true backprop gradient on a fixed batch.

Offers:

* :func:`gradient_check` - for a model, one batch and a loss, each ZO rule's
  estimate (averaged over ``probes`` probes) against ``loss.backward()``'s
  gradient: cosine, norm ratio, cost in forward-pass equivalents, seconds.
* :func:`batch_from_experiment` - the fixed batch, model and loss of an
  experiment config (for ``seacast gradcheck``).
* :func:`gradcheck_table` - the rows as a rich table.

The check runs the model in eval mode (dropout off, BatchNorm on its running
statistics) so that the true gradient is one fixed target; the model's weights,
mode and gradients are left as they were.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from seacast.config import TrainerConfig
from seacast.training.rules import LossFn, make_rule

if TYPE_CHECKING:
    from rich.table import Table

    from seacast.config import ExperimentConfig

ZO_RULES = ("spsa", "node-perturbation", "forward-gradient")


@dataclass
class GradcheckRow:
    """One rule's estimate against the true gradient."""

    rule: str
    cosine: float
    norm_ratio: float  # |estimate| / |true gradient|
    forwards: float  # cost of the estimate in forward-pass equivalents
    seconds: float
    coverage: float  # fraction of trainable parameters the rule gives an estimate for


def with_probes(cfg: TrainerConfig, name: str, probes: int) -> TrainerConfig:
    """``cfg`` for rule ``name`` with ``probes`` probes and no in-place update (the weights must not move)."""
    data = cfg.model_dump()
    data["name"] = name
    data["spsa"]["probes"] = probes
    data["spsa"]["inplace_sgd"] = False
    data["node_perturbation"]["probes"] = probes
    data["forward_gradient"]["probes"] = probes
    return TrainerConfig.model_validate(data)


def _flat(params: Sequence[nn.Parameter]) -> torch.Tensor:
    return torch.cat(
        [
            (p.grad.detach() if p.grad is not None else torch.zeros_like(p)).flatten().double()
            for p in params
        ]
    )


def gradient_check(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: LossFn,
    rules: Sequence[str] = ZO_RULES,
    probes: int = 16,
    cfg: TrainerConfig | None = None,
    seed: int = 0,
) -> list[GradcheckRow]:
    """Each rule's gradient estimate on ``(x, y)`` against the true gradient; a backprop row first."""
    cfg = cfg or TrainerConfig()
    params = [p for p in model.parameters() if p.requires_grad]
    was_training = model.training
    saved_grads = [p.grad for p in params]
    saved_weights = [p.detach().clone() for p in params]
    model.eval()
    rows: list[GradcheckRow] = []
    try:
        for p in params:
            p.grad = None
        start = time.perf_counter()
        backprop = make_rule("backprop", model, with_probes(cfg, "backprop", probes))
        stats = backprop.step(model, x, y, loss_fn)
        rows.append(
            GradcheckRow("backprop", 1.0, 1.0, stats.forwards, time.perf_counter() - start, 1.0)
        )
        true = _flat(params)
        true_norm = float(true.norm())
        for name in rules:
            for p in params:
                p.grad = None
            torch.manual_seed(seed)
            rule = make_rule(name, model, with_probes(cfg, name, probes))
            start = time.perf_counter()
            stats = rule.step(model, x, y, loss_fn)
            seconds = time.perf_counter() - start
            estimate = _flat(params)
            covered = sum(p.numel() for p in params if p.grad is not None)
            norm = float(estimate.norm())
            cosine = (
                float(torch.dot(estimate, true) / (norm * true_norm)) if norm and true_norm else 0.0
            )
            rows.append(
                GradcheckRow(
                    rule=name,
                    cosine=cosine,
                    norm_ratio=norm / true_norm if true_norm else float("nan"),
                    forwards=stats.forwards,
                    seconds=seconds,
                    coverage=covered / max(1, sum(p.numel() for p in params)),
                )
            )
            with torch.no_grad():  # an in-place rule must not have moved anything; be safe anyway
                for p, w in zip(params, saved_weights, strict=True):
                    p.copy_(w)
    finally:
        for p, g in zip(params, saved_grads, strict=True):
            p.grad = g
        model.train(was_training)
    return rows


def batch_from_experiment(
    config: ExperimentConfig, batch_size: int | None = None
) -> tuple[nn.Module, torch.Tensor, torch.Tensor, LossFn]:
    """The untrained model (seeded), the first training batch and the loss of an experiment."""
    from seacast.errors import DataError
    from seacast.models import build_model
    from seacast.training.losses import make_loss
    from seacast.windows import open_samples

    sets = open_samples(config.store, config.samples)
    tides = None
    if config.model.base == "tide":
        from seacast.training.loop import run_tides

        # the samples a tide-aware run trains on: anomalies of a tide fitted on the training period
        tides = run_tides(
            config, sets, Path(config.runs_dir) / config.name, reuse=False, save=False
        )
        sets = sets.with_tides(tides)
    size = batch_size or config.trainer.batch_size
    if len(sets.train) == 0:
        raise DataError(
            f"the experiment's training split of {config.store} holds no sample",
            "check samples.split and samples.lags/lead_times against the store's time range",
        )
    # spread the batch over the training period rather than taking consecutive hours
    picks = (
        torch.linspace(0, len(sets.train) - 1, min(size, len(sets.train))).round().long().unique()
    )
    samples = [sets.train[int(i)] for i in picks]
    x = torch.stack([s["x"] for s in samples]).to(config.device)
    y = torch.stack([s["y"] for s in samples]).to(config.device)
    n_vars = len(config.samples.variables)
    model = build_model(
        config.model,
        in_channels=n_vars + len(config.samples.forcing),
        out_channels=n_vars,
        lags=config.samples.lags,
        lead_times=config.samples.lead_times,
        shape=sets.shape,
        seed=config.seed,
        device=config.device,
    )
    if tides is not None:
        from seacast.training.loop import start_at_tide_reference

        start_at_tide_reference(model, tides, config, sets)
    loss_fn = make_loss(
        sets.normaliser, sets.sea_mask, config.trainer.land_in_loss, config.trainer.loss_units
    )
    return model, x, y, loss_fn


def gradcheck_table(rows: Sequence[GradcheckRow], probes: int) -> Table:
    from rich.table import Table

    table = Table(title=f"Gradient estimates vs backprop ({probes} probes per rule)")
    table.add_column("rule", no_wrap=True)
    table.add_column("cosine", justify="right")
    table.add_column("|est|/|grad|", justify="right")
    table.add_column("forwards", justify="right")
    table.add_column("seconds", justify="right")
    table.add_column("params covered", justify="right")
    for row in rows:
        table.add_row(
            row.rule,
            f"{row.cosine:.3f}",
            f"{row.norm_ratio:.3g}",
            f"{row.forwards:g}",
            f"{row.seconds:.3f}",
            f"{100 * row.coverage:.0f}%",
        )
    return table
