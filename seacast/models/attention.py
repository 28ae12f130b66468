"""Optional attention modules for the 3DDR U-Nets (after the MEG decoding work, arXiv 2007.00897).

Offers:

* :class:`SpatialSelfAttention`: self-attention over the spatial positions of a
  feature map (SAGAN style: query/key/value projections, a learned gate ``gamma``
  that starts at 0 so the module starts as the identity). Used at the bottleneck.
* :class:`ChannelGate`: global channel attention, a squeeze-and-excitation gate
  (global average -> bottleneck MLP -> sigmoid -> rescale channels). Used on the
  skip connections.

Both accept 4D ``[B, C, H, W]`` and 5D ``[B, C, T, H, W]`` feature maps, so they
work in faithful and efficient mode alike. Plain matmul/softmax (no fused
attention kernel) keeps them usable with forward-mode AD.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SpatialSelfAttention(nn.Module):
    """``x + gamma * softmax(q k^T / sqrt(d)) v`` over all positions of the map.

    ``gamma`` starts at zero: a freshly built model computes the same function as
    without attention, and the gate opens as training finds it useful.
    """

    def __init__(self, channels: int, reduction: int = 8) -> None:
        super().__init__()
        inner = max(channels // reduction, 1)
        self.query = nn.Linear(channels, inner)
        self.key = nn.Linear(channels, inner)
        self.value = nn.Linear(channels, channels)
        self.gamma = nn.Parameter(torch.zeros(()))
        self.scale = 1.0 / math.sqrt(inner)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = x.flatten(2).transpose(1, 2)  # [B, N, C]
        scores = self.query(tokens) @ self.key(tokens).transpose(1, 2) * self.scale
        attended = torch.softmax(scores, dim=-1) @ self.value(tokens)
        return x + self.gamma * attended.transpose(1, 2).reshape(x.shape)


class ChannelGate(nn.Module):
    """Squeeze-and-excitation: rescale each channel by a sigmoid gate computed from global averages."""

    def __init__(self, channels: int, reduction: int = 8, min_hidden: int = 8) -> None:
        super().__init__()
        # The pooled features are nonnegative (post-ReLU), so a hidden unit whose weights come
        # out mostly negative is dead from the start; enough of them keep the gate trainable.
        hidden = max(channels // reduction, min_hidden)
        self.squeeze = nn.Linear(channels, hidden)
        self.excite = nn.Linear(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.flatten(2).mean(dim=2)  # [B, C]
        gate = torch.sigmoid(self.excite(torch.relu(self.squeeze(pooled))))
        return x * gate.reshape(*gate.shape, *([1] * (x.dim() - 2)))
