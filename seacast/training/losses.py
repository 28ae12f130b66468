"""The training loss: MSE on de-normalised (physical) values, per sample.

Offered: :func:`make_loss` builds a :class:`MaskedMSE`, ``loss_fn(prediction, target) -> [B]``
for the update rules. By default only sea points count; ``land_in_loss=True`` is the
reference's loss, where land (0 in normalised space) is part of the mean.
``loss_fn.elementwise(pred, target)`` gives each output cell's share ``[B, n_lead, C, H, W]``
(summing to the per-sample loss): node perturbation's local credit uses it.
``loss_fn.gradient(pred, target)`` is the batch-mean loss's derivative by the prediction, in
closed form: forward gradient's delta rule on the output layer uses it, with no backward pass.
"""

from __future__ import annotations

import numpy as np
import torch

from seacast.normalise import Normaliser


class MaskedMSE:
    """Mean squared error over the counted points, per (lead time, variable) field, per sample."""

    def __init__(self, normaliser: Normaliser, mask: torch.Tensor, units: str) -> None:
        self.normaliser = normaliser
        self.mask = mask
        self.units = units
        self.n_points = int(mask.sum())
        if self.n_points == 0:
            raise ValueError("the sea mask holds no sea point: nothing to train on")
        self.cache: dict[tuple[torch.device, torch.dtype], torch.Tensor] = {}

    def elementwise(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        key = (prediction.device, prediction.dtype)
        if key not in self.cache:
            self.cache[key] = self.mask.to(device=prediction.device, dtype=prediction.dtype)
        weight = self.cache[key]
        if self.units == "normalised":
            error = prediction - target
        else:
            denormalise = self.normaliser.denormalise
            error = denormalise(prediction, channel_dim=-3) - denormalise(target, channel_dim=-3)
        n_fields = prediction[0, ..., 0, 0].numel()  # n_lead * C
        return error.square() * weight / (self.n_points * n_fields)

    def gradient(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``d mean_b(loss_b) / d prediction``, ``[B, n_lead, C, H, W]``, without autograd."""
        weight = self.mask.to(device=prediction.device, dtype=prediction.dtype)
        n_fields = prediction[0, ..., 0, 0].numel()
        scale = weight * (2.0 / (self.n_points * n_fields * prediction.shape[0]))
        if self.units == "normalised":
            return (prediction - target) * scale
        denormalise = self.normaliser.denormalise
        error = denormalise(prediction, channel_dim=-3) - denormalise(target, channel_dim=-3)
        return error * self.normaliser.scale_like(prediction, channel_dim=-3) * scale

    def __call__(self, prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.elementwise(prediction, target).flatten(1).sum(dim=1)


def make_loss(
    normaliser: Normaliser,
    sea_mask: np.ndarray | torch.Tensor,
    land_in_loss: bool = False,
    units: str = "physical",
) -> MaskedMSE:
    """``loss_fn(pred, target)`` for tensors ``[B, n_lead, C, H, W]`` -> per-sample loss ``[B]``.

    Each (lead time, variable) field gets its mean squared error over the counted points, in
    physical units (``units="physical"``) or in the model's normalised units (``"normalised"``:
    every variable weighs alike); the sample's loss is the mean over lead times and variables.
    """
    mask = torch.as_tensor(np.asarray(sea_mask), dtype=torch.bool)
    if land_in_loss:
        mask = torch.ones_like(mask)
    return MaskedMSE(normaliser, mask, units)
