"""Map a faithful model's weights onto an efficient one (same variant and options).

Offers :func:`efficient_state_from_faithful`. Every efficient kernel is the live
part of its faithful kernel: the time slices that can touch data (the middle one
at time depth 1, the first one for the decoder's even ``k=2`` kernel, which
TensorFlow-style padding pads at the end). Conv biases that efficient mode drops
before BatchNorm are folded into that norm's running mean, which gives the same
function in eval mode.
"""

from __future__ import annotations

import torch
from torch import nn

from seacast.errors import ConfigError


def _live_slice(weight: torch.Tensor, target_shape: torch.Size) -> torch.Tensor:
    kept = target_shape[2] if len(target_shape) == 5 else 1
    full = weight.shape[2]
    start = (full - 1) // 2 - (kept - 1) // 2
    live = weight[:, :, start : start + kept]
    return live.squeeze(2) if len(target_shape) == 4 else live


def efficient_state_from_faithful(
    faithful: nn.Module, efficient: nn.Module
) -> dict[str, torch.Tensor]:
    """A state dict for ``efficient`` that computes what ``faithful`` computes (eval mode).

    Both models must be the same variant, built with the same options except ``faithful``.
    """
    source = faithful.state_dict()
    target = efficient.state_dict()
    state: dict[str, torch.Tensor] = {}
    for key, value in target.items():
        if key not in source:
            raise ConfigError(
                f"parameter '{key}' of the efficient model has no faithful counterpart",
                "build both models from the same config (only 'faithful' may differ)",
            )
        src = source[key]
        if src.shape == value.shape:
            state[key] = src.clone()
        elif key.endswith("weight") and src.dim() == 5:
            state[key] = _live_slice(src, value.shape).clone()
        else:
            raise ConfigError(
                f"parameter '{key}' has shape {tuple(src.shape)} in the faithful model and "
                f"{tuple(value.shape)} in the efficient one",
                "build both models from the same config (only 'faithful' may differ)",
            )
        if state[key].shape != value.shape:
            raise ConfigError(
                f"cannot map '{key}' {tuple(src.shape)} onto {tuple(value.shape)}",
                "build both models from the same config (only 'faithful' may differ)",
            )
    for name, module in efficient.named_modules():
        for conv, norm in getattr(module, "bias_folds", {}).items():
            bias_key = f"{name}.{conv}.bias"
            if bias_key in source and bias_key not in target:
                mean_key = f"{name}.{norm}.running_mean"
                state[mean_key] = source[mean_key] - source[bias_key]
    return state
