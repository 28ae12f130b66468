"""Zeroth-order rules against a converged backprop, all through the product's training loop.

The protocol (issue 16). Every run is ``seacast.training.loop.train`` on one experiment
(``configs/experiments/zo_vs_bp.yaml``: the demo store, 64x64, four variables, lead
times 6/12/24 h, a tide-aware 3ddr_unet) with only the rule, learning rate, seed and
step budget changed, and every score is ``seacast evaluate``'s on the whole test split.

1. **Converged backprop.** Each learning rate of backprop's grid on every seed, trained
   until validation has not improved for ``patience`` epochs (ReduceLROnPlateau halves the
   lr on the way); each seed keeps its lr with the best validation (``--lr-search
   first-seed``: search seed 0 only and rerun its best lr on the others). ``S_bp`` is the
   median over seeds of the steps to the best validation.
2. **Each ZO rule** from the same initialisation (same seed, same tide start), with its
   own grid of the same size searched the same way, each run with a budget of
   ``min(step_factor x S_bp, zo_max_steps)`` steps and the same patience.
3. **Scores.** Test MSE per variable and lead time of each run's best checkpoint (a ZO run's
   last with ``--zo-checkpoint last``, the default under ``--zo-schedule cosine``, whose lr
   reaches 0 at the budget's end; and each seed's backprop on its own), its ratio to
   backprop's (same seed), and the strongest reference of each cell (persistence, climatology, the tide, the tide + persisted, damped
   and regressed anomaly), on the test split and, with ``--held-out``, on another twin year. At equal steps, equal forwards
   and equal wall-clock (backprop's at its best epoch), the best validation loss each run
   had reached by then, against backprop's, and the share of backprop's validation gain over
   the untrained start (the strongest reference itself: loss ratios alone hide how little a
   run learned). Per rule: steps and forwards used, wall-clock,
   the share of parameters it updates and its gradient cosine on one batch
   (``seacast gradcheck``'s function), at initialisation and at backprop's best weights.

Runs go to ``--out``/runs and are reused when the benchmark is started again (a finished
run is read back, an interrupted one resumed, one stopped at a lower step cap extended), so
the protocol can be run in pieces; each run's scores are kept in --out/evaluation* and reused
while the checkpoint scored is older than them. ``--trained-only`` trains nothing: it scores and
reports the runs already finished and names those still to train.
Memory is measured by ``benchmarks/zo_memory.py``. ``--report-only`` writes the tables of a
finished ``--out`` again.

    .venv/bin/python benchmarks/zo_vs_bp.py --out /tmp/zo_vs_bp [--quick] [--jobs 2]
        [--methods backprop node-perturbation ...] [--seeds 3] [--lrs 3]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import statistics
import sys
import time
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENT = ROOT / "configs" / "experiments" / "zo_vs_bp.yaml"

# the full-resolution layers after encoder.0 (also benchmarks/zo_memory.py's and zo_reuse.py's)
TAIL = ("head", "decoder.3", "up.3", "reducers.0")
TAIL_BIAS = ("head.out", *(f"{name}*.bias" for name in TAIL))
# rule overrides on top of the experiment; node perturbation's own section is the experiment's
METHODS: dict[str, dict[str, Any]] = {
    "backprop": {"name": "backprop"},
    # backprop on node perturbation's layer subset only: what the frozen layers cost
    "backprop-subset": {"name": "backprop"},
    "spsa": {"name": "spsa", "spsa": {"probes": 1}},  # MeZO's one probe: 2 forwards a step
    "node-perturbation": {"name": "node-perturbation"},  # the layer subset of the experiment
    "node-perturbation-all": {"name": "node-perturbation", "node_perturbation": {"only": []}},
    "forward-gradient": {"name": "forward-gradient"},
    # the output layer alone, where node perturbation's per-channel credit is exact; and backprop
    # on the same layer, for what freezing the rest costs
    "node-perturbation-out": {
        "name": "node-perturbation",
        "node_perturbation": {"only": ["head.out"]},
    },
    "backprop-out": {"name": "backprop", "backprop": {"only": ["head.out"]}},
    # the full-resolution tail after encoder.0 (node perturbation's subset less encoder.0): every
    # pass of a zeroth-order step on it after the first reuses the frozen trunk (about a tenth of a pass)
    "backprop-tail": {"name": "backprop", "backprop": {"only": list(TAIL)}},
    "spsa-tail": {"name": "spsa", "spsa": {"probes": 16, "only": list(TAIL)}},
    # the output layer and the tail's biases, where the gradient's mass lies (benchmarks/README.md)
    "backprop-tail-bias": {"name": "backprop", "backprop": {"only": list(TAIL_BIAS)}},
    # spsa on them from node-perturbation-out's best checkpoint, where the tail's biases hold most
    # of the gradient (STAGED)
    "spsa-tail-bias-staged": {"name": "spsa", "spsa": {"probes": 16, "only": list(TAIL_BIAS)}},
    # the whole head (its hidden conv and the 1x1 out): how much a second layer buys
    "backprop-head": {"name": "backprop", "backprop": {"only": ["head"]}},
    # the subset at a tenth of the noise, where the estimate of the head layers is unbiased once
    # head.out is trained (benchmarks/np_layer_cosine.py); from the seeded start, and staged:
    # from node-perturbation-out's best checkpoint of the same seed (STAGED)
    "node-perturbation-fine": {"name": "node-perturbation", "node_perturbation": {"sigma": 1e-3}},
    "node-perturbation-staged": {"name": "node-perturbation", "node_perturbation": {"sigma": 1e-3}},
    # the same with 16 antithetic pairs a step, where the head layers' cosine is 0.5-0.9
    "node-perturbation-staged-16": {
        "name": "node-perturbation",
        "node_perturbation": {"sigma": 1e-3, "probes": 16},
    },
    # staged, on the layers whose estimate np_layer_cosine.py finds good at sigma 1e-3 only (the head,
    # up.3, decoder.3's block; not reducers.0 or decoder.3.conv, whose 16-probe cosine is negative)
    "node-perturbation-staged-good": {
        "name": "node-perturbation",
        "node_perturbation": {
            "sigma": 1e-3,
            "probes": 4,
            "only": ["head", "up.3", "decoder.3.block"],
        },
    },
    # forward gradient on node perturbation's subset with the output layer's exact delta rule
    # (forward_gradient.output_layer): the real rule the "-exact-out-emulated" methods below emulate
    "forward-gradient-subset-16-exact-out": {
        "name": "forward-gradient",
        "forward_gradient": {"probes": 16, "output_layer": "head.out"},
    },
}
# an emulated method trains with backprop's exact gradient g on the subset, replaced before the
# optimiser sees it by (1/K) sum_k (g.v_k) v_k over K standard Gaussian v_k: the estimate forward
# gradient makes with K probes (the same distribution; spsa's, as its epsilon goes to 0) at one
# backprop's cost per step. Its forwards count forward gradient's (3 per probe); its wall-clock is
# backprop's, not the rule's. They measure how many steps the unbiased forward-only estimate needs
# on node perturbation's subset, where backprop meets target 2. The "-exact-out" ones keep g on
# head.out: the output layer's gradient needs only its input and the loss's derivative by the
# output (a delta rule), which a forward-only rule has; only the layers before it are estimated.
# The "-norm" ones are diagnoses, not estimates: backprop's exact gradient on the subset, with
# Adam's per-coordinate second moment replaced by one per tensor or one for all the estimated
# layers, which is all a noise-dominated estimate leaves Adam (its E[g_i^2] is ~|g|^2/K for
# every i); they tell the preconditioner's part of the gap from the noise's.


@dataclass(frozen=True)
class Emulation:
    probes: int  # 0: the exact gradient, no projection
    exact: tuple[str, ...] = ()  # layers that keep backprop's gradient
    # the second moment that scales the update of the layers not in `exact`: Adam's own
    # per-coordinate one, or one scalar per tensor / over all of them (the exact layers keep
    # a per-coordinate one); these run SGD with momentum 0.9 at lr / 10, Adam's first moment
    second_moment: Literal["adam", "tensor", "global"] = "adam"


EMULATED: dict[str, Emulation] = {
    **{f"forward-gradient-subset-{k}-emulated": Emulation(k) for k in (1, 4, 16, 64, 256)},
    **{
        f"forward-gradient-subset-{k}-exact-out-emulated": Emulation(k, ("head.out",))
        for k in (16, 64, 256)
    },
    "backprop-subset-tensor-norm": Emulation(0, ("head.out",), "tensor"),
    "backprop-subset-global-norm": Emulation(0, ("head.out",), "global"),
}
METHODS.update({method: {"name": "backprop"} for method in EMULATED})
# a staged method starts from the best checkpoint of another method's run (same seed, its chosen
# lr): trainer.init_from. Its steps, forwards and wall-clock count that run's whole budget too.
STAGED: dict[str, str] = {
    "node-perturbation-staged": "node-perturbation-out",
    "node-perturbation-staged-16": "node-perturbation-out",
    "node-perturbation-staged-good": "node-perturbation-out",
    "spsa-tail-bias-staged": "node-perturbation-out",
}
# learning rates tried per method, in the order tried (the same number for each: equal tuning);
# backprop's measured best first, so --lrs 1 gives it (at patience 20, 3e-3 stopped at validation
# 0.00078-0.00085 on seeds 0-2 and 1e-3 reached 0.00058 on seed 0: benchmarks/README.md)
LR_GRID: dict[str, list[float]] = {
    "backprop": [1e-3, 3e-3, 1e-2],
    "backprop-subset": [3e-3, 1e-3, 1e-2],
    "spsa": [1e-4, 3e-5, 3e-4],
    "node-perturbation": [1e-2, 3e-3, 3e-2],
    "node-perturbation-all": [1e-2, 3e-3, 3e-2],
    "forward-gradient": [1e-4, 3e-5, 3e-4],
    "node-perturbation-out": [1e-2, 3e-3, 3e-2],
    "backprop-out": [3e-3, 1e-3, 1e-2],
    "backprop-tail": [3e-3, 1e-3, 1e-2],
    "spsa-tail": [1e-3, 3e-4, 3e-3],
    "backprop-tail-bias": [3e-3, 1e-3, 1e-2],
    "spsa-tail-bias-staged": [1e-3, 3e-4, 3e-3],
    "backprop-head": [3e-3, 1e-3, 1e-2],
    "node-perturbation-fine": [1e-2, 3e-3, 3e-2],
    "node-perturbation-staged": [1e-2, 3e-3, 3e-2],
    "node-perturbation-staged-16": [1e-2, 3e-3, 3e-2],
    "node-perturbation-staged-good": [3e-3, 1e-3, 1e-2],
    "forward-gradient-subset-16-exact-out": [1e-3, 3e-4, 3e-3],  # the emulation's best first
    **{method: [1e-3, 3e-4, 3e-3] for method in EMULATED},
}


def run_name(method: str, lr: float, seed: int) -> str:
    return f"{method}-lr{lr:g}-s{seed}"


def is_zeroth_order(method: str) -> bool:
    """Whether a method is a ZO rule (or its emulation), which --zo-* flags apply to; backprop
    and backprop on a layer subset keep the protocol's own settings."""
    return not method.startswith("backprop")


