"""A zeroth-order step's later passes reuse what its noise cannot change, and give the same numbers."""

from __future__ import annotations

from contextlib import nullcontext

import pytest
import torch
from torch import nn

from seacast.config import ModelConfig, TrainerConfig
from seacast.models import build_model
from seacast.training.rules import make_rule
from seacast.training.zeroth_order.credit import chosen_layers
from seacast.training.zeroth_order.prefix_cache import FrozenPrefix

TAIL = ["head", "decoder.3", "up.3", "reducers.0"]


pytestmark = pytest.mark.usefixtures("one_thread")


def unet(name: str = "3ddr_unet", base: str = "persistence") -> nn.Module:
    cfg = ModelConfig(name=name, filters=2, dropout=0.0, final_activation="none", base=base)
    model = build_model(cfg, 3, 2, 3, [1, 6], (16, 16), seed=0).train()
    with torch.no_grad():  # a non-zero head.out, so the tail's noise reaches the output
        model.head.out.weight.normal_(0.0, 0.1, generator=torch.Generator().manual_seed(1))
    return model


def params_of(model: nn.Module, only: list[str]) -> list[nn.Parameter]:
    return [p for layer in chosen_layers(model, only, "spsa") for p in layer.parameters(False)]


def mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return ((prediction - target) ** 2).flatten(1).mean(1)


@pytest.mark.parametrize(
    "name",
    ["3ddr_unet", "res_3ddr_unet", "inception_res_3ddr_unet", "asymm_inception_res_3ddr_unet"],
)
def test_replayed_passes_equal_whole_passes_on_every_unet_variant(name: str) -> None:
    model = unet(name)
    x = torch.randn(4, 3, 3, 16, 16)
    perturbed = params_of(model, TAIL)
    cache = FrozenPrefix(model, perturbed)
    noise = [torch.randn_like(p) * 0.05 for p in perturbed]
    saved = [p.detach().clone() for p in perturbed]
    with torch.no_grad():
        with cache.step(x):
            first = model(x)
            for p, z in zip(perturbed, noise, strict=True):
                p.add_(z)
            replayed = model(x)
        whole = model(x)
        for p, w in zip(perturbed, saved, strict=True):
            p.copy_(w)
        clean = model(x)
    assert "encoder.0" in cache.reused_modules and "bottleneck" in cache.reused_modules
    assert torch.equal(first, clean)
    assert not torch.equal(replayed, first)  # the noise is seen
    torch.testing.assert_close(replayed, whole, rtol=0, atol=1e-6)


def test_only_the_outputs_later_passes_read_are_kept() -> None:
    model = unet()
    x = torch.randn(2, 3, 3, 16, 16)
    cache = FrozenPrefix(model, params_of(model, ["head.out"]))
    with torch.no_grad(), cache.step(x):
        model(x)
    assert sorted(cache.names[m] for m, _ in cache.needed) == ["head.hidden"]


def test_a_frozen_module_fed_by_a_perturbed_one_runs_on_every_pass() -> None:
    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.first = nn.Conv2d(1, 2, 3, padding=1)
            self.second = nn.Conv2d(3, 1, 3, padding=1)  # frozen, after a torch.cat

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.second(torch.cat([self.first(x), x], dim=1))

    model = Net()
    x = torch.randn(2, 1, 8, 8)
    cache = FrozenPrefix(model, list(model.first.parameters()))
    with torch.no_grad(), cache.step(x):
        before = model(x)
        model.first.bias.add_(1.0)
        after = model(x)
    assert cache.reused_modules == []
    assert not torch.equal(before, after)


def test_the_model_runs_as_before_after_a_step() -> None:
    model = unet()
    x = torch.randn(2, 3, 3, 16, 16)
    with torch.no_grad():
        expected = model(x)
        with FrozenPrefix(model, params_of(model, TAIL)).step(x):
            model(x)
            model(x)
        other = torch.randn(2, 3, 3, 16, 16)
        assert torch.equal(model(x), expected)
        assert not torch.equal(model(other), expected)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())
    assert all("forward" not in m.__dict__ for m in model.modules())
    assert "reference_term" not in model.__dict__


