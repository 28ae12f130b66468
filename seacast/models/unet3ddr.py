"""One 3DDR U-Net skeleton, parameterised by its level block (the four variants of arXiv 2011.03303).

Offers:

* :class:`UNet3DDR`: the skeleton. Input ``[B, C_in, lags, H, W]``, output
  ``[B, n_lead, C_out, H, W]``: a multi-output head gives every lead time at once
  (with one lead time it is the reference's head exactly).
* :func:`build_model`: the model for a :class:`~seacast.config.ModelConfig`.
* :func:`count_parameters`: trainable parameters, and the Keras-style total that
  also counts BatchNorm statistics.
* :func:`check_grid_shape`: the H, W check (multiples of 16).

Grid shape: H and W must be multiples of 16 (four 2x poolings). Another shape is
**refused** with a :class:`~seacast.errors.ConfigError` naming the shape and the
nearest valid ones; nothing is padded or cropped silently.

Modes: ``faithful=True`` is ``Conv3d`` everywhere with the reference's kernels, so
the trainable parameter counts equal the reference's. ``faithful=False`` (the
default) keeps only weights that can touch data: the decoder works on one time
slice with 2D convs, time-only kernels there become pointwise, and the conv biases
that BatchNorm cancels are dropped. Both compute the same function class;
:func:`seacast.models.convert.efficient_state_from_faithful` maps one onto the other.

Base (``ModelConfig.base``): output = ``base_weight[lead, variable]`` x last input frame +
head output, with the head's last conv at zero, so an untrained model equals its reference
(times ``base_gain``, 1 unless ``forecast --adapt zo`` recalibrated it).
``persistence``: the weight is 1 (the last frame repeated). ``tide``: the inputs are anomalies
(obs - tide) and the weight is the fitted damping alpha of the persisted anomaly, so in physical
units the model starts at ``tide(t0+L) + alpha a(t0)`` (:mod:`seacast.encoding` adds the tide
back). It needs ``C_in >= C_out`` (the first ``C_out`` input channels are the predicted variables;
weather-forecast channels, :mod:`seacast.forcing`, follow them) and ``final_activation='none'``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn

from seacast.config import MODEL_NAMES, ModelConfig
from seacast.errors import ConfigError, DataError
from seacast.models.attention import ChannelGate, SpatialSelfAttention
from seacast.models.blocks import BLOCKS, BlockSpec, ConvAct, Layers, TimeCompressor, glorot_bound

LEVELS = 4
GRID_MULTIPLE = 2**LEVELS


def check_grid_shape(shape: Sequence[int]) -> None:
    """Raise a clear ConfigError unless both grid sizes are positive multiples of 16."""
    height, width = (int(s) for s in shape)
    if all(s > 0 and s % GRID_MULTIPLE == 0 for s in (height, width)):
        return

    def nearest(s: int) -> int:
        return max(GRID_MULTIPLE, round(s / GRID_MULTIPLE) * GRID_MULTIPLE)

    raise ConfigError(
        f"grid {height}x{width} does not fit the 3DDR U-Nets: H and W must be multiples of "
        f"{GRID_MULTIPLE} (four 2x poolings); the models do not pad or crop",
        f"regrid to multiples of {GRID_MULTIPLE}, e.g. grid.shape: [{nearest(height)}, {nearest(width)}]",
    )


class Level(nn.Module):
    """One U-Net level: a ReLU conv to the level's width, then the variant's block."""

    def __init__(self, layers: Layers, spec: BlockSpec, cin: int, channels: int) -> None:
        super().__init__()
        self.conv = ConvAct(layers, cin, channels, 3)
        self.block = spec.block(layers, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block(self.conv(x))


class UpStep(nn.Module):
    """Decoder step in: ``UpSampling3D((1, 2, 2))`` then ``Conv3D(c, 2, same, relu)``."""

    def __init__(self, layers: Layers, cin: int, cout: int) -> None:
        super().__init__()
        self.upsample = layers.upsample()
        self.conv = ConvAct(layers, cin, cout, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.upsample(x))


def _check_base(base: str, in_channels: int, out_channels: int, final_activation: str) -> None:
    """ConfigError for a ``model.base`` the rest of the config cannot start from."""
    if base == "none":
        return
    if in_channels < out_channels:
        raise ConfigError(
            f"model.base={base} adds the last input frame to the output, but there are {in_channels} "
            f"input and {out_channels} output channels",
            "use the same variables in and out, or set model.base=none",
        )
    if final_activation != "none":
        raise ConfigError(
            f"model.base={base} with final_activation='{final_activation}': the activation "
            "would clip the correction, so the model could not start as its reference",
            "set model.final_activation=none (or model.base=none)",
        )


def _bottleneck(
    full: Layers,
    single: Layers,
    spec: BlockSpec,
    cin: int,
    deep: int,
    attention: str,
    dropout: float,
) -> nn.Sequential:
    """The 16F bottleneck: conv, block and time compressor (in the block's order), attention, dropout."""
    stages: OrderedDict[str, nn.Module] = OrderedDict(conv=ConvAct(full, cin, deep, 3))
    if spec.compress_first:
        stages["compress"] = TimeCompressor(full, deep)
        stages["block"] = spec.block(single, deep)
    else:
        stages["block"] = spec.block(full, deep)
        stages["compress"] = TimeCompressor(full, deep)
    if attention in ("self", "both"):
        stages["attention"] = SpatialSelfAttention(deep)
    stages["dropout"] = nn.Dropout(dropout)
    return nn.Sequential(stages)


def _head(single: Layers, filters: int, n_out: int, final_activation: str) -> nn.Sequential:
    """The output head: a hidden conv, the 1x1 conv to ``n_out`` maps, the final activation."""
    return nn.Sequential(
        OrderedDict(
            hidden=ConvAct(single, filters, 2 * n_out, 3),
            out=single.conv(2 * n_out, n_out, 1),
            act=nn.ReLU() if final_activation == "relu" else nn.Identity(),
        )
    )


class UNet3DDR(nn.Module):
    """The 3DDR U-Net skeleton; the variant is the block in ``spec``.

    Encoder levels F, 2F, 4F, 8F at full time depth ``lags`` (space halves between
    levels, time never), bottleneck 16F; each encoder output reaches the decoder
    through a time compressor ``(lags, 1, 1)``; the decoder and head work on one
    time slice. Dropout after level 4 and at the bottleneck output.
    """

    def __init__(
        self,
        spec: BlockSpec,
        *,
        in_channels: int,
        out_channels: int,
        lags: int,
        n_lead: int = 1,
        filters: int = 16,
        dropout: float = 0.5,
        final_activation: str = "relu",
        attention: str = "none",
        faithful: bool = False,
        base: str = "none",
        anomaly_base: str = "damped",
        shape: Sequence[int] = (0, 0),
    ) -> None:
        super().__init__()
        _check_base(base, in_channels, out_channels, final_activation)
        residual = base != "none"
        self.spec = spec
        self.in_channels, self.out_channels, self.lags, self.n_lead = (
            in_channels,
            out_channels,
            lags,
            n_lead,
        )
        self.faithful, self.residual, self.base = faithful, residual, base
        if residual:
            # the tide's damping is fitted data and travels in the state dict; persistence's 1 does not,
            # so runs saved before model.base load unchanged
            self.register_buffer(
                "base_weight", torch.ones(n_lead, out_channels), persistent=base == "tide"
            )
        # tide + regressed anomaly: per-point weights of the own and basin-mean anomaly lags
        # (seacast.anomaly_regression), fitted data like the damping
        self.regressed = base == "tide" and anomaly_base == "regressed"
        if residual:
            # a gain on the base term per (lead time, variable): 1 as trained, set only by
            # `forecast --adapt zo` (seacast.forecast.adaptation), so not saved
            self.register_buffer("base_gain", torch.ones(n_lead, out_channels), persistent=False)
        # with weather-forecast channels, the regression also reads their block means at each point
        # and over the basin (seacast.anomaly_regression)
        self.n_forcing = (in_channels - out_channels) * lags
        if self.regressed:
            self.register_buffer(
                "base_regression",
                torch.zeros(n_lead, out_channels, 2 * lags + 2 * self.n_forcing, *shape),
            )
            self.register_buffer("base_sea_points", torch.ones(()))
            # its spatial map (SpatialMap): K EOFs, sized when fitted or loaded (K = 0: none)
            self.register_buffer("base_eofs", torch.zeros(0, out_channels, *shape))
            self.register_buffer("base_eof_weights", torch.zeros(n_lead, lags, 0, 0))
            self.register_buffer("base_eof_residual", torch.zeros(n_lead, out_channels, *shape))
            self.register_buffer("base_eof_scale", torch.ones(out_channels))
            self.register_buffer("base_eof_use", torch.zeros(n_lead, out_channels))
        widths = [filters * 2**i for i in range(LEVELS)]
        deep = filters * 2**LEVELS
        full = Layers(faithful, lags)
        single = full.at_depth(1)
        self.flat_input = full.flat  # efficient mode with lags == 1: 2D from the start

        # built in this order on purpose: each layer draws its default weights from the global RNG
        # when made, and reset_parameters walks the modules in the order they were registered
        self._build_encoder(full, spec, in_channels, widths, dropout)
        self.bottleneck = _bottleneck(full, single, spec, widths[-1], deep, attention, dropout)
        self._build_decoder(single, spec, deep, widths, attention)
        self.head = _head(single, filters, n_lead * out_channels, final_activation)
        self.reset_parameters()
        to_channels_last(self)

    def _build_encoder(
        self, full: Layers, spec: BlockSpec, in_channels: int, widths: list[int], dropout: float
    ) -> None:
        """Levels F..8F at full time depth, each with its time compressor for the skip."""
        self.encoder = nn.ModuleList()
        self.reducers = nn.ModuleList()
        cin = in_channels
        for width in widths:
            self.encoder.append(Level(full, spec, cin, width))
            self.reducers.append(TimeCompressor(full, width))
            cin = width
        self.pool = full.pool()
        self.drop4 = nn.Dropout(dropout)

    def _build_decoder(
        self, single: Layers, spec: BlockSpec, deep: int, widths: list[int], attention: str
    ) -> None:
        """Up steps and levels 8F..F on one time slice, with channel gates on the skips if asked."""
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        self.gates = nn.ModuleList() if attention in ("global", "both") else None
        cin = deep
        for width in reversed(widths):
            self.up.append(UpStep(single, cin, width))
            if self.gates is not None:
                self.gates.append(ChannelGate(width))
            self.decoder.append(Level(single, spec, 2 * width, width))
            cin = width

    @torch.no_grad()
    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Glorot-uniform weights and zero biases (Keras defaults); the last conv at zero if residual."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Conv3d):
                bound = glorot_bound(module)
            elif isinstance(module, nn.Linear):
                bound = (6.0 / (module.in_features + module.out_features)) ** 0.5
            else:
                continue
            # drawn in logical order, so the weights do not depend on the memory format
            draw = torch.empty(module.weight.shape, device=module.weight.device)
            module.weight.copy_(draw.uniform_(-bound, bound, generator=generator))
            if module.bias is not None:
                module.bias.zero_()
        if self.residual:
            self.head.out.weight.zero_()
            self.head.out.bias.zero_()

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.in_channels, self.lags)
        if x.dim() != 5 or tuple(x.shape[1:3]) != expected:
            raise DataError(
                f"model input has shape {tuple(x.shape)}, expected [B, {self.in_channels} channels, "
                f"{self.lags} lags, H, W]",
                "feed samples made with the same variables and lags as the model's config",
            )
        check_grid_shape(x.shape[-2:])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C_in, lags, H, W] -> [B, n_lead, C_out, H, W]``."""
        self._check_input(x)
        batch, _, _, height, width = x.shape
        h = x.squeeze(2) if self.flat_input else x
        h = h.contiguous(memory_format=channels_last_format(h))
        skips = []
        for i, level in enumerate(self.encoder):
            h = level(h)
            if i == LEVELS - 1:
                h = self.drop4(h)
            skips.append(self.reducers[i](h))
            h = self.pool(h)
        h = self.bottleneck(h)
        for i, (up, level) in enumerate(zip(self.up, self.decoder, strict=True)):
            skip = skips[LEVELS - 1 - i]
            if self.gates is not None:
                skip = self.gates[i](skip)
            h = level(torch.cat([up(h), skip], dim=1))
        h = self.head(h)
        if h.dim() == 5:
            h = h.squeeze(2)
        out = h.reshape(batch, self.n_lead, self.out_channels, height, width)
        if self.residual:
            out = out + self.reference_term(x).to(out.dtype)
        return out

    output_layer = "head.out"
    """The last layer: the forecast is its output, reshaped, plus terms that do not depend on it."""

    def output_layer_signal(
        self, forecast_signal: torch.Tensor, layer_output: torch.Tensor
    ) -> torch.Tensor:
        """``dL/d(head.out's output)`` from ``dL/d(forecast)`` (``[B, n_lead, C_out, H, W]``):
        the head's activation and the reshape, undone; the reference term does not depend on it."""
        signal = forecast_signal.reshape(layer_output.shape)
        if isinstance(self.head.act, nn.ReLU):
            signal = signal * (layer_output > 0)
        return signal

    input_only_terms = ("reference_term",)
    """Methods whose result depends on the input and buffers only: a zeroth-order step's passes
    on one batch reuse it (:class:`seacast.training.zeroth_order.prefix_cache.FrozenPrefix`)."""

    def reference_term(self, x: torch.Tensor) -> torch.Tensor:
        """The base the head's output corrects, ``[B, n_lead, C_out, H, W]``."""
        gain = self.base_gain[None, :, :, None, None]
        if self.regressed:
            return gain * self._regressed_anomaly(x)
        sea = x[:, : self.out_channels]  # the forcing channels follow: never persisted
        weight = self.base_weight[None, :, :, None, None]
        return (gain * weight) * sea[:, :, -1].unsqueeze(1)

    def _regressed_anomaly(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C (+ F), lags, H, W]`` anomaly lags (then the forecast's blocks; land 0) ->
        ``[B, n_lead, C, H, W]``."""
        own = x[:, : self.out_channels].flip(2)  # k = 0, the init time, first
        basin = own.sum(dim=(-2, -1)) / self.base_sea_points
        coef = self.base_regression
        lags = self.lags
        out = torch.einsum("bckhw,lckhw->blchw", own, coef[:, :, :lags]) + torch.einsum(
            "bck,lckhw->blchw", basin, coef[:, :, lags : 2 * lags]
        )
        if self.n_forcing:
            j, n = 2 * lags, self.n_forcing
            ahead = x[:, self.out_channels :].reshape(len(x), n, *x.shape[-2:])
            mean = ahead.sum(dim=(-2, -1)) / self.base_sea_points
            out = out + torch.einsum("bjhw,lcjhw->blchw", ahead, coef[:, :, j : j + n])
            out = out + torch.einsum("bj,lcjhw->blchw", mean, coef[:, :, j + n :])
        if self.base_eofs.shape[0]:
            out = out + self._spatial_anomaly(own)
        return out

    def _spatial_anomaly(self, own: torch.Tensor) -> torch.Tensor:
        """The spatial map (:class:`seacast.anomaly_regression.SpatialMap`) on ``own [B, C, lags,
        H, W]`` (k = 0 first); ``base_eof_scale`` is its scale over the inputs' scale."""
        eofs, scale = self.base_eofs, self.base_eof_scale
        scaled = own / scale[None, :, None, None, None]
        z = torch.einsum("bckhw,mchw->bkm", scaled, eofs)
        ahead = torch.einsum("bkm,lkmn->bln", z, self.base_eof_weights)
        field = torch.einsum("bln,nchw->blchw", ahead, eofs) * scale[None, None, :, None, None]
        inside = torch.einsum("bm,mchw->bchw", z[:, 0], eofs) * scale[None, :, None, None]
        field = field + self.base_eof_residual[None] * (own[:, :, 0] - inside)[:, None]
        return field * self.base_eof_use[None, :, :, None, None]

    @torch.no_grad()
    def set_spatial_base(
        self,
        eofs: torch.Tensor,
        weights: torch.Tensor,
        residual: torch.Tensor,
        scale: torch.Tensor,
        use: torch.Tensor,
    ) -> None:
        """Install a fitted spatial map (shapes as the ``base_eof*`` buffers, any K)."""
        device = self.base_eofs.device
        self.base_eofs = eofs.to(device, torch.float32)
        self.base_eof_weights = weights.to(device, torch.float32)
        self.base_eof_residual = residual.to(device, torch.float32)
        self.base_eof_scale = scale.to(device, torch.float32)
        self.base_eof_use = use.to(device, torch.float32)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:  # noqa: ANN001
        if self.regressed:
            for name in ("base_eofs", "base_eof_weights"):
                if prefix + name in state_dict:  # K is the saved one
                    setattr(self, name, torch.zeros_like(state_dict[prefix + name]))
            for name in SPATIAL_BUFFERS:
                # runs saved before the spatial map load as the per-point regression they were
                state_dict.setdefault(prefix + name, getattr(self, name))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


SPATIAL_BUFFERS = (
    "base_eofs",
    "base_eof_weights",
    "base_eof_residual",
    "base_eof_scale",
    "base_eof_use",
)


def channels_last_format(tensor: torch.Tensor) -> torch.memory_format:
    """Channels-last for 4D and 5D tensors: oneDNN's fast layout, where flat convs reshape as views."""
    if tensor.dim() == 5:
        return torch.channels_last_3d
    if tensor.dim() == 4:
        return torch.channels_last
    return torch.contiguous_format


@torch.no_grad()
def to_channels_last(model: nn.Module) -> nn.Module:
    """Store every conv weight channels-last (measured 1.6x a faithful 3DDR-UNet training step on CPU)."""
    for param in model.parameters():
        if param.dim() in (4, 5):
            param.data = param.data.contiguous(memory_format=channels_last_format(param))
    return model


def build_model(
    cfg: ModelConfig,
    in_channels: int,
    out_channels: int,
    lags: int,
    lead_times: Sequence[int] | int,
    shape: Sequence[int],
    *,
    seed: int | None = None,
    device: torch.device | str | None = None,
) -> UNet3DDR:
    """The U-Net named by ``cfg.name`` for the given data.

    ``lead_times``: the lead times (hours) or their count; the head predicts all at once.
    ``shape``: the (H, W) grid, checked to be multiples of 16 (ConfigError otherwise).
    ``seed``: seeds the weight initialisation (same seed, same weights); the global RNG is
    used when it is None. ``device="meta"`` builds without memory, for counting parameters.
    """
    if cfg.name not in BLOCKS:
        raise ConfigError(f"unknown model '{cfg.name}'", f"choose one of {', '.join(MODEL_NAMES)}")
    n_lead = lead_times if isinstance(lead_times, int) else len(lead_times)
    if n_lead < 1:
        raise ConfigError("no lead times given", "set samples.lead_times to at least one lead time")
    if lags < 1:
        raise ConfigError(f"lags={lags}", "set samples.lags to 1 or more")
    check_grid_shape(shape)
    with torch.device(device or "cpu"):
        model = UNet3DDR(
            BLOCKS[cfg.name],
            in_channels=in_channels,
            out_channels=out_channels,
            lags=lags,
            n_lead=n_lead,
            filters=cfg.filters,
            dropout=cfg.dropout,
            final_activation=cfg.final_activation,
            attention=cfg.attention,
            faithful=cfg.faithful,
            base=cfg.base,
            anomaly_base=cfg.anomaly_base,
            shape=tuple(shape),
        )
    if seed is not None and str(device or "cpu") != "meta":
        generator = torch.Generator(device=next(model.parameters()).device).manual_seed(seed)
        model.reset_parameters(generator)
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)``: total also counts BatchNorm statistics, as Keras' summary does."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    params = sum(p.numel() for p in model.parameters())
    stats = sum(
        m.running_mean.numel() + m.running_var.numel()
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.running_mean is not None
    )
    return trainable, params + stats
