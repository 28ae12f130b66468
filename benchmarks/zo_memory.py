"""Memory and cost of a zeroth-order training step against inference on the same batch.

For each of inference (one forward, no grad), a backprop step, an SPSA step and a node
perturbation step, a fresh subprocess builds the same model and batch and runs the
work; its peak resident set size (ru_maxrss from wait4) is read back, and in the same
process the median time of the work. The promise of zeroth-order training is training
in the memory of inference: the target is a ZO step's peak RSS <= 1.1x inference, and
a step time equal to its number of forwards times the inference time.

Every child imports torch._dynamo first: torch.optim imports it at an optimiser's first
step (about 70 MiB), a fixed cost that would otherwise count against every mode with an
optimiser. Each table is printed twice, with glibc's mmap threshold fixed at 128 KiB (the
peak is then the tensors alive at once) and as a process starts (freed memory may stay in
the heap).

Prints, per mode: peak RSS (MiB, median of the repeats), the ratio to inference, the
peak above a process that only builds the model and batch (what the work itself needs),
the step's median time, its forwards, and time / (forwards x inference time).

    .venv/bin/python benchmarks/zo_memory.py [--shape 64] [--filters 8] [--batch 16] [--repeats 3]
        [--allocator both|fixed|default]
    .venv/bin/python benchmarks/zo_memory.py --experiment configs/experiments/zo_vs_bp.yaml

``--experiment`` measures that experiment's own model, tide-aware start included, on its first
training batch (built once, then loaded by every child).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from zo_vs_bp import TAIL  # noqa: E402  the subset the protocol names

CHILD = r"""
import json, statistics, sys, time
import numpy as np, torch
import torch._dynamo  # noqa: F401  torch.optim imports it at its first step (about 70 MiB): every mode pays it up front
from seacast.config import ModelConfig, TrainerConfig
from seacast.models import build_model
from seacast.training.losses import make_loss
from seacast.training.rules import make_rule
from seacast.windows import Normaliser

mode, shape, filters, lags, batch, name, repeats = sys.argv[1:8]
shape, filters, lags, batch, repeats = int(shape), int(filters), int(lags), int(batch), int(repeats)
torch.set_num_threads(int(sys.argv[8]))
torch.manual_seed(0)
if len(sys.argv) > 10:  # an experiment's model, batch and loss, built once by the parent
    bundle = torch.load(sys.argv[10], weights_only=False)
    model, x, target, loss_fn = bundle["model"], bundle["x"], bundle["y"], bundle["loss_fn"]
    del bundle
    import gc; gc.collect()
    # unpickling peaks above what the model and batch hold: count the peak from here on
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")
else:
    channels, leads = 4, 3
    model = build_model(ModelConfig(name=name, filters=filters, dropout=0.0), channels, channels,
                        lags, leads, (shape, shape), seed=0)
    x = torch.randn(batch, channels, lags, shape, shape)
    target = torch.randn(batch, leads, channels, shape, shape)
    normaliser = Normaliser([f"v{i}" for i in range(channels)], "zscore", np.zeros(channels),
                            np.ones(channels), 0.0)
    sea_mask = np.ones((shape, shape), dtype=bool)
    sea_mask[:, : shape // 8] = False
    loss_fn = make_loss(normaliser, sea_mask)
forwards = 1.0

if mode == "built":
    def work():
        pass
elif mode in ("inference", "inference-train-mode"):
    model.train(mode == "inference-train-mode")  # ZO passes run in train mode (batch statistics)
    def work():
        with torch.no_grad():
            model(x)
elif mode == "backprop":
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    def work():
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), target).mean().backward()
        optimizer.step()
else:
    trainer = json.loads(sys.argv[9])
    cfg = TrainerConfig.model_validate({"name": mode, **trainer})
    rule = make_rule(mode, model, cfg)
    optimizer = None if rule.applies_update else torch.optim.Adam(model.parameters(), lr=1e-3)
    model.train()
    stats = []
    def work():
        if optimizer is not None:
            optimizer.zero_grad(set_to_none=True)
        stats.append(rule.step(model, x, target, loss_fn))
        if optimizer is not None:
            optimizer.step()