def checkpoint_of(args: argparse.Namespace, method: str) -> str:
    """The checkpoint a run is scored at: a ZO run's --zo-checkpoint, backprop's best."""
    return args.zo_checkpoint if is_zeroth_order(method) else "best"


def experiment(args: argparse.Namespace, method: str, lr: float, seed: int, max_steps: int | None):
    """The experiment of one run: the benchmark's config with this rule, lr, seed and budget."""
    from seacast.config import ExperimentConfig, load_config, to_dict

    base = to_dict(load_config(ExperimentConfig, EXPERIMENT, args.overrides))
    base["name"] = run_name(method, lr, seed)
    base["runs_dir"] = str(args.out / "runs")
    base["seed"] = seed
    if args.store:
        base["store"] = str(args.store)
    trainer = base["trainer"]
    for key, value in METHODS[method].items():
        if isinstance(value, dict):
            trainer[key] = {**trainer.get(key, {}), **value}
        else:
            trainer[key] = value
    if method == "backprop-subset" or method in EMULATED:
        trainer["backprop"] = {"only": trainer["node_perturbation"]["only"]}
    if method == "forward-gradient-subset-16-exact-out":
        trainer["forward_gradient"]["only"] = trainer["node_perturbation"]["only"]
    if method in STAGED:
        first = STAGED[method]
        first_lr = args.chosen_lr[(first, seed)]
        trainer["init_from"] = str(args.out / "runs" / run_name(first, first_lr, seed))
    trainer["optimizer"]["lr"] = lr
    emulation = EMULATED.get(method)
    if emulation is not None and emulation.second_moment != "adam":
        trainer["optimizer"].update(name="sgd", momentum=0.9, lr=lr / 10)
    zeroth_order = is_zeroth_order(method)
    trainer["patience"] = args.zo_patience if zeroth_order else args.patience
    if zeroth_order and args.zo_schedule is not None:
        trainer["optimizer"]["schedule"] = args.zo_schedule
    trainer["max_steps"] = max_steps
    steps = max_steps or args.bp_max_steps
    trainer["epochs"] = math.ceil(steps / trainer["steps_per_epoch"])
    if args.quick:
        trainer["max_val_samples"] = 128
    return ExperimentConfig.model_validate(base)


