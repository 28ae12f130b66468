"""Zeroth-order update rules: a parameter update from forward passes and noise only.

Offers three :class:`~seacast.training.rules.UpdateRule` subclasses, registered
under their trainer names:

* :class:`SpsaRule` (``spsa``): MeZO-style weight perturbation. Seeded noise
  ``z(s)`` is added to the weights in place, ``θ ± εz``; the central difference
  ``g = (L₊ − L₋) / 2ε`` times ``z`` (regenerated from the seed, never stored)
  is the estimate. With ``inplace_sgd`` the rule applies ``θ -= lr g z`` itself
  and keeps no ``.grad`` tensors, so a step needs the memory of inference.
* :class:`NodePerturbationRule` (``node-perturbation``): noise ψ on every
  Conv/Linear layer's output (pre-activation), per sample; the per-sample loss
  difference δ_b between the noisy and the clean (or antithetic) pass modulates a
  layer-local Hebbian update ``δ_b/σ² · ψ_l ⊗ x_l`` computed with the conv
  weight-gradient operator. Nothing flows backward through the network.
* :class:`ForwardGradientRule` (``forward-gradient``): the exact directional
  derivative ``∇L·v`` from forward-mode AD (``torch.autograd.forward_ad``
  dual tensors, which also work with train-mode BatchNorm), estimate ``(∇L·v) v``.

Every rule runs its forwards under ``torch.no_grad()`` in the model's current
mode (the loop puts it in train mode). Two things keep the passes of one step
comparable, see :class:`_SamePasses`: every pass of a step replays the same
random state (so dropout draws the same mask in L₊ and L₋, or in the clean and
noisy pass), and BatchNorm running statistics are updated once per step (by
the step's first pass), not once per pass.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
import torch.autograd.forward_ad as fwAD
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from seacast.config import TrainerConfig
from seacast.training.rules import CellLoss, LossFn, StepStats, UpdateRule, register

JVP_FORWARD_COST = 3.0
"""Cost of one forward-mode pass (primal + tangent) in forward-pass equivalents.

Measured by ``benchmarks/zo_vs_bp.py --quick`` on CPU (3ddr_unet F=2, 32x32,
batch 16, one thread on 2 shared cores): a jvp took 3.05 plain forwards and a
backprop step 3.86. Used for ``StepStats.forwards``.
"""

_SEED_RANGE = 2**62


# --------------------------------------------------------------------------- shared helpers


def trainable_parameters(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """The named parameters that require grad, in a stable order."""
    return [(n, p) for n, p in model.named_parameters() if p.requires_grad]


def parameter_blocks(model: nn.Module) -> list[list[nn.Parameter]]:
    """Trainable parameters grouped by top-level child (parameters of the root form their own block)."""
    blocks: list[list[nn.Parameter]] = []
    own = [p for p in model.parameters(recurse=False) if p.requires_grad]
    if own:
        blocks.append(own)
    for child in model.children():
        params = [p for p in child.parameters() if p.requires_grad]
        if params:
            blocks.append(params)
    return blocks


def _draw_seed() -> int:
    """A seed from the global torch RNG, so ``torch.manual_seed`` makes a run reproducible."""
    return int(torch.randint(0, _SEED_RANGE, (1,)).item())


def _generator(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed % _SEED_RANGE)
    return gen


def _mix(seed: int, index: int) -> int:
    """A per-parameter seed derived from the probe seed (splitmix-style, deterministic)."""
    z = (seed + 0x9E3779B97F4A7C15 * (index + 1)) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) % _SEED_RANGE


def _noise_like(param: torch.Tensor, seed: int, kind: str) -> torch.Tensor:
    """The probe noise for one parameter, regenerated from its seed (same seed, same tensor)."""
    gen = _generator(param.device, seed)
    if kind == "rademacher":
        z = torch.randint(0, 2, param.shape, generator=gen, device=param.device)
        return z.to(param.dtype).mul_(2).sub_(1)
    return torch.randn(param.shape, generator=gen, device=param.device, dtype=param.dtype)


class _SamePasses:
    """Make every forward pass of one step see the same randomness and update BatchNorm stats once.

    Call :meth:`before_pass` before each forward of the step and :meth:`finish`
    at its end. The random state (CPU and, if used, CUDA) is captured at
    creation and replayed before every pass, so stochastic layers (dropout)
    draw the same masks: the loss differences then measure the perturbation,
    not a change of mask. BatchNorm buffers after the first pass are kept and
    written back at the end, so running statistics move once per step.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.cpu_state = torch.get_rng_state()
        self.cuda = any(p.is_cuda for p in model.parameters())
        self.cuda_state = torch.cuda.get_rng_state_all() if self.cuda else None
        self.batch_norms = [m for m in model.modules() if isinstance(m, _BatchNorm) and m.training]
        self.passes = 0
        self.after_first: list[dict[str, torch.Tensor]] | None = None

    def before_pass(self) -> None:
        if self.passes == 1 and self.batch_norms:
            self.after_first = [
                {k: b.clone() for k, b in m.named_buffers(recurse=False) if b is not None}
                for m in self.batch_norms
            ]
        torch.set_rng_state(self.cpu_state)
        if self.cuda_state is not None:
            torch.cuda.set_rng_state_all(self.cuda_state)
        self.passes += 1

    def finish(self) -> None:
        if self.after_first is None:
            return
        with torch.no_grad():
            for module, saved in zip(self.batch_norms, self.after_first, strict=True):
                for key, value in saved.items():
                    getattr(module, key).copy_(value)


