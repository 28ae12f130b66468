"""benchmarks/zo_vs_bp.py's accounting: a staged run is charged its first stage's whole budget."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pandas as pd
import pytest

BENCHMARK = Path(__file__).resolve().parents[1] / "benchmarks" / "zo_vs_bp.py"


@pytest.fixture(scope="module")
def zo_vs_bp():
    spec = importlib.util.spec_from_file_location("zo_vs_bp", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    sys.modules["zo_vs_bp"] = module
    spec.loader.exec_module(module)
    return module


def _run(folder: Path, rows: list[tuple[int, int, float]], best_epoch: int, **meta) -> Path:
    """A finished run folder: metrics rows (epoch, step, val_loss), 3 forwards and 0.5 s a step."""
    folder.mkdir(parents=True)
    pd.DataFrame(
        [
            {"epoch": e, "step": s, "forwards": 3 * s, "wall_seconds": 0.5 * s, "val_loss": v}
            for e, s, v in rows
        ]
    ).to_csv(folder / "metrics.csv", index=False)
    last_step = rows[-1][1]
    meta = {
        "best_epoch": best_epoch,
        "best_val": min(v for _, _, v in rows),
        "steps": last_step,
        "forwards": 3 * last_step,
        "timings": {"train_seconds": 0.5 * last_step},
        "status": "finished (early_stopping)",
        **meta,
    }
    (folder / "meta.json").write_text(json.dumps(meta))
    return folder


def test_a_staged_run_counts_its_first_stages_whole_budget_and_untrained_start(zo_vs_bp, tmp_path):
    first = _run(tmp_path / "first", [(1, 100, 0.9), (2, 200, 0.95)], 1, reference_val=1.0)
    second = _run(
        tmp_path / "second",
        [(1, 50, 0.85), (2, 100, 0.8)],
        2,
        reference_val=0.9,
        init_from={"checkpoint": str(first / "checkpoint_best.pt")},
    )
    summary = zo_vs_bp.summarise(second, "node-perturbation-staged", 1e-2, 0)
    assert summary["reference_val"] == 1.0  # gains from the untrained start, not the first stage's
    assert summary["steps"] == 300 and summary["forwards"] == 900 and summary["wall"] == 150
    assert summary["steps_to_best"] == 300  # 200 of the first stage, then 100
    assert summary["history"]["step"] == [100, 200, 250, 300]
    # at the first stage's budget it had only the first stage's best
    assert zo_vs_bp.best_val_within(summary, "step", 200) == 0.9


def test_a_second_stage_that_never_improves_reports_the_first_stages_best(zo_vs_bp, tmp_path):
    first = _run(tmp_path / "first", [(1, 100, 0.9), (2, 200, 0.95)], 1, reference_val=1.0)
    second = _run(
        tmp_path / "second",
        [(1, 50, 0.92)],
        0,
        reference_val=0.9,
        best_val=0.9,  # its start, kept as its best
        init_from={"checkpoint": str(first / "checkpoint_best.pt")},
    )
    summary = zo_vs_bp.summarise(second, "node-perturbation-staged", 1e-2, 0)
    assert summary["steps_to_best"] == 100 and summary["steps"] == 250
    assert summary["best_val"] == 0.9


def test_a_staged_method_runs_after_its_first_stage(zo_vs_bp):
    ordered = zo_vs_bp.with_first_stages(["backprop", "node-perturbation-staged", "spsa"])
    assert ordered == ["backprop", "node-perturbation-out", "node-perturbation-staged", "spsa"]


def test_a_run_stopped_at_a_lower_step_cap_is_extended_and_a_converged_one_is_not(zo_vs_bp):
    capped = {"status": "finished (max_steps)", "steps": 3000}
    assert zo_vs_bp.needs_training(capped, 6000)
    assert not zo_vs_bp.needs_training(capped, 3000)
    assert not zo_vs_bp.needs_training({"status": "finished (early_stopping)", "steps": 900}, 6000)
    assert zo_vs_bp.needs_training({"status": "running", "steps": 100}, 6000)
    assert zo_vs_bp.needs_training({}, 6000)


def test_the_zo_schedule_and_patience_apply_to_zeroth_order_runs_and_not_to_backprop(zo_vs_bp):
    args = zo_vs_bp.parse(["--zo-schedule", "cosine", "--zo-patience", "400"])
    args.chosen_lr = {}
    emulated = zo_vs_bp.experiment(
        args, "forward-gradient-subset-16-exact-out-emulated", 1e-3, 0, 16000
    )
    backprop = zo_vs_bp.experiment(args, "backprop", 1e-3, 0, None)
    assert (emulated.trainer.optimizer.schedule, emulated.trainer.patience) == ("cosine", 400)
    assert (backprop.trainer.optimizer.schedule, backprop.trainer.patience) == ("plateau", 20)
    assert emulated.trainer.epochs * emulated.trainer.steps_per_epoch == 16000


def test_every_seed_keeps_the_lr_with_its_best_validation(zo_vs_bp, monkeypatch):
    best_lr = {0: 3e-3, 1: 1e-3, 2: 1e-2}  # seed 2 stalls at 3e-3, as measured
    trained: list[tuple] = []

    def fake_train_all(args, jobs):
        trained.extend(jobs)
        return [
            {
                "run": zo_vs_bp.run_name(m, lr, s),
                "lr": lr,
                "seed": s,
                "steps_to_best": 1,
                "best_val": abs(lr - best_lr[s]),
            }
            for m, lr, s, _ in jobs
        ]

    monkeypatch.setattr(zo_vs_bp, "train_all", fake_train_all)
    args = zo_vs_bp.parse(["--seeds", "3", "--lrs", "3"])
    args.chosen_lr = {}
    runs = zo_vs_bp.search_lrs(args, "backprop", 6000)
    assert [r["lr"] for r in runs] == [3e-3, 1e-3, 1e-2]
    assert len(trained) == 9
    assert args.chosen_lr[("backprop", 2)] == 1e-2
    assert zo_vs_bp.lr_label(runs) == "lr 0.003 / 0.001 / 0.01 by seed"

    trained.clear()
    args = zo_vs_bp.parse(["--seeds", "3", "--lrs", "3", "--lr-search", "first-seed"])
    args.chosen_lr = {}
    runs = zo_vs_bp.search_lrs(args, "backprop", 6000)
    assert [r["lr"] for r in runs] == [3e-3, 3e-3, 3e-3] and len(trained) == 5
    assert zo_vs_bp.lr_label(runs) == "lr 0.003"


def _metrics_csv(path: Path, mse: dict[str, float]) -> None:
    """An evaluation's long-form metrics.csv: one variable at one lead time, per run and reference."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "run": name,
            "reference": "model" if not name.startswith("ref:") else name[4:],
            "group": "all",
            "lead_time": 6,
            "variable": "so",
            "mse": value,
        }
        for name, value in mse.items()
    ]
    pd.DataFrame(rows).to_csv(path, index=False)


