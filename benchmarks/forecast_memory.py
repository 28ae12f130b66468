"""Peak memory of `seacast forecast` with and without `--adapt zo`, and of one backprop step.

Each measurement runs in a fresh subprocess; its peak resident set size (ru_maxrss from
wait4) is read back. Both ZO adaptations should need no more memory than plain inference:
``--adapt-target gain`` (two forwards a sample of the window, read block by block) and
``network`` (spsa rule, in-place SGD, batch of one); a backprop step on the same sample is shown for
comparison, each adaptation also with glibc's mmap threshold left to slide (``seacast forecast``
fixes it for an adaptation: ``seacast.forecast.adaptation.fix_mmap_threshold``), and a process making two inference passes (the allocator's steady state: on CPU
the second pass of a process raises its peak RSS, so a one-pass forecast is the lowest bar).
Prints medians of the repeats and the ratios.

    .venv/bin/python benchmarks/forecast_memory.py [--shape 64] [--filters 8] [--lags 10] [--repeats 3]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SEACAST = [sys.executable, "-m", "seacast"]

SETUP = """
import sys, torch
from pathlib import Path
from seacast.config import ExperimentConfig
from seacast.synthetic import synthetic_store
from seacast.training.loop import train
torch.set_num_threads(1)
root, shape, filters, lags, model = Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
store = synthetic_store(root / "store.zarr", shape=(shape, shape), hours=24 * 28)
cfg = ExperimentConfig.model_validate({
    "name": "bench", "store": str(store), "runs_dir": str(root / "runs"),
    "samples": {"lags": lags, "lead_times": [1, 6, 12]},
    "model": {"name": model, "filters": filters, "base": "persistence"},  # gain adaptation needs a base
    "trainer": {"batch_size": 1, "epochs": 1, "max_steps": 1, "steps_per_epoch": 1},
})
result = train(cfg, progress=False)
print(result.meta["parameters"])
"""

TWO_PASSES = """
import sys, torch
from seacast.training.checkpoint import load_run
from seacast.windows import open_samples
torch.set_num_threads(1)
run = load_run(sys.argv[1])
sets = open_samples(run.config.store, run.config.samples)
item = sets.test[len(sets.test) - 1]
run.model.eval()
with torch.no_grad():
    for _ in range(2):
        run.model(item["x"][None])
"""

BACKPROP_STEP = """
import sys, torch, numpy as np
from seacast.training.checkpoint import load_run
from seacast.training.losses import make_loss
from seacast.windows import open_samples
torch.set_num_threads(1)
run = load_run(sys.argv[1])
sets = open_samples(run.config.store, run.config.samples)
item = sets.test[len(sets.test) - 1]
loss_fn = make_loss(run.normaliser, sets.sea_mask)
run.model.train()
loss = loss_fn(run.model(item["x"][None]), item["y"][None]).mean()
loss.backward()
"""


# `seacast forecast` with glibc's mmap threshold left to slide (what the adaptation fixes)
SLIDING_THRESHOLD = """
import runpy, sys
import seacast.forecast.driver as driver
driver.fix_mmap_threshold = lambda *args: False
sys.argv = ["seacast", *sys.argv[1:]]
runpy.run_module("seacast", run_name="__main__")
"""


def peak_mb(command: list[str], env: dict[str, str]) -> float:
    """Peak RSS (MiB) of a child process, from the kernel's rusage of that child."""
    proc = subprocess.Popen(
        command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT
    )
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode not in (0,):
        raise SystemExit(
            f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}"
        )
    return usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--lags", type=int, default=10)
    parser.add_argument("--model", default="res_3ddr_unet")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--adapt-steps", type=int, default=10)
    args = parser.parse_args()

    # the parent stays small (no torch): a forked child's peak RSS starts from the parent's
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        setup = [
            sys.executable,
            "-c",
            SETUP,
            str(root),
            str(args.shape),
            str(args.filters),
            str(args.lags),
            args.model,
        ]
        params = int(
            subprocess.run(
                setup, check=True, capture_output=True, text=True, cwd=ROOT, env=env
            ).stdout.split()[-1]
        )
        run_dir = root / "runs" / "bench"
        plain = SEACAST + ["forecast", "--run", str(run_dir), "--out", str(root / "fc"), "--force"]
        adapted = plain + ["--adapt", "zo", "--adapt-target", "network", "--adapt-hours", "48"]
        adapted += ["--adapt-steps", str(args.adapt_steps)]
        gain = plain + ["--adapt", "zo", "--adapt-target", "gain", "--adapt-hours", "336"]
        backprop = [sys.executable, "-c", BACKPROP_STEP, str(run_dir)]
        two_passes = [sys.executable, "-c", TWO_PASSES, str(run_dir)]
        commands = {
            "inference": plain,
            "adapt zo, gain": gain,
            "  threshold sliding": [sys.executable, "-c", SLIDING_THRESHOLD, *gain[3:]],
            "adapt zo, network": adapted,
            "  threshold sliding ": [sys.executable, "-c", SLIDING_THRESHOLD, *adapted[3:]],
            "2 inference passes": two_passes,
            "one backprop step": backprop,
        }
        results: dict[str, list[float]] = {name: [] for name in commands}
        seconds: dict[str, list[float]] = {name: [] for name in commands}
        for _ in range(args.repeats):
            for name, command in commands.items():
                started = time.perf_counter()
                results[name].append(peak_mb(command, env))
                seconds[name].append(time.perf_counter() - started)
    print(
        f"grid {args.shape}x{args.shape}, {args.model} F={args.filters}, lags {args.lags}, 3 lead times, "
        f"{params} parameters; peak RSS of a fresh process, median of {args.repeats}"
    )
    base = statistics.median(results["inference"])
    for name, values in results.items():
        median = statistics.median(values)
        print(
            f"  {name:20s} {median:8.1f} MiB   x{median / base:.3f} of inference   (runs: {', '.join(f'{v:.0f}' for v in values)})"
            f"   {statistics.median(seconds[name]):5.1f} s a process"
        )


if __name__ == "__main__":
    main()
