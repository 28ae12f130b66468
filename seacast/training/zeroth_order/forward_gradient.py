"""Forward gradient: the exact directional derivative by forward-mode AD, estimate (∇L·v) v."""

from __future__ import annotations

import math

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn

from seacast.config import TrainerConfig
from seacast.training.rules import LossFn, StepStats, UpdateRule, register
from seacast.training.zeroth_order.common import (
    JVP_FORWARD_COST,
    SamePasses,
    clear_grads,
    draw_seed,
    mix_seed,
    noise_like,
    set_grad,
    trainable_parameters,
)
from seacast.training.zeroth_order.credit import train_only


@register
class ForwardGradientRule(UpdateRule):
    """Forward gradient: ``(∇L·v) v`` with the exact directional derivative from forward-mode AD.

    Uses ``torch.autograd.forward_ad`` dual tensors through
    ``torch.func.functional_call`` (train-mode BatchNorm works; its running
    statistics are updated from the primal values). v is standard Gaussian over
    all trainable parameters, so ``E[(∇L·v) v] = ∇L``; ``probes`` directions are
    averaged; ``only`` restricts the tangents and the training to some layers. A jvp
    costs :data:`JVP_FORWARD_COST` forwards; the loss reported is the primal loss of
    the first probe.
    """

    name = "forward-gradient"

    def __init__(self, model: nn.Module, cfg: TrainerConfig) -> None:
        super().__init__(model, cfg)
        self.opts = cfg.forward_gradient
        train_only(model, self.opts.only, "forward-gradient")
        self.named = trainable_parameters(model)

    def step(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepStats:
        seeds = [draw_seed() for _ in range(self.opts.probes)]
        passes = SamePasses(model)
        grads = {n: torch.zeros_like(p) for n, p in self.named}
        loss_value = math.nan
        with torch.no_grad():
            for k, seed in enumerate(seeds):
                tangents = {
                    n: noise_like(p, mix_seed(seed, i), "gaussian")
                    for i, (n, p) in enumerate(self.named)
                }
                passes.before_pass()
                loss, directional = directional_derivative(model, x, target, loss_fn, tangents)
                if k == 0:
                    loss_value = loss
                for n, v in tangents.items():
                    grads[n].add_(v, alpha=directional / len(seeds))
            passes.finish()
            clear_grads([p for _, p in model.named_parameters()])
            for n, p in self.named:
                set_grad(p, grads[n])
        return StepStats(loss=loss_value, forwards=JVP_FORWARD_COST * len(seeds))


def directional_derivative(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    loss_fn: LossFn,
    tangents: dict[str, torch.Tensor],
) -> tuple[float, float]:
    """The batch-mean loss and its exact derivative along ``tangents`` (one forward-mode pass)."""
    params = dict(trainable_parameters(model))
    with fwAD.dual_level():
        duals = {n: fwAD.make_dual(params[n].detach(), t) for n, t in tangents.items()}
        out = torch.func.functional_call(model, duals, (x,), strict=False)
        loss = loss_fn(out, target).mean()
        primal, tangent = fwAD.unpack_dual(loss)
    return float(primal), float(tangent) if tangent is not None else 0.0
