"""SPSA (MeZO): seeded in-place weight noise and antithetic central differences."""

from __future__ import annotations

import torch
from torch import nn

from seacast.config import TrainerConfig
from seacast.training.rules import LossFn, StepStats, UpdateRule, register
from seacast.training.zeroth_order.common import (
    SamePasses,
    clear_grads,
    draw_seed,
    mix_seed,
    noise_like,
    parameter_blocks,
    set_grad,
    trainable_parameters,
)
from seacast.training.zeroth_order.credit import train_only
from seacast.training.zeroth_order.prefix_cache import FrozenPrefix


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
    ``only`` restricts the noise and the training to some layers; every pass after a
    step's first then reuses what they cannot change (:class:`FrozenPrefix`).
    ``inplace_sgd`` applies ``θ -= lr (g z + wd θ)`` from the seeds and writes no
    ``.grad`` at all (``applies_update = True``; the loop calls :meth:`set_lr`).
    """

    name = "spsa"

    def __init__(self, model: nn.Module, cfg: TrainerConfig) -> None:
        super().__init__(model, cfg)
        self.opts = cfg.spsa
        self.applies_update = self.opts.inplace_sgd
        train_only(model, self.opts.only, "spsa")
        self.lr = cfg.optimizer.lr
        self.weight_decay = cfg.optimizer.weight_decay
        self.params = [p for _, p in trainable_parameters(model)]
        self.index = {id(p): i for i, p in enumerate(self.params)}
        self.blocks = parameter_blocks(model) if self.opts.blockwise else [self.params]
        self.block_cursor = 0
        # per block, the passes' reuse of what its noise cannot change
        self.prefixes = [FrozenPrefix(model, block) for block in self.blocks]

    def set_lr(self, lr: float) -> None:
        self.lr = lr

    def state_dict(self) -> dict:
        return {"block_cursor": self.block_cursor, "lr": self.lr}

    def load_state_dict(self, state: dict) -> None:
        self.block_cursor = int(state.get("block_cursor", 0))
        self.lr = float(state.get("lr", self.lr))

    def _perturb(self, params: list[nn.Parameter], seed: int, scale: float) -> None:
        for p in params:
            z = noise_like(p, mix_seed(seed, self.index[id(p)]), self.opts.noise)
            p.data.add_(z, alpha=scale)

    def step(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepStats:
        index = self.block_cursor % len(self.blocks)
        block, prefix = self.blocks[index], self.prefixes[index]
        self.block_cursor += 1
        eps = self.opts.epsilon
        seeds = [draw_seed() for _ in range(self.opts.probes)]
        passes = SamePasses(model)
        projected: list[float] = []
        losses: list[float] = []
        with torch.no_grad(), prefix.step(x):
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
        clear_grads(self.params)
        n = len(seeds)
        for p in block:
            grad = torch.zeros_like(p)
            for seed, g in zip(seeds, projected, strict=True):
                grad.add_(
                    noise_like(p, mix_seed(seed, self.index[id(p)]), self.opts.noise), alpha=g / n
                )
            set_grad(p, grad)

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
