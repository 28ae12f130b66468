"""Speed of the four 3DDR U-Nets on CPU, faithful vs efficient mode, and the CPU settings that pay.

Prints, for each variant at 128x128, F=16, lags 10, batch 4 (one lead time, 4 variables):
parameters; forward and training-step samples/s in faithful and efficient mode and their
ratio; the achieved GFLOP/s of a training step (FLOPs counted with
torch.utils.flop_counter.FlopCounterMode) as a fraction of the machine's matmul GFLOP/s,
measured with a large torch.mm in the same run.

The matmul peak is the median of several 4096x4096 ``torch.mm`` calls on all threads,
checked against the CPU's theoretical float32 figure (cores x FLOP/cycle x clock).

Before the table it measures CPU settings on one variant (threads, memory format,
no_grad vs inference_mode, torch.compile) and runs the table with the fastest correct
ones. The speed-up against the model code before the speed work (``--baseline``, a git
revision run from a temporary worktree in the same run) follows each variant, and
``--profile`` adds a per-layer table (time, GFLOP/s, share of the step) of each variant.
FLOPs are counted on the model as built: faithful mode no longer computes the kernel
slices that only meet zero padding, so its count is below the reference's.

Figures are medians of repeats; the CPU may be shared with other jobs, so compare
ratios within one run rather than absolute numbers across runs.

Usage: .venv/bin/python benchmarks/models.py [--quick] [--no-compile] [--profile]
       [--baseline REV|none] [--models NAME ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from seacast.config import MODEL_NAMES, ModelConfig
from seacast.models import build_model, count_parameters

SHAPE = (128, 128)
LAGS = 10
CHANNELS = 4
FILTERS = 16
THREADS_MAX = torch.get_num_threads()
# the model code before the speed work (channels-last, 2D paths for flat kernels and lone time steps)
BASELINE = "e0b0259"
COMPILE_MIN_GAIN = 0.9
BOOST = 1.45  # boost / nominal clock (EPYC 2.45 -> 3.5 GHz): 2 AVX2 cores top out near 225 GFLOP/s  # torch.compile is used only if it takes < 90% of the best eager time


def median_seconds(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def interleaved_seconds(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median seconds of each function, timed round-robin so that load from other jobs hits all alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {label: [] for label in fns}
    for _ in range(repeats):
        for label, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[label].append(time.perf_counter() - start)
    return {label: statistics.median(values) for label, values in times.items()}


def theoretical_gflops(threads: int) -> tuple[float | None, str]:
    """Cores x float32 FLOP per cycle x clock, from /proc/cpuinfo (None where it is unreadable).

    AVX-512: 2 FMA units x 16 lanes x 2; AVX2 + FMA: 2 x 8 x 2 = 32; AVX only: 16.
    """
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return None, "no /proc/cpuinfo"
    flags = set(re.search(r"^flags\s*:(.*)$", info, re.M).group(1).split())
    per_cycle = 64 if "avx512f" in flags else 32 if {"avx2", "fma"} <= flags else 16
    clocks = [float(m) for m in re.findall(r"^cpu MHz\s*:\s*([\d.]+)", info, re.M)]
    if not clocks:
        return None, "no clock in /proc/cpuinfo"
    ghz = max(clocks) / 1e3
    cores = min(threads, len(clocks))
    return cores * per_cycle * ghz, f"{cores} cores x {per_cycle} FLOP/cycle x {ghz:.2f} GHz"


def matmul_gflops(size: int, repeats: int) -> float:
    """The median of ``repeats`` large float32 ``torch.mm`` calls on all threads: the practical peak.

    A median, not the best: one short call can look faster than the CPU allows (a timer
    or frequency glitch once showed 397 GFLOP/s on 2 AVX2 cores, whose ceiling is ~160).
    The figure is checked against the theoretical one for this CPU; above it, it is a
    measuring error and the theoretical figure is used instead.
    """
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.mm(a, b)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        times.append(time.perf_counter() - start)
    measured = 2 * size**3 / statistics.median(times) / 1e9
    nominal, how = theoretical_gflops(torch.get_num_threads())
    if nominal is not None:
        # /proc/cpuinfo gives the nominal clock; boost runs up to ~1.45x it on these EPYCs
        print(
            f"  theoretical float32 peak at the nominal clock: {nominal:.0f} GFLOP/s ({how}), "
            f"~{BOOST * nominal:.0f} at boost; measured {measured:.1f}"
        )
        if measured > BOOST * nominal:
            print("  the measured figure is above what the CPU can do: using the boost figure")
            return BOOST * nominal
    return measured


def make(name: str, faithful: bool) -> nn.Module:
    cfg = ModelConfig(name=name, filters=FILTERS, faithful=faithful, base="none")
    return build_model(cfg, CHANNELS, CHANNELS, LAGS, 1, SHAPE, seed=0)


def channels_last(model: nn.Module) -> nn.Module:
    """5D weights to channels_last_3d, 4D (efficient decoder) to channels_last."""
    for param in model.parameters():
        if param.dim() == 5:
            param.data = param.data.contiguous(memory_format=torch.channels_last_3d)
        elif param.dim() == 4:
            param.data = param.data.contiguous(memory_format=torch.channels_last)
    return model


class Setup:
    """One way to run a model: memory format, grad mode for forwards, compiled or not."""

    def __init__(
        self, label: str, *, last: bool = False, inference: bool = True, compiled: bool = False
    ):
        self.label, self.last, self.inference, self.compiled = label, last, inference, compiled

    def prepare(self, model: nn.Module, x: torch.Tensor) -> tuple[nn.Module, torch.Tensor]:
        if self.last:
            model = channels_last(model)
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if self.compiled:
            model = torch.compile(model)
        return model, x

    def grad_mode(self) -> AbstractContextManager:
        return torch.inference_mode() if self.inference else torch.no_grad()


def forward_fn(model: nn.Module, x: torch.Tensor, setup: Setup) -> Callable[[], object]:
    model.eval()

    def run() -> object:
        with setup.grad_mode():
            return model(x)

    return run


def train_fn(model: nn.Module, x: torch.Tensor) -> Callable[[], object]:
    model.train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    target = torch.rand(x.shape[0], 1, CHANNELS, *SHAPE)

    def run() -> object:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.mse_loss(model(x), target)
        loss.backward()
        optimizer.step()
        return loss

    return run


def train_flops(name: str, faithful: bool, batch: int) -> int:
    model = make(name, faithful)
    x = torch.rand(batch, CHANNELS, LAGS, *SHAPE)
    with FlopCounterMode(display=False) as counter:
        model(x).square().mean().backward()
    return counter.get_total_flops()


def step_rates(models: list[str], batch: int, repeats: int) -> dict[str, list[float]]:
    """``{"name mode": [forward samples/s, train samples/s]}`` for the seacast on the path."""
    x0 = torch.rand(batch, CHANNELS, LAGS, *SHAPE)
    rates = {}
    for name in models:
        for faithful in (True, False):
            mode = "faithful" if faithful else "efficient"
            runs = {
                "forward": forward_fn(make(name, faithful), x0, Setup("")),
                "train": train_fn(make(name, faithful), x0),
            }
            seconds = interleaved_seconds(runs, repeats)
            rates[f"{name} {mode}"] = [batch / seconds["forward"], batch / seconds["train"]]
    return rates


def baseline_rates(
    rev: str, models: list[str], batch: int, repeats: int
) -> dict[str, list[float]] | None:
    """:func:`step_rates` of the model code at git revision ``rev``, from a temporary worktree."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "baseline"
        made = subprocess.run(
            ["git", "-C", str(root), "worktree", "add", "--detach", str(tree), rev],
            capture_output=True,
            text=True,
        )
        if made.returncode:
            print(f"  no baseline: git worktree add {rev} failed ({made.stderr.strip()})")
            return None
        try:
            args = [sys.executable, __file__, "--rates-json", "--batch", str(batch)]
            args += ["--repeats", str(repeats), "--models", *models]
            env = {**os.environ, "PYTHONPATH": str(tree)}  # its seacast before the installed one
            done = subprocess.run(args, env=env, capture_output=True, text=True, check=True)
            return json.loads(done.stdout.strip().splitlines()[-1])
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(tree)])