times = []
for _ in range(repeats + 1):
    start = time.perf_counter()
    work()
    times.append(time.perf_counter() - start)
if mode not in ("built", "inference", "inference-train-mode", "backprop"):
    forwards = stats[-1].forwards
elif mode == "backprop":
    forwards = float("nan")
hwm = [line for line in open("/proc/self/status") if line.startswith("VmHWM:")]
peak_kib = int(hwm[0].split()[1]) if len(sys.argv) > 10 else None
print(json.dumps({"seconds": statistics.median(times[1:]), "forwards": forwards, "peak_kib": peak_kib}))
"""

RULES = {
    "spsa (1 probe, in-place SGD)": ("spsa", {"spsa": {"probes": 1, "inplace_sgd": True}}),
    "spsa (4 probes, Adam)": ("spsa", {"spsa": {"probes": 4}}),
    "node-perturbation": ("node-perturbation", {}),
    "node-perturbation (4 probes)": ("node-perturbation", {"node_perturbation": {"probes": 4}}),
    # a layer subset: every pass after a step's first reuses the frozen trunk's outputs
    "spsa on the tail (16 probes, Adam)": (
        "spsa",
        {"spsa": {"probes": 16, "only": list(TAIL)}},
    ),
    "node-perturbation on head.out": (
        "node-perturbation",
        {"node_perturbation": {"only": ["head.out"]}},
    ),
    # the noise of the whole batch at once: what slicing saves
    "node-perturbation, unsliced": (
        "node-perturbation",
        {"node_perturbation": {"samples_per_slice": 0}},
    ),
    "node-perturbation (4), unsliced": (
        "node-perturbation",
        {"node_perturbation": {"probes": 4, "samples_per_slice": 0}},
    ),
}


FIXED_MMAP_THRESHOLD = 128 * 1024
ALLOCATORS = {
    "fixed": f"glibc malloc, MALLOC_MMAP_THRESHOLD_={FIXED_MMAP_THRESHOLD}: every tensor over 128 KiB is "
    "mapped and returned when freed, so the peak is the tensors alive at once",
    "default": "glibc malloc as a process starts: freed tensors may stay in the heap, so a process "
    "making more passes shows a higher peak",
}


def peak_of(
    args: argparse.Namespace, mode: str, trainer: dict | None, allocator: str
) -> tuple[float, dict]:
    """Peak RSS (MiB) of a fresh child doing ``mode``, and what it printed."""
    command = [
        sys.executable,
        "-c",
        CHILD,
        mode,
        str(args.shape),
        str(args.filters),
        str(args.lags),
        str(args.batch),
        args.model,
        str(args.timing_repeats),
        str(args.threads),
        json.dumps(trainer or {}),
        *([str(args.bundle)] if args.bundle else []),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
    env.pop("MALLOC_MMAP_THRESHOLD_", None)
    if allocator == "fixed":
        env["MALLOC_MMAP_THRESHOLD_"] = str(FIXED_MMAP_THRESHOLD)
    read, write = os.pipe()
    proc = subprocess.Popen(
        command, stdout=write, stderr=subprocess.DEVNULL, env=env, cwd=ROOT, text=True
    )
    os.close(write)
    with os.fdopen(read) as stream:
        out = stream.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode:
        raise SystemExit(f"{mode} {trainer} failed with exit {proc.returncode}; rerun it by hand")
    printed = json.loads(out.strip().splitlines()[-1])
    # an experiment's child resets its peak after loading the bundle and reports it (VmHWM)
    peak_kib = printed["peak_kib"] if printed.get("peak_kib") else usage.ru_maxrss
    return peak_kib / 1024, printed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--lags", type=int, default=6)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--model", default="3ddr_unet")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes per mode")
    parser.add_argument("--timing-repeats", type=int, default=3, help="timed steps per process")
    parser.add_argument("--allocator", choices=["both", *ALLOCATORS], default="both")
    parser.add_argument(
        "--experiment",
        type=Path,
        default=None,
        help="measure this experiment's model (tide-aware start included) on its first training "
        "batch instead of a random one, e.g. configs/experiments/zo_vs_bp.yaml",
    )
    parser.add_argument(
        "--store", type=Path, default=None, help="another store than the experiment's"
    )
    args = parser.parse_args()
    args.bundle = None
    if args.experiment:
        with tempfile.TemporaryDirectory() as scratch:
            args.bundle = Path(scratch) / "bundle.pt"
            describe = bundle_experiment(args)
            print(describe)
            measure(args, describe)
        return
    measure(args, None)


def bundle_experiment(args: argparse.Namespace) -> str:
    """Save the experiment's model (its tide-aware start applied), first training batch and
    loss to ``args.bundle`` for the children to load; a line describing them."""
    import torch

    from seacast.config import ExperimentConfig, load_config
    from seacast.training.gradcheck import batch_from_experiment

    overrides = [f"store={args.store}"] if args.store else []
    cfg = load_config(ExperimentConfig, args.experiment, overrides)
    cfg = cfg.model_copy(update={"runs_dir": str(args.bundle.parent)})
    model, x, y, loss_fn = batch_from_experiment(cfg, batch_size=args.batch)
    torch.save({"model": model, "x": x, "y": y, "loss_fn": loss_fn}, args.bundle)
    args.lags, args.shape, args.model = cfg.samples.lags, x.shape[-1], cfg.model.name
    args.filters = cfg.model.filters
    return (
        f"{args.experiment}: {cfg.model.name} F={cfg.model.filters} (base {cfg.model.base}, "
        f"{cfg.model.anomaly_base} anomaly), input {tuple(x.shape)}, target {tuple(y.shape)}"
    )


def measure(args: argparse.Namespace, describe: str | None) -> None:

    modes: dict[str, tuple[str, dict | None]] = {
        "model and batch only": ("built", None),
        "inference": ("inference", None),
        "inference, train mode": ("inference-train-mode", None),
        "backprop step": ("backprop", None),
        **{label: rule for label, rule in RULES.items()},
    }
    allocators = list(ALLOCATORS) if args.allocator == "both" else [args.allocator]
    shape = "its first training batch" if describe else "4 variables, 3 lead times"
    print(
        f"{args.model} F={args.filters}, {args.shape}x{args.shape}, lags {args.lags}, {shape}, "
        f"batch {args.batch}, {args.threads} thread(s); medians of {args.repeats} "
        f"fresh processes x {args.timing_repeats} timed steps"
    )
    for allocator in allocators:
        peaks: dict[str, list[float]] = {label: [] for label in modes}
        times: dict[str, list[float]] = {label: [] for label in modes}
        forwards: dict[str, float] = {}
        for _ in range(args.repeats):  # interleaved, so drift hits every mode alike
            for label, (mode, trainer) in modes.items():
                peak, printed = peak_of(args, mode, trainer, allocator)
                peaks[label].append(peak)
                times[label].append(printed["seconds"])
                forwards[label] = printed["forwards"]
        print(f"\n{ALLOCATORS[allocator]}")
        print_table(modes, peaks, times, forwards)


def print_table(
    modes: dict[str, tuple[str, dict | None]],
    peaks: dict[str, list[float]],
    times: dict[str, list[float]],
    forwards: dict[str, float],
) -> None:
    built = statistics.median(peaks["model and batch only"])
    inference = statistics.median(peaks["inference"])
    t_inference = statistics.median(times["inference"])
    print(
        f"{'mode':30s} {'peak MiB':>9s} {'/ inference':>11s} {'above built':>12s} "
        f"{'step s':>8s} {'forwards':>9s} {'s / (fwd x inference)':>22s}"
    )
    for label in modes:
        peak = statistics.median(peaks[label])
        seconds = statistics.median(times[label])
        fwd = forwards[label]
        known = fwd == fwd and label != "model and batch only"  # NaN: backprop has no forward count
        cost = f"{seconds / (fwd * t_inference):.2f}" if known else ""
        print(
            f"{label:30s} {peak:9.1f} {peak / inference:11.3f} {peak - built:12.1f} "
            f"{seconds:8.3f} {f'{fwd:.0f}' if known else '':>9s} {cost:>22s}"
        )


if __name__ == "__main__":
    main()
