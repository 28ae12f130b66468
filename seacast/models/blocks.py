"""Building blocks of the 3DDR U-Nets: layer factory, conv units and the four level blocks.

Offers:

* :class:`Layers`: makes the convolutions, norms, pools and up-samplers for one
  time depth, in faithful mode (``Conv3d`` everywhere, as the reference) or in
  efficient mode (kernels cut to the slices that can touch data; at time depth 1
  the data are 4D and every op is 2D).
* :class:`SameConv2d`, :class:`SameConv3d`: convolutions with Keras/TensorFlow
  ``padding='same'`` (an even kernel pads one more at the end).
* :class:`ConvAct`: convolution then ReLU, the reference's ``Conv3D(..., activation='relu')``.
* :class:`TimeCompressor`: the dimension reducer, ``Conv3D(c, (T, 1, 1), valid, relu)``.
* The level blocks, each mapping ``c -> c`` channels at one time depth:
  :class:`PlainBlock`, :class:`ResidualBlock`, :class:`InceptionResBlock`,
  :class:`AsymmInceptionResBlock`; and :data:`BLOCKS`, the name -> :class:`BlockSpec` table.

Kernel axes are (time, latitude, longitude) throughout.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import nn

Kernel = tuple[int, int, int]

# Keras BatchNormalization defaults (the reference's): momentum 0.99 is torch's 0.01.
BN_EPS = 1e-3
BN_MOMENTUM = 0.01
# Efficient mode uses torch's default: with Keras's 0.01 the running statistics of a short run
# (the demo's few hundred steps) still weigh their initial values, and eval mode falls back to
# persistence-level error (measured: zos 6 h MSE 0.0136 in eval vs 0.0011 in train mode).
BN_MOMENTUM_EFFICIENT = 0.1


def as_kernel(kernel: int | tuple[int, ...]) -> Kernel:
    """A (time, lat, lon) kernel from an int or a 3-tuple."""
    if isinstance(kernel, int):
        return (kernel, kernel, kernel)
    if len(kernel) != 3:
        raise ValueError(f"kernel {kernel} must have 3 sizes (time, lat, lon)")
    return (int(kernel[0]), int(kernel[1]), int(kernel[2]))


def _same_padding(kernel: tuple[int, ...]) -> tuple[tuple[int, ...] | None, tuple[int, ...]]:
    """Keras 'same' padding: symmetric conv padding for odd kernels, else an explicit F.pad."""
    if all(k % 2 == 1 for k in kernel):
        return None, tuple((k - 1) // 2 for k in kernel)
    # F.pad lists the last axis first; TensorFlow puts the extra element at the end
    pad = tuple(p for k in reversed(kernel) for p in ((k - 1) // 2, k - 1 - (k - 1) // 2))
    return pad, tuple(0 for _ in kernel)


class SameConv3d(nn.Conv3d):
    """``Conv3d`` with TensorFlow-style ``same`` padding, also for even kernels, computed the cheap way.

    Same weights, same result as ``Conv3d``, but three cases run as a ``conv2d`` (oneDNN's
    2D path is several times faster on CPU, and on channels-last data the reshapes are views):

    * a kernel of time extent 1, e.g. the asymmetric ``(1, 1, 3)``: over ``[B*T, C, H, W]``;
    * data of one time slice (the faithful decoder): only the kernel's slice at the front
      padding meets data, the others multiply the zero padding, so that slice alone;
    * a time-only kernel ``(k, 1, 1)`` on NCDHW data: over ``[B, C, T, H*W]``.
    """

    def __init__(
        self, in_channels: int, out_channels: int, kernel: tuple[int, int, int], bias: bool = True
    ):
        extra, padding = _same_padding(kernel)
        super().__init__(in_channels, out_channels, kernel, padding=padding, bias=bias)
        self.extra_pad = extra
        # TF 'same' pads (k - 1) // 2 in front: the kernel slice that meets a lone time step
        self.front = tuple((k - 1) // 2 for k in kernel)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        kernel_time, kh, kw = self.kernel_size
        weight = self.weight
        if kernel_time > 1 and x.shape[2] == 1:
            weight = weight[:, :, self.front[0] : self.front[0] + 1]
            kernel_time = 1
        if kernel_time == 1:
            return self._spatial(x, weight[:, :, 0])
        if (kh, kw) == (1, 1) and self.extra_pad is None and x.is_contiguous():
            # on channels-last data oneDNN's conv3d is as fast; on NCDHW this is 2-6x faster
            y = F.conv2d(x.flatten(3), weight.squeeze(-1), self.bias, padding=(self.padding[0], 0))
            return y.unflatten(-1, x.shape[-2:])
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        return F.conv3d(x, weight, self.bias, padding=self.padding)

    def _spatial(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """The conv of time extent 1 as a conv2d over every time step at once."""
        batch, channels, depth, height, width = x.shape
        frames = x.transpose(1, 2).reshape(batch * depth, channels, height, width)
        padding: tuple[int, int] | str = self.padding[1:]
        if self.extra_pad is not None:
            frames = F.pad(frames, self.extra_pad[:4])
            padding = (0, 0)
        y = F.conv2d(frames, weight, self.bias, padding=padding)
        return y.unflatten(0, (batch, depth)).transpose(1, 2)


class SameConv2d(nn.Conv2d):
    """``Conv2d`` with TensorFlow-style ``same`` padding, also for even kernels."""

    def __init__(
        self, in_channels: int, out_channels: int, kernel: tuple[int, int], bias: bool = True
    ):
        extra, padding = _same_padding(kernel)
        super().__init__(in_channels, out_channels, kernel, padding=padding, bias=bias)
        self.extra_pad = extra

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.extra_pad is not None:
            x = F.pad(x, self.extra_pad)
        return super().forward(x)


def live_time_kernel(kernel_time: int, time_depth: int) -> int:
    """How many time slices of a centred odd kernel can touch data of depth ``time_depth``.

    Slice ``j`` of a kernel with padding ``p`` meets the data only if ``|j - p| < time_depth``,
    so an odd kernel keeps ``min(k, 2 * time_depth - 1)`` slices. An even kernel (the
    decoder's ``k=2``, padded at the end) keeps its first slice at depth 1, all of it otherwise.
    """
    if time_depth == 1:
        return 1
    if kernel_time % 2 == 0:
        return kernel_time
    return min(kernel_time, 2 * time_depth - 1)


class Layers:
    """Makes the layers for data of one time depth, in faithful or efficient mode.

    Faithful: ``Conv3d`` with the reference's kernels and 5D data everywhere, dead
    weights included (exact reference parameter counts). Efficient: a kernel keeps
    only the time slices that can touch data; at time depth 1 the data are 4D
    ``[B, C, H, W]`` and every op is 2D (``flat``). Each conv remembers the
    reference kernel in ``reference_kernel`` so both modes draw their Glorot
    initialisation from the same distribution.
    """

    def __init__(self, faithful: bool, time_depth: int) -> None:
        if time_depth < 1:
            raise ValueError(f"time depth must be >= 1, got {time_depth}")
        self.faithful = faithful
        self.time_depth = time_depth

    @property
    def flat(self) -> bool:
        """True when the data at this depth are 4D (efficient mode, time depth 1)."""
        return not self.faithful and self.time_depth == 1

    def at_depth(self, time_depth: int) -> Layers:
        return Layers(self.faithful, time_depth)

    def conv(
        self, cin: int, cout: int, kernel: int | tuple[int, int, int], bias: bool = True
    ) -> nn.Module:
        """A ``same``-padded convolution with the reference kernel ``kernel`` (time, lat, lon)."""
        ref = as_kernel(kernel)
        if self.faithful:
            module: nn.Module = SameConv3d(cin, cout, ref, bias=bias)
        elif self.flat:
            module = SameConv2d(cin, cout, ref[1:], bias=bias)
        else:
            module = SameConv3d(
                cin, cout, (live_time_kernel(ref[0], self.time_depth), *ref[1:]), bias=bias
            )
        module.reference_kernel = ref
        return module

    def norm(self, channels: int) -> nn.Module:
        cls = nn.BatchNorm2d if self.flat else nn.BatchNorm3d
        momentum = BN_MOMENTUM if self.faithful else BN_MOMENTUM_EFFICIENT
        return cls(channels, eps=BN_EPS, momentum=momentum)

    def pool(self) -> nn.Module:
        """Halve space, keep time (the reference's ``MaxPooling3D((1, 2, 2))``)."""
        return nn.MaxPool2d(2) if self.flat else nn.MaxPool3d((1, 2, 2))

    def upsample(self) -> nn.Module:
        """Double space, keep time (the reference's ``UpSampling3D((1, 2, 2))``)."""
        scale = 2.0 if self.flat else (1.0, 2.0, 2.0)
        return nn.Upsample(scale_factor=scale, mode="nearest")


class ConvAct(nn.Module):
    """Convolution then ReLU: the reference's ``Conv3D(cout, kernel, padding='same', activation='relu')``."""

    def __init__(
        self, layers: Layers, cin: int, cout: int, kernel: int | tuple[int, int, int] = 3
    ) -> None:
        super().__init__()
        self.conv = layers.conv(cin, cout, kernel)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class TimeOnlyConv3d(nn.Conv3d):
    """A ``Conv3d`` with a ``(T, 1, 1)`` kernel and no padding, run as a conv2d over ``[B, C, T, H*W]``.

    Same weights and result as the 3D op, and faster than oneDNN's 3D path. Being the conv
    module itself, its forward hooks (node perturbation's) see the layer as usual.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.conv2d(x.flatten(3), self.weight.squeeze(-1), self.bias)
        return y.unflatten(-1, x.shape[-2:])


class TimeCompressor(nn.Module):
    """The dimension reducer: ``Conv3D(c, (T, 1, 1), padding='valid', relu)`` takes time depth T to 1.

    Faithful mode keeps the time axis (length 1); efficient mode drops it, so
    what follows works on 4D data.
    """

    def __init__(self, layers: Layers, channels: int) -> None:
        super().__init__()
        depth = layers.time_depth
        if layers.flat:
            self.conv: nn.Module = nn.Conv2d(channels, channels, 1)
        else:
            self.conv = TimeOnlyConv3d(channels, channels, (depth, 1, 1))
        self.conv.reference_kernel = (depth, 1, 1)
        self.act = nn.ReLU()
        self.squeeze = not layers.faithful and not layers.flat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act(self.conv(x))
        return y.squeeze(2) if self.squeeze else y


# --------------------------------------------------------------------------- level blocks


class PlainBlock(nn.Module):
    """3DDR-UNet: the level's second ``Conv3D(3x3x3, relu)``."""

    def __init__(self, layers: Layers, channels: int) -> None:
        super().__init__()
        self.unit = ConvAct(layers, channels, channels, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.unit(x)


class ResidualBlock(nn.Module):
    """Res-3DDR-UNet: conv3 -> BN -> ReLU -> conv3 -> BN, add the input, ReLU.

    The reference's convs carry a bias, which BatchNorm cancels in training; efficient
    mode drops it (every efficient parameter then gets a gradient).
    :data:`bias_folds` tells :func:`seacast.models.convert.efficient_state_from_faithful`
    which norm absorbs which bias.
    """

    bias_folds = {"conv_a": "norm_a", "conv_b": "norm_b"}

    def __init__(self, layers: Layers, channels: int) -> None:
        super().__init__()
        bias = layers.faithful
        self.conv_a = layers.conv(channels, channels, 3, bias=bias)
        self.norm_a = layers.norm(channels)
        self.act_a = nn.ReLU()
        self.conv_b = layers.conv(channels, channels, 3, bias=bias)
        self.norm_b = layers.norm(channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.act_a(self.norm_a(self.conv_a(x)))
        y = self.norm_b(self.conv_b(y))
        return self.act(x + y)


class _ParallelResBlock(nn.Module):
    """Parallel branches of ReLU convs, concatenated, a linear ``1x1x1`` back to c, add the input, ReLU."""

    branch_kernels: tuple[tuple[Kernel, ...], ...] = ()

    def __init__(self, layers: Layers, channels: int) -> None:
        super().__init__()
        self.branches = nn.ModuleList(
            nn.Sequential(*(ConvAct(layers, channels, channels, k) for k in kernels))
            for kernels in self.branch_kernels
        )
        self.merge = layers.conv(len(self.branch_kernels) * channels, channels, 1)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.cat([branch(x) for branch in self.branches], dim=1)
        return self.act(x + self.merge(y))


_POINT: Kernel = (1, 1, 1)
_CUBE: Kernel = (3, 3, 3)
_ASYMM3: tuple[Kernel, ...] = ((1, 1, 3), (1, 3, 1), (3, 1, 1))
_ASYMM5: tuple[Kernel, ...] = ((1, 1, 5), (1, 5, 1), (5, 1, 1))


class InceptionResBlock(_ParallelResBlock):
    """InceptionRes-3DDR-UNet: branches ``1``; ``1 -> 3``; ``1 -> 3 -> 3`` (cubic kernels). No BatchNorm."""

    branch_kernels = ((_POINT,), (_POINT, _CUBE), (_POINT, _CUBE, _CUBE))


class AsymmInceptionResBlock(_ParallelResBlock):
    """AsymmInceptionRes-3DDR-UNet: branches ``1x1x1``; lon->lat->time 3; lon->lat->time 5; two more of 3."""

    branch_kernels = ((_POINT,), _ASYMM3, _ASYMM5, _ASYMM3, _ASYMM3)


class BlockFactory(Protocol):
    def __call__(self, layers: Layers, channels: int) -> nn.Module: ...


@dataclass(frozen=True)
class BlockSpec:
    """What makes one variant: its level block and where the bottleneck compresses time.

    ``compress_first``: the 3DDR-UNet's bottleneck is conv, time compressor, conv;
    the other three are conv, block, time compressor.
    """

    block: BlockFactory
    compress_first: bool
    title: str


BLOCKS: dict[str, BlockSpec] = {
    "3ddr_unet": BlockSpec(PlainBlock, True, "3DDR-UNet"),
    "res_3ddr_unet": BlockSpec(ResidualBlock, False, "Res-3DDR-UNet"),
    "inception_res_3ddr_unet": BlockSpec(InceptionResBlock, False, "InceptionRes-3DDR-UNet"),
    "asymm_inception_res_3ddr_unet": BlockSpec(
        AsymmInceptionResBlock, False, "AsymmInceptionRes-3DDR-UNet"
    ),
}


def glorot_bound(module: nn.Module) -> float:
    """Keras' Glorot-uniform limit for a conv, from its reference kernel (dead slices included)."""
    kernel = getattr(module, "reference_kernel", module.kernel_size)
    field = math.prod(kernel)
    return math.sqrt(6.0 / ((module.in_channels + module.out_channels) * field))