def conv_profile(name: str, faithful: bool, batch: int, repeats: int, peak: float) -> None:
    """Per conv layer of one training step: time (forward + backward), GFLOP and GFLOP/s.

    Each distinct conv (kernel, channels, input shape) is timed alone on its real input
    shape, so the table shows which layers keep the step below the matmul peak. A layer alone
    can beat the step's large matmul (its data stay in cache, the clock boosts); the 3- and
    1-tap kernels on 16-32 channels are memory-bound: a few FLOPs per byte moved.
    """
    model = make(name, faithful).train()
    shapes: dict[nn.Module, tuple[int, ...]] = {}

    def record(module: nn.Module, args: tuple, out: torch.Tensor) -> None:
        shapes.setdefault(module, tuple(args[0].shape))

    hooks = [
        module.register_forward_hook(record)
        for module in model.modules()
        if isinstance(module, nn.Conv2d | nn.Conv3d)
    ]
    model(torch.rand(batch, CHANNELS, LAGS, *SHAPE))
    for hook in hooks:
        hook.remove()
    layers: dict[tuple, list] = {}
    for module, shape in shapes.items():
        key = (tuple(module.weight.shape), shape)
        layers.setdefault(key, [module, 0])[1] += 1
    rows = []
    for (weight_shape, shape), (module, count) in layers.items():
        x = torch.rand(shape).contiguous(memory_format=channels_last_format(shape))
        x.requires_grad_(True)

        def run(module: nn.Module = module, x: torch.Tensor = x) -> None:
            module(x).sum().backward()

        with FlopCounterMode(display=False) as counter:
            run()
        seconds = interleaved_seconds({"layer": run}, repeats)["layer"]
        rows.append(
            (seconds * count, counter.get_total_flops() * count, weight_shape, shape, count)
        )
    total = sum(r[0] for r in rows)
    mode = "faithful" if faithful else "efficient"
    print(f"\nconv layers of {name} ({mode}), forward + backward, batch {batch}:")
    print(
        f"{'weight':<22}{'input':<26}{'n':>3}{'ms':>8}{'share':>7}{'GFLOP':>8}{'GFLOP/s':>9}{'of peak':>9}"
    )
    for seconds, flops, weight_shape, shape, count in sorted(rows, reverse=True)[:12]:
        rate = flops / seconds / 1e9
        print(
            f"{str(list(weight_shape)):<22}{str(list(shape)):<26}{count:>3}{seconds * 1e3:>8.1f}"
            f"{seconds / total:>7.1%}{flops / 1e9:>8.2f}{rate:>9.1f}{rate / peak:>9.1%}"
        )