def _clear_grads(params: list[nn.Parameter]) -> None:
    for p in params:
        p.grad = None


def _set_grad(param: nn.Parameter, value: torch.Tensor) -> None:
    param.grad = value.to(param.dtype)


# --------------------------------------------------------------------------- spsa


@register
class SpsaRule(UpdateRule):
    """MeZO-style SPSA: seeded in-place weight perturbation and antithetic central differences.

    Per probe k with seed s_k: ``θ += εz``, L₊; ``θ -= 2εz``, L₋; ``θ += εz``
    (restored to float rounding, about one ulp of ``εz``; bit-exact restoration
    would need a copy of the weights, which is the memory MeZO avoids).
    ``g_k = (L₊ − L₋)/2ε`` and the estimate is ``mean_k g_k z(s_k)``, with z
    regenerated from the seed. The reported loss is ``mean_k (L₊ + L₋)/2``, so a
    step costs exactly ``2·probes`` forwards.

    ``blockwise`` perturbs one top-level child of the model per step, cycling;
    parameters outside the block get ``grad = None`` (Adam and SGD skip them).
    ``inplace_sgd`` applies ``θ -= lr (g z + wd θ)`` from the seeds and writes no
    ``.grad`` at all (``applies_update = True``; the loop calls :meth:`set_lr`).
    """

    name = "spsa"

    def __init__(self, model: nn.Module, cfg: TrainerConfig) -> None:
        super().__init__(model, cfg)
        self.opts = cfg.spsa
        self.applies_update = self.opts.inplace_sgd
        self.lr = cfg.optimizer.lr
        self.weight_decay = cfg.optimizer.weight_decay
        self.params = [p for _, p in trainable_parameters(model)]
        self.index = {id(p): i for i, p in enumerate(self.params)}
        self.blocks = parameter_blocks(model) if self.opts.blockwise else [self.params]
        self.block_cursor = 0

    def set_lr(self, lr: float) -> None:
        self.lr = lr

    def state_dict(self) -> dict:
        return {"block_cursor": self.block_cursor, "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.block_cursor = int(state.get("block_cursor", 0))
        self.lr = float(state.get("lr", self.lr))

    def _perturb(self, params: list[nn.Parameter], seed: int, scale: float) -> None:
        for p in params:
            z = _noise_like(p, _mix(seed, self.index[id(p)]), self.opts.noise)
            p.data.add_(z, alpha=scale)

    def step(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepStats:
        block = self.blocks[self.block_cursor % len(self.blocks)]
        self.block_cursor += 1
        eps = self.opts.epsilon
        seeds = [_draw_seed() for _ in range(self.opts.probes)]
        passes = _SamePasses(model)
        projected: list[float] = []
        losses: list[float] = []
        with torch.no_grad():
            for seed in seeds:
                self._perturb(block, seed, eps)
                passes.before_pass()
                loss_plus = loss_fn(model(x), target).mean().item()
                self._perturb(block, seed, -2 * eps)
                passes.before_pass()
                loss_minus = loss_fn(model(x), target).mean().item()
                self._perturb(block, seed, eps)
                projected.append((loss_plus - loss_minus) / (2 * eps))
                losses.append(0.5 * (loss_plus + loss_minus))
            passes.finish()
            if self.applies_update:
                self._apply_inplace(block, seeds, projected)
            else:
                self._write_grads(block, seeds, projected)
        return StepStats(loss=sum(losses) / len(losses), forwards=2.0 * len(seeds))

    def _write_grads(
        self, block: list[nn.Parameter], seeds: list[int], projected: list[float]
    ) -> None:
        _clear_grads(self.params)
        n = len(seeds)
        for p in block:
            grad = torch.zeros_like(p)
            for seed, g in zip(seeds, projected, strict=True):
                grad.add_(
                    _noise_like(p, _mix(seed, self.index[id(p)]), self.opts.noise), alpha=g / n
                )
            _set_grad(p, grad)

    def _apply_inplace(
        self, block: list[nn.Parameter], seeds: list[int], projected: list[float]
    ) -> None:
        n = len(seeds)
        if self.weight_decay:
            for p in block:
                p.data.mul_(1 - self.lr * self.weight_decay)
        for seed, g in zip(seeds, projected, strict=True):
            if g != 0.0:
                self._perturb(block, seed, -self.lr * g / n)


# --------------------------------------------------------------------------- node perturbation

_LOCAL_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def local_layers(model: nn.Module) -> list[nn.Module]:
    """The Conv1d/2d/3d and Linear layers with a trainable weight: those node perturbation updates."""
    return [m for m in model.modules() if isinstance(m, _LOCAL_LAYERS) and m.weight.requires_grad]


def _layer_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input as the layer's core op sees it (non-zero padding modes pad explicitly first).

    Layers that pad inside their own ``forward`` before the conv (seacast's
    ``SameConv2d``/``SameConv3d`` with even kernels) say so in ``extra_pad``.
    """
    extra_pad = getattr(module, "extra_pad", None)
    if extra_pad is not None:
        x = nn.functional.pad(x, extra_pad)
    if isinstance(module, nn.modules.conv._ConvNd) and module.padding_mode != "zeros":
        return nn.functional.pad(
            x, module._reversed_padding_repeated_twice, mode=module.padding_mode
        )
    return x


def local_weight_gradient(
    module: nn.Module, x: torch.Tensor, out_signal: torch.Tensor
) -> torch.Tensor:
    """``Σ_b out_signal_b ⊗ x_b`` for one layer: its weight gradient given the output signal.

    For a conv layer this is the conv weight-gradient operator
    (``torch.nn.grad.conv{1,2,3}d_weight``) with the layer's stride, padding,
    dilation and groups; it needs only the layer's own input and output signal.
    """
    if isinstance(module, nn.Linear):
        return torch.einsum("...o,...i->oi", out_signal, x)
    padding = 0 if module.padding_mode != "zeros" else module.padding
    if isinstance(padding, str):  # 'same' / 'valid'
        padding = _explicit_padding(module) if padding == "same" else 0
    op = {
        nn.Conv1d: torch.nn.grad.conv1d_weight,
        nn.Conv2d: torch.nn.grad.conv2d_weight,
        nn.Conv3d: torch.nn.grad.conv3d_weight,
    }[_conv_base(module)]
    return op(
        x, module.weight.shape, out_signal, module.stride, padding, module.dilation, module.groups
    )


def _conv_base(module: nn.Module) -> type:
    for base in (nn.Conv1d, nn.Conv2d, nn.Conv3d):
        if isinstance(module, base):
            return base
    raise TypeError(f"{type(module).__name__} is not a Conv1d/2d/3d")


def _explicit_padding(module: nn.Module) -> tuple[int, ...]:
    """Symmetric padding equivalent to ``padding='same'`` (stride 1, odd effective kernels)."""
    pads = []
    for k, d in zip(module.kernel_size, module.dilation, strict=True):
        total = d * (k - 1)
        if total % 2:
            raise NotImplementedError(
                "node perturbation needs odd effective kernels with padding='same'"
            )
        pads.append(total // 2)
    return tuple(pads)


@register
class NodePerturbationRule(UpdateRule):
    """Node perturbation (NRL): noisy pre-activations and a layer-local Hebbian update.

    A forward hook on every Conv/Linear layer adds Gaussian noise ψ_l (std σ,
    independent per sample and position) to the layer output. Per sample b the
    noisy passes give a loss difference δ_b:

    * ``antithetic`` (default): passes with +ψ and −ψ, ``δ_b = (L₊[b] − L₋[b])/2``;
      the loss reported is their mean.
    * otherwise a clean pass and ``probes`` noisy passes, ``δ_b = L_noisy[b] − L_clean[b]``;
      with ``baseline`` no clean pass, ``δ_b = L_noisy[b] − b̄`` with b̄ a running mean of
      the batch loss (NRL's reward prediction error). Noisier: b̄ cannot follow
      per-sample loss differences.

    The estimate of ∂(mean_b L_b)/∂W_l is ``mean_b δ_b/σ² · ψ_{l,b} ⊗ x_{l,b}``
    (bias: ψ summed over positions), written to ``.grad``. It is computed in one more,
    clean pass once every δ is known: each layer's hook regenerates the ψ of every probe
    from its seed and applies the conv weight-gradient operator to the layer's clean
    input x_l, there and then. Nothing is kept from pass to pass but the seeds and the
    per-sample losses, so a step needs the memory of inference; it costs
    ``2·probes + 1`` forwards (antithetic), ``probes + 2`` (clean pass) or
    ``probes + 1`` (baseline), plus one weight-gradient operator per layer.

    ``layerwise`` perturbs one layer per step, cycling (other parameters get
    ``grad = None``). Parameters outside Conv/Linear layers (BatchNorm affine,
    attention scalars) get no update (``grad = None``): they stay at their initial
    values. All passes run under ``torch.no_grad()``; no autograd graph is ever built.
    """

    name = "node-perturbation"

    def __init__(self, model: nn.Module, cfg: TrainerConfig) -> None:
        super().__init__(model, cfg)
        self.opts = cfg.node_perturbation
        self.layers = local_layers(model)
        names = {m: n for n, m in model.named_modules()}
        if self.opts.only:
            self.layers = [
                m for m in self.layers if _longest_prefix(names[m], self.opts.only) is not None
            ]
        if not self.layers:
            from seacast.errors import ConfigError

            where = f" named {self.opts.only}" if self.opts.only else ""
            raise ConfigError(
                f"node-perturbation found no Conv/Linear layer{where} with trainable weights in the model",
                "fix trainer.node_perturbation.only (module names as in model.named_modules()), "
                "or use spsa / forward-gradient for this model",
            )
        self.radius = {m: self._radius_of(names[m]) for m in self.layers}
        self.params = [p for _, p in trainable_parameters(model)]
        self.layer_cursor = 0
        self.baseline_value: float | None = None
        self.baseline_momentum = 0.9
        self.sample_masks: dict[nn.Module, torch.Tensor] | None = None  # the last step's split
        self.warned_no_cells = False

    def _radius_of(self, name: str) -> int:
        key = _longest_prefix(name, list(self.opts.credit_radius_by_layer))
        return self.opts.credit_radius if key is None else self.opts.credit_radius_by_layer[key]

    def state_dict(self) -> dict:
        return {"layer_cursor": self.layer_cursor, "baseline": self.baseline_value}

    def load_state_dict(self, state: dict) -> None:
        self.layer_cursor = int(state.get("layer_cursor", 0))
        self.baseline_value = state.get("baseline")

    def _active_layers(
        self, batch: int, device: torch.device
    ) -> tuple[list[nn.Module], dict[nn.Module, torch.Tensor] | None]:
        """The layers this step perturbs and, with ``split: samples``, each one's samples."""
        if self.opts.layerwise:
            layer = self.layers[self.layer_cursor % len(self.layers)]
            self.layer_cursor += 1
            return [layer], None
        if self.opts.split == "samples":
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

    def _noise(
        self,
        generator: torch.Generator,
        module: nn.Module,
        output: torch.Tensor,
        masks: dict[nn.Module, torch.Tensor] | None,
    ) -> torch.Tensor:
        """The next ψ of ``generator`` for one call of ``module`` (same seed and calls, same ψ)."""
        psi = torch.randn(
            output.shape, generator=generator, device=output.device, dtype=output.dtype
        )
        psi.mul_(self.opts.sigma)
        if masks is not None:  # split: only this layer's samples get noise
            psi.mul_(masks[module].to(psi.dtype).view(-1, *([1] * (psi.dim() - 1))))
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
        generator = _generator(x.device, seed)

        def add_noise(module: nn.Module, _inputs: tuple, output: torch.Tensor) -> torch.Tensor:
            return output.add_(self._noise(generator, module, output, masks), alpha=sign)

        with _hooks(active, add_noise):
            return model(x)

    def _update_pass(
        self,
        model: nn.Module,
        x: torch.Tensor,
        active: list[nn.Module],
        masks: dict[nn.Module, torch.Tensor] | None,
        probes: list[tuple[int, _Credit]],
    ) -> dict[int, tuple[nn.Parameter, torch.Tensor]]:
        """A clean forward that sums ``Σ_k Σ_b credit_kb ψ_kb ⊗ x_b`` into each active layer's update."""
        generators = [(_generator(x.device, seed), credit) for seed, credit in probes]
        sums: dict[int, tuple[nn.Parameter, torch.Tensor]] = {}

        def accumulate(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            signal: torch.Tensor | None = None  # built in the first ψ's buffer: one buffer held
            for generator, credit in generators:
                psi = self._noise(generator, module, output, masks)
                term = psi.mul_(credit.for_output(module, psi))
                signal = term if signal is None else signal.add_(term)
            assert signal is not None
            if masks is not None:  # mean over the layer's own samples
                share = masks[module]
                signal.mul_(share.numel() / float(share.sum().clamp(min=1)))
            layer_in = _layer_input(module, inputs[0])
            _add(sums, module.weight, local_weight_gradient(module, layer_in, signal))
            if module.bias is not None and module.bias.requires_grad:
                if isinstance(module, nn.Linear):
                    bias = signal.reshape(-1, signal.shape[-1]).sum(0)
                else:
                    bias = signal.sum(dim=[d for d in range(signal.dim()) if d != 1])
                _add(sums, module.bias, bias)

        with _hooks(active, accumulate):
            model(x)
        return sums

    def _losses(
        self, prediction: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Per-sample losses ``[B]`` and, with local credit, the loss map ``[B, H, W]`` over output cells."""
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
        per_cell = cells.flatten(1, -3).sum(1) if cells.dim() > 3 else cells  # [B, H, W]
        return per_cell.flatten(1).sum(1), per_cell

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
        seeds = [_draw_seed() for _ in range(self.opts.probes)]
        passes = _SamePasses(model)
        forwards = 0

        def losses(seed: int | None, sign: float = 1.0) -> tuple[torch.Tensor, torch.Tensor | None]:
            nonlocal forwards
            passes.before_pass()
            forwards += 1
            return self._losses(
                self._noisy_pass(model, x, active, masks, seed, sign), target, loss_fn
            )

        with torch.no_grad():
            clean: tuple[torch.Tensor, torch.Tensor | None] | None = None
            if not self.opts.antithetic and not self.opts.baseline:
                clean = losses(None)
            reported: list[torch.Tensor] = []
            probes: list[tuple[int, _Credit]] = []
            for seed in seeds:
                loss_noisy, map_noisy = losses(seed)
                delta_map: torch.Tensor | None = None
                if self.opts.antithetic:
                    loss_minus, map_minus = losses(seed, -1.0)
                    delta = 0.5 * (loss_noisy - loss_minus)
                    if map_noisy is not None and map_minus is not None:
                        delta_map = 0.5 * (map_noisy - map_minus)
                    reported.append(0.5 * (loss_noisy + loss_minus))
                elif self.opts.baseline:
                    delta = self._baseline_delta(loss_noisy)
                    reported.append(loss_noisy)
                else:
                    assert clean is not None
                    delta = loss_noisy - clean[0]
                    if map_noisy is not None and clean[1] is not None:
                        delta_map = map_noisy - clean[1]
                credit = _Credit(
                    delta / sigma2, None if delta_map is None else delta_map / sigma2, self.radius
                )
                probes.append((seed, credit))
            passes.before_pass()
            sums = self._update_pass(model, x, active, masks, probes)
            forwards += 1
            passes.finish()
            loss_value = (
                float(clean[0].mean()) if clean is not None else float(torch.stack(reported).mean())
            )
            _clear_grads(self.params)
            batch = x.shape[0]
            for p, total in sums.values():
                _set_grad(p, total / (batch * len(seeds)))
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


class _Credit:
    """The loss difference each node of a layer is credited with, per sample.

    Global credit: the sample's whole loss difference δ_b, the same for every node.
    Local credit: the loss-difference map over output cells, summed into the
    layer's grid (a layer at 1/f resolution gets the sum over each f×f block)
    and then over a window of ``2·radius+1`` of its cells around each node
    (``radius`` per layer). A node's noise changes the loss only inside its
    influence field, so the cells outside add variance and no signal: dropping
    them is exact when the window covers the field (a 1x1 head: radius 0), a
    small bias otherwise.
    Layers whose output is not on a grid that divides the output grid
    (Linear layers, odd shapes) fall back to global credit.
    """

    def __init__(
        self,
        delta: torch.Tensor,
        delta_map: torch.Tensor | None,
        radius: dict[nn.Module, int],
    ) -> None:
        self.delta = delta  # [B]
        self.delta_map = delta_map  # [B, H, W] or None
        self.radius = radius
        self.cache: dict[tuple[int, int, int], torch.Tensor] = {}

    def for_output(self, module: nn.Module, psi: torch.Tensor) -> torch.Tensor:
        """A tensor broadcastable to ``psi`` (the layer's output noise)."""
        global_credit = self.delta.to(psi.dtype).view(-1, *([1] * (psi.dim() - 1)))
        if self.delta_map is None or isinstance(module, nn.Linear) or psi.dim() < 4:
            return global_credit
        height, width = self.delta_map.shape[-2:]
        h, w = psi.shape[-2:]
        if height % h or width % w:
            return global_credit
        radius = self.radius[module]
        if (h, w, radius) not in self.cache:
            fh, fw = height // h, width // w
            summed = nn.functional.avg_pool2d(self.delta_map.unsqueeze(1), (fh, fw)) * (fh * fw)
            if radius:
                size = 2 * radius + 1
                summed = nn.functional.avg_pool2d(
                    summed, size, stride=1, padding=radius, count_include_pad=True
                ) * (size * size)
            self.cache[(h, w, radius)] = summed  # [B, 1, h, w]
        local = self.cache[(h, w, radius)].to(psi.dtype)
        return local.view(local.shape[0], 1, *([1] * (psi.dim() - 4)), h, w)


def _longest_prefix(name: str, prefixes: list[str]) -> str | None:
    """The longest of ``prefixes`` that is ``name`` or a module path above it (``a.b`` for ``a.b.c``)."""
    matches = [p for p in prefixes if name == p or name.startswith(p + ".")]
    return max(matches, key=len, default=None)


def _add(
    sums: dict[int, tuple[nn.Parameter, torch.Tensor]], param: nn.Parameter, value: torch.Tensor
) -> None:
    if id(param) in sums:
        sums[id(param)] = (param, sums[id(param)][1] + value)
    else:
        sums[id(param)] = (param, value)


# --------------------------------------------------------------------------- forward gradient


@register
class ForwardGradientRule(UpdateRule):
    """Forward gradient: ``(∇L·v) v`` with the exact directional derivative from forward-mode AD.

    Uses ``torch.autograd.forward_ad`` dual tensors through
    ``torch.func.functional_call`` (train-mode BatchNorm works; its running
    statistics are updated from the primal values). v is standard Gaussian over
    all trainable parameters, so ``E[(∇L·v) v] = ∇L``; ``probes`` directions are
    averaged. A jvp costs :data:`JVP_FORWARD_COST` forwards; the loss reported is
    the primal loss of the first probe.
    """

    name = "forward-gradient"

    def __init__(self, model: nn.Module, cfg: TrainerConfig) -> None:
        super().__init__(model, cfg)
        self.opts = cfg.forward_gradient
        self.named = trainable_parameters(model)

    def step(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepStats:
        seeds = [_draw_seed() for _ in range(self.opts.probes)]
        passes = _SamePasses(model)
        grads = {n: torch.zeros_like(p) for n, p in self.named}
        loss_value = math.nan
        with torch.no_grad():
            for k, seed in enumerate(seeds):
                tangents = {
                    n: _noise_like(p, _mix(seed, i), "gaussian")
                    for i, (n, p) in enumerate(self.named)
                }
                passes.before_pass()
                loss, directional = directional_derivative(model, x, target, loss_fn, tangents)
                if k == 0:
                    loss_value = loss
                for n, v in tangents.items():
                    grads[n].add_(v, alpha=directional / len(seeds))
            passes.finish()
            _clear_grads([p for _, p in model.named_parameters()])
            for n, p in self.named:
                _set_grad(p, grads[n])
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


@contextmanager
def no_autograd() -> Iterator[None]:
    """Fail loudly if anything calls the backward machinery (used by tests and the benchmark)."""

    def _refuse(*_args: object, **_kwargs: object) -> None:
        raise AssertionError("backward pass called inside a zeroth-order step")

    saved = torch.autograd.backward, torch.autograd.grad, torch.Tensor.backward
    torch.autograd.backward = _refuse  # type: ignore[assignment]
    torch.autograd.grad = _refuse  # type: ignore[assignment]
    torch.Tensor.backward = _refuse  # type: ignore[assignment, method-assign]
    try:
        yield
    finally:
        torch.autograd.backward, torch.autograd.grad, torch.Tensor.backward = saved  # type: ignore[misc]
