"""Zeroth-order update rules: estimates against the true gradient, no backward pass, training progress."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from seacast.config import TrainerConfig
from seacast.training import zeroth_order as zo
from seacast.training.rules import make_rule

# most tests use a plain per-sample loss: local credit falls back to global credit there, with a warning
pytestmark = [
    pytest.mark.filterwarnings("ignore:node_perturbation.credit=local"),
    pytest.mark.usefixtures("one_thread"),
]


def mse_per_sample(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((pred - target) ** 2).flatten(1).mean(1)


def trainer(name: str, **sections: object) -> TrainerConfig:
    return TrainerConfig.model_validate({"name": name, **sections})


def flat_grad(model: nn.Module) -> torch.Tensor:
    return torch.cat(
        [
            (p.grad if p.grad is not None else torch.zeros_like(p)).flatten()
            for p in model.parameters()
        ]
    )


def true_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.zero_grad(set_to_none=True)
    mse_per_sample(model(x), y).mean().backward()
    grad = flat_grad(model).clone()
    model.zero_grad(set_to_none=True)
    return grad


def cosine(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))


def small_conv_net(dtype: torch.dtype = torch.float32, batch_norm: bool = False) -> nn.Module:
    torch.manual_seed(0)
    layers: list[nn.Module] = [nn.Conv2d(2, 6, 3, padding=1)]
    if batch_norm:
        layers.append(nn.BatchNorm2d(6))
    layers += [nn.Tanh(), nn.Conv2d(6, 2, 3, padding=1)]
    return nn.Sequential(*layers).to(dtype)


class TinyResidual(nn.Module):
    """Conv3d over (lags, lat, lon) then Conv2d head; output = last frame + increment, head at zero."""

    def __init__(self, lags: int = 3, hidden: int = 8) -> None:
        super().__init__()
        self.encoder = nn.Conv3d(1, hidden, (lags, 3, 3), padding=(0, 1, 1))
        self.head = nn.Conv2d(hidden, 1, 3, padding=1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 1, lags, H, W] -> [B, 1, 1, H, W]
        features = torch.tanh(self.encoder(x)).squeeze(2)
        return x[:, :, -1].unsqueeze(1) + self.head(features).unsqueeze(1)


def tidal_batch(
    generator: torch.Generator, batch: int = 16, size: int = 12, lags: int = 3, lead: int = 2
):
    """Waves travelling across the box at random phases: the last frame is a poor forecast, lags tell the motion."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    t0 = torch.rand(batch, 1, 1, 1, generator=generator) * 12.4
    steps = torch.arange(lags + lead, dtype=torch.float32).view(1, -1, 1, 1)
    t = t0 + steps
    field = torch.cos(2 * math.pi * (t / 12.4 - 1.2 * yy - 0.8 * xx)) + 0.35 * torch.cos(
        2 * math.pi * (t / 12.0 - 0.9 * yy + 0.5 * xx)
    )
    x = field[:, :lags].unsqueeze(1)
    y = field[:, lags + lead - 1].unsqueeze(1).unsqueeze(1)
    return x, y


# --------------------------------------------------------------------------- exactness


def test_forward_gradient_equals_true_gradient_dot_v_with_train_batchnorm() -> None:
    model = small_conv_net(torch.float64, batch_norm=True).train()
    x = torch.randn(8, 2, 6, 6, dtype=torch.float64)
    y = torch.randn(8, 2, 6, 6, dtype=torch.float64)
    rule = make_rule("forward-gradient", model, trainer("forward-gradient"))
    grad = true_grad(model, x, y)
    torch.manual_seed(11)
    stats = rule.step(model, x, y, mse_per_sample)
    # regenerate the tangent the rule drew from the same seed
    torch.manual_seed(11)
    seed = zo.draw_seed()
    v = torch.cat(
        [
            zo.noise_like(p, zo.mix_seed(seed, i), "gaussian").flatten()
            for i, p in enumerate(model.parameters())
        ]
    )
    expected = torch.dot(grad, v) * v
    torch.testing.assert_close(flat_grad(model), expected, rtol=1e-9, atol=1e-12)
    assert stats.forwards == zo.JVP_FORWARD_COST
    with torch.no_grad():
        assert stats.loss == pytest.approx(float(mse_per_sample(model(x), y).mean()), rel=1e-9)