def channels_last_format(shape: tuple[int, ...]) -> torch.memory_format:
    return {5: torch.channels_last_3d, 4: torch.channels_last}.get(
        len(shape), torch.contiguous_format
    )


def study_settings(batch: int, repeats: int, try_compile: bool) -> Setup:
    """Time forward and training step of the cheapest variant under each setting; return the best."""
    name = "3ddr_unet"
    x0 = torch.rand(batch, CHANNELS, LAGS, *SHAPE)
    print(f"\nCPU settings, {name} efficient, batch {batch} (median of {repeats}):")

    threads_max = THREADS_MAX
    thread_fns = {}
    for threads in sorted({1, threads_max}):
        model = make(name, False)
        run = forward_fn(model, x0, Setup(""))

        def with_threads(run: Callable[[], object] = run, threads: int = threads) -> object:
            torch.set_num_threads(threads)
            return run()

        thread_fns[str(threads)] = with_threads
    thread_times = interleaved_seconds(thread_fns, repeats)
    for threads, seconds in thread_times.items():
        print(
            f"  threads={threads:<2}                           forward {batch / seconds:6.2f} samples/s"
        )
    best_threads = int(min(thread_times, key=thread_times.__getitem__))
    torch.set_num_threads(best_threads)

    reference = make(name, False).eval()
    with torch.inference_mode():
        expected = reference(x0)
    candidates = [
        Setup("no_grad, contiguous", inference=False),
        Setup("inference_mode, contiguous"),
        Setup("inference_mode, channels_last_3d", last=True),
    ]
    if try_compile:
        candidates.append(Setup("inference_mode, torch.compile", compiled=True))
    runs: dict[str, Callable[[], object]] = {}
    by_label = {}
    for setup in candidates:
        model, x = setup.prepare(make(name, False), x0)
        run = forward_fn(model, x, setup)
        start = time.perf_counter()
        got = run()
        first = time.perf_counter() - start
        correct = torch.allclose(got, expected, rtol=1e-3, atol=1e-4)
        if setup.compiled:
            print(f"  torch.compile: first call {first:.1f} s, correct={correct}")
        if correct:
            runs[setup.label], by_label[setup.label] = run, setup
    forward_times = interleaved_seconds(runs, repeats)
    for label, seconds in forward_times.items():
        print(f"  {label:<34} forward {batch / seconds:6.2f} samples/s")

    train_runs = {}
    for last in (False, True):
        model, x = Setup("", last=last).prepare(make(name, False), x0)
        train_runs["channels_last_3d" if last else "contiguous"] = train_fn(model, x)
    train_times = interleaved_seconds(train_runs, repeats)
    for label, seconds in train_times.items():
        print(f"  train step, {label:<22} {batch / seconds:6.2f} samples/s")
    best_train = min(train_times, key=train_times.__getitem__)
    eager = {label: t for label, t in forward_times.items() if not by_label[label].compiled}
    best_label = min(eager, key=eager.__getitem__)
    compiled = [label for label in forward_times if by_label[label].compiled]
    # compiling costs about a minute per model here; take it only for a clear gain
    if compiled and forward_times[compiled[0]] < COMPILE_MIN_GAIN * eager[best_label]:
        best_label = compiled[0]
    chosen = by_label[best_label]
    chosen.train_last = best_train == "channels_last_3d"  # type: ignore[attr-defined]
    print(f"  -> forward: {chosen.label}; training: {best_train}; threads={best_threads}")
    return chosen


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    parser.add_argument("--no-compile", action="store_true", help="skip the torch.compile trial")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--models", nargs="+", default=list(MODEL_NAMES), choices=MODEL_NAMES)
    parser.add_argument(
        "--baseline",
        default=BASELINE,
        help="git revision whose model code the speed-up is measured against ('none' to skip)",
    )
    parser.add_argument("--profile", action="store_true", help="per-layer table of each variant")
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--rates-json", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    repeats = args.repeats or (3 if args.quick else 7)
    batch = args.batch
    torch.manual_seed(0)
    if args.rates_json:  # the baseline's worker: rates only, as one JSON line
        print(json.dumps(step_rates(args.models, batch, repeats)))
        return
    baseline = None
    if args.baseline != "none":
        print(f"baseline: the model code at {args.baseline}, measured first in a worktree")
        baseline = baseline_rates(args.baseline, args.models, batch, repeats)

    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads; the CPU may be shared with other jobs"
    )
    size = 4096  # 2048 understates the peak by ~15 % here
    peak = matmul_gflops(size, 7)
    print(
        f"matmul peak (median torch.mm {size}x{size}, float32, {torch.get_num_threads()} threads): {peak:.1f} GFLOP/s"
    )

    setup = study_settings(batch, repeats, try_compile=not args.no_compile)
    train_setup = Setup("", last=setup.train_last)  # type: ignore[attr-defined]

    x0 = torch.rand(batch, CHANNELS, LAGS, *SHAPE)
    rows = []
    for name in args.models:
        runs: dict[str, Callable[[], object]] = {}
        info = {}
        for faithful in (True, False):
            mode = "faithful" if faithful else "efficient"
            model = make(name, faithful)
            info[mode] = (count_parameters(model)[0], train_flops(name, faithful, batch))
            fmodel, x = setup.prepare(model, x0)
            runs[f"forward {mode}"] = forward_fn(fmodel, x, setup)
            tmodel, x = train_setup.prepare(make(name, faithful), x0)
            runs[f"train {mode}"] = train_fn(tmodel, x)
        seconds = interleaved_seconds(runs, repeats)
        rows.append((name, info, seconds))
        print(f"  measured {name}", flush=True)

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS_MAX)
    peak_end = matmul_gflops(size, 7)
    torch.set_num_threads(threads)
    peak = statistics.median([peak, peak_end])
    print(
        f"matmul peak again at the end: {peak_end:.1f} GFLOP/s; using their mean, {peak:.1f} GFLOP/s\n"
        f"\nbatch {batch}, {SHAPE[0]}x{SHAPE[1]}, F={FILTERS}, lags {LAGS}, median of {repeats}, "
        f"{threads} threads:"
    )
    print(
        f"{'model':<31}{'mode':<10}{'params':>10}{'fwd/s':>8}{'train/s':>9}"
        f"{'GFLOP/step':>11}{'GFLOP/s':>9}{'of peak':>9}"
    )
    for name, info, seconds in rows:
        speeds = {}
        for mode, (params, flops) in info.items():
            forward = batch / seconds[f"forward {mode}"]
            step = seconds[f"train {mode}"]
            achieved = flops / step / 1e9
            speeds[mode] = (forward, batch / step)
            print(
                f"{name:<31}{mode:<10}{params:>10}{forward:>8.2f}{batch / step:>9.2f}"
                f"{flops / 1e9:>11.1f}{achieved:>9.1f}{achieved / peak:>9.1%}"
            )
        fwd_ratio = speeds["efficient"][0] / speeds["faithful"][0]
        train_ratio = speeds["efficient"][1] / speeds["faithful"][1]
        print(f"{'':<31}{'eff/faith':<10}{'':>10}{fwd_ratio:>7.2f}x{train_ratio:>8.2f}x")
        if baseline is not None:
            for mode, (forward, train) in speeds.items():
                old_forward, old_train = baseline[f"{name} {mode}"]
                print(
                    f"{'':<31}{'vs ' + args.baseline[:7]:<10}{mode:>10}{forward / old_forward:>7.2f}x"
                    f"{train / old_train:>8.2f}x   (baseline {old_forward:.2f} / {old_train:.2f} samples/s)"
                )
    if args.profile:
        for name in args.models:
            conv_profile(name, True, batch, max(3, repeats // 2), peak)


if __name__ == "__main__":
    main()
