"""Zeroth-order rules against backprop on the same data and model, measured side by side.

For backprop and each ZO rule (spsa, node-perturbation, forward-gradient; plus, for
comparison, node-perturbation-near without the first encoder level and
node-perturbation-global with global credit on every layer) it prints:

* cost per step in forward-pass equivalents (the rules' accounting) and measured
  wall-clock per step, plus a plain forward and a jvp timed in forward units;
* peak memory of a training step (RSS high-water mark over the post-setup RSS,
  one subprocess per method, since tracemalloc does not see torch's CPU
  allocations) at ``--memory-size`` x ``--memory-filters`` (64, 8: big enough
  activations to tell the methods apart), with rows for inference, backprop with activation checkpointing
  (``torch.utils.checkpoint``) and MeZO's in-place SGD;
* the cosine of each rule's estimate to the true gradient on a fixed batch, and the
  share of the parameters it updates;
* test MSE (physical units, sea only) per lead time of the checkpoint picked on
  validation, (a) within backprop's forward budget and (b) within the ZO step
  budget (``--zo-step-factor`` x backprop's steps), with its ratio to
  persistence and to backprop, for the mean over seeds and for each seed.

Data: the twin store given by ``--store``; without it a synthetic tidal store
(``seacast.schema.synthetic_store``) is written to a temporary folder, because
the twin/regrid pipeline is a separate stage. Every method gets the same model
(residual start: an untrained model is persistence), the same batches (seeded),
Adam with a linear warm-up (``--warmup``) then a cosine decay, and the same number
of learning rates tried. ``node-perturbation`` uses the node_perturbation section of
``configs/experiments/zo_vs_bp.yaml`` (the same setting as an experiment for
``seacast train``).

Run: ``python benchmarks/zo_vs_bp.py --quick`` (about 12 min on 2 cores) or, the
README's main setting (~21 min with ``--jobs 2``),
``python benchmarks/zo_vs_bp.py --store /tmp/zo/twin.zarr --variables zos uo --lags 3
--filters 4 --bp-steps 300 --zo-step-factor 5 --seeds 3 --lrs 2
--methods backprop node-perturbation --jobs 2``.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from seacast.config import (
    ExperimentConfig,
    ModelConfig,
    SamplesConfig,
    TrainerConfig,
    load_config,
)
from seacast.models import build_model
from seacast.training.gradcheck import gradient_check
from seacast.training.loop import step_schedule
from seacast.training.losses import make_loss
from seacast.training.rules import make_rule
from seacast.training.zeroth_order import directional_derivative, trainable_parameters
from seacast.windows import open_samples

# the layers near the output of seacast's U-Nets, where local credit is nearly exact
NEAR_OUTPUT = ["head", "decoder.3", "up.3"]
# the experiment with the benchmark's setting: its node-perturbation section (near-output layers plus the
# first encoder level, which reaches the output through the skip connection; its credit window covers that)
EXPERIMENT = Path(__file__).resolve().parents[1] / "configs" / "experiments" / "zo_vs_bp.yaml"
SKIP_PATH_SETTING = load_config(ExperimentConfig, EXPERIMENT).trainer.node_perturbation.model_dump()
METHODS: dict[str, dict] = {
    "backprop": {"name": "backprop"},
    "spsa": {"name": "spsa", "spsa": {"probes": 4, "epsilon": 1e-3}},
    # local credit on the layers near the output and the first encoder level (the skip path)
    "node-perturbation": {"name": "node-perturbation", "node_perturbation": SKIP_PATH_SETTING},
    # the ablation: the same without the skip path (session 1's best)
    "node-perturbation-near": {
        "name": "node-perturbation",
        "node_perturbation": {"sigma": 1e-2, "probes": 1, "only": NEAR_OUTPUT},
    },
    # the ablation: every layer, each node credited with its sample's whole loss difference
    "node-perturbation-global": {
        "name": "node-perturbation",
        "node_perturbation": {"sigma": 1e-2, "probes": 1, "credit": "global"},
    },
    "forward-gradient": {"name": "forward-gradient", "forward_gradient": {"probes": 1}},
}
# learning rates tried per method (the same number for each: equal tuning budget)
LR_GRID = {
    "backprop": [3e-3, 1e-2, 1e-3],
    "spsa": [3e-4, 1e-4, 1e-3],
    "node-perturbation": [1e-2, 3e-3, 3e-2],
    "node-perturbation-near": [1e-2, 3e-3, 3e-2],
    "node-perturbation-global": [1e-3, 3e-4, 1e-2],
    "forward-gradient": [3e-4, 1e-4, 1e-3],
}


# --------------------------------------------------------------------------- data


@dataclass
class Data:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    loss_fn: object
    normaliser: object
    sea_mask: np.ndarray
    lead_times: list[int]
    variables: list[str]
    store: str


def stack(dataset, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    n = len(dataset)
    picks = (
        range(n)
        if limit is None or n <= limit
        else np.linspace(0, n - 1, limit).round().astype(int)
    )
    samples = [dataset[int(i)] for i in picks]
    return torch.stack([s["x"] for s in samples]), torch.stack([s["y"] for s in samples])


def load_data(args: argparse.Namespace, workdir: Path) -> Data:
    store = args.store
    if store is None:
        from seacast.schema import synthetic_store

        store = workdir / "synthetic.zarr"
        synthetic_store(
            store,
            shape=(args.size, args.size),
            hours=24 * args.days,
            variables=args.variables,
            seed=0,
        )
    samples = SamplesConfig(variables=args.variables, lags=args.lags, lead_times=args.lead_times)
    sets = open_samples(store, samples)
    x_train, y_train = stack(sets.train)
    x_val, y_val = stack(sets.validation, args.eval_samples)
    x_test, y_test = stack(sets.test, args.eval_samples)
    return Data(
        x_train,
        y_train,
        x_val,
        y_val,
        x_test,
        y_test,
        make_loss(sets.normaliser, sets.sea_mask),
        sets.normaliser,
        sets.sea_mask,
        list(samples.lead_times),
        list(args.variables),
        str(store),
    )


def new_model(args: argparse.Namespace, data: Data, seed: int) -> nn.Module:
    cfg = ModelConfig(
        name=args.model,
        filters=args.filters,
        dropout=0.0,
        base="persistence",
        final_activation="none",
    )
    n = len(data.variables)
    shape = tuple(data.sea_mask.shape)
    return build_model(cfg, n, n, args.lags, data.lead_times, shape, seed=seed)


@torch.no_grad()
def mse_per_lead(
    model: nn.Module | None, data: Data, x: torch.Tensor, y: torch.Tensor
) -> np.ndarray:
    """Physical MSE over sea points, mean over variables, per lead time; model None = persistence."""
    mask = torch.as_tensor(data.sea_mask)
    total = torch.zeros(len(data.lead_times), dtype=torch.float64)
    if model is not None:
        model.eval()
    for start in range(0, len(x), 32):
        xb, yb = x[start : start + 32], y[start : start + 32]
        pred = xb[:, :, -1].unsqueeze(1).expand_as(yb) if model is None else model(xb)
        err = data.normaliser.denormalise(pred, channel_dim=-3) - data.normaliser.denormalise(
            yb, channel_dim=-3
        )
        per = (err.square() * mask).sum(dim=(-2, -1)) / mask.sum()  # [B, lead, C]
        total += per.mean(dim=2).sum(dim=0).double()
    return (total / len(x)).numpy()


# --------------------------------------------------------------------------- training


@dataclass
class Trace:
    method: str
    lr: float
    seed: int
    steps: int = 0
    forwards: float = 0.0
    seconds: float = 0.0
    points: list[tuple[int, float, float]] = field(
        default_factory=list
    )  # (step, forwards, val mse)
    best_within_bp: dict | None = None
    best_val_within_bp: float = math.inf
    best: dict | None = None
    best_val: float = math.inf


def train(
    args, data: Data, method: str, lr: float, seed: int, steps: int, bp_budget: float
) -> Trace:
    torch.manual_seed(seed)
    model = new_model(args, data, seed)
    cfg = TrainerConfig.model_validate({**METHODS[method], "batch_size": args.batch})
    rule = make_rule(cfg.name, model, cfg)
    optimiser = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = step_schedule(optimiser, "cosine", steps, round(args.warmup * steps))
    trace = Trace(method, lr, seed)
    batches = torch.Generator().manual_seed(seed + 1000)
    evaluate_at = set(
        np.unique(np.geomspace(1, steps, args.evals).round().astype(int)).tolist()
    ) | {steps}
    for step in range(1, steps + 1):
        picks = torch.randint(0, len(data.x_train), (args.batch,), generator=batches)
        model.train()
        start = time.perf_counter()
        optimiser.zero_grad(set_to_none=True)
        stats = rule.step(model, data.x_train[picks], data.y_train[picks], data.loss_fn)
        optimiser.step()
        schedule.step()
        trace.seconds += time.perf_counter() - start
        trace.forwards += stats.forwards
        trace.steps = step
        if step in evaluate_at:
            val = float(mse_per_lead(model, data, data.x_val, data.y_val).mean())
            trace.points.append((step, trace.forwards, val))
            if val < trace.best_val:
                trace.best_val, trace.best = val, copy.deepcopy(model.state_dict())
            if trace.forwards <= bp_budget * 1.0001 and val < trace.best_val_within_bp:
                trace.best_val_within_bp, trace.best_within_bp = (
                    val,
                    copy.deepcopy(model.state_dict()),
                )
    return trace


_WORKER: dict = {}


def _init_worker(args: argparse.Namespace) -> None:
    torch.set_num_threads(args.threads)
    _WORKER["args"], _WORKER["data"] = args, load_data(args, Path(tempfile.gettempdir()))


def _train_job(job: tuple) -> Trace:
    return train(_WORKER["args"], _WORKER["data"], *job)


def train_all(args, data: Data, jobs: list[tuple]) -> list[Trace]:
    """``train(args, data, *job)`` for each job, ``--jobs`` at a time (one process each, same data)."""
    if args.jobs <= 1:
        return [train(args, data, *job) for job in jobs]
    worker_args = copy.copy(args)
    worker_args.store = Path(data.store)  # the synthetic store main wrote, not a fresh one each
    context = multiprocessing.get_context("spawn")  # fork after torch's thread pools start can hang
    with ProcessPoolExecutor(
        args.jobs, mp_context=context, initializer=_init_worker, initargs=(worker_args,)
    ) as pool:
        # longest first, so the last runs to finish are short ones
        order = sorted(range(len(jobs)), key=lambda i: -jobs[i][3])
        futures = {i: pool.submit(_train_job, jobs[i]) for i in order}
        return [futures[i].result() for i in range(len(jobs))]


def test_mse(args, data: Data, state: dict | None, seed: int) -> np.ndarray:
    if state is None:
        return mse_per_lead(None, data, data.x_test, data.y_test)
    model = new_model(args, data, seed)
    model.load_state_dict(state)
    return mse_per_lead(model, data, data.x_test, data.y_test)


# --------------------------------------------------------------------------- timing and memory


def forward_units(args, data: Data) -> dict[str, float]:
    """Median wall-clock of a forward, a jvp and a backprop step, in forward units."""
    model = new_model(args, data, 0)
    for p in model.parameters():  # a non-zero head, so no path is trivially skipped
        if not p.abs().sum():
            nn.init.normal_(p, std=1e-3)
    x, y = data.x_train[: args.batch], data.y_train[: args.batch]
    tangents = {n: torch.randn_like(p) for n, p in trainable_parameters(model)}

    def forward() -> None:
        with torch.no_grad():
            data.loss_fn(model(x), y).mean()

    def jvp() -> None:
        with torch.no_grad():
            directional_derivative(model, x, y, data.loss_fn, tangents)

    def backprop() -> None:
        model.zero_grad(set_to_none=True)
        data.loss_fn(model(x), y).mean().backward()

    timings = {}
    for name, fn in (("forward", forward), ("jvp", jvp), ("backprop", backprop)):
        fn()
        runs = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            fn()
            runs.append(time.perf_counter() - start)
        timings[name] = float(np.median(runs))
    return {
        "forward_s": timings["forward"],
        **{k: v / timings["forward"] for k, v in timings.items()},
    }


def checkpointed(model: nn.Module) -> nn.Module:
    """Wrap each stage (ModuleList elements and other top-level children) in activation checkpointing."""
    from torch.utils.checkpoint import checkpoint

    stages = []
    for child in model.children():
        stages.extend(child if isinstance(child, nn.ModuleList) else [child])
    for stage in stages:
        if any(True for _ in stage.parameters()):
            inner = stage.forward
            stage.forward = lambda *a, _f=inner: checkpoint(_f, *a, use_reentrant=False)  # type: ignore[method-assign]
    return model


def _rss_kib(field_name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field_name):
            return int(line.split()[1])
    return -1


def memory_probe(args) -> None:
    """(subprocess) Peak RSS of a few steps of one method over the post-setup RSS; prints JSON."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    n = len(args.variables)
    cfg = ModelConfig(name=args.model, filters=args.filters, dropout=0.0)
    model = build_model(cfg, n, n, args.lags, args.lead_times, (args.size, args.size), seed=0)
    x = torch.randn(args.batch, n, args.lags, args.size, args.size)
    y = torch.randn(args.batch, len(args.lead_times), n, args.size, args.size)

    def cells(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return (pred - target).square() / pred[0].numel()

    def loss_fn(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cells(pred, target).flatten(1).sum(1)

    loss_fn.elementwise = cells  # type: ignore[attr-defined]  # node perturbation's local credit

    method = args.memory_probe
    optimiser = None
    if method == "inference":
        run = lambda: model(x)  # noqa: E731
    else:
        key = "backprop" if method == "backprop+checkpoint" else method.removesuffix("+inplace")
        sections = copy.deepcopy(METHODS[key])
        base = sections["name"]
        if method.endswith("+inplace"):
            sections["spsa"]["inplace_sgd"] = True
        if method == "backprop+checkpoint":
            checkpointed(model)
        rule = make_rule(base, model, TrainerConfig.model_validate(sections))
        if not rule.applies_update:
            optimiser = torch.optim.Adam(model.parameters(), lr=1e-4)

        def run() -> None:
            model.train()
            rule.step(model, x, y, loss_fn)
            if optimiser is not None:
                optimiser.step()  # Adam's state is part of the memory a training step keeps

    with torch.no_grad() if method == "inference" else torch.enable_grad():
        baseline = _rss_kib("VmRSS:")
        Path("/proc/self/clear_refs").write_text("5")  # reset the high-water mark
        for _ in range(3):
            run()
        peak = _rss_kib("VmHWM:")
    print(
        json.dumps(
            {
                "method": method,
                "peak_over_setup_mib": (peak - baseline) / 1024,
                "peak_mib": peak / 1024,
            }
        )
    )


def measure_memory(args, method: str) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--memory-probe",
        method,
        "--model",
        args.model,
        "--filters",
        str(args.memory_filters),
    ]
    cmd += [
        "--size",
        str(args.memory_size),
        "--lags",
        str(args.lags),
        "--batch",
        str(args.batch),
        "--threads",
        str(args.threads),
    ]
    cmd += ["--variables", *args.variables, "--lead-times", *map(str, args.lead_times)]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        return {"method": method, "error": done.stderr.strip().splitlines()[-1:]}
    return json.loads(done.stdout.strip().splitlines()[-1])


# --------------------------------------------------------------------------- main


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--store", type=Path, help="Twin (or any) store; a synthetic tidal store if omitted."
    )
    parser.add_argument(
        "--quick", action="store_true", help="Small run: 32x32, few steps, one lr per method."
    )
    parser.add_argument("--size", type=int, default=64, help="Grid size of the synthetic store.")
    parser.add_argument("--days", type=int, default=30, help="Days in the synthetic store.")
    parser.add_argument("--variables", nargs="+", default=["zos", "uo"])
    parser.add_argument("--lags", type=int, default=3)
    parser.add_argument("--lead-times", type=int, nargs="+", default=[1, 6, 12])
    parser.add_argument("--model", default="3ddr_unet")
    parser.add_argument("--filters", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--bp-steps", type=int, default=300)
    parser.add_argument(
        "--zo-step-factor", type=float, default=100.0, help="ZO steps = factor x backprop steps."
    )
    parser.add_argument("--methods", nargs="+", default=list(METHODS))
    parser.add_argument(
        "--warmup",
        type=float,
        default=0.1,
        help="Linear lr warm-up over this fraction of each run's steps (then cosine), every method.",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--lrs", type=int, default=2, help="Learning rates tried per method (from LR_GRID)."
    )
    parser.add_argument(
        "--evals", type=int, default=12, help="Validation points per run (log-spaced)."
    )
    parser.add_argument("--eval-samples", type=int, default=64)
    parser.add_argument(
        "--probes", type=int, default=16, help="Probes for the gradient-cosine check."
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the CPU is shared).")
    parser.add_argument(
        "--jobs", type=int, default=1, help="Training runs at a time (processes of --threads each)."
    )
    parser.add_argument(
        "--memory-size",
        type=int,
        default=64,
        help="Grid of the peak-memory probe (activations must be big enough to tell methods apart).",
    )
    parser.add_argument("--memory-filters", type=int, default=8, help="F of the peak-memory probe.")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.days, args.bp_steps, args.zo_step_factor = 32, 20, 60, 10.0
        args.seeds, args.lrs, args.evals, args.repeats, args.eval_samples = 1, 1, 8, 3, 48
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.memory_probe:
        memory_probe(args)
        return
    torch.set_num_threads(args.threads)
    print(
        f"zo_vs_bp: CPU, {args.threads} torch thread(s), {os.cpu_count()} cores SHARED with other jobs: "
        f"wall-clock figures are noisy; ratios measured side by side in one run."
    )
    with tempfile.TemporaryDirectory() as tmp:
        data = load_data(args, Path(tmp))
        source = (
            "given store"
            if args.store
            else "synthetic tidal store (seacast.schema.synthetic_store)"
        )
        print(
            f"data: {source} {data.store}; grid {data.sea_mask.shape}, vars {data.variables}, lags {args.lags}, "
            f"lead times {data.lead_times} h; train/val/test samples {len(data.x_train)}/{len(data.x_val)}/{len(data.x_test)}"
        )
        probe_model = new_model(args, data, 0)
        n_params = sum(p.numel() for p in probe_model.parameters() if p.requires_grad)
        print(
            f"model: {args.model} F={args.filters} efficient, residual start, {n_params:,} parameters; batch {args.batch}"
        )

        units = forward_units(args, data)
        print(
            f"\ntimed (median of {args.repeats}): forward {units['forward_s'] * 1e3:.1f} ms; "
            f"jvp {units['jvp']:.2f} forwards; backprop step {units['backprop']:.2f} forwards"
        )

        print(
            f"\npeak memory of a step at {args.memory_size}x{args.memory_size}, F={args.memory_filters}, "
            f"batch {args.batch} (RSS high-water mark over post-setup RSS, one subprocess each):"
        )
        for method in ["inference", *args.methods, "backprop+checkpoint", "spsa+inplace"]:
            print(f"  {method:22s} {measure_memory(args, method)}")

        # gradient cosine at a trained-ish point would flatter no one: use the initial model with a small
        # random head (an exactly-zero head makes every upstream gradient zero)
        cos_model = new_model(args, data, 0)
        for p in cos_model.parameters():
            if not p.abs().sum():
                nn.init.normal_(p, std=1e-2)
        base = TrainerConfig.model_validate(
            {
                "spsa": METHODS["spsa"]["spsa"],
                "node_perturbation": METHODS["node-perturbation"]["node_perturbation"],
            }
        )
        rows = gradient_check(
            cos_model,
            data.x_train[: args.batch],
            data.y_train[: args.batch],
            data.loss_fn,
            probes=args.probes,
            cfg=base,
        )
        print(f"\ngradient cosine to backprop on a fixed batch ({args.probes} probes each):")
        for row in rows:
            print(
                f"  {row.rule:18s} cosine {row.cosine:+.3f}  cost {row.forwards:g} forwards  |est|/|g| {row.norm_ratio:.3g}"
                f"  covers {row.coverage:.0%} of the parameters"
            )

        persistence = test_mse(args, data, None, 0)
        bp_budget = args.bp_steps * 3.0
        zo_steps = int(args.bp_steps * args.zo_step_factor)
        jobs = [
            (method, lr, seed, args.bp_steps if method == "backprop" else zo_steps, bp_budget)
            for method in args.methods
            for lr in LR_GRID[method][: args.lrs]
            for seed in range(args.seeds)
        ]
        print(f"\ntraining {len(jobs)} runs, {args.jobs} at a time:")
        done = iter(train_all(args, data, jobs))
        results: dict[str, list[Trace]] = {}
        for method in args.methods:
            steps = args.bp_steps if method == "backprop" else zo_steps
            traces = []
            for lr in LR_GRID[method][: args.lrs]:
                runs = [next(done) for _ in range(args.seeds)]
                traces.append(runs)
                vals = [r.best_val for r in runs]
                print(
                    f"  trained {method:24s} lr {lr:.0e}: best val MSE {np.mean(vals):.4g} "
                    f"(seeds {', '.join(f'{v:.4g}' for v in vals)}; {steps} steps, "
                    f"{np.mean([r.seconds for r in runs]):.0f} s/run)"
                )
            # pick the lr on validation (mean over seeds)
            results[method] = min(
                traces, key=lambda runs: float(np.mean([r.best_val for r in runs]))
            )

        bp_test = (
            np.mean([test_mse(args, data, r.best, r.seed) for r in results["backprop"]], axis=0)
            if "backprop" in results
            else None
        )
        leads = ", ".join(f"{h}h" for h in data.lead_times)
        print(
            f"\ntest MSE (physical units, sea, mean over vars) per lead time [{leads}], checkpoint picked on validation,"
            f" mean over {args.seeds} seed(s); persistence = {np.array2string(persistence, precision=4)}"
        )
        header = f"{'method':24s} {'lr':>6s} {'fwd/step':>8s} {'s/step':>7s} {'budget':>10s} {'test MSE per lead':>30s} {'/persist.':>18s} {'/BP':>18s}"
        print(header)
        for method, runs in results.items():
            per_step = runs[0].forwards / max(1, runs[0].steps)
            sec = np.mean([r.seconds / max(1, r.steps) for r in runs])
            budgets = (
                [("BP fwd", "best_within_bp")] if method != "backprop" else [("BP fwd", "best")]
            )
            if method != "backprop":
                budgets.append((f"{runs[0].steps} st", "best"))
            for label, key in budgets:
                mse = np.mean([test_mse(args, data, getattr(r, key), r.seed) for r in runs], axis=0)
                vs_p = mse / persistence
                vs_bp = mse / bp_test if bp_test is not None else np.full_like(mse, np.nan)
                fmt = lambda a: np.array2string(a, precision=3, separator=",")  # noqa: E731
                print(
                    f"{method:24s} {runs[0].lr:6.0e} {per_step:8.2f} {sec:7.3f} {label:>10s} {fmt(mse):>30s} {fmt(vs_p):>18s} {fmt(vs_bp):>18s}"
                )
        print(
            "\nper seed, at the lr picked (test MSE / persistence per lead; best checkpoint on validation):"
        )
        for method, runs in results.items():
            for r in runs:
                ratio = test_mse(args, data, r.best, r.seed) / persistence
                print(
                    f"  {method:24s} seed {r.seed}: {np.array2string(ratio, precision=3, separator=',')}"
                    f"  (best val {r.best_val:.4g})"
                )
        print(
            "\nZO steps budget = "
            f"{args.zo_step_factor:g} x BP's {args.bp_steps} steps; 'BP fwd' = within backprop's {bp_budget:g} forward equivalents."
        )


if __name__ == "__main__":
    main()