def trainer(name: str, **sections: object) -> TrainerConfig:
    return TrainerConfig.model_validate({"name": name, **sections})


@pytest.mark.parametrize(
    ("name", "section"),
    [
        ("spsa", {"spsa": {"probes": 3, "only": TAIL}}),
        ("node-perturbation", {"node_perturbation": {"credit": "global", "only": ["head.out"]}}),
    ],
)
def test_a_rule_estimates_the_same_gradient_and_statistics_with_and_without_the_reuse(
    name: str, section: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    x, y = torch.randn(4, 3, 3, 16, 16), torch.randn(4, 2, 2, 16, 16)

    def estimate(reuse: bool) -> list[torch.Tensor]:
        model = unet("res_3ddr_unet")  # with BatchNorm
        rule = make_rule(name, model, trainer(name, **section))
        if not reuse:
            monkeypatch.setattr(FrozenPrefix, "step", lambda self, x: nullcontext())
        torch.manual_seed(3)
        rule.step(model, x, y, mse)
        monkeypatch.undo()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return grads + [b.clone() for b in model.buffers()]  # BatchNorm statistics too

    reused, whole = estimate(True), estimate(False)
    assert len(reused) == len(whole) > 0
    for a, b in zip(reused, whole, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-7)


def test_spsa_only_trains_the_named_layers() -> None:
    model = unet()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rule = make_rule("spsa", model, trainer("spsa", spsa={"only": ["head.out"]}))
    rule.step(model, torch.randn(2, 3, 3, 16, 16), torch.randn(2, 2, 2, 16, 16), mse)
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"head.out.weight", "head.out.bias"}
    frozen = [n for n in before if not n.startswith("head.out.")]
    assert all(torch.equal(dict(model.named_parameters())[n], before[n]) for n in frozen)


def test_forward_gradient_only_estimates_the_named_layers_gradient() -> None:
    model = unet()
    x, target = torch.randn(2, 3, 3, 16, 16), torch.randn(2, 2, 2, 16, 16)
    make_rule("backprop", model, trainer("backprop", backprop={"only": ["head.out"]})).step(
        model, x, target, mse
    )
    exact = torch.cat([model.head.out.weight.grad.flatten(), model.head.out.bias.grad.flatten()])
    torch.manual_seed(0)
    rule = make_rule(
        "forward-gradient",
        model,
        trainer("forward-gradient", forward_gradient={"only": ["head.out"], "probes": 256}),
    )
    rule.step(model, x, target, mse)
    with_grad = {n for n, p in model.named_parameters() if p.grad is not None}
    assert with_grad == {"head.out.weight", "head.out.bias"}
    estimate = torch.cat([model.head.out.weight.grad.flatten(), model.head.out.bias.grad.flatten()])
    # 256 probes on 36 parameters: an unbiased estimate has cosine ~0.93 (1 probe: ~0.16)
    assert torch.nn.functional.cosine_similarity(estimate, exact, dim=0) > 0.85


def test_only_with_a_wildcard_trains_the_parameters_it_matches() -> None:
    model = unet()
    make_rule(
        "backprop", model, trainer("backprop", backprop={"only": ["head.out", "decoder.3*.bias"]})
    )
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained == {
        "head.out.weight",
        "head.out.bias",
        "decoder.3.conv.conv.bias",
        "decoder.3.block.unit.conv.bias",
    }


def test_a_wildcard_that_matches_no_parameter_is_refused() -> None:
    from seacast.errors import ConfigError

    with pytest.raises(ConfigError, match="no parameter name matches 'decoder.9\\*.bias'"):
        make_rule("spsa", unet(), trainer("spsa", spsa={"only": ["decoder.9*.bias"]}))


def test_reuse_works_on_a_model_with_train_mode_batchnorm1d() -> None:
    model = nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 2)).train()
    rule = make_rule("spsa", model, trainer("spsa", spsa={"only": ["3"]}))
    rule.step(model, torch.randn(6, 4), torch.randn(6, 2), mse)
    assert rule.prefixes[0].reused_modules == ["0", "1", "2"]
    assert model[3].weight.grad is not None and model[0].weight.grad is None