def _train_one(
    job: tuple[argparse.Namespace, str, float, int, int | None],
) -> dict[str, Any] | None:
    """Train (or resume, or read back) one run in this worker process; its summary (None for
    a run still to train under ``--trained-only``)."""
    args, method, lr, seed, max_steps = job
    import torch

    from seacast.training.loop import train

    torch.set_num_threads(args.threads)
    cfg = experiment(args, method, lr, seed, max_steps)
    run_dir = Path(cfg.runs_dir) / cfg.name
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    if needs_training(meta, cfg.trainer.max_steps):
        if args.trained_only:
            return None
        resume = (run_dir / "checkpoint_last.pt").is_file()
        started = time.perf_counter()
        listening = signal.signal(signal.SIGINT, signal.default_int_handler)
        try:
            with projected_backprop(EMULATED.get(method)):
                train(cfg, resume=resume, progress=False, overwrite=not resume)
        finally:
            signal.signal(signal.SIGINT, listening)
        print(
            f"  trained {cfg.name} in {time.perf_counter() - started:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    return summarise(run_dir, method, lr, seed)


ADAM_BETA2 = 0.999


@contextmanager
def projected_backprop(emulation: Emulation | None) -> Iterator[None]:
    """While open, the ``backprop`` rule hands the optimiser forward gradient's estimate of its
    gradient with ``emulation.probes`` probes (EMULATED; 0: the gradient itself), except on the
    layers named in ``emulation.exact``, which keep the gradient, scaled by the second moment
    ``emulation.second_moment`` says; with None, backprop as it is."""
    import torch

    from seacast.training import backprop, rules
    from seacast.training.rules import StepStats
    from seacast.training.zeroth_order.common import JVP_FORWARD_COST, draw_seed, generator_for
    from seacast.training.zeroth_order.credit import longest_prefix

    if emulation is None:
        yield
        return

    class ProjectedBackprop(backprop.Backprop):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # not checkpointed: a resumed "-norm" diagnosis starts its second moments again
            self.second_moments: dict[str, Any] = {}
            self.steps = 0

        def step(self, model, x, target, loss_fn):  # noqa: ANN001, ANN202 (the rule's signature)
            stats = super().step(model, x, target, loss_fn)
            named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
            named = [(n, p) for n, p in named if p.grad is not None]
            estimated = [
                (n, p) for n, p in named if longest_prefix(n, list(emulation.exact)) is None
            ]
            if emulation.probes:
                gradient = torch.cat([p.grad.reshape(-1) for _, p in estimated])
                gen = generator_for(gradient.device, draw_seed())
                directions = torch.randn(
                    emulation.probes, gradient.numel(), generator=gen, dtype=gradient.dtype
                )
                estimate = directions.T @ (directions @ gradient) / emulation.probes
                pieces = estimate.split([p.numel() for _, p in estimated])
                for (_, p), piece in zip(estimated, pieces, strict=True):
                    p.grad.copy_(piece.view_as(p))
            if emulation.second_moment != "adam":
                self.normalise(named, estimated)
            forwards = JVP_FORWARD_COST * emulation.probes if emulation.probes else stats.forwards
            return StepStats(loss=stats.loss, forwards=forwards)

        def normalise(self, named, estimated) -> None:  # noqa: ANN001 (lists of (name, param))
            """g / sqrt(v), v Adam's bias-corrected second moment (beta2 0.999): per coordinate
            on the exact layers; per tensor, or one over all of them, on the estimated ones."""
            self.steps += 1
            names = {n for n, _ in estimated}
            groups = [(n, p.grad.square(), [p]) for n, p in named if n not in names]
            if emulation.second_moment == "tensor":
                groups += [(n, p.grad.square().mean(), [p]) for n, p in estimated]
            else:
                pooled = torch.cat([p.grad.reshape(-1) for _, p in estimated]).square().mean()
                groups.append(("estimated", pooled, [p for _, p in estimated]))
            correction = 1 - ADAM_BETA2**self.steps
            for key, square, params in groups:
                moment = self.second_moments.get(key, 0.0) * ADAM_BETA2 + square * (1 - ADAM_BETA2)
                self.second_moments[key] = moment
                for p in params:
                    p.grad.div_((moment / correction).sqrt() + 1e-8)

    saved = rules._RULES["backprop"]
    rules._RULES["backprop"] = ProjectedBackprop
    try:
        yield
    finally:
        rules._RULES["backprop"] = saved


def needs_training(meta: dict[str, Any], max_steps: int | None) -> bool:
    """Whether a run folder's meta says the run is to be trained (or resumed) for this budget:
    not finished, or stopped at a step cap lower than this one (a longer budget extends it)."""
    status = str(meta.get("status", ""))
    if not status.startswith("finished"):
        return True
    capped = status == "finished (max_steps)"
    return capped and max_steps is not None and int(meta.get("steps", 0)) < max_steps


def summarise(run_dir: Path, method: str, lr: float, seed: int) -> dict[str, Any]:
    """A finished run's budget and validation curve, from its meta.json and metrics.csv."""
    import pandas as pd

    meta = json.loads((run_dir / "meta.json").read_text())
    history = pd.read_csv(run_dir / "metrics.csv")
    best_epoch = int(meta["best_epoch"])
    at_best = history[history["epoch"] == best_epoch]
    row = at_best.iloc[0] if len(at_best) else None
    summary = {
        "run": run_dir.name,
        "run_dir": str(run_dir),
        "method": method,
        "lr": lr,
        "seed": seed,
        "best_val": float(meta["best_val"]),
        "reference_val": meta.get("reference_val"),
        "best_epoch": best_epoch,
        "steps_to_best": int(row["step"]) if row is not None else 0,
        "forwards_to_best": float(row["forwards"]) if row is not None else 0.0,
        "wall_to_best": float(row["wall_seconds"]) if row is not None else 0.0,
        "steps": int(meta["steps"]),
        "forwards": float(meta["forwards"]),
        "wall": float(meta["timings"]["train_seconds"]),
        "stopped": meta["status"],
        "history": history[["step", "forwards", "wall_seconds", "val_loss"]].to_dict("list"),
    }
    if meta.get("init_from"):
        summary = _after_first_stage(summary, Path(meta["init_from"]["checkpoint"]).parent)
    return summary


def _after_first_stage(second: dict[str, Any], first_dir: Path) -> dict[str, Any]:
    """A staged run's summary on the whole budget: the first stage's run (all of it, patience
    included), then this one; its gains count from the first stage's untrained start."""
    first = summarise(first_dir, "first stage", math.nan, second["seed"])
    used = {"step": first["steps"], "forwards": first["forwards"], "wall_seconds": first["wall"]}
    history = {
        key: first["history"][key] + [v + used.get(key, 0) for v in second["history"][key]]
        for key in first["history"]
    }
    combined = {
        **second,
        "reference_val": first["reference_val"],
        "steps": second["steps"] + first["steps"],
        "forwards": second["forwards"] + first["forwards"],
        "wall": second["wall"] + first["wall"],
        "history": history,
    }
    if second["best_epoch"] == 0:  # the second stage never improved on its start
        for key in ("steps_to_best", "forwards_to_best", "wall_to_best"):
            combined[key] = first[key]
    else:
        combined["steps_to_best"] += first["steps"]
        combined["forwards_to_best"] += first["forwards"]
        combined["wall_to_best"] += first["wall"]
    return combined


def train_all(args: argparse.Namespace, jobs: list[tuple]) -> list[dict[str, Any]]:
    """The summaries of the jobs' runs, trained where needed; under ``--trained-only`` the
    runs still to train are left out and listed in ``args.not_run``."""
    if args.jobs == 1 or args.trained_only:
        summaries = [_train_one((args, *job)) for job in jobs]
    else:
        with ProcessPoolExecutor(max_workers=args.jobs, initializer=_worker_start) as pool:
            futures = [pool.submit(_train_one, (args, *job)) for job in jobs]
            try:
                summaries = [future.result() for future in futures]
            except KeyboardInterrupt:
                stop_workers(pool, futures)
                raise
    for job, summary in zip(jobs, summaries, strict=True):
        if summary is None:
            args.not_run.append(run_name(*job[:3]))
    return [s for s in summaries if s is not None]


def _worker_start() -> None:
    # out of the terminal's process group: a Ctrl-C reaches the worker once, from stop_workers;
    # idle, it ignores that, and a run listens (_train_one)
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def stop_workers(pool: ProcessPoolExecutor, futures: list[Future]) -> None:
    """Ctrl-C: drop the runs not started and pass the interrupt on to the workers, whose runs
    stop (marked interrupted; the next start resumes each from its last epoch's checkpoint),
    instead of waiting for them to finish."""
    for future in futures:
        future.cancel()
    for process in list(getattr(pool, "_processes", {}).values()):
        if process.is_alive():
            os.kill(process.pid, signal.SIGINT)


def best_val_within(run: dict[str, Any], key: str, budget: float) -> float:
    """The best validation loss a run had reached once ``key`` (steps, forwards, wall) hit ``budget``."""
    history = run["history"]
    seen = [v for v, used in zip(history["val_loss"], history[key], strict=True) if used <= budget]
    start = run["reference_val"] if run["reference_val"] is not None else math.inf
    return min([start, *seen])


def gain_share(run: dict[str, Any], backprop: dict[str, Any]) -> float:
    """How much of backprop's validation gain over the untrained, tide-aware start a run made.

    The start is the strongest reference already, so ratios of losses hide how little a run
    learned: a run that learns nothing is within a few per cent of a converged backprop.
    """
    start = run["reference_val"]
    if start is None or backprop["reference_val"] is None:
        return math.nan
    gained = backprop["reference_val"] - backprop["best_val"]
    return (start - run["best_val"]) / gained if gained > 0 else math.nan


def search_lrs(
    args: argparse.Namespace, method: str, max_steps: int | None
) -> list[dict[str, Any]]:
    """The method's run per seed at the lr of its grid with the best validation loss.

    ``--lr-search every-seed`` (the default) tries the whole grid on every seed: one lr that
    suits seed 0 can stall another seed on a plateau (backprop at 3e-3 on seed 2,
    benchmarks/README.md). ``first-seed`` searches seed 0 and reruns its best lr on the others.
    """
    grid = LR_GRID[method][: args.lrs]
    seeds = range(args.seeds) if args.lr_search == "every-seed" else range(1)
    searched = train_all(args, [(method, lr, seed, max_steps) for seed in seeds for lr in grid])
    for run in searched:
        print(f"  {run['run']}: best val {run['best_val']:.5g} at step {run['steps_to_best']}")
    best = [
        min((r for r in searched if r["seed"] == seed), key=lambda r: r["best_val"])
        for seed in seeds
        if any(r["seed"] == seed for r in searched)
    ]
    if args.lr_search == "first-seed" and best:
        best += train_all(
            args, [(method, best[0]["lr"], seed, max_steps) for seed in range(1, args.seeds)]
        )
    for run in best:
        args.chosen_lr[(method, run["seed"])] = run["lr"]
    return best


def lr_label(method_runs: list[dict[str, Any]]) -> str:
    """The lr of a method's runs: one value, or one per seed where the search chose several."""
    lrs = [f"{r['lr']:g}" for r in method_runs]
    return f"lr {lrs[0]}" if len(set(lrs)) == 1 else "lr " + " / ".join(lrs) + " by seed"


def score(args: argparse.Namespace, runs: list[dict[str, Any]], held_out: bool = False) -> Any:
    """``seacast evaluate``'s long-form scores (its ``metrics.csv``) of every run at its
    checkpoint (``checkpoint_of``) on the test split (or on every init time of the held-out store).

    Scores are kept in ``--out``/evaluation[-held-out]/metrics.csv with the checkpoint scored, and
    reused for each run scored at the same checkpoint, older than them, so a protocol run in pieces
    scores each run once; the runs scored this time get ``seacast evaluate``'s whole report in
    ``latest/`` there (``latest-last/`` for those scored at their last checkpoint).
    """
    import pandas as pd

    from seacast.atomic import atomic_path
    from seacast.evaluation.evaluate import evaluate_runs

    out_dir = args.out / ("evaluation-held-out" if held_out else "evaluation")
    saved_csv = out_dir / "metrics.csv"
    saved = pd.read_csv(saved_csv) if saved_csv.is_file() else None
    scored_at = saved_csv.stat().st_mtime if saved is not None else -math.inf
    if saved is not None and "checkpoint" not in saved:
        saved["checkpoint"] = "best"  # scores saved before runs could be scored at their last

    def still_scored(run: dict[str, Any]) -> bool:
        which = checkpoint_of(args, run["method"])
        checkpoint = Path(run["run_dir"]) / f"checkpoint_{which}.pt"
        return (
            saved is not None
            and ((saved["run"] == run["run"]) & (saved["checkpoint"] == which)).any()
            and (not checkpoint.is_file() or checkpoint.stat().st_mtime < scored_at)
        )

    kept = [(r["run"], checkpoint_of(args, r["method"])) for r in runs if still_scored(r)]
    to_score = [r for r in runs if not still_scored(r)]
    parts = []
    if kept:
        saved_at = pd.MultiIndex.from_frame(saved[["run", "checkpoint"]])
        parts.append(saved[saved_at.isin(kept)])
    if to_score:
        print(f"   scoring {len(to_score)} runs ({len(kept)} scored before)", flush=True)
    for which in ("best", "last"):
        scored = [r["run_dir"] for r in to_score if checkpoint_of(args, r["method"]) == which]
        if not scored:
            continue
        fresh = evaluate_runs(
            scored,
            split="all" if held_out else "test",
            by="all",
            store_path=args.held_out if held_out else None,
            out_dir=out_dir / ("latest" if which == "best" else f"latest-{which}"),
            which=which,
            figures=False,
            every_hours=args.held_out_every if held_out else args.every_hours,
        )
        parts.append(fresh.table().assign(checkpoint=which))
    table = pd.concat(parts, ignore_index=True)
    with atomic_path(saved_csv) as tmp:
        table.to_csv(tmp, index=False)
    return table


def gradient_table(
    args: argparse.Namespace, methods: list[str], trained: str | None = None
) -> dict[str, dict[str, float]]:
    """Each ZO method's gradient cosine and share of parameters on one training batch: at
    initialisation, where a tide-aware model's zero head.out leaves every other layer a true
    gradient of 0, and at ``trained`` (backprop's best weights, a run folder), where the hidden
    layers have one."""
    import torch

    from seacast.training.checkpoint import load_run
    from seacast.training.gradcheck import batch_from_experiment, gradient_check

    torch.set_num_threads(max(args.threads * args.jobs, 1))
    trained_state = load_run(Path(trained), "best").model.state_dict() if trained else None
    out: dict[str, dict[str, float]] = {}
    for method in methods:
        if not is_zeroth_order(method):
            continue
        cfg = experiment(args, method, LR_GRID[method][0], 0, None)
        model, x, y, loss_fn = batch_from_experiment(cfg)
        rows = gradient_check(
            model, x, y, loss_fn, rules=[cfg.trainer.name], probes=16, cfg=cfg.trainer
        )
        out[method] = {"cosine": rows[-1].cosine, "coverage": rows[-1].coverage}
        if trained_state is not None:
            model.load_state_dict(trained_state)
            rows = gradient_check(
                model, x, y, loss_fn, rules=[cfg.trainer.name], probes=16, cfg=cfg.trainer
            )
            out[method]["cosine_trained"] = rows[-1].cosine
    return out


def mse_cells(table: Any) -> dict[str, dict[tuple[str, int], float]]:
    """MSE per run (and per reference, keyed ``ref:<name>``) and (variable, lead time), from
    ``seacast evaluate``'s long-form table (``EvaluationResults.table()``, its ``metrics.csv``)."""
    cells: dict[str, dict[tuple[str, int], float]] = {}
    for row in table.itertuples():
        key = row.run if row.reference == "model" else f"ref:{row.reference}"
        cells.setdefault(key, {})[(row.variable, int(row.lead_time))] = float(row.mse)
    return cells


def backprop_table(
    runs: dict[str, list[dict[str, Any]]], cells: dict[str, dict[tuple[str, int], float]]
) -> list[str]:
    """Each seed's converged backprop: its lr, steps to best (S_bp), wall-clock and test MSE."""
    keys = sorted(cells[runs["backprop"][0]["run"]])
    lines = ["## Converged backprop, per seed: the baseline every ratio divides by"]
    header = " | ".join(f"{v} {lead} h" for v, lead in keys)
    lines.append(
        f"| seed | lr | steps to best | steps | wall to best / run s | stopped | {header} |"
    )
    lines.append("|---|---|---|---|---|---|" + "---|" * len(keys))
    for run in runs["backprop"]:
        mse = " | ".join(f"{cells[run['run']][k]:.3g}" for k in keys)
        lines.append(
            f"| {run['seed']} | {run['lr']:g} | {run['steps_to_best']} | {run['steps']} | "
            f"{run['wall_to_best']:.0f} / {run['wall']:.0f} | {run['stopped']} | {mse} |"
        )
    lines.append("")
    return lines


def test_tables(
    runs: dict[str, list[dict[str, Any]]],
    cells: dict[str, dict[tuple[str, int], float]],
    title: str,
) -> list[str]:
    """Each run's MSE against backprop's (same seed), then against the strongest reference."""
    lines: list[str] = []
    backprop = {r["seed"]: r for r in runs["backprop"]}
    references = sorted(k for k in cells if k.startswith("ref:"))
    keys = sorted(cells[runs["backprop"][0]["run"]])
    lines.append(f"## {title} / backprop's (same seed), per variable and lead time")
    header = " | ".join(f"{v} {lead} h" for v, lead in keys)
    lines.append(f"| method | seed | {header} |")
    lines.append("|---|---|" + "---|" * len(keys))
    for method, method_runs in runs.items():
        ratios_by_seed = []
        for run in method_runs:
            bp = backprop.get(run["seed"], runs["backprop"][0])
            ratio = [cells[run["run"]][k] / cells[bp["run"]][k] for k in keys]
            ratios_by_seed.append(ratio)
            lines.append(
                f"| {method} | {run['seed']} | " + " | ".join(f"{r:.2f}" for r in ratio) + " |"
            )
        mean = np.mean(ratios_by_seed, axis=0)
        lines.append(f"| **{method}** | mean | " + " | ".join(f"**{r:.2f}**" for r in mean) + " |")
    lines.append("")
    lines.append(f"## {title} against the strongest reference (mean over seeds)")
    lines.append(f"| forecast | {header} |")
    lines.append("|---|" + "---|" * len(keys))
    for reference in references:
        lines.append(
            f"| {reference[4:]} | " + " | ".join(f"{cells[reference][k]:.3g}" for k in keys) + " |"
        )
    for method, method_runs in runs.items():
        mean = [statistics.mean(cells[r["run"]][k] for r in method_runs) for k in keys]
        best_ref = [min(cells[ref][k] for ref in references) for k in keys]
        marks = [
            f"{m:.3g} {'beats' if m < b else 'loses'} ({1 - m / b:+.1%})"
            for m, b in zip(mean, best_ref, strict=True)
        ]
        lines.append(f"| {method} ({lr_label(method_runs)}) | " + " | ".join(marks) + " |")
    lines.append("")
    return lines


CHECKPOINT_WORDS = {"best": "best validation", "last": "last weights (the budget's end)"}


def report(
    args: argparse.Namespace,
    runs: dict[str, list[dict[str, Any]]],
    s_bp: int,
    cells: dict[str, dict[tuple[str, int], float]],
    gradients: dict[str, dict[str, float]],
    held_out: dict[str, dict[tuple[str, int], float]] | None = None,
) -> str:
    lines: list[str] = []
    backprop = {r["seed"]: r for r in runs["backprop"]}
    lines.append(
        f"S_bp = {s_bp} steps (median over seeds of backprop's steps to its best validation); "
        f"ZO budget {args.zo_steps} steps = min({args.step_factor} x S_bp, {args.zo_max_steps}). "
        f"Patience: backprop {args.patience} epochs, ZO {args.zo_patience}. "
        f"Scored at: backprop's best validation, ZO runs' {CHECKPOINT_WORDS[args.zo_checkpoint]}."
    )
    if args.not_run:
        lines.append("")
        lines.append(
            f"Not trained yet, so not in these tables (--trained-only): {', '.join(args.not_run)}."
        )
    lines.append("")
    lines.append("## Budgets and validation")
    lines.append(
        "| method | lr | seed | steps to best | steps | forwards | wall s | best val | share of bp's gain | "
        "stopped | val at bp's steps / forwards / wall, / bp's |"
    )
    lines.append("|---|---|---|---|---|---|---|---|---|---|---|")
    for method, method_runs in runs.items():
        for run in method_runs:
            bp = backprop.get(run["seed"], runs["backprop"][0])
            ratios = [
                best_val_within(run, key, bp[budget]) / bp["best_val"]
                for key, budget in (
                    ("step", "steps_to_best"),
                    ("forwards", "forwards_to_best"),
                    ("wall_seconds", "wall_to_best"),
                )
            ]
            lines.append(
                f"| {method} | {run['lr']:g} | {run['seed']} | {run['steps_to_best']} | {run['steps']} | "
                f"{run['forwards']:.0f} | {run['wall']:.0f} | {run['best_val']:.5g} | {gain_share(run, bp):.0%} | "
                f"{run['stopped']} | " + " / ".join(f"{r:.2f}" for r in ratios) + " |"
            )
    lines.append("")
    lines += backprop_table(runs, cells)
    lines += test_tables(runs, cells, "Test MSE")
    if held_out:
        lines += test_tables(
            runs,
            held_out,
            f"Held-out store ({args.held_out.name}, inits every {args.held_out_every} h) MSE",
        )
    if gradients:
        lines.append("## Gradient estimate on one training batch (16 probes)")
        lines.append(
            "| method | cosine to the true gradient, at initialisation | at backprop's best "
            "weights (seed 0) | share of parameters updated |"
        )
        lines.append("|---|---|---|---|")
        for method, row in gradients.items():
            trained = row.get("cosine_trained")
            at_trained = "—" if trained is None else f"{trained:.3f}"
            lines.append(
                f"| {method} | {row['cosine']:.3f} | {at_trained} | {row['coverage']:.1%} |"
            )
    return "\n".join(lines) + "\n"


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, default=Path("/tmp/zo_vs_bp"))
    parser.add_argument("--store", type=Path, default=None, help="another store than the config's")
    parser.add_argument(
        "--held-out",
        type=Path,
        default=None,
        help="a store not trained on (another year or twin seed): every run is also scored on "
        "all its init times (seacast evaluate --split all)",
    )
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a field of the experiment, as seacast train --set does "
        "(e.g. samples.split.preset=blocks)",
    )
    parser.add_argument(
        "--methods",
        nargs="+",
        default=[m for m in METHODS if m not in EMULATED],
        choices=list(METHODS),
        help="default: every method but the emulated ones (EMULATED: estimates, not rules)",
    )
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--lrs", type=int, default=3, help="learning rates tried per method")
    parser.add_argument(
        "--lr-search",
        choices=["every-seed", "first-seed"],
        default="every-seed",
        help="try the lr grid on every seed and keep each seed's best (one lr can stall one "
        "seed), or on seed 0 only and rerun its best lr on the others",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=20,
        help="epochs without improvement (the plateau schedule halves the lr after half as many); "
        "at 6, backprop's seed 0 stopped on a plateau at step 550 on one machine and ran to 2750 on "
        "another (benchmarks/README.md)",
    )
    parser.add_argument(
        "--zo-patience",
        type=int,
        default=None,
        help="a ZO rule's patience in epochs (default: --patience); a rule whose step gains far "
        "less than backprop's can sit on a plateau of the validation noise for longer",
    )
    parser.add_argument(
        "--zo-schedule",
        choices=["plateau", "cosine", "none"],
        default=None,
        help="a ZO rule's lr schedule (default: the experiment's, plateau; backprop keeps it): "
        "cosine anneals the lr to 0 over the run's whole step budget, where plateau halves it "
        "whenever the validation noise hides a slow gain; runs are named by method, lr and seed "
        "only, so give each schedule its own --out",
    )
    parser.add_argument(
        "--zo-checkpoint",
        choices=["best", "last"],
        default=None,
        help="the checkpoint a ZO run is scored at (backprop keeps its best validation's); "
        "default: last with --zo-schedule cosine, whose lr reaches 0 at the budget's end, so its "
        "last weights are the run's result, and best otherwise",
    )
    parser.add_argument(
        "--bp-max-steps",
        type=int,
        default=12000,
        help="backprop's safety cap (at lr 1e-3 seed 0's best came at step 6100)",
    )
    parser.add_argument("--step-factor", type=float, default=100.0)
    parser.add_argument("--zo-max-steps", type=int, default=6000, help="cap on a ZO run's steps")
    parser.add_argument("--every-hours", type=int, default=1, help="test init times every N hours")
    parser.add_argument(
        "--held-out-every", type=int, default=6, help="held-out init times every N hours"
    )
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads per job")
    parser.add_argument("--quick", action="store_true", help="1 seed, 1 lr, short budgets")
    parser.add_argument(
        "--no-gradients",
        action="store_true",
        help="measure no gradient table (one saved in --out by an earlier run is kept)",
    )
    parser.add_argument(
        "--trained-only",
        action="store_true",
        help="score and report the runs already trained in --out, training none; the report "
        "names those still to train (for a protocol run in pieces, or cut short)",
    )
    parser.add_argument(
        "--report-only",
        action="store_true",
        help="write the report of the protocol already run in --out again from its zo_vs_bp.json "
        "and evaluations, training and scoring nothing (the gradient table, one batch a rule, is "
        "measured again unless --no-gradients)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.lrs, args.patience = 1, 1, 3
        args.bp_max_steps, args.zo_max_steps, args.every_hours = 600, 1200, 6
    if args.zo_patience is None:
        args.zo_patience = args.patience
    if args.zo_checkpoint is None:
        args.zo_checkpoint = "last" if args.zo_schedule == "cosine" else "best"
    args.not_run = []  # run names left out under --trained-only
    args.out = args.out.resolve()
    return args


def with_first_stages(methods: list[str]) -> list[str]:
    """The methods in order, each staged one preceded by its first stage."""
    ordered: list[str] = []
    for method in methods:
        for needed in (STAGED.get(method), method):
            if needed is not None and needed not in ordered:
                ordered.append(needed)
    return ordered


def gradients_of(args: argparse.Namespace, runs: dict[str, list[dict[str, Any]]]) -> dict:
    """The gradient table of the protocol's rules, at initialisation and at seed 0's backprop."""
    return gradient_table(args, list(runs), trained=runs["backprop"][0]["run_dir"])


def saved_gradients(args: argparse.Namespace) -> dict:
    """The gradient table an earlier run of the protocol saved in ``--out`` (it depends on seed 0
    only), or none."""
    saved = args.out / "zo_vs_bp.json"
    return json.loads(saved.read_text()).get("gradients", {}) if saved.is_file() else {}


def report_again(args: argparse.Namespace) -> str:
    """The report of a finished protocol in ``--out``, from its zo_vs_bp.json and the
    evaluations' metrics.csv: the tables again, without training or scoring anything."""
    import pandas as pd

    saved = json.loads((args.out / "zo_vs_bp.json").read_text())
    runs, s_bp = saved["runs"], int(saved["s_bp"])
    args.not_run = saved.get("not_run", [])
    args.zo_steps = max(1, min(int(args.step_factor * s_bp), args.zo_max_steps))
    cells = mse_cells(pd.read_csv(args.out / "evaluation" / "metrics.csv"))
    held_out_csv = args.out / "evaluation-held-out" / "metrics.csv"
    held_out = None
    if args.held_out and held_out_csv.is_file():
        held_out = mse_cells(pd.read_csv(held_out_csv))
    gradients = saved.get("gradients", {})
    if not args.no_gradients:  # one batch a rule: cheap beside training
        gradients = gradients_of(args, runs)
        saved["gradients"] = gradients
        (args.out / "zo_vs_bp.json").write_text(json.dumps(saved, indent=1))
    return report(args, runs, s_bp, cells, gradients, held_out)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.report_only:
        text = report_again(args)
        (args.out / "zo_vs_bp.md").write_text(text)
        print(text)
        return
    os.environ["OMP_NUM_THREADS"] = str(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"protocol: {EXPERIMENT.relative_to(ROOT)}, runs in {args.out / 'runs'}")

    print("1. backprop until validation stops improving")
    args.chosen_lr = {}  # (method, seed): lr; a staged method starts from that run of its first stage
    runs: dict[str, list[dict[str, Any]]] = {}
    runs["backprop"] = search_lrs(args, "backprop", args.bp_max_steps)
    if not runs["backprop"]:
        raise SystemExit(f"no finished backprop run in {args.out / 'runs'}: train one first")
    s_bp = int(statistics.median(r["steps_to_best"] for r in runs["backprop"]))
    args.zo_steps = max(1, min(int(args.step_factor * s_bp), args.zo_max_steps))
    print(f"   S_bp = {s_bp} steps; ZO budget {args.zo_steps} steps")

    for method in with_first_stages(args.methods):
        if method == "backprop":
            continue
        print(f"2. {method}")
        budget = args.zo_steps if is_zeroth_order(method) else args.bp_max_steps
        trained = search_lrs(args, method, budget)
        if trained:
            runs[method] = trained

    print("3. test scores (seacast evaluate) and gradient estimates")
    every_run = [r for method_runs in runs.values() for r in method_runs]
    cells = mse_cells(score(args, every_run))
    held_out = None
    if args.held_out:
        held_out = mse_cells(score(args, every_run, held_out=True))
    gradients = saved_gradients(args) if args.no_gradients else gradients_of(args, runs)
    text = report(args, runs, s_bp, cells, gradients, held_out)
    (args.out / "zo_vs_bp.md").write_text(text)
    (args.out / "zo_vs_bp.json").write_text(
        json.dumps(
            {"runs": runs, "s_bp": s_bp, "gradients": gradients, "not_run": args.not_run},
            indent=1,
        )
    )
    print(text)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit("interrupted: start the same command again to resume")
