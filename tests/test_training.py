"""The shared training loop with backprop: learning, resume, checkpoints, NaN, DDP, CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from typer.testing import CliRunner

from seacast.cli import app
from seacast.config import MODEL_NAMES, TRAINER_NAMES, ExperimentConfig, to_dict
from seacast.errors import SeacastError
from seacast.models import build_model
from seacast.synthetic import synthetic_store
from seacast.training import checkpoint as checkpoint_module
from seacast.training import loop as loop_module
from seacast.training.checkpoint import LAST, load_checkpoint, load_run, save_checkpoint
from seacast.training.distributed import DistInfo
from seacast.training.loop import train, validation_loss
from seacast.training.losses import make_loss
from seacast.windows import Normaliser, make_loader, open_samples

VARIABLES = ["uo", "zos"]
PROJECT_ROOT = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("training") / "store.zarr"
    return synthetic_store(path, shape=(32, 32), hours=24 * 6, variables=VARIABLES, seed=5)


def _config(store: Path, runs: Path, name: str = "run", **trainer) -> ExperimentConfig:
    raw = {
        "name": name,
        "store": str(store),
        "runs_dir": str(runs),
        "seed": 11,
        "samples": {"variables": VARIABLES, "lags": 3, "lead_times": [2]},
        "model": {"name": "3ddr_unet", "filters": 2, "dropout": 0.2, "base": "persistence"},
        "trainer": {
            "batch_size": 4,
            "epochs": 3,
            "steps_per_epoch": 2,
            "max_val_samples": 8,
            "patience": 5,
        }
        | trainer,
    }
    return ExperimentConfig.model_validate(raw)


def test_loss_is_de_normalised_mse_over_sea_points():
    stats = {
        "uo": {"min": 0.0, "max": 9.0, "mean": 0, "std": 1},
        "zos": {"min": -1.0, "max": 1.0, "mean": 0, "std": 1},
    }
    norm = Normaliser.from_stats(stats, VARIABLES, "minmax")
    sea = np.ones((4, 4), dtype=bool)
    sea[0] = False
    target = torch.full((2, 1, 2, 4, 4), 0.5)
    pred = target.clone()
    pred[0, 0, 0] += 0.1  # uo off by 0.1 normalised = 1.0 physical (scale 10), everywhere
    pred[:, :, :, 0] += 7.0  # land rows are not counted
    sea_only = make_loss(norm, sea)(pred, target)
    torch.testing.assert_close(sea_only, torch.tensor([0.5, 0.0]))  # (1.0**2 + 0) / 2 variables
    with_land = make_loss(norm, sea, land_in_loss=True)(pred, target)
    assert (with_land > sea_only).all()


def test_backprop_loss_falls_clearly(store, tmp_path):
    # no persistence start: the untrained model is far off, so learning shows within a few steps
    cfg = _config(store, tmp_path, epochs=2, steps_per_epoch=8, patience=5)
    cfg.model.base = "none"
    cfg.model.dropout = 0.0
    cfg.trainer.optimizer.lr = 2e-2
    result = train(cfg, progress=False)
    sets = open_samples(store, cfg.samples)
    loss_fn = make_loss(sets.normaliser, sets.sea_mask)
    loader = make_loader(sets.validation, 8)
    single = DistInfo(0, 1, 0, torch.device("cpu"))
    untrained = build_model(cfg.model, 2, 2, 3, [2], (32, 32), seed=cfg.seed)
    before = validation_loss(untrained, loader, loss_fn, single)
    trained = load_run(result.run_dir, "best")
    after = validation_loss(trained.model, loader, loss_fn, single)
    assert after < 0.7 * before, (before, after)
    assert trained.config == cfg
    # run folder contract
    for name in (
        "config.yaml",
        "checkpoint_best.pt",
        "checkpoint_last.pt",
        "metrics.csv",
        "meta.json",
    ):
        assert (result.run_dir / name).is_file(), name
    meta = json.loads((result.run_dir / "meta.json").read_text())
    assert meta["store_fingerprint"] == sets.fingerprint
    assert meta["code_version"]["seacast"]
    assert meta["status"].startswith("finished")
    lines = (result.run_dir / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,step,train_loss,val_loss") and len(lines) == 3
    assert yaml.safe_load((result.run_dir / "config.yaml").read_text()) == to_dict(cfg)


def test_resume_gives_the_same_weights(store, tmp_path, monkeypatch):
    whole = train(_config(store, tmp_path, "whole"), progress=False)

    # the same run, killed right after its first epoch's checkpoint, then resumed
    calls = {"n": 0}
    real = loop_module._write_metrics

    def killed_after_first_epoch(path, history):
        real(path, history)
        calls["n"] += 1
        raise KeyboardInterrupt

    monkeypatch.setattr(loop_module, "_write_metrics", killed_after_first_epoch)
    with pytest.raises(KeyboardInterrupt):
        train(_config(store, tmp_path, "resumed"), progress=False)
    monkeypatch.setattr(loop_module, "_write_metrics", real)
    assert load_checkpoint(tmp_path / "resumed" / LAST)["epoch"] == 1
    resumed = train(_config(store, tmp_path, "resumed"), resume=True, progress=False)

    assert resumed.steps == whole.steps == 6
    a = load_checkpoint(whole.run_dir / LAST)
    b = load_checkpoint(resumed.run_dir / LAST)
    for key, value in a["model"].items():
        assert torch.equal(value, b["model"][key]), key
    assert [r["val_loss"] for r in whole.history] == [r["val_loss"] for r in resumed.history]
    assert len((resumed.run_dir / "metrics.csv").read_text().splitlines()) == 4
    # the untrained reference is scored once, before the first epoch; a resume keeps its score
    assert resumed.meta["reference_val"] == whole.meta["reference_val"]


def test_resume_refuses_a_different_model_and_a_finished_run_is_not_overwritten(store, tmp_path):
    cfg = _config(store, tmp_path, epochs=1, steps_per_epoch=1)
    train(cfg, progress=False)
    with pytest.raises(SeacastError, match="already holds a trained run"):
        train(cfg, progress=False)
    other = cfg.model_copy(deep=True)
    other.model.filters = 4
    with pytest.raises(SeacastError, match="model"):
        train(other, resume=True, progress=False)
    with pytest.raises(SeacastError, match="cannot resume"):
        train(_config(store, tmp_path, "never-ran"), resume=True, progress=False)


def test_init_from_starts_a_run_at_another_runs_best_weights(store, tmp_path):
    # no base: the first epoch is always the best, so the staged run starts from trained weights
    first_cfg = _config(store, tmp_path, "first", epochs=1, steps_per_epoch=3)
    first_cfg.model.base = "none"
    first = train(first_cfg, progress=False)
    staged = _config(store, tmp_path, "staged", epochs=1, steps_per_epoch=1)
    staged.model.base = "none"
    staged.trainer.name = "spsa"
    staged.trainer.init_from = first.run_dir
    single = DistInfo(0, 1, 0, torch.device("cpu"))
    session, _ = loop_module.setup(staged, single, resume=False, overwrite=False)
    best = load_checkpoint(first.run_dir / "checkpoint_best.pt")["model"]
    for key, value in session.model.state_dict().items():
        assert torch.equal(value, best[key]), key
    result = train(staged, progress=False)
    assert result.meta["init_from"]["run"] == "first"
    assert result.meta["init_from"]["step"] == 3
    assert result.meta["init_from"]["best_val"] == first.best_val


def test_init_from_refuses_a_run_of_another_model_or_a_missing_one(store, tmp_path):
    first = train(_config(store, tmp_path, "first", epochs=1, steps_per_epoch=1), progress=False)
    wider = _config(store, tmp_path, "wider", epochs=1, steps_per_epoch=1)
    wider.model.filters = 4
    wider.trainer.init_from = first.run_dir
    with pytest.raises(SeacastError, match="init_from.*another model"):
        train(wider, progress=False)
    missing = _config(store, tmp_path, "missing", epochs=1, steps_per_epoch=1)
    missing.trainer.init_from = tmp_path / "never-ran"
    with pytest.raises(SeacastError, match="neither a run folder"):
        train(missing, progress=False)


def test_interrupted_save_never_replaces_the_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint_last.pt"
    save_checkpoint({"epoch": 1, "weights": torch.arange(5.0)}, path)

    def dies_midway(obj, handle, *args, **kwargs):
        handle.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", dies_midway)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"epoch": 2, "weights": torch.zeros(5)}, path)
    monkeypatch.undo()
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and torch.equal(state["weights"], torch.arange(5.0))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_last.pt"]


def test_a_sigterm_during_a_save_stops_once_the_checkpoint_is_in_place(tmp_path, monkeypatch):
    """CI saw a `kill` land inside torch.save: the zip writer's error hid the interrupt."""
    from seacast.interrupts import terminate_as_interrupt

    real = torch.save

    def killed_midway(obj, handle, *args, **kwargs):
        handle.write(b"half")
        os.kill(os.getpid(), signal.SIGTERM)
        handle.seek(0)
        return real(obj, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", killed_midway)
    path = tmp_path / "checkpoint_last.pt"
    with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
        save_checkpoint({"epoch": 2, "weights": torch.arange(5.0)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["epoch"] == 2


def test_run_keeps_the_good_checkpoint_when_a_save_fails(store, tmp_path, monkeypatch):
    real = torch.save
    calls = {"n": 0}

    def fails_in_epoch_two(obj, handle, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # epoch 1 wrote last and best
            handle.write(b"partial")
            raise OSError("killed")
        return real(obj, handle, *args, **kwargs)

    monkeypatch.setattr(checkpoint_module.torch, "save", fails_in_epoch_two)
    cfg = _config(store, tmp_path, epochs=2, steps_per_epoch=1)
    with pytest.raises(OSError, match="killed"):
        train(cfg, progress=False)
    monkeypatch.undo()
    assert load_checkpoint(tmp_path / "run" / LAST)["epoch"] == 1
    assert load_run(tmp_path / "run", "last").epoch == 1


def test_nan_loss_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(
    store, tmp_path, monkeypatch
):
    real_make_loss = loop_module.make_loss

    def make_loss_going_nan(*args, **kwargs):
        loss_fn = real_make_loss(*args, **kwargs)
        seen = {"train": 0}

        def loss(pred, target):
            value = loss_fn(pred, target)
            if pred.requires_grad:  # training steps, not validation
                seen["train"] += 1
                if seen["train"] > 2:
                    return value * float("nan")
            return value

        return loss

    monkeypatch.setattr(loop_module, "make_loss", make_loss_going_nan)
    cfg = _config(store, tmp_path, epochs=3, steps_per_epoch=2)
    with pytest.raises(
        SeacastError, match=r"loss became nan.*checkpoint_last\.pt \(epoch 1\) is kept"
    ) as info:
        train(cfg, progress=False)
    assert "lower trainer.optimizer.lr" in str(info.value)
    state = load_checkpoint(tmp_path / "run" / LAST)
    assert state["epoch"] == 1
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())
    assert "nan" in json.loads((tmp_path / "run" / "meta.json").read_text())["status"]


def test_ctrl_c_records_interrupted_keeps_the_checkpoint_and_resume_finishes(
    store, tmp_path, monkeypatch
):
    real = loop_module.validation_loss
    calls = {"n": 0}

    def ctrl_c_in_epoch_two(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > 2:  # the untrained reference, then epoch 1
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(loop_module, "validation_loss", ctrl_c_in_epoch_two)
    cfg = _config(store, tmp_path, epochs=2, steps_per_epoch=1)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, progress=False)
    monkeypatch.undo()
    meta = json.loads((tmp_path / "run" / "meta.json").read_text())
    assert meta["status"] == "interrupted" and meta["epochs_completed"] == 1
    assert "--resume" in meta["resume"]
    assert train(cfg, resume=True, progress=False).epochs == 2


def test_train_help_lists_models_and_trainers():
    result = CliRunner().invoke(
        app, ["train", "--help"], env={"COLUMNS": "400", "TERMINAL_WIDTH": "400"}
    )
    assert result.exit_code == 0
    for name in (*MODEL_NAMES, *TRAINER_NAMES):
        assert name in result.output, name


def test_cli_train_and_its_errors(store, tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text(
        yaml.safe_dump(
            to_dict(_config(store, tmp_path / "runs", "cfgname", epochs=1, steps_per_epoch=1))
        )
    )
    runner = CliRunner()
    ok = runner.invoke(
        app,
        [
            "train",
            "--config",
            str(path),
            "--name",
            "cli",
            "--no-progress",
            "--model",
            "res_3ddr_unet",
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert load_run(tmp_path / "runs" / "cli").config.model.name == "res_3ddr_unet"
    again = runner.invoke(app, ["train", "--config", str(path), "--name", "cli", "--no-progress"])
    assert again.exit_code == 1 and "--resume" in again.output
    bad = runner.invoke(app, ["train", "--config", str(path), "--trainer", "hebbian"])
    assert bad.exit_code == 2 and "node-perturbation" in bad.output  # a usage error: the choices


@pytest.mark.slow
def test_ddp_two_processes(store, tmp_path):
    cfg = _config(store, tmp_path / "runs", "ddp", epochs=2, steps_per_epoch=2)
    path = tmp_path / "ddp.yaml"
    path.write_text(yaml.safe_dump(to_dict(cfg)))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(PROJECT_ROOT)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
    ]
    command += ["-m", "seacast.cli", "train", "--config", str(path), "--no-progress"]
    # its own process group, so a hung rank is killed with torchrun on timeout
    proc = subprocess.Popen(
        command,
        cwd=PROJECT_ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        _, stderr = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("torchrun with 2 processes did not finish within 120 s")
    assert proc.returncode == 0, stderr[-3000:]
    meta = json.loads((tmp_path / "runs" / "ddp" / "meta.json").read_text())
    assert meta["world_size"] == 2 and meta["status"].startswith("finished")
    state = load_checkpoint(tmp_path / "runs" / "ddp" / LAST)
    assert state["epoch"] == 2 and state["step"] == 4
    assert sorted(p.name for p in (tmp_path / "runs" / "ddp").iterdir()) == sorted(
        ["checkpoint_best.pt", "checkpoint_last.pt", "config.yaml", "meta.json", "metrics.csv"]
    )


def test_warmup_ramps_the_lr_up_then_decays_it_with_the_cosine():
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=1.0)
    schedule = loop_module.step_schedule(optimizer, "cosine", total_steps=10, warmup_steps=4)
    lrs = []
    for _ in range(10):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert lrs[:4] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    assert all(a > b for a, b in zip(lrs[4:], lrs[5:], strict=False))  # then strictly down
    assert lrs[-1] < 0.1


def test_warmup_runs_through_the_loop_and_is_refused_with_a_plateau_schedule(store, tmp_path):
    optimizer = {"name": "adam", "lr": 1e-3, "schedule": "cosine", "warmup_fraction": 0.7}
    result = train(_config(store, tmp_path, "warm", optimizer=optimizer), progress=False)
    lrs = [row["lr"] for row in result.history]  # the lr at the end of each of the 3 epochs
    assert lrs[0] < lrs[1] and lrs[2] < lrs[1]
    with pytest.raises(ValueError, match="warmup_fraction"):
        _config(store, tmp_path, optimizer={**optimizer, "schedule": "plateau"})
