"""Node perturbation: noisy pre-activations and a layer-local Hebbian update, in the memory of inference."""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from seacast.config import TrainerConfig
from seacast.training.rules import CellLoss, LossFn, StepStats, UpdateRule, register
from seacast.training.zeroth_order.common import (
    SamePasses,
    clear_grads,
    draw_seed,
    generator_for,
    set_grad,
    trainable_parameters,
)
from seacast.training.zeroth_order.credit import (
    Credit,
    add_to,
    chosen_layers,
    layer_input,
    local_weight_gradient,
    longest_prefix,
)
from seacast.training.zeroth_order.prefix_cache import FrozenPrefix


@register
class NodePerturbationRule(UpdateRule):
    """Node perturbation (NRL): noisy pre-activations and a layer-local Hebbian update.

    A forward hook on every Conv/Linear layer adds Gaussian noise ψ_l (std σ,
    independent per sample and position) to the layer output. Per sample b the
    noisy passes give a loss difference δ_b:

    * ``delta: antithetic`` (default): passes with +ψ and −ψ, ``δ_b = (L₊[b] − L₋[b])/2``;
      the loss reported is their mean.
    * otherwise a clean pass and ``probes`` noisy passes, ``δ_b = L_noisy[b] − L_clean[b]``;
      (``delta: clean``); with ``delta: baseline`` no clean pass, ``δ_b = L_noisy[b] − b̄`` with b̄ a running mean of
      the batch loss (NRL's reward prediction error). Noisier: b̄ cannot follow
      per-sample loss differences.

    The estimate of ∂(mean_b L_b)/∂W_l is ``mean_b δ_b/σ² · ψ_{l,b} ⊗ x_{l,b}``
    (bias: ψ summed over positions), written to ``.grad``. It is computed in one more,
    clean pass once every δ is known: each layer's hook regenerates the ψ of every probe
    from its seed and applies the conv weight-gradient operator to the layer's clean
    input x_l, there and then. Nothing is kept from pass to pass but the seeds and the
    per-sample losses; within a pass, noise and update are made ``samples_per_slice`` samples
    at a time, so a step holds one slice of one layer's noise beyond inference. It costs
    ``2·probes + 1`` forwards (antithetic), ``probes + 2`` (clean pass) or
    ``probes + 1`` (baseline), plus one weight-gradient operator per layer.

    ``layers: cycle`` perturbs one layer per step, in turn (other parameters get
    ``grad = None``). Parameters outside Conv/Linear layers (BatchNorm affine,
    attention scalars) get no update (``grad = None``): they stay at their initial
    values. All passes run under ``torch.no_grad()``; no autograd graph is ever built.
    """

    name = "node-perturbation"

    def __init__(self, model: nn.Module, cfg: TrainerConfig) -> None:
        super().__init__(model, cfg)
        self.opts = cfg.node_perturbation
        self.layers = chosen_layers(model, self.opts.only, "node-perturbation")
        names = {m: n for n, m in model.named_modules()}
        self.radius = {m: self._radius_of(names[m]) for m in self.layers}
        self.output_layer = self._output_layer(model)
        self.params = [p for _, p in trainable_parameters(model)]
        self.layer_cursor = 0
        self.baseline_value: float | None = None
        self.baseline_momentum = 0.9
        self.sample_masks: dict[nn.Module, torch.Tensor] | None = None  # the last step's split
        self.warned_no_cells = False
        # per set of active layers, the passes' reuse of what their noise cannot change
        self.prefixes: dict[tuple[int, ...], FrozenPrefix] = {}

    def _output_layer(self, model: nn.Module) -> nn.Module | None:
        """The perturbed layer credited channel by channel (``output_layer``), if any."""
        name = self.opts.output_layer
        if name is None:
            return None
        module = dict(model.named_modules()).get(name)
        default = type(self.opts).model_fields["output_layer"].default
        if module is None and name != default:  # the default is the U-Nets' and ignored elsewhere
            from seacast.errors import ConfigError

            raise ConfigError(
                f"trainer.node_perturbation.output_layer is {name!r}, and the model has no such module",
                "name the model's last conv (module names as in model.named_modules()), or set it "
                "to null",
            )
        return module if module in self.layers else None

    def _radius_of(self, name: str) -> int:
        key = longest_prefix(name, list(self.opts.credit_radius_by_layer))
        return self.opts.credit_radius if key is None else self.opts.credit_radius_by_layer[key]

    def state_dict(self) -> dict:
        return {"layer_cursor": self.layer_cursor, "baseline": self.baseline_value}

    def load_state_dict(self, state: dict) -> None:
        self.layer_cursor = int(state.get("layer_cursor", 0))
        self.baseline_value = state.get("baseline")

    def _active_layers(
        self, batch: int, device: torch.device
    ) -> tuple[list[nn.Module], dict[nn.Module, torch.Tensor] | None]:
        """The layers this step perturbs and, with ``layers: samples``, each one's samples."""
        if self.opts.layers == "cycle":
            layer = self.layers[self.layer_cursor % len(self.layers)]
            self.layer_cursor += 1
            return [layer], None
        if self.opts.layers == "samples":
            return self._split_by_samples(batch, device)
        return self.layers, None

    def _split_by_samples(
        self, batch: int, device: torch.device
    ) -> tuple[list[nn.Module], dict[nn.Module, torch.Tensor]]:
        """Give each sample of the batch one layer to perturb, cycling; the layers with samples.

        One sample's loss difference then measures one layer's noise only, instead of the
        sum of every layer's (the noise of the layers near the output drowns the others').
        """
        n = len(self.layers)
        # a random deal, so each layer sees every sample in turn (the batch gradient, unbiased)
        owner = (torch.randperm(batch).to(device) + self.layer_cursor) % n
        self.layer_cursor = (self.layer_cursor + batch) % n
        masks = {m: owner == i for i, m in enumerate(self.layers) if bool((owner == i).any())}
        return list(masks), masks

    def _slices(self, batch: int) -> list[slice]:
        """The batch cut into slices of ``samples_per_slice`` samples (one slice if 0)."""
        step = self.opts.samples_per_slice or batch
        return [slice(start, min(start + step, batch)) for start in range(0, batch, step)]

    def _noise(
        self,
        generator: torch.Generator,
        module: nn.Module,
        output: torch.Tensor,
        part: slice,
        masks: dict[nn.Module, torch.Tensor] | None,
    ) -> torch.Tensor:
        """The next ψ of ``generator`` for the samples ``part`` of one call of ``module``.

        Same seed, calls and slices, same ψ: the update pass regenerates what the noisy
        passes drew, one slice at a time.
        """
        psi = torch.randn(
            output[part].shape, generator=generator, device=output.device, dtype=output.dtype
        )
        psi.mul_(self.opts.sigma)
        if masks is not None:  # layers: samples: only this layer's samples get noise
            mask = masks[module][part].to(psi.dtype)
            psi.mul_(mask.view(-1, *([1] * (psi.dim() - 1))))
        return psi

    def _noisy_pass(
        self,
        model: nn.Module,
        x: torch.Tensor,
        active: list[nn.Module],
        masks: dict[nn.Module, torch.Tensor] | None,
        seed: int | None,
        sign: float,
    ) -> torch.Tensor:
        """One forward with ``sign`` × the ψ drawn from ``seed`` on the active layers (clean if None)."""
        if seed is None:
            return model(x)
        generator = generator_for(x.device, seed)

        def add_noise(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            for part in self._slices(output.shape[0]):
                output[part].add_(self._noise(generator, module, output, part, masks), alpha=sign)
            return output

        with _hooks(active, add_noise):
            return model(x)

    def _update_pass(
        self,
        model: nn.Module,
        x: torch.Tensor,
        active: list[nn.Module],
        masks: dict[nn.Module, torch.Tensor] | None,
        probes: list[tuple[int, Credit]],
    ) -> dict[int, tuple[nn.Parameter, torch.Tensor]]:
        """A clean forward that sums ``Σ_k Σ_b credit_kb ψ_kb ⊗ x_b`` into each active layer's update."""
        generators = [(generator_for(x.device, seed), credit) for seed, credit in probes]
        sums: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}

        def accumulate(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            share = 1.0
            if masks is not None:  # mean over the layer's own samples
                own = masks[module]
                share = own.numel() / float(own.sum().clamp(min=1))
            for part in self._slices(output.shape[0]):
                signal: torch.Tensor | None = None  # built in the first ψ's buffer: one buffer held
                for generator, credit in generators:
                    psi = self._noise(generator, module, output, part, masks)
                    term = psi.mul_(credit.for_output(module, psi, part))
                    signal = term if signal is None else signal.add_(term)
                assert signal is not None
                if share != 1.0:
                    signal.mul_(share)
                layer_in = layer_input(module, inputs[0][part])
                add_to(sums, module.weight, local_weight_gradient(module, layer_in, signal))
                if module.bias is not None and module.bias.requires_grad:
                    if isinstance(module, nn.Linear):
                        bias = signal.reshape(-1, signal.shape[-1]).sum(0)
                    else:
                        bias = signal.sum(dim=[d for d in range(signal.dim()) if d != 1])
                    add_to(sums, module.bias, bias)

        with _hooks(active, accumulate):
            model(x)
        return sums

    def _losses(
        self, prediction: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample losses ``[B]`` and, with local credit, the loss map ``[B, K, H, W]`` over
        output channels and cells."""
        if self.opts.credit == "global":
            return loss_fn(prediction, target), None
        if not isinstance(loss_fn, CellLoss):
            if not self.warned_no_cells:
                warnings.warn(
                    "node_perturbation.credit=local needs each output cell's loss, and this loss "
                    "function has no `elementwise` method (make_loss's has one): using global "
                    "credit. Set trainer.node_perturbation.credit=global to silence this.",
                    stacklevel=2,
                )
                self.warned_no_cells = True
            return loss_fn(prediction, target), None
        cells = loss_fn.elementwise(prediction, target)
        channels = cells.flatten(1, -3) if cells.dim() > 3 else cells.unsqueeze(1)  # [B, K, H, W]
        return channels.flatten(1).sum(1), channels

    def _baseline_delta(self, loss_noisy: torch.Tensor) -> torch.Tensor:
        """``L_noisy − b̄``, then b̄ follows the batch loss (a running mean)."""
        batch_mean = float(loss_noisy.mean())
        base = batch_mean if self.baseline_value is None else self.baseline_value
        self.baseline_value = (
            batch_mean
            if self.baseline_value is None
            else self.baseline_momentum * self.baseline_value
            + (1 - self.baseline_momentum) * batch_mean
        )
        return loss_noisy - base

    def step(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepStats:
        active, masks = self._active_layers(x.shape[0], x.device)
        self.sample_masks = masks
        sigma2 = self.opts.sigma**2
        seeds = [draw_seed() for _ in range(self.opts.probes)]
        passes = SamePasses(model)
        forwards = 0

        def losses(seed: int | None, sign: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
            nonlocal forwards
            passes.before_pass()
            forwards += 1
            return self._losses(
                self._noisy_pass(model, x, active, masks, seed, sign), target, loss_fn
            )

        key = tuple(id(m) for m in active)
        if key not in self.prefixes:
            noised = [p for m in active for p in m.parameters(recurse=False)]
            self.prefixes[key] = FrozenPrefix(model, noised)
        with torch.no_grad(), self.prefixes[key].step(x):
            clean: tuple[torch.Tensor, torch.Tensor | None] | None = None
            if self.opts.delta == "clean":
                clean = losses(None)
            reported: list[torch.Tensor] = []
            probes: list[tuple[int, Credit]] = []
            for seed in seeds:
                loss_noisy, map_noisy = losses(seed)
                delta_map: torch.Tensor | None = None
                if self.opts.delta == "antithetic":
                    loss_minus, map_minus = losses(seed, -1.0)
                    delta = 0.5 * (loss_noisy - loss_minus)
                    if map_noisy is not None and map_minus is not None:
                        delta_map = 0.5 * (map_noisy - map_minus)
                    reported.append(0.5 * (loss_noisy + loss_minus))
                elif self.opts.delta == "baseline":
                    delta = self._baseline_delta(loss_noisy)
                    reported.append(loss_noisy)
                else:
                    assert clean is not None
                    delta = loss_noisy - clean[0]
                    if map_noisy is not None and clean[1] is not None:
                        delta_map = map_noisy - clean[1]
                credit = Credit(
                    delta / sigma2,
                    None if delta_map is None else delta_map / sigma2,
                    self.radius,
                    self.output_layer,
                )
                probes.append((seed, credit))
            passes.before_pass()
            sums = self._update_pass(model, x, active, masks, probes)
            forwards += 1
            passes.finish()
            loss_value = (
                float(clean[0].mean()) if clean is not None else float(torch.stack(reported).mean())
            )
            clear_grads(self.params)
            batch = x.shape[0]
            for p, total in sums.values():
                set_grad(p, total / (batch * len(seeds)))
        return StepStats(loss=loss_value, forwards=float(forwards))


@contextmanager
def _hooks(modules: list[nn.Module], hook: Callable[..., torch.Tensor | None]) -> Iterator[None]:
    """``hook`` as a forward hook on ``modules`` for the duration of the block."""
    handles = [m.register_forward_hook(hook) for m in modules]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()
