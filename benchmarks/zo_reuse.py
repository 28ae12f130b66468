"""What reusing the frozen trunk saves a zeroth-order step on a layer subset.

A zeroth-order step on a layer subset runs the model several times on one batch; every pass
after the first reuses the outputs of the module calls the subset cannot change
(:class:`seacast.training.zeroth_order.prefix_cache.FrozenPrefix`). This times the same step
with and without that reuse, interleaved in one process on the experiment's own model and its
first training batch, and checks that both give the same estimate (the largest difference of
the parameter gradients, relative to their largest value).

Prints, per rule: the median step time with and without reuse, their ratio, the forwards a
step runs, and the estimates' largest relative difference.

    .venv/bin/python benchmarks/zo_reuse.py [--experiment configs/experiments/zo_vs_bp.yaml]
        [--repeats 5] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from zo_vs_bp import TAIL  # noqa: E402  the subset the protocol names

RULES: dict[str, tuple[str, dict]] = {
    "node perturbation on head.out": (
        "node-perturbation",
        {"node_perturbation": {"only": ["head.out"]}},
    ),
    "spsa on head.out (4 probes)": ("spsa", {"spsa": {"probes": 4, "only": ["head.out"]}}),
    "spsa on the tail (16 probes)": ("spsa", {"spsa": {"probes": 16, "only": list(TAIL)}}),
    "node perturbation on the subset": ("node-perturbation", {}),
}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--experiment", type=Path, default=ROOT / "configs/experiments/zo_vs_bp.yaml"
    )
    parser.add_argument("--repeats", type=int, default=5, help="timed steps per rule and setting")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)

    import torch

    from seacast.config import ExperimentConfig, TrainerConfig, load_config, to_dict
    from seacast.training.gradcheck import batch_from_experiment
    from seacast.training.rules import make_rule
    from seacast.training.zeroth_order import no_autograd
    from seacast.training.zeroth_order.prefix_cache import FrozenPrefix

    torch.set_num_threads(args.threads)
    cfg = load_config(ExperimentConfig, args.experiment, [])
    model, x, y, loss_fn = batch_from_experiment(cfg)
    model.train()
    start = {k: v.clone() for k, v in model.state_dict().items()}
    reusing = FrozenPrefix.step

    def make(name: str, sections: dict):  # noqa: ANN202
        for p in model.parameters():
            p.requires_grad_(True)
        trainer = to_dict(cfg.trainer) | {"name": name}
        for key, value in sections.items():
            trainer[key] = {**trainer.get(key, {}), **value}
        return make_rule(name, model, TrainerConfig.model_validate(trainer))

    def one_step(rule, reuse: bool, seed: int) -> tuple[float, float, list]:  # noqa: ANN001
        model.load_state_dict(start)
        for p in model.parameters():
            p.grad = None
        FrozenPrefix.step = reusing if reuse else (lambda self, x: nullcontext())
        try:
            torch.manual_seed(seed)
            with no_autograd():
                began = time.perf_counter()
                stats = rule.step(model, x, y, loss_fn)
                seconds = time.perf_counter() - began
        finally:
            FrozenPrefix.step = reusing
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        return seconds, stats.forwards, grads

    print(
        f"{args.experiment.name}: {cfg.model.name} F={cfg.model.filters}, input {tuple(x.shape)}, "
        f"{args.threads} thread(s); median of {args.repeats} steps each, interleaved"
    )
    print(
        f"{'rule':34s} {'reuse s':>8s} {'whole s':>8s} {'whole/reuse':>11s} {'forwards':>8s} {'max rel diff':>12s}"
    )
    for label, (name, sections) in RULES.items():
        times: dict[bool, list[float]] = {True: [], False: []}
        worst = 0.0
        rule = make(name, sections)
        for reuse in (True, False):  # warm-up (and the reuse's one-sample analysis)
            one_step(rule, reuse, 0)
        for seed in range(args.repeats):
            grads = {}
            for reuse in (True, False):
                seconds, forwards, grads[reuse] = one_step(rule, reuse, seed)
                times[reuse].append(seconds)
            scale = max(float(g.abs().max()) for g in grads[False]) or 1.0
            worst = max(
                [worst]
                + [
                    float((a - b).abs().max()) / scale
                    for a, b in zip(grads[True], grads[False], strict=True)
                ]
            )
        reuse_s, whole_s = statistics.median(times[True]), statistics.median(times[False])
        print(
            f"{label:34s} {reuse_s:8.3f} {whole_s:8.3f} {whole_s / reuse_s:11.2f} {forwards:8g} {worst:12.1e}",
            flush=True,
        )


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
