"""The training loss: MSE on de-normalised (physical) values, per sample.

Offered: :func:`make_loss` builds ``loss_fn(prediction, target) -> [B]`` for the update
rules. By default only sea points count; ``land_in_loss=True`` is the reference's loss,
where land (0 in normalised space) is part of the mean. ``loss_fn.elementwise(pred, target)``
gives each output cell's share ``[B, n_lead, C, H, W]`` (summing to the per-sample loss).
"""

from __future__ import annotations

import numpy as np
import torch

from seacast.training.rules import LossFn
from seacast.windows import Normaliser


def make_loss(
    normaliser: Normaliser,
    sea_mask: np.ndarray | torch.Tensor,
    land_in_loss: bool = False,
    units: str = "physical",
) -> LossFn:
    """``loss_fn(pred, target)`` for tensors ``[B, n_lead, C, H, W]`` -> per-sample loss ``[B]``.

    Each (lead time, variable) field gets its mean squared error over the counted points, in
    physical units (``units="physical"``) or in the model's normalised units (``"normalised"``:
    every variable weighs alike); the sample's loss is the mean over lead times and variables.
    """
    mask = torch.as_tensor(np.asarray(sea_mask), dtype=torch.bool)
    if land_in_loss:
        mask = torch.ones_like(mask)
    n_points = int(mask.sum())
    if n_points == 0:
        raise ValueError("the sea mask holds no sea point: nothing to train on")
    cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def elementwise(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        key = (prediction.device, prediction.dtype)
        if key not in cache:
            cache[key] = mask.to(device=prediction.device, dtype=prediction.dtype)
        weight = cache[key]
        if units == "normalised":
            error = prediction - target
        else:
            error = normaliser.denormalise(prediction, channel_dim=-3) - normaliser.denormalise(
                target, channel_dim=-3
            )
        n_fields = prediction[0, ..., 0, 0].numel()  # n_lead * C
        return error.square() * weight / (n_points * n_fields)

    def loss_fn(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return elementwise(prediction, target).flatten(1).sum(dim=1)

    # node perturbation's local credit needs each output cell's share of the loss
    loss_fn.elementwise = elementwise  # type: ignore[attr-defined]
    return loss_fn
