"""The four 3DDR U-Nets: reference parameter counts, faithful/efficient equivalence, shapes, gradients."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from seacast.cli import app
from seacast.config import ModelConfig
from seacast.errors import ConfigError, DataError, SeacastError
from seacast.models import (
    MODEL_NAMES,
    build_model,
    count_parameters,
    efficient_state_from_faithful,
)
from seacast.models.blocks import SameConv3d


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """One torch thread: these models are tiny, and the CPU is shared with other test runs."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


# Trainable counts of the reference (Keras), lags 10, 128x128, 4 variables in and out, one lead time.
REFERENCE_TRAINABLE = {
    ("3ddr_unet", 15): 5_733_674,
    ("3ddr_unet", 16): 6_523_148,
    ("res_3ddr_unet", 15): 8_325_074,
    ("res_3ddr_unet", 16): 9_471_340,
    ("inception_res_3ddr_unet", 15): 11_488_814,
    ("inception_res_3ddr_unet", 16): 13_070_924,
    ("asymm_inception_res_3ddr_unet", 15): 7_755_494,
    ("asymm_inception_res_3ddr_unet", 16): 8_822_892,
}
# Keras' total for the Res variant also counts BatchNorm's moving mean and variance.
REFERENCE_RES_TOTAL = {15: 8_327_834, 16: 9_474_284}


def config(name: str, **options) -> ModelConfig:
    options.setdefault("base", "none")
    return ModelConfig(name=name, **options)


def reference_size(name: str, filters: int, **options) -> nn.Module:
    cfg = config(name, filters=filters, faithful=True, final_activation="relu", **options)
    return build_model(cfg, 4, 4, 10, [48], (128, 128), device="meta")


@pytest.mark.parametrize(("name", "filters"), sorted(REFERENCE_TRAINABLE))
def test_faithful_parameter_counts_equal_the_reference(name: str, filters: int) -> None:
    trainable, total = count_parameters(reference_size(name, filters))
    assert trainable == REFERENCE_TRAINABLE[name, filters]
    assert total == REFERENCE_RES_TOTAL.get(filters if name == "res_3ddr_unet" else -1, trainable)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_attention_off_keeps_counts_and_on_adds_parameters(name: str) -> None:
    plain = count_parameters(reference_size(name, 16, attention="none"))[0]
    assert plain == REFERENCE_TRAINABLE[name, 16]
    sizes = {
        mode: count_parameters(reference_size(name, 16, attention=mode))[0]
        for mode in ("self", "global", "both")
    }
    assert plain < sizes["self"] < sizes["both"] and plain < sizes["global"] < sizes["both"]
    assert sizes["both"] - plain == (sizes["self"] - plain) + (sizes["global"] - plain)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_efficient_mode_drops_only_dead_weights(name: str) -> None:
    faithful = count_parameters(reference_size(name, 16))[0]
    cfg = config(name, filters=16, faithful=False)
    efficient = count_parameters(build_model(cfg, 4, 4, 10, 1, (128, 128), device="meta"))[0]
    assert efficient < faithful


def randomise(model: nn.Module, generator: torch.Generator) -> None:
    """Non-trivial biases, norms and attention gate, so that equivalence is not vacuous."""
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.uniform_(-0.2, 0.2, generator=generator)
            elif "norm" in name or name.endswith("gamma"):
                param.uniform_(0.5, 1.5, generator=generator)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                module.running_mean.uniform_(-0.2, 0.2, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)


# lags=2 also exercises the encoder's (5,1,1) kernels, cut to their 3 live slices;
# lags=1 makes the efficient model 2D from its input on
EQUIVALENCE_LAGS = {
    "3ddr_unet": 1,
    "res_3ddr_unet": 3,
    "inception_res_3ddr_unet": 3,
    "asymm_inception_res_3ddr_unet": 2,
}