def test_spsa_matches_true_directional_derivative() -> None:
    model = small_conv_net(torch.float64).eval()
    x = torch.randn(8, 2, 6, 6, dtype=torch.float64)
    y = torch.randn(8, 2, 6, 6, dtype=torch.float64)
    grad = true_grad(model, x, y)
    before = [p.detach().clone() for p in model.parameters()]
    for noise in ("gaussian", "rademacher"):
        rule = make_rule(
            "spsa", model, trainer("spsa", spsa={"probes": 1, "epsilon": 1e-6, "noise": noise})
        )
        torch.manual_seed(3)
        stats = rule.step(model, x, y, mse_per_sample)
        torch.manual_seed(3)
        seed = zo.draw_seed()
        z = torch.cat(
            [
                zo.noise_like(p, zo.mix_seed(seed, i), noise).flatten()
                for i, p in enumerate(model.parameters())
            ]
        )
        torch.testing.assert_close(flat_grad(model), torch.dot(grad, z) * z, rtol=1e-6, atol=1e-9)
        assert stats.forwards == 2
    for b, p in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), b, rtol=0, atol=1e-14)


@pytest.mark.parametrize(
    "conv",
    [
        nn.Conv2d(4, 6, 3, stride=2, padding=1, dilation=1, groups=2),
        nn.Conv2d(3, 4, (3, 5), padding=(2, 1), dilation=2, padding_mode="reflect"),
        nn.Conv3d(2, 3, (3, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
        nn.Linear(5, 3),
    ],
)
def test_local_weight_gradient_is_the_conv_weight_gradient(conv: nn.Module) -> None:
    """psi ⊗ x through the weight-gradient operator equals autograd's weight gradient for that output signal."""
    torch.manual_seed(0)
    shape = {nn.Conv2d: (4, conv.in_channels if hasattr(conv, "in_channels") else 0, 11, 9)}
    if isinstance(conv, nn.Conv3d):
        x = torch.randn(4, 2, 5, 8, 8)
    elif isinstance(conv, nn.Linear):
        x = torch.randn(4, 7, 5)
    else:
        x = torch.randn(*shape[nn.Conv2d])
    out = conv(x)
    signal = torch.randn_like(out)
    (out * signal).sum().backward()
    local = zo.local_weight_gradient(conv, zo.layer_input(conv, x), signal)
    torch.testing.assert_close(local, conv.weight.grad, rtol=1e-4, atol=1e-5)


def test_node_perturbation_matches_linear_gradient_in_expectation() -> None:
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x = torch.randn(32, 6)
    y = torch.randn(32, 3)
    grad = true_grad(model, x, y)
    for delta in ("antithetic", "clean"):
        cfg = trainer(
            "node-perturbation",
            node_perturbation={"sigma": 1e-2, "delta": delta, "probes": 4},
        )
        rule = make_rule("node-perturbation", model, cfg)
        total = torch.zeros_like(grad)
        runs = 100
        for _ in range(runs):
            rule.step(model, x, y, mse_per_sample)
            total += flat_grad(model)
        mean = total / runs
        assert cosine(mean, grad) > 0.97
        assert float((mean - grad).norm() / grad.norm()) < 0.25


def test_node_perturbation_never_calls_autograd(monkeypatch: pytest.MonkeyPatch) -> None:
    model = small_conv_net(batch_norm=True).train()
    x, y = torch.randn(4, 2, 8, 8), torch.randn(4, 2, 8, 8)
    graphs: list[bool] = []

    def spy(_module: nn.Module, _inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        graphs.append(output.requires_grad or output.grad_fn is not None)

    for module in model.modules():
        module.register_forward_hook(spy)

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        assert not pred.requires_grad
        return mse_per_sample(pred, target)

    for layers in ("all", "cycle"):
        cfg = trainer("node-perturbation", node_perturbation={"layers": layers, "probes": 2})
        rule = make_rule("node-perturbation", model, cfg)
        with zo.no_autograd():
            stats = rule.step(model, x, y, loss_fn)
        assert stats.forwards == 5  # two antithetic pairs and the clean pass that makes the update
    assert graphs and not any(graphs)
    assert all(p.grad is None or not p.grad.requires_grad for p in model.parameters())
    with zo.no_autograd(), pytest.raises(AssertionError, match="backward"):
        model(x).sum().backward()


def test_node_perturbation_cycling_layers_updates_one_layer_and_skips_batchnorm() -> None:
    model = small_conv_net(batch_norm=True).train()
    x, y = torch.randn(4, 2, 8, 8), torch.randn(4, 2, 8, 8)
    rule = make_rule(
        "node-perturbation",
        model,
        trainer("node-perturbation", node_perturbation={"layers": "cycle"}),
    )
    rule.step(model, x, y, mse_per_sample)
    with_grad = [n for n, p in model.named_parameters() if p.grad is not None]
    assert with_grad == ["0.weight", "0.bias"]
    rule.step(model, x, y, mse_per_sample)
    assert [n for n, p in model.named_parameters() if p.grad is not None] == ["3.weight", "3.bias"]


def test_spsa_inplace_keeps_no_grad_and_restores_weights_at_zero_lr() -> None:
    model = small_conv_net(batch_norm=True).train()
    x, y = torch.randn(4, 2, 8, 8), torch.randn(4, 2, 8, 8)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    cfg = trainer("spsa", spsa={"inplace_sgd": True, "probes": 3, "epsilon": 1e-3})
    rule = make_rule("spsa", model, cfg)
    assert rule.applies_update
    rule.set_lr(0.0)
    for _ in range(5):
        rule.step(model, x, y, mse_per_sample)
    for n, p in model.named_parameters():
        assert p.grad is None
        # restored to float rounding: each probe adds and removes eps*z (about one ulp per probe)
        torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=5e-7)
    rule.set_lr(1e-2)
    with torch.no_grad():
        loss_before = float(mse_per_sample(model.eval()(x), y).mean())
    model.train()
    for _ in range(30):
        rule.step(model, x, y, mse_per_sample)
    assert all(p.grad is None for p in model.parameters())
    with torch.no_grad():
        assert float(mse_per_sample(model.eval()(x), y).mean()) < loss_before


def test_batchnorm_running_stats_move_once_per_step_and_dropout_masks_match() -> None:
    model = nn.Sequential(
        nn.Conv2d(2, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Dropout(0.5), nn.Conv2d(4, 2, 1)
    )
    model.train()
    x, y = torch.randn(6, 2, 8, 8) + 3.0, torch.randn(6, 2, 8, 8)
    rule = make_rule("spsa", model, trainer("spsa", spsa={"probes": 4, "epsilon": 1e-4}))
    rule.step(model, x, y, mse_per_sample)
    assert int(model[1].num_batches_tracked) == 1
    # same dropout mask in L+ and L-: the estimate is a small, smooth difference, not mask noise
    assert float(flat_grad(model).abs().max()) < 1e3


# --------------------------------------------------------------------------- training on a forecastable task


@pytest.mark.parametrize(
    ("name", "sections", "lr", "steps"),
    [
        ("spsa", {"spsa": {"probes": 4, "epsilon": 1e-3}}, 1e-2, 150),
        ("spsa", {"spsa": {"probes": 4, "epsilon": 1e-3, "inplace_sgd": True}}, 3e-2, 150),
        ("node-perturbation", {"node_perturbation": {"sigma": 1e-2}}, 1e-2, 150),
        ("forward-gradient", {"forward_gradient": {"probes": 2}}, 1e-2, 150),
    ],
)
def test_loss_falls_clearly(name: str, sections: dict, lr: float, steps: int) -> None:
    torch.manual_seed(0)
    model = TinyResidual()
    data = torch.Generator().manual_seed(1)
    x_val, y_val = tidal_batch(torch.Generator().manual_seed(99), batch=64)
    persistence = float(mse_per_sample(model(x_val), y_val).mean())
    cfg = trainer(name, **sections)
    rule = make_rule(name, model, cfg)
    rule.set_lr(lr)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    for _ in range(steps):
        x, y = tidal_batch(data)
        optimiser.zero_grad(set_to_none=True)
        rule.step(model, x, y, mse_per_sample)
        if not rule.applies_update:
            optimiser.step()
    with torch.no_grad():
        trained = float(mse_per_sample(model(x_val), y_val).mean())
    assert trained < 0.2 * persistence, (name, trained, persistence)


# --------------------------------------------------------------------------- the seacast U-Nets, gradcheck


def test_rules_on_a_tiny_unet_cover_the_live_parameters() -> None:
    from seacast.config import ModelConfig
    from seacast.models import build_model

    model = build_model(
        ModelConfig(name="res_3ddr_unet", filters=2, dropout=0.5), 2, 2, 3, [1, 6], (16, 16), seed=0
    )
    x, y = torch.randn(4, 2, 3, 16, 16), torch.randn(4, 2, 2, 16, 16)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    for name in ("spsa", "node-perturbation", "forward-gradient"):
        rule = make_rule(name, model, trainer(name))
        stats = rule.step(model, x, y, mse_per_sample)
        assert math.isfinite(stats.loss) and stats.forwards > 0
        grads = {n: p.grad for n, p in model.named_parameters()}
        assert all(g is None or torch.isfinite(g).all() for g in grads.values())
        covered = {n for n, g in grads.items() if g is not None}
        if name == "node-perturbation":  # every conv weight, no BatchNorm affine
            conv_weights = {
                f"{n}.weight"
                for n, m in model.named_modules()
                if isinstance(m, nn.Conv2d | nn.Conv3d)
            }
            assert conv_weights <= covered
            assert not any("norm" in n for n in covered)
        else:
            assert covered == set(before)
        for n, p in model.named_parameters():
            torch.testing.assert_close(p.detach(), before[n], rtol=0, atol=1e-6)


def test_gradient_check_ranks_estimates_and_leaves_the_model_alone() -> None:
    from seacast.training.gradcheck import gradcheck_table, gradient_check

    model = small_conv_net(batch_norm=True).train()
    x, y = torch.randn(16, 2, 8, 8), torch.randn(16, 2, 8, 8)
    before = [p.detach().clone() for p in model.parameters()]
    rows = gradient_check(model, x, y, mse_per_sample, probes=64, seed=0)
    assert [r.rule for r in rows] == ["backprop", "spsa", "node-perturbation", "forward-gradient"]
    by_rule = {r.rule: r for r in rows}
    assert by_rule["spsa"].forwards == 128 and by_rule["node-perturbation"].forwards == 129
    assert by_rule["forward-gradient"].forwards == 64 * zo.JVP_FORWARD_COST
    for name in ("spsa", "node-perturbation", "forward-gradient"):
        assert 0.05 < by_rule[name].cosine < 1.0
    assert model.training and all(p.grad is None for p in model.parameters())
    for b, p in zip(before, model.parameters(), strict=True):
        torch.testing.assert_close(p.detach(), b)
    assert gradcheck_table(rows, 64).row_count == 4


def test_gradcheck_command_prints_the_table(tmp_path) -> None:
    from typer.testing import CliRunner

    from seacast.cli import app
    from seacast.synthetic import synthetic_store

    store = synthetic_store(
        tmp_path / "s.zarr", shape=(16, 16), hours=24 * 6, variables=("zos", "uo")
    )
    config = tmp_path / "exp.yaml"
    config.write_text(
        f"name: gc\nstore: {store}\nsamples: {{variables: [zos, uo], lags: 3, lead_times: [1]}}\n"
        "model: {name: 3ddr_unet, filters: 2}\ntrainer: {batch_size: 4}\n"
    )
    result = CliRunner().invoke(app, ["gradcheck", "--config", str(config), "--probes", "2"])
    assert result.exit_code == 0, result.output
    for name in ("backprop", "spsa", "node-perturbation", "forward-gradient", "cosine"):
        assert name in result.output


# --------------------------------------------------------------------------- local credit, split


def mse_cells(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Each output cell's share of :func:`mse_per_sample` (what ``make_loss(...).elementwise`` gives)."""
    return (pred - target) ** 2 / pred[0].numel()


def mse_with_cells(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return mse_cells(pred, target).flatten(1).sum(1)


mse_with_cells.elementwise = mse_cells  # type: ignore[attr-defined]


def test_local_credit_on_a_pointwise_head_is_close_to_the_true_gradient() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 2, 1))
    x, y = torch.randn(8, 2, 16, 16), torch.randn(8, 2, 16, 16)
    head = list(model[2].parameters())
    model.zero_grad(set_to_none=True)
    mse_with_cells(model(x), y).mean().backward()
    true_head = torch.cat([p.grad.flatten() for p in head]).clone()
    cosines = {}
    for credit in ("global", "local"):
        cfg = trainer(
            "node-perturbation",
            node_perturbation={"credit": credit, "credit_radius": 0, "probes": 2},
        )
        torch.manual_seed(1)
        make_rule("node-perturbation", model, cfg).step(model, x, y, mse_with_cells)
        cosines[credit] = cosine(torch.cat([p.grad.flatten() for p in head]), true_head)
    assert cosines["local"] > 0.9, cosines
    assert cosines["global"] < cosines["local"] - 0.3, cosines


def test_output_layer_credited_per_channel_estimates_each_channels_weights_better() -> None:
    torch.manual_seed(0)
    # six output channels: with credit summed over channels each node also carries the others' noise
    model = nn.Sequential(nn.Conv2d(2, 6, 3, padding=1), nn.Tanh(), nn.Conv2d(6, 6, 1))
    x = torch.randn(8, 2, 16, 16)
    y = torch.randn(8, 6, 16, 16) * torch.tensor([0.1, 3, 3, 3, 3, 3]).view(1, 6, 1, 1)
    model.zero_grad(set_to_none=True)
    mse_with_cells(model(x), y).mean().backward()
    true_rows = model[2].weight.grad.flatten(1).clone()
    mean_cosine = {}
    for output_layer in (None, "2"):
        cfg = trainer(
            "node-perturbation",
            node_perturbation={"credit_radius": 0, "output_layer": output_layer},
        )
        torch.manual_seed(1)
        make_rule("node-perturbation", model, cfg).step(model, x, y, mse_with_cells)
        rows = model[2].weight.grad.flatten(1)
        mean_cosine[output_layer] = sum(float(cosine(rows[c], true_rows[c])) for c in range(6)) / 6
    assert mean_cosine["2"] > mean_cosine[None] + 0.15, mean_cosine


def test_an_output_layer_the_model_lacks_is_refused_when_named() -> None:
    from seacast.errors import ConfigError

    model = small_conv_net()
    make_rule("node-perturbation", model, trainer("node-perturbation"))  # the default: ignored
    with pytest.raises(ConfigError, match="output_layer"):
        make_rule(
            "node-perturbation",
            model,
            trainer("node-perturbation", node_perturbation={"output_layer": "head.last"}),
        )


def test_local_credit_without_cell_losses_warns_and_uses_global_credit() -> None:
    model = small_conv_net()
    x, y = torch.randn(2, 2, 8, 8), torch.randn(2, 2, 8, 8)
    grads = {}
    for credit in ("global", "local"):
        cfg = trainer("node-perturbation", node_perturbation={"credit": credit})
        rule = make_rule("node-perturbation", model, cfg)
        torch.manual_seed(3)
        if credit == "local":
            with pytest.warns(UserWarning, match="elementwise"):
                rule.step(model, x, y, mse_per_sample)
        else:
            rule.step(model, x, y, mse_per_sample)
        grads[credit] = flat_grad(model).clone()
    torch.testing.assert_close(grads["local"], grads["global"])


def test_layers_by_samples_noises_one_layer_per_sample_and_stays_unbiased() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Tanh(), nn.Linear(5, 3))
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    grad = true_grad(model, x, y)
    cfg = trainer("node-perturbation", node_perturbation={"layers": "samples", "probes": 4})
    rule = make_rule("node-perturbation", model, cfg)
    total = torch.zeros_like(grad)
    runs = 300
    for _ in range(runs):
        rule.step(model, x, y, mse_per_sample)
        assert all(p.grad is not None for p in model.parameters())
        total += flat_grad(model)
    assert cosine(total / runs, grad) > 0.9
    masks = rule.sample_masks
    assert masks is not None and len(masks) == 2
    assert not any(bool((a & b).any()) for a, b in [tuple(masks.values())])


def test_only_restricts_node_perturbation_to_the_named_layers() -> None:
    from seacast.errors import ConfigError

    model = small_conv_net()
    x, y = torch.randn(4, 2, 8, 8), torch.randn(4, 2, 8, 8)
    cfg = trainer("node-perturbation", node_perturbation={"only": ["2"]})
    make_rule("node-perturbation", model, cfg).step(model, x, y, mse_per_sample)
    assert [n for n, p in model.named_parameters() if p.grad is not None] == ["2.weight", "2.bias"]
    with pytest.raises(ConfigError, match="only"):
        make_rule(
            "node-perturbation",
            model,
            trainer("node-perturbation", node_perturbation={"only": ["head"]}),
        )


def test_backprop_only_trains_the_layers_node_perturbation_only_would() -> None:
    model = small_conv_net(batch_norm=True)
    x, y = torch.randn(4, 2, 8, 8), torch.randn(4, 2, 8, 8)
    make_rule("backprop", model, trainer("backprop", backprop={"only": ["3"]})).step(
        model, x, y, mse_per_sample
    )  # the second conv, after the batch norm "1" (frozen: node perturbation does not update it)
    assert [n for n, p in model.named_parameters() if p.grad is not None] == ["3.weight", "3.bias"]
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["3.weight", "3.bias"]


def test_credit_radius_by_layer_covering_the_influence_field_recovers_a_hidden_layer_gradient() -> (
    None
):
    torch.manual_seed(0)
    # layer "0" reaches the output through one 3x3 conv: its influence field has radius 1
    model = nn.Sequential(
        nn.Conv2d(2, 6, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(6, 6, 3, padding=1),
        nn.Tanh(),
        nn.Conv2d(6, 2, 1),
    )
    x, y = torch.randn(8, 2, 16, 16), torch.randn(8, 2, 16, 16)
    model.zero_grad(set_to_none=True)
    mse_with_cells(model(x), y).mean().backward()
    true_first = torch.cat([p.grad.flatten() for p in model[0].parameters()]).clone()
    cosines = {}
    for radius in (0, 1):
        cfg = trainer(
            "node-perturbation",
            node_perturbation={
                "only": ["0"],
                "credit_radius": 0,
                "credit_radius_by_layer": {"0": radius},
                "probes": 4,
            },
        )
        rule = make_rule("node-perturbation", model, cfg)
        torch.manual_seed(1)
        total = torch.zeros_like(true_first)
        for _ in range(20):
            rule.step(model, x, y, mse_with_cells)
            total += torch.cat([p.grad.flatten() for p in model[0].parameters()])
        cosines[radius] = cosine(total, true_first)
    assert cosines[1] > 0.8, cosines
    assert cosines[0] < cosines[1] - 0.2, cosines  # a window smaller than the field is biased


# --------------------------------------------------------------------------- node perturbation in inference memory


@pytest.mark.parametrize("samples_per_slice", [0, 3, 8])
def test_node_perturbation_update_is_the_hebbian_rule_on_regenerated_noise(
    samples_per_slice: int,
) -> None:
    torch.manual_seed(0)
    model = nn.Linear(6, 3)
    x, y = torch.randn(8, 6), torch.randn(8, 3)
    sigma = 1e-2
    cfg = trainer(
        "node-perturbation",
        node_perturbation={
            "sigma": sigma,
            "credit": "global",
            "samples_per_slice": samples_per_slice,
        },
    )
    torch.manual_seed(5)
    generator = zo.generator_for(x.device, zo.draw_seed())
    sizes = [8] if samples_per_slice == 0 else [3, 3, 2] if samples_per_slice == 3 else [8]
    # the noise is drawn slice by slice of samples, in order
    psi = sigma * torch.cat([torch.randn((n, 3), generator=generator) for n in sizes])
    with torch.no_grad():
        clean = model(x)
        delta = 0.5 * (mse_per_sample(clean + psi, y) - mse_per_sample(clean - psi, y))
    signal = delta[:, None] / sigma**2 * psi
    expected_weight = signal.T @ x / 8
    expected_bias = signal.sum(0) / 8

    torch.manual_seed(5)
    stats = make_rule("node-perturbation", model, cfg).step(model, x, y, mse_per_sample)

    torch.testing.assert_close(model.weight.grad, expected_weight, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(model.bias.grad, expected_bias, rtol=1e-4, atol=1e-6)
    assert stats.forwards == 3


def test_node_perturbation_keeps_no_activation_between_passes() -> None:
    import gc

    model = small_conv_net().train()  # hidden layer: 6 channels, 3x the input's size
    x, y = torch.randn(4, 2, 8, 8), torch.randn(4, 2, 8, 8)
    rule = make_rule(
        "node-perturbation",
        model,
        trainer("node-perturbation", node_perturbation={"credit": "global"}),
    )
    hidden = 4 * 6 * 8 * 8

    def big_tensors() -> set[int]:
        return {
            id(o)
            for o in gc.get_objects()
            if isinstance(o, torch.Tensor) and o.is_floating_point() and o.numel() >= hidden
        }

    before = big_tensors()  # what other tests or the process hold already
    alive: list[int] = []

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        # when a pass ends, no layer input or noise of the hidden size may still be held
        alive.append(len(big_tensors() - before))
        return mse_per_sample(pred, target)

    rule.step(model, x, y, loss_fn)
    assert len(alive) == 2 and max(alive) == 0


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ({"antithetic": False}, "delta: antithetic"),
        ({"baseline": True, "antithetic": False}, "delta: baseline"),
        ({"layerwise": True}, "layers: cycle"),
        ({"split": "samples"}, "layers: samples"),
    ],
)
def test_node_perturbation_names_the_option_an_old_key_became(old: dict, new: str) -> None:
    with pytest.raises(ValueError, match=new):
        trainer("node-perturbation", node_perturbation=old)


def test_a_saved_node_perturbation_section_with_every_old_key_is_upgraded() -> None:
    saved = {"antithetic": False, "baseline": True, "layerwise": False, "split": "samples"}
    options = trainer("node-perturbation", node_perturbation=saved).node_perturbation
    assert (options.delta, options.layers) == ("baseline", "samples")


def test_time_compressor_conv_runs_its_forward_hooks() -> None:
    from seacast.models.blocks import TimeOnlyConv3d

    conv = TimeOnlyConv3d(3, 3, (4, 1, 1))
    seen: list[tuple[int, ...]] = []
    conv.register_forward_hook(lambda _m, _i, out: seen.append(tuple(out.shape)))
    x = torch.randn(2, 3, 4, 5, 5)
    out = conv(x)
    torch.testing.assert_close(out, nn.functional.conv3d(x, conv.weight, conv.bias))
    assert seen == [(2, 3, 1, 5, 5)]


# --------------------------------------------------------------------------- forward gradient's exact output layer


def _unet_and_loss(units: str, final_activation: str = "none"):
    """A tiny seacast U-Net in float64 whose head.out is not zero, and the training loss."""
    import numpy as np

    from seacast.config import ModelConfig
    from seacast.models import build_model
    from seacast.normalise import Normaliser
    from seacast.training.losses import make_loss

    model = build_model(
        ModelConfig(
            name="res_3ddr_unet",
            filters=2,
            dropout=0.0,
            base="none",
            final_activation=final_activation,
        ),
        2,
        2,
        3,
        [1, 6],
        (16, 16),
        seed=0,
    ).double()
    with torch.no_grad():  # a trained head passes a gradient to the layers before it
        for p in model.head.out.parameters():
            p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(1)) * 0.3)
    normaliser = Normaliser(
        ["zos", "so"], "zscore", np.array([0.1, 34.0]), np.array([0.5, 2.0]), 0.0
    )
    sea_mask = np.ones((16, 16), dtype=bool)
    sea_mask[:3, :5] = False
    return model.train(), make_loss(normaliser, sea_mask, units=units)


