"""A damaged checkpoint_last.pt under `train --resume`: the suggested fix is one that works."""

from __future__ import annotations

import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from seacast.cli import app
from seacast.synthetic import synthetic_store


@pytest.fixture(scope="module")
def tiny_experiment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume")
    store = synthetic_store(root / "s.zarr", shape=(16, 16), hours=24 * 6, variables=("zos",))
    config = root / "x.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "name": "x",
                "store": str(store),
                "runs_dir": str(root / "runs"),
                "samples": {"variables": ["zos"], "lags": 2, "lead_times": [1]},
                "model": {"name": "3ddr_unet", "filters": 2, "base": "persistence"},
                "trainer": {
                    "batch_size": 2,
                    "epochs": 2,
                    "steps_per_epoch": 1,
                    "max_val_samples": 2,
                    "preload_gb": 0.1,
                },
            }
        )
    )
    return config


def train(config: Path, *extra: str) -> object:
    result = CliRunner().invoke(app, ["train", "--config", str(config), "--no-progress", *extra])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])


def test_truncated_last_checkpoint_suggests_a_fix_that_resumes(tiny_experiment: Path) -> None:
    assert train(tiny_experiment, "--overwrite").exit_code == 0
    run = tiny_experiment.parent / "runs" / "x"
    truncate(run / "checkpoint_last.pt")
    result = train(tiny_experiment, "--resume")
    assert result.exit_code == 1
    assert "damaged or truncated" in result.output
    fix = result.output.split("Fix:")[1]
    assert "--resume" in fix and "checkpoint_best.pt" in fix
    # do exactly what it says: the cp, then --resume
    cp = shlex.split(re.search(r"cp (\S+ \S+)", fix).group(1).rstrip(","))
    shutil.copy(cp[0], cp[1])
    resumed = train(tiny_experiment, "--resume")
    assert resumed.exit_code == 0, resumed.output


def test_without_a_best_checkpoint_the_fix_is_to_start_again(tiny_experiment: Path) -> None:
    assert train(tiny_experiment, "--overwrite").exit_code == 0
    run = tiny_experiment.parent / "runs" / "x"
    (run / "checkpoint_best.pt").unlink()
    truncate(run / "checkpoint_last.pt")
    result = train(tiny_experiment, "--resume")
    assert result.exit_code == 1
    fix = result.output.split("Fix:")[1]
    assert "--overwrite" in fix and "cp " not in fix
    assert train(tiny_experiment, "--overwrite").exit_code == 0


def test_sigterm_marks_a_training_run_interrupted_and_resume_continues_it(
    tiny_experiment: Path,
) -> None:
    """`kill` (systemd stop, a scheduler's timeout) is handled as Ctrl-C, not as a silent death
    that left meta.json saying "running"."""
    import json
    import os
    import signal
    import subprocess
    import sys
    import time

    long_run = ["--set", "trainer.epochs=10000", "--set", "trainer.patience=10000"]
    run = tiny_experiment.parent / "runs" / "x"
    shutil.rmtree(run, ignore_errors=True)  # the other tests' run: wait for this one's checkpoint
    process = subprocess.Popen(
        [sys.executable, "-m", "seacast", "train", "--config", str(tiny_experiment)]
        + ["--no-progress", "--overwrite", *long_run],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and process.poll() is None:
            meta = run / "meta.json"
            started = (run / "checkpoint_last.pt").is_file() and meta.is_file()
            if started and json.loads(meta.read_text()).get("epochs_completed", 0) >= 1:
                break
            time.sleep(0.1)
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr, stderr
    assert [line for line in stderr.splitlines() if line.startswith("interrupted:")], stderr
    assert json.loads((run / "meta.json").read_text())["status"] == "interrupted"
    resumed = train(tiny_experiment, "--resume", "--set", "trainer.epochs=3")
    assert resumed.exit_code == 0, resumed.output
    assert json.loads((run / "meta.json").read_text())["status"].startswith("finished")