@pytest.mark.parametrize(("name", "lags"), EQUIVALENCE_LAGS.items())
def test_efficient_model_with_live_slices_matches_faithful(name: str, lags: int) -> None:
    options = dict(filters=3, final_activation="none", attention="both")
    faithful = build_model(
        config(name, faithful=True, **options), 4, 4, lags, [6, 12], (32, 16), seed=1
    )
    efficient = build_model(
        config(name, faithful=False, **options), 4, 4, lags, [6, 12], (32, 16), seed=2
    )
    randomise(faithful, torch.Generator().manual_seed(3))
    efficient.load_state_dict(efficient_state_from_faithful(faithful, efficient))
    faithful.eval()
    efficient.eval()
    x = torch.randn(2, 4, lags, 32, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        reference = faithful(x)
        assert reference.abs().mean() > 1e-3
        torch.testing.assert_close(efficient(x), reference, rtol=1e-4, atol=1e-5)

        # a dead slice of a decoder kernel changes nothing, the live (middle) slice does
        kernel = faithful.head.hidden.conv.weight  # Conv3D(3x3x3) at time depth 1
        kernel[:, :, 0] += 1.0
        torch.testing.assert_close(faithful(x), reference)
        kernel[:, :, 1] += 1.0
        assert (faithful(x) - reference).abs().max() > 1e-3


@pytest.mark.parametrize("kernel", [(3, 1, 1), (5, 1, 1), (2, 2, 2), (1, 1, 3), (3, 3, 3)])
def test_same_conv_pads_like_tensorflow(kernel: tuple[int, int, int]) -> None:
    conv = SameConv3d(3, 2, kernel)
    x = torch.randn(2, 3, 4, 8, 6)
    # TensorFlow's 'same' puts the odd extra element of padding at the end of each axis
    pad = [p for k in reversed(kernel) for p in ((k - 1) // 2, k // 2)]
    expected = nn.functional.conv3d(nn.functional.pad(x, pad), conv.weight, conv.bias)
    torch.testing.assert_close(conv(x), expected)
    torch.testing.assert_close(conv(x.contiguous(memory_format=torch.channels_last_3d)), expected)


def test_faithful_dead_decoder_slices_get_zero_gradient() -> None:
    model = build_model(config("3ddr_unet", filters=3, faithful=True), 4, 4, 3, 1, (16, 16), seed=0)
    model(torch.rand(2, 4, 3, 16, 16)).square().mean().backward()
    grad = model.decoder[1].block.unit.conv.weight.grad
    assert grad[:, :, 1].abs().sum() > 0
    assert grad[:, :, 0].abs().sum() == 0 and grad[:, :, 2].abs().sum() == 0


@pytest.mark.parametrize("faithful", [False, True])
@pytest.mark.parametrize(
    ("lead_times", "shape", "out_channels"),
    [([1], (16, 16), 4), ([6, 12, 24], (32, 16), 4), ([1, 2, 3, 4, 5, 6], (16, 48), 2)],
)
def test_output_shape(
    lead_times: list[int], shape: tuple[int, int], out_channels: int, faithful: bool
) -> None:
    cfg = config("asymm_inception_res_3ddr_unet", filters=2, faithful=faithful)
    model = build_model(cfg, 4, out_channels, 3, lead_times, shape, seed=0)
    y = model(torch.rand(2, 4, 3, *shape))
    assert y.shape == (2, len(lead_times), out_channels, *shape)


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_every_efficient_parameter_gets_a_gradient(name: str) -> None:
    cfg = config(name, filters=4, attention="both", dropout=0.2)
    model = build_model(cfg, 4, 4, 3, [6, 12], (32, 32), seed=0)
    with torch.no_grad():
        # the attention gate starts at 0 (identity); open it so its projections matter.
        # Positive biases keep ReLUs on nonnegative inputs awake: a unit whose weights
        # happen to be all negative is dead by chance, not by construction.
        model.bottleneck.attention.gamma.fill_(0.5)
        for param_name, param in model.named_parameters():
            if param_name.endswith("bias"):
                param.fill_(0.05)
    model.train()
    model(
        torch.rand(2, 4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    ).square().mean().backward()
    without = [
        n for n, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert without == []


def test_seeded_construction_is_deterministic() -> None:
    cfg = config("res_3ddr_unet", filters=2, attention="both")
    first, second, other = (build_model(cfg, 4, 4, 3, 1, (16, 16), seed=s) for s in (7, 7, 8))
    for (name, a), b in zip(first.state_dict().items(), second.state_dict().values(), strict=True):
        assert torch.equal(a, b), name
    assert any(
        not torch.equal(a, c) for a, c in zip(first.parameters(), other.parameters(), strict=True)
    )


def test_glorot_init_matches_keras_limits() -> None:
    model = build_model(
        config("3ddr_unet", filters=8, faithful=True), 4, 4, 10, 1, (16, 16), seed=0
    )
    weight = model.encoder[1].conv.conv.weight  # Conv3D(16, 3) on 8 channels
    limit = (6 / ((8 + 16) * 27)) ** 0.5
    assert weight.abs().max() <= limit and weight.abs().max() > 0.9 * limit
    assert torch.count_nonzero(model.encoder[1].conv.conv.bias) == 0


@pytest.mark.parametrize("shape", [(100, 128), (128, 24), (8, 16)])
def test_grid_not_a_multiple_of_16_is_refused_clearly(shape: tuple[int, int]) -> None:
    with pytest.raises(ConfigError, match=rf"grid {shape[0]}x{shape[1]} .*multiples of 16") as info:
        build_model(config("3ddr_unet"), 4, 4, 10, 1, shape, device="meta")
    assert "grid.shape" in str(info.value)


def test_forward_refuses_input_of_the_wrong_shape() -> None:
    model = build_model(config("3ddr_unet", filters=2), 4, 4, 3, 1, (16, 16), seed=0)
    with pytest.raises(ConfigError, match="grid 24x16"):
        model(torch.rand(1, 4, 3, 24, 16))
    with pytest.raises(DataError, match="3 lags"):
        model(torch.rand(1, 4, 5, 16, 16))


@pytest.mark.parametrize("name", MODEL_NAMES)
def test_residual_model_starts_as_persistence(name: str) -> None:
    cfg = config(name, filters=2, base="persistence", final_activation="none")
    model = build_model(cfg, 3, 3, 4, [1, 6], (16, 32), seed=0)
    x = torch.randn(2, 3, 4, 16, 32)
    y = model(x)
    assert y.shape == (2, 2, 3, 16, 32)
    torch.testing.assert_close(y, x[:, :, -1].unsqueeze(1).expand_as(y))
    y.square().mean().backward()
    assert model.head.out.weight.grad.abs().sum() > 0  # the zero layer still learns


def test_residual_needs_no_final_activation_and_every_output_among_the_inputs() -> None:
    with pytest.raises(ConfigError, match="final_activation"):
        build_model(
            config("3ddr_unet", base="persistence", final_activation="relu"), 4, 4, 3, 1, (16, 16)
        )
    with pytest.raises(SeacastError, match="2 input and 4 output"):
        build_model(config("3ddr_unet", base="persistence"), 2, 4, 3, 1, (16, 16))
    # more inputs than outputs: the weather-forecast channels after the predicted variables
    build_model(config("3ddr_unet", base="persistence"), 4, 2, 3, 1, (16, 16))


def test_relu_head_gives_nonnegative_output() -> None:
    model = build_model(
        config("3ddr_unet", filters=2, final_activation="relu"), 4, 4, 3, 1, (16, 16), seed=0
    )
    assert model(torch.randn(2, 4, 3, 16, 16)).min() >= 0


def test_models_command_prints_plain_trainable_counts() -> None:
    args = [
        "models",
        "--filters",
        "15",
        "--lags",
        "10",
        "--size",
        "128",
        "128",
        "--channels",
        "4",
        "--faithful",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    for name in MODEL_NAMES:
        row = next(line for line in result.stdout.splitlines() if f" {name} " in line)
        assert str(REFERENCE_TRAINABLE[name, 15]) in row


def test_models_command_reports_a_bad_grid() -> None:
    result = CliRunner().invoke(app, ["models", "--size", "100", "128"])
    assert result.exit_code == 1
    assert "multiples of 16" in result.output


def test_outputs_and_gradients_equal_the_recorded_ones():
    """Speed work (memory format, 2D paths for flat kernels) must not change the math."""
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "data"))
    from make_unet_outputs import recorded_outputs

    recorded = np.load(Path(__file__).parent / "data" / "unet_outputs.npz")
    now = recorded_outputs()
    np.testing.assert_array_equal(now["input"], recorded["input"])
    for key in recorded.files:
        scale = float(np.abs(recorded[key]).max())
        # CPU kernels sum in another order on another ISA: res_3ddr_unet's train-mode gradient
        # moved by 9e-5 of its scale on an AVX-512 machine against the AVX2 recording. A change of
        # the math moves some element by a sizeable share of the scale.
        np.testing.assert_allclose(
            now[key], recorded[key], rtol=1e-3, atol=1e-3 * scale, err_msg=key
        )