def test_the_report_is_written_again_from_the_saved_runs_without_training(zo_vs_bp, tmp_path):
    bp = zo_vs_bp.summarise(
        _run(tmp_path / "runs" / "bp", [(1, 100, 0.9), (2, 200, 0.8)], 2, reference_val=1.0),
        "backprop",
        1e-3,
        0,
    )
    zo = zo_vs_bp.summarise(
        _run(tmp_path / "runs" / "zo", [(1, 100, 0.95), (2, 200, 0.97)], 1, reference_val=1.0),
        "spsa",
        1e-4,
        0,
    )
    runs = {"backprop": [bp], "spsa": [zo]}
    (tmp_path / "zo_vs_bp.json").write_text(json.dumps({"runs": runs, "s_bp": 200}))
    _metrics_csv(
        tmp_path / "evaluation" / "metrics.csv",
        {bp["run"]: 0.002, zo["run"]: 0.003, "ref:tide_regressed": 0.0025},
    )
    args = zo_vs_bp.parse(["--out", str(tmp_path), "--report-only", "--no-gradients"])
    text = zo_vs_bp.report_again(args)
    # the baseline's own figures: S_bp, wall-clock and its test MSE, per seed
    assert "| 0 | 0.001 | 200 | 200 | 100 / 100 | finished (early_stopping) | 0.002 |" in text
    assert "| spsa | 0 | 1.50 |" in text  # test MSE over backprop's, same seed
    assert "0.003 loses (-20.0%)" in text and "0.002 beats (+20.0%)" in text
    assert "| spsa | 0.0001 | 0 | 100 |" in text  # its best, from the saved history


