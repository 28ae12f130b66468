"""Forward gradient: the exact directional derivative by forward-mode AD, estimate (∇L·v) v."""

from __future__ import annotations

import math
from typing import Any

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
from seacast.training.zeroth_order.credit import (
    layer_input,
    local_layers,
    local_weight_gradient,
    train_only,
)


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

    With ``output_layer`` (the model's last layer), that layer gets its exact gradient
    from a delta rule instead of tangents: its input and output, kept from the first
    probe's pass, and the loss's closed-form derivative by the forecast
    (``loss_fn.gradient``), mapped back through the model's reshape
    (``model.output_layer_signal``). It needs no backward pass and no extra forward,
    and no tangent is spent on it.
    """

    name = "forward-gradient"

    def __init__(self, model: nn.Module, cfg: TrainerConfig) -> None:
        super().__init__(model, cfg)
        self.opts = cfg.forward_gradient
        train_only(model, self.opts.only, "forward-gradient")
        self.output_module = self._output_module(model)
        exact = {id(p) for p in self.output_module.parameters()} if self.output_module else set()
        self.named = [(n, p) for n, p in trainable_parameters(model) if id(p) not in exact]

    def _output_module(self, model: nn.Module) -> nn.Module | None:
        """The layer trained by its delta rule (``output_layer``), checked, or None."""
        name = self.opts.output_layer
        if name is None:
            return None
        from seacast.errors import ConfigError

        declared = getattr(model, "output_layer", None)
        if name != declared:
            raise ConfigError(
                f"trainer.forward_gradient.output_layer is {name!r}, which is not the model's output "
                f"layer ({declared!r})",
                f"set it to {declared!r}, or to null" if declared else "set it to null",
            )
        module = model.get_submodule(name)
        if module not in local_layers(model):
            raise ConfigError(
                f"trainer.forward_gradient.output_layer {name!r} is not trained",
                f"add {name!r} to trainer.forward_gradient.only, or set output_layer to null",
            )
        return module

    def step(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepStats:
        probes = self.opts.probes if self.named else 0  # the output layer alone needs one pass
        seeds = [draw_seed() for _ in range(probes)]
        passes = SamePasses(model)
        grads = {n: torch.zeros_like(p) for n, p in self.named}
        kept: dict[str, torch.Tensor] = {}
        hook = None
        if self.output_module is not None:
            hook = self.output_module.register_forward_hook(_keep_first_pass(kept))
        loss_value = math.nan
        try:
            with torch.no_grad():
                if not seeds:
                    passes.before_pass()
                    kept["forecast"] = model(x)
                    loss_value = float(loss_fn(kept["forecast"], target).mean())
                for k, seed in enumerate(seeds):
                    tangents = {
                        n: noise_like(p, mix_seed(seed, i), "gaussian")
                        for i, (n, p) in enumerate(self.named)
                    }
                    passes.before_pass()
                    keep = k == 0 and self.output_module is not None
                    loss, directional, forecast = _jvp(model, x, target, loss_fn, tangents, keep)
                    if k == 0:
                        loss_value = loss
                    if forecast is not None:
                        kept["forecast"] = forecast
                    for n, v in tangents.items():
                        grads[n].add_(v, alpha=directional / len(seeds))
                passes.finish()
                clear_grads([p for _, p in model.named_parameters()])
                for n, p in self.named:
                    set_grad(p, grads[n])
                if self.output_module is not None:
                    self._delta_rule(model, kept, target, loss_fn)
        finally:
            if hook is not None:
                hook.remove()
        forwards = JVP_FORWARD_COST * len(seeds) if seeds else 1.0
        return StepStats(loss=loss_value, forwards=forwards)

    def _delta_rule(
        self, model: nn.Module, kept: dict[str, torch.Tensor], target: torch.Tensor, loss_fn: LossFn
    ) -> None:
        """Set the output layer's exact gradient from its kept input and output."""
        layer = self.output_module
        assert layer is not None
        closed_form = getattr(loss_fn, "gradient", None)
        if closed_form is None:
            raise TypeError(
                "forward_gradient.output_layer needs a loss with a closed-form derivative "
                "(loss_fn.gradient, as seacast.training.losses.MaskedMSE has)"
            )
        signal = model.output_layer_signal(closed_form(kept["forecast"], target), kept["output"])
        weight = local_weight_gradient(layer, layer_input(layer, kept["input"]), signal)
        set_grad(layer.weight, weight)
        if layer.bias is not None:
            channels = signal.shape[-1] if isinstance(layer, nn.Linear) else signal.shape[1]
            per_channel = signal.movedim(-1 if isinstance(layer, nn.Linear) else 1, 0)
            set_grad(layer.bias, per_channel.reshape(channels, -1).sum(1))


def _keep_first_pass(kept: dict[str, torch.Tensor]) -> Any:
    """A forward hook that keeps the layer's (primal) input and output of the step's first pass."""

    def hook(_module: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        if "input" not in kept:
            kept["input"] = fwAD.unpack_dual(inputs[0]).primal.detach().clone()
            kept["output"] = fwAD.unpack_dual(output).primal.detach().clone()

    return hook


def directional_derivative(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    loss_fn: LossFn,
    tangents: dict[str, torch.Tensor],
) -> tuple[float, float]:
    """The batch-mean loss and its exact derivative along ``tangents`` (one forward-mode pass)."""
    loss, directional, _ = _jvp(model, x, target, loss_fn, tangents)
    return loss, directional


def _jvp(
    model: nn.Module,
    x: torch.Tensor,
    target: torch.Tensor,
    loss_fn: LossFn,
    tangents: dict[str, torch.Tensor],
    keep_forecast: bool = False,
) -> tuple[float, float, torch.Tensor | None]:
    """:func:`directional_derivative`, and the forecast (primal) if ``keep_forecast``."""
    params = dict(trainable_parameters(model))
    with fwAD.dual_level():
        duals = {n: fwAD.make_dual(params[n].detach(), t) for n, t in tangents.items()}
        out = torch.func.functional_call(model, duals, (x,), strict=False)
        loss = loss_fn(out, target).mean()
        primal, tangent = fwAD.unpack_dual(loss)
        forecast = fwAD.unpack_dual(out).primal.detach().clone() if keep_forecast else None
    return float(primal), float(tangent) if tangent is not None else 0.0, forecast
