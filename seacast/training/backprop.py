"""The ``backprop`` update rule: the loss's exact gradient by ``loss.backward()``.

The loop's optimiser (Adam, lr 1e-3 by default, as the reference) applies it.
"""

from __future__ import annotations

import torch
from torch import nn

from seacast.config import TrainerConfig
from seacast.training.rules import LossFn, StepStats, UpdateRule, register

# A backward pass costs about two forwards, so a step is three forward-pass equivalents
# (the usual accounting; benchmarks measure the real ratio on a machine).
BACKPROP_FORWARDS = 3.0


@register
class Backprop(UpdateRule):
    """Gradient of the mean per-sample loss, written to ``param.grad``."""

    name = "backprop"
    applies_update = False
    uses_autograd = True

    def __init__(self, model: nn.Module, cfg: TrainerConfig) -> None:
        super().__init__(model, cfg)
        from seacast.training.zeroth_order.credit import train_only

        train_only(model, cfg.backprop.only, "backprop")

    def step(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepStats:
        loss = loss_fn(model(x), target).mean()
        loss.backward()
        return StepStats(loss=float(loss.detach()), forwards=BACKPROP_FORWARDS)