def test_trained_only_reports_the_finished_runs_and_names_the_rest(zo_vs_bp, tmp_path):
    runs_dir = tmp_path / "runs"
    _run(runs_dir / zo_vs_bp.run_name("backprop", 1e-3, 0), [(1, 100, 0.8)], 1, reference_val=1.0)
    _run(
        runs_dir / zo_vs_bp.run_name("backprop", 1e-3, 1),
        [(1, 100, 0.9)],
        1,
        reference_val=1.0,
        status="running",  # interrupted: still to train
    )
    args = zo_vs_bp.parse(["--out", str(tmp_path), "--seeds", "3", "--lrs", "1", "--trained-only"])
    args.chosen_lr = {}
    runs = zo_vs_bp.search_lrs(args, "backprop", 6000)
    assert [r["seed"] for r in runs] == [0]
    assert args.not_run == ["backprop-lr0.001-s1", "backprop-lr0.001-s2"]


def test_scores_are_reused_for_runs_whose_best_checkpoint_is_older(zo_vs_bp, tmp_path, monkeypatch):
    import os

    import seacast.evaluation.evaluate as evaluate

    old = _run(tmp_path / "runs" / "old", [(1, 100, 0.8)], 1)
    new = _run(tmp_path / "runs" / "new", [(1, 100, 0.9)], 1)
    for folder in (old, new):
        (folder / "checkpoint_best.pt").write_bytes(b"")
    _metrics_csv(tmp_path / "evaluation" / "metrics.csv", {"old": 0.002, "new": 0.5})
    os.utime(tmp_path / "evaluation" / "metrics.csv", (1e9, 1e9))  # scored in 2001
    os.utime(old / "checkpoint_best.pt", (5e8, 5e8))
    os.utime(new / "checkpoint_best.pt", (1.5e9, 1.5e9))  # trained again after it was scored
    scored: list[list[str]] = []

    class Fresh:
        def __init__(self, run_dirs):
            self.names = [Path(d).name for d in run_dirs]

        def table(self):
            return pd.DataFrame(
                [
                    {"run": n, "reference": "model", "group": "all", "lead_time": 6}
                    | {"variable": "so", "mse": 0.003}
                    for n in self.names
                ]
            )

    def fake_evaluate_runs(run_dirs, **kwargs):
        scored.append([Path(d).name for d in run_dirs])
        return Fresh(run_dirs)

    monkeypatch.setattr(evaluate, "evaluate_runs", fake_evaluate_runs)
    args = zo_vs_bp.parse(["--out", str(tmp_path)])
    runs = [{"run": f.name, "run_dir": str(f), "method": "backprop"} for f in (old, new)]
    cells = zo_vs_bp.mse_cells(zo_vs_bp.score(args, runs))
    assert scored == [["new"]]
    assert cells["old"][("so", 6)] == 0.002 and cells["new"][("so", 6)] == 0.003
    # and the saved scores now hold both, so a second call scores nothing
    zo_vs_bp.score(args, runs)
    assert scored == [["new"]]


def test_with_a_cosine_schedule_zo_runs_are_scored_at_their_last_weights_and_backprop_at_its_best(
    zo_vs_bp, tmp_path, monkeypatch
):
    import os

    import seacast.evaluation.evaluate as evaluate

    bp = _run(tmp_path / "runs" / "bp", [(1, 100, 0.8)], 1)
    zo = _run(tmp_path / "runs" / "zo", [(1, 100, 0.9)], 1)
    for folder in (bp, zo):
        for which in ("best", "last"):
            (folder / f"checkpoint_{which}.pt").write_bytes(b"")
            os.utime(folder / f"checkpoint_{which}.pt", (5e8, 5e8))  # trained in 1985
    # scored before at the best checkpoints, as a plateau protocol scores them
    _metrics_csv(tmp_path / "evaluation" / "metrics.csv", {"bp": 0.002, "zo": 0.5})
    calls: list[tuple[str, list[str]]] = []

    class Fresh:
        def __init__(self, names, mse):
            self.names, self.mse = names, mse

        def table(self):
            return pd.DataFrame(
                [
                    {"run": n, "reference": "model", "group": "all", "lead_time": 6}
                    | {"variable": "so", "mse": self.mse}
                    for n in self.names
                ]
            )

    def fake_evaluate_runs(run_dirs, which="best", **kwargs):
        names = [Path(d).name for d in run_dirs]
        calls.append((which, names))
        return Fresh(names, 0.003 if which == "last" else 0.4)

    monkeypatch.setattr(evaluate, "evaluate_runs", fake_evaluate_runs)
    args = zo_vs_bp.parse(["--out", str(tmp_path), "--zo-schedule", "cosine"])
    assert args.zo_checkpoint == "last"
    runs = [
        {"run": "bp", "run_dir": str(bp), "method": "backprop"},
        {
            "run": "zo",
            "run_dir": str(zo),
            "method": "forward-gradient-subset-256-exact-out-emulated",
        },
    ]
    cells = zo_vs_bp.mse_cells(zo_vs_bp.score(args, runs))
    # backprop's saved best-checkpoint score is reused; the ZO run's is not its last weights'
    assert calls == [("last", ["zo"])]
    assert cells["bp"][("so", 6)] == 0.002 and cells["zo"][("so", 6)] == 0.003
    zo_vs_bp.score(args, runs)
    assert calls == [("last", ["zo"])]
    assert zo_vs_bp.parse(["--zo-schedule", "plateau"]).zo_checkpoint == "best"