@pytest.mark.parametrize("units", ["physical", "normalised"])
def test_the_training_loss_derivative_in_closed_form_is_autograds(units: str) -> None:
    _, loss_fn = _unet_and_loss(units)
    prediction = torch.randn(3, 2, 2, 16, 16, dtype=torch.float64, requires_grad=True)
    target = torch.randn(3, 2, 2, 16, 16, dtype=torch.float64)
    (expected,) = torch.autograd.grad(loss_fn(prediction, target).mean(), prediction)
    torch.testing.assert_close(loss_fn.gradient(prediction.detach(), target), expected)


@pytest.mark.parametrize("final_activation", ["none", "relu"])
def test_forward_gradient_output_layer_is_exact_and_the_rest_is_the_projection(
    final_activation: str,
) -> None:
    model, loss_fn = _unet_and_loss("physical", final_activation)
    x = torch.randn(4, 2, 3, 16, 16, dtype=torch.float64)
    y = torch.randn(4, 2, 2, 16, 16, dtype=torch.float64)
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).mean().backward()
    exact = {n: p.grad.clone() for n, p in model.named_parameters()}
    cfg = trainer("forward-gradient", forward_gradient={"output_layer": "head.out"})
    rule = make_rule("forward-gradient", model, cfg)
    passes: list[bool] = []
    model.head.out.register_forward_hook(lambda *_: passes.append(torch.is_grad_enabled()))
    torch.manual_seed(5)
    stats = rule.step(model, x, y, loss_fn)
    # the delta rule costs no pass of its own, and no pass builds a graph
    assert stats.forwards == zo.JVP_FORWARD_COST and passes == [False]
    for name in ("head.out.weight", "head.out.bias"):
        torch.testing.assert_close(model.get_parameter(name).grad, exact[name])
    # the other layers: (g.v) v on the tangent the rule drew, none of it on head.out
    torch.manual_seed(5)
    seed = zo.draw_seed()
    others = [(n, p) for n, p in model.named_parameters() if not n.startswith("head.out")]
    v = torch.cat(
        [
            zo.noise_like(p, zo.mix_seed(seed, i), "gaussian").flatten()
            for i, (_, p) in enumerate(others)
        ]
    )
    g = torch.cat([exact[n].flatten() for n, _ in others])
    got = torch.cat([p.grad.flatten() for _, p in others])
    torch.testing.assert_close(got, torch.dot(g, v) * v)


