"""The update-rule protocol shared by backprop and every zeroth-order rule.

The training loop is the same for every trainer; a rule only decides how one
batch becomes a parameter update. A rule writes its gradient estimate into
``param.grad`` so any ``torch.optim`` optimiser applies it, or, with
``applies_update = True``, changes the weights itself (MeZO's in-place SGD).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import nn

from seacast.config import TrainerConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``loss_fn(prediction, target) -> per-sample loss [B]``."""


@runtime_checkable
class CellLoss(Protocol):
    """A per-sample loss that can also give each output cell's share of it.

    Node perturbation's local credit needs the cells; :func:`seacast.training.losses.make_loss`
    returns one.
    """

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor: ...

    def elementwise(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Each cell's share ``[B, ..., H, W]``, summing over all but the batch to ``self(...)``."""
        ...


@dataclass
class StepStats:
    """What one step reports: the clean loss on the batch and its cost in forward-pass equivalents."""

    loss: float
    forwards: float


class UpdateRule:
    """Base class: turn one batch into an update of ``model``'s trainable parameters."""

    name: str = ""
    applies_update: bool = False
    """The rule changes the weights itself (no optimiser step); it cannot run data-parallel."""
    uses_autograd: bool = False
    """The rule builds an autograd graph: data-parallel runs wrap the model in DDP for it."""

    def __init__(self, model: nn.Module, cfg: TrainerConfig) -> None:
        self.model = model
        self.cfg = cfg

    def step(
        self, model: nn.Module, x: torch.Tensor, target: torch.Tensor, loss_fn: LossFn
    ) -> StepStats:
        raise NotImplementedError

    def set_lr(self, lr: float) -> None:
        """Learning rate for rules that apply their own update (called by the loop's schedule)."""

    def state_dict(self) -> dict:
        """State a resumed run needs (running baselines, block cursors); saved in checkpoints."""
        return {}

    def load_state_dict(self, state: dict) -> None:
        """Restore what :meth:`state_dict` returned."""


_RULES: dict[str, type[UpdateRule]] = {}


def register(cls: type[UpdateRule]) -> type[UpdateRule]:
    """Class decorator: make a rule available to :func:`make_rule` under ``cls.name``."""
    _RULES[cls.name] = cls
    return cls


def make_rule(name: str, model: nn.Module, cfg: TrainerConfig) -> UpdateRule:
    """The update rule for a trainer name (backprop, spsa, node-perturbation, forward-gradient)."""
    # the rule modules register themselves on import
    from seacast.training import backprop, zeroth_order  # noqa: F401

    if name not in _RULES:
        from seacast.errors import ConfigError

        raise ConfigError(f"unknown trainer '{name}'", f"use one of: {', '.join(sorted(_RULES))}")
    return _RULES[name](model, cfg)
