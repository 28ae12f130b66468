"""What every zeroth-order rule shares: seeded noise, comparable passes, no autograd."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

JVP_FORWARD_COST = 3.0
"""Cost of one forward-mode pass (primal + tangent) in forward-pass equivalents.

Measured by ``benchmarks/zo_vs_bp.py --quick`` on CPU (3ddr_unet F=2, 32x32,
batch 16, one thread on 2 shared cores): a jvp took 3.05 plain forwards and a
backprop step 3.86. Used for ``StepStats.forwards``.
"""

_SEED_RANGE = 2**62


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


def draw_seed() -> int:
    """A seed from the global torch RNG, so ``torch.manual_seed`` makes a run reproducible."""
    return int(torch.randint(0, _SEED_RANGE, (1,)).item())


def generator_for(device: torch.device, seed: int) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(seed % _SEED_RANGE)
    return gen


def mix_seed(seed: int, index: int) -> int:
    """A per-parameter seed derived from the probe seed (splitmix-style, deterministic)."""
    z = (seed + 0x9E3779B97F4A7C15 * (index + 1)) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & 0xFFFFFFFFFFFFFFFF
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & 0xFFFFFFFFFFFFFFFF
    return (z ^ (z >> 31)) % _SEED_RANGE


def noise_like(param: torch.Tensor, seed: int, kind: str) -> torch.Tensor:
    """The probe noise for one parameter, regenerated from its seed (same seed, same tensor)."""
    gen = generator_for(param.device, seed)
    if kind == "rademacher":
        z = torch.randint(0, 2, param.shape, generator=gen, device=param.device)
        return z.to(param.dtype).mul_(2).sub_(1)
    return torch.randn(param.shape, generator=gen, device=param.device, dtype=param.dtype)


class SamePasses:
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


def clear_grads(params: list[nn.Parameter]) -> None:
    for p in params:
        p.grad = None


def set_grad(param: nn.Parameter, value: torch.Tensor) -> None:
    param.grad = value.to(param.dtype)


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