def test_forward_gradient_on_the_output_layer_alone_is_backprops_in_one_forward() -> None:
    model, loss_fn = _unet_and_loss("physical")
    x = torch.randn(4, 2, 3, 16, 16, dtype=torch.float64)
    y = torch.randn(4, 2, 2, 16, 16, dtype=torch.float64)
    section = {"only": ["head.out"], "output_layer": "head.out", "probes": 8}
    rule = make_rule(
        "forward-gradient", model, trainer("forward-gradient", forward_gradient=section)
    )
    model.zero_grad(set_to_none=True)
    loss_fn(model(x), y).mean().backward()
    exact = model.head.out.weight.grad.clone()
    stats = rule.step(model, x, y, loss_fn)
    assert stats.forwards == 1
    torch.testing.assert_close(model.head.out.weight.grad, exact)
    assert all(p.grad is None for n, p in model.named_parameters() if not n.startswith("head.out"))


@pytest.mark.parametrize(
    ("section", "fix"),
    [
        ({"output_layer": "head.hidden"}, "'head.out'"),  # not the model's last layer
        ({"output_layer": "head.out", "only": ["encoder.0"]}, "add 'head.out'"),  # not trained
    ],
)
def test_forward_gradient_refuses_an_output_layer_it_cannot_train_exactly(
    section: dict, fix: str
) -> None:
    from seacast.errors import ConfigError

    model, _ = _unet_and_loss("physical")
    with pytest.raises(ConfigError, match="output_layer") as error:
        make_rule("forward-gradient", model, trainer("forward-gradient", forward_gradient=section))
    assert fix in str(error.value) + str(getattr(error.value, "fix", ""))
