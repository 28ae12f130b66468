"""Does sample loading keep up with training? Loader samples/s next to a training step's samples/s.

Builds a synthetic store (64x64, 4 variables, hourly, chunks of 24 h), then measures, on the
same machine in one run (medians of repeats):

* the DataLoader over the training split with 0 and 2 workers (shuffled, as in training);
* a backprop training step of a small U-Net (the demo's res_3ddr_unet, F=8) on a fixed batch.

With ``--loop`` it also runs ``seacast train`` itself (the demo's experiment config on the demo
store, one epoch of ``--loop-steps`` steps) and sets the loop's samples/s from ``metrics.csv``
(validation and checkpointing included, as the loop reports it) against the pure step rate of
the same model, batch and threads, measured in the same run.

Run: .venv/bin/python benchmarks/loader.py [--shape 64] [--batch 16] [--repeats 3]
     [--loop] [--loop-steps 60] [--store data/twin_dutch_coast.zarr] [--side-by-side]

``--side-by-side`` runs the loop once on all cores and twice at once on half of them each, as
``pipeline run --jobs 2`` does, and prints the total samples/s of both: the demo's ``--jobs``
follows from it.
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

import torch
from torch.utils.data import RandomSampler

from seacast.config import ModelConfig, SamplesConfig
from seacast.models import build_model
from seacast.synthetic import synthetic_store
from seacast.training.losses import make_loss
from seacast.windows import make_loader, open_samples


def loader_rate(dataset, batch: int, workers: int, batches: int, repeats: int) -> float:
    """Samples/s of a fresh shuffled loader over ``batches`` batches, worker start-up included."""
    rates = []
    for repeat in range(repeats):
        sampler = RandomSampler(dataset, generator=torch.Generator().manual_seed(repeat))
        loader = make_loader(dataset, batch, sampler=sampler, num_workers=workers)
        start = time.perf_counter()
        for count, _ in enumerate(loader, start=1):
            if count == batches:
                break
        rates.append(batches * batch / (time.perf_counter() - start))
        del loader
    return statistics.median(rates)


def step_rate(model, batch_data, loss_fn, steps: int, repeats: int) -> float:
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x, y = batch_data["x"], batch_data["y"]

    def one_step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), y).mean().backward()
        optimizer.step()

    one_step()  # warm-up
    rates = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(steps):
            one_step()
        rates.append(steps * x.shape[0] / (time.perf_counter() - start))
    return statistics.median(rates)


def loop_against_step(config: Path, store: Path, steps: int, repeats: int) -> None:
    """``seacast train``'s samples/s (metrics.csv) next to its model's pure step rate."""
    import csv

    from seacast.config import ExperimentConfig, load_config
    from seacast.training.loop import train

    with tempfile.TemporaryDirectory() as tmp:
        cfg = load_config(
            ExperimentConfig,
            config,
            [
                f"store={store}",
                f"runs_dir={tmp}",
                "name=loop-bench",
                "trainer.epochs=1",
                f"trainer.steps_per_epoch={steps}",
            ],
        )
        train(cfg, progress=False)
        with open(Path(tmp) / "loop-bench" / "metrics.csv") as handle:
            row = list(csv.DictReader(handle))[-1]
    loop_rate = float(row["samples_per_s"])
    samples = cfg.samples
    channels = len(samples.variables)
    model = build_model(
        cfg.model, channels, channels, samples.lags, samples.lead_times, _shape(store), seed=0
    )
    batch = cfg.trainer.batch_size
    x = torch.rand(batch, channels, samples.lags, *_shape(store))
    y = torch.rand(batch, len(samples.lead_times), channels, *_shape(store))
    pure = step_rate(model, {"x": x, "y": y}, _mse, 5, repeats)
    label = f"{cfg.model.name} F={cfg.model.filters}, batch {batch}"
    print(
        f"\nseacast train on {store} ({label}, {steps} steps, {torch.get_num_threads()} threads):"
    )
    print(f"  loop (metrics.csv, validation and checkpoint included): {loop_rate:8.1f} samples/s")
    print(f"  pure training step, same model and batch:               {pure:8.1f} samples/s")
    print(f"  loop / step: {loop_rate / pure:.1%}")


def side_by_side(config: Path, store: Path, steps: int, repeats: int) -> None:
    """Total samples/s of one training on all cores against two side by side (the demo's --jobs 2).

    Each training is this script's ``--loop-only`` in a subprocess, its threads capped with
    OMP_NUM_THREADS as ``pipeline run --jobs N`` does.
    """
    cores = os.cpu_count() or 1

    def command() -> list[str]:
        return [
            sys.executable,
            __file__,
            "--loop-only",
            "--config",
            str(config),
            "--store",
            str(store),
            "--loop-steps",
            str(steps),
            "--repeats",
            str(repeats),
        ]

    def loop_rate(output: str) -> float:
        line = next(line for line in output.splitlines() if line.strip().startswith("loop ("))
        return float(line.split(":")[-1].split()[0])

    one = subprocess.run(
        command(), env={**os.environ, "OMP_NUM_THREADS": str(cores)}, capture_output=True, text=True
    )
    alone = loop_rate(one.stdout)
    env = {**os.environ, "OMP_NUM_THREADS": str(max(1, cores // 2))}
    pair = [
        subprocess.Popen(command(), env=env, stdout=subprocess.PIPE, text=True) for _ in range(2)
    ]
    together = [loop_rate(p.communicate()[0]) for p in pair]
    print(f"\none training, {cores} threads:         {alone:8.1f} samples/s")
    print(
        f"two side by side, {max(1, cores // 2)} thread(s) each: {sum(together):8.1f} samples/s in all "
        f"({' + '.join(f'{r:.1f}' for r in together)})"
    )
    print(f"side by side / one after the other: {sum(together) / alone:.2f}x")


def _shape(store: Path) -> tuple[int, int]:
    from seacast.store import open_store

    ds = open_store(store)
    return int(ds.sizes["latitude"]), int(ds.sizes["longitude"])


def _mse(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    return (prediction - target).square()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--filters", type=int, default=8)
    parser.add_argument("--loop", action="store_true", help="also time seacast train itself")
    parser.add_argument("--loop-only", action="store_true", help="only the seacast train part")
    parser.add_argument("--loop-steps", type=int, default=60)
    parser.add_argument(
        "--side-by-side",
        action="store_true",
        help="total samples/s of two trainings at once against one (chooses the demo's --jobs)",
    )
    parser.add_argument("--store", type=Path, default=Path("data/twin_dutch_coast.zarr"))
    parser.add_argument("--config", type=Path, default=Path("configs/experiments/twin_demo.yaml"))
    args = parser.parse_args()
    if args.side_by_side:
        side_by_side(args.config, args.store, args.loop_steps, args.repeats)
        return
    if args.loop or args.loop_only:
        if not args.store.exists():
            raise SystemExit(f"{args.store} does not exist: run `make demo` first, or pass --store")
        loop_against_step(args.config, args.store, args.loop_steps, args.repeats)
        if args.loop_only:
            return

    with tempfile.TemporaryDirectory() as tmp:
        store = synthetic_store(
            Path(tmp) / "bench.zarr", shape=(args.shape, args.shape), hours=24 * 30, seed=0
        )
        cfg = SamplesConfig(lags=6, lead_times=[6])
        sets = open_samples(store, cfg)
        print(
            f"store {args.shape}x{args.shape}, 4 variables, {len(sets.train)} training samples, lags 6, lead 6 h, batch {args.batch}"
        )

        rates = {
            f"loader, {w} workers": loader_rate(sets.train, args.batch, w, 12, args.repeats)
            for w in (0, 2)
        }

        model = build_model(
            ModelConfig(name="res_3ddr_unet", filters=args.filters, dropout=0.1),
            4,
            4,
            6,
            [6],
            (args.shape, args.shape),
            seed=0,
        )
        batch_data = next(iter(make_loader(sets.train, args.batch)))
        loss_fn = make_loss(sets.normaliser, sets.sea_mask)
        train_rate = step_rate(model, batch_data, loss_fn, 2, args.repeats)

        print(f"{'what':<34}{'samples/s':>12}{'vs training':>14}")
        for name, rate in rates.items():
            print(f"{name:<34}{rate:>12.1f}{rate / train_rate:>13.1f}x")
        print(
            f"{f'backprop step, res_3ddr_unet F={args.filters}':<34}{train_rate:>12.1f}{1.0:>13.1f}x"
        )
        print(f"(torch threads: {torch.get_num_threads()}; medians of {args.repeats} repeats)")


if __name__ == "__main__":
    main()
