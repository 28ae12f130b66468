"""Node perturbation's layer-local pieces: which layers, their inputs, the weight-gradient operator, local credit."""

from __future__ import annotations

import fnmatch

import torch
from torch import nn

_LOCAL_LAYERS = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def local_layers(model: nn.Module) -> list[nn.Module]:
    """The Conv1d/2d/3d and Linear layers with a trainable weight: those node perturbation updates."""
    return [m for m in model.modules() if isinstance(m, _LOCAL_LAYERS) and m.weight.requires_grad]


def chosen_layers(model: nn.Module, only: list[str], rule: str) -> list[nn.Module]:
    """The local layers whose module name starts with one of ``only`` (every one if empty).

    ``rule`` names the option in the error when none matches."""
    layers = local_layers(model)
    if only:
        names = {m: n for n, m in model.named_modules()}
        layers = [m for m in layers if longest_prefix(names[m], only) is not None]
    if not layers:
        from seacast.errors import ConfigError

        where = f" named {only}" if only else ""
        raise ConfigError(
            f"{rule} found no Conv/Linear layer{where} with trainable weights in the model",
            f"fix trainer.{rule.replace('-', '_')}.only (module names as in model.named_modules())",
        )
    return layers


def train_only(model: nn.Module, only: list[str], rule: str) -> None:
    """Freeze (``requires_grad = False``) every parameter that ``only`` does not name; nothing
    if ``only`` is empty. An entry names the Conv/Linear layers whose module name starts with
    it, or, with a wildcard (``*``, ``?``), the parameters whose name matches it
    (``decoder.3*.bias``: every bias in ``decoder.3``). ``rule`` names the option in errors."""
    if not only:
        return
    layers = [entry for entry in only if not any(c in entry for c in "*?[")]
    patterns = [entry for entry in only if entry not in layers]
    kept = (
        {id(p) for layer in chosen_layers(model, layers, rule) for p in layer.parameters(False)}
        if layers
        else set()
    )
    for pattern in patterns:
        matched = [p for name, p in model.named_parameters() if fnmatch.fnmatchcase(name, pattern)]
        if not matched:
            from seacast.errors import ConfigError

            raise ConfigError(
                f"trainer.{rule.replace('-', '_')}.only: no parameter name matches {pattern!r}",
                "match names as in model.named_parameters(), e.g. 'decoder.3*.bias'",
            )
        kept.update(id(p) for p in matched)
    for param in model.parameters():
        if id(param) not in kept:
            param.requires_grad_(False)


def layer_input(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
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


class Credit:
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
    The output layer (``output_layer``: its channel k at a cell is the model's output
    channel k there) gets each node's own cell and channel: the other channels' noise is
    dropped too, and the credit is exact.
    """

    def __init__(
        self,
        delta: torch.Tensor,
        delta_channels: torch.Tensor | None,
        radius: dict[nn.Module, int],
        output_layer: nn.Module | None = None,
    ) -> None:
        self.delta = delta  # [B]
        self.delta_channels = delta_channels  # [B, K, H, W] or None
        self.delta_map = None if delta_channels is None else delta_channels.sum(1)  # [B, H, W]
        self.radius = radius
        self.output_layer = output_layer
        self.cache: dict[tuple[int, int, int], torch.Tensor] = {}

    def matches_output(self, psi: torch.Tensor) -> bool:
        """Whether ``psi`` (the output layer's noise) has a node per output channel and cell."""
        channels = self.delta_channels
        if channels is None or psi.dim() < 4:
            return False
        return psi.shape[1] == channels.shape[1] and psi[0, 0].numel() == channels[0, 0].numel()

    def for_output(
        self, module: nn.Module, psi: torch.Tensor, samples: slice = slice(None)
    ) -> torch.Tensor:
        """A tensor broadcastable to ``psi``, the layer's output noise for ``samples`` of the batch."""
        delta = self.delta[samples]
        global_credit = delta.to(psi.dtype).view(-1, *([1] * (psi.dim() - 1)))
        if module is self.output_layer and self.matches_output(psi):
            assert self.delta_channels is not None
            return self.delta_channels[samples].to(psi.dtype).reshape(psi.shape)
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
        local = self.cache[(h, w, radius)][samples].to(psi.dtype)
        return local.view(local.shape[0], 1, *([1] * (psi.dim() - 4)), h, w)


def longest_prefix(name: str, prefixes: list[str]) -> str | None:
    """The longest of ``prefixes`` that is ``name`` or a module path above it (``a.b`` for ``a.b.c``)."""
    matches = [p for p in prefixes if name == p or name.startswith(p + ".")]
    return max(matches, key=len, default=None)


def add_to(
    sums: dict[int, tuple[nn.Parameter, torch.Tensor]], param: nn.Parameter, value: torch.Tensor
) -> None:
    if id(param) in sums:
        sums[id(param)] = (param, sums[id(param)][1] + value)
    else:
        sums[id(param)] = (param, value)