def test_an_emulated_method_projects_backprops_gradient_on_its_probes(zo_vs_bp):
    import torch

    from seacast.config import TrainerConfig
    from seacast.training.rules import make_rule

    torch.manual_seed(0)
    net = torch.nn.Linear(30, 1)
    x, target = torch.randn(64, 30), torch.randn(64, 1)

    def loss_fn(prediction, truth):
        return ((prediction - truth) ** 2).mean(1)

    def gradient_after_step() -> tuple[torch.Tensor, float]:
        net.zero_grad(set_to_none=True)
        stats = make_rule("backprop", net, TrainerConfig()).step(net, x, target, loss_fn)
        return torch.cat([p.grad.flatten() for p in net.parameters()]), stats.forwards

    exact, _ = gradient_after_step()
    cosines = {}
    for probes in (1, 4096):
        with zo_vs_bp.projected_backprop(zo_vs_bp.Emulation(probes)):
            estimate, forwards = gradient_after_step()
        cosines[probes] = float(torch.nn.functional.cosine_similarity(estimate, exact, dim=0))
        assert forwards == 3.0 * probes  # forward gradient's cost, not backprop's
    # E[(g.v) v] = g over 31 parameters: one probe is a noisy direction, 4096 nearly the gradient
    assert cosines[4096] > 0.99 > cosines[1]
    restored, _ = gradient_after_step()
    torch.testing.assert_close(restored, exact)  # backprop as it was once the block closes


def two_layer_gradients(zo_vs_bp, emulation):
    """A seeded 30-8-1 net's gradients after one backprop step: as they are, and with the
    backprop rule replaced by ``emulation``'s (layer "2" is the output layer)."""
    import torch

    from seacast.config import TrainerConfig
    from seacast.training.rules import make_rule

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(30, 8), torch.nn.Tanh(), torch.nn.Linear(8, 1))
    x, target = torch.randn(64, 30), torch.randn(64, 1)

    def loss_fn(prediction, truth):
        return ((prediction - truth) ** 2).mean(1)

    def gradients() -> dict[str, torch.Tensor]:
        net.zero_grad(set_to_none=True)
        make_rule("backprop", net, TrainerConfig()).step(net, x, target, loss_fn)
        return {name: p.grad.clone() for name, p in net.named_parameters()}

    exact = gradients()
    with zo_vs_bp.projected_backprop(emulation):
        return exact, gradients()


def test_an_emulated_method_keeps_the_gradient_of_its_exact_layers(zo_vs_bp):
    import torch

    exact, emulated = two_layer_gradients(zo_vs_bp, zo_vs_bp.Emulation(1, exact=("2",)))
    torch.testing.assert_close(emulated["2.weight"], exact["2.weight"])  # the output layer's own
    torch.testing.assert_close(emulated["2.bias"], exact["2.bias"])
    assert not torch.allclose(emulated["0.weight"], exact["0.weight"])  # one probe's estimate


@pytest.mark.parametrize("second_moment", ["tensor", "global"])
def test_a_norm_method_scales_the_exact_gradient_by_one_second_moment_per_group(
    zo_vs_bp, second_moment
):
    import torch

    exact, scaled = two_layer_gradients(zo_vs_bp, zo_vs_bp.Emulation(0, ("2",), second_moment))
    # the first step's bias-corrected second moment is the square itself
    for name in ("2.weight", "2.bias"):  # the exact layer: per coordinate, so +-1
        torch.testing.assert_close(scaled[name], exact[name].sign(), atol=1e-4, rtol=1e-4)
    pooled = torch.cat([exact["0.weight"].flatten(), exact["0.bias"]]).square().mean()
    for name in ("0.weight", "0.bias"):
        scale = exact[name].square().mean() if second_moment == "tensor" else pooled
        torch.testing.assert_close(scaled[name], exact[name] / scale.sqrt(), rtol=1e-4, atol=1e-6)
