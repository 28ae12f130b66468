"""Forecast skill against the strongest reference, tide-aware U-Nets against persistence-based ones.

For one model per architecture, trained with ``model.base: tide`` and ``model.base: persistence``
(the same experiment otherwise: ``configs/experiments/twin_demo.yaml`` with a larger budget),
on two stores - the demo's twin (seed 0, 2024) and a twin with another seed and year (seed 1,
2025), so the result is not tuned to one store - it prints, on the test split (inits every
3 h, all seasons pooled):

* the RMSE of every model and every reference (persistence, climatology, tide, tide +
  persisted anomaly, tide + damped anomaly) by variable and lead time;
* the ratio model RMSE / best-reference RMSE (below 1: the model beats the strongest
  reference), and in how many test seasons the model beats that season's best reference.

Everything runs through the CLI a user has (``seacast fetch / regrid / train / evaluate``),
so the figures are those of ``make demo``'s code path. Stores are made once and reused.

Run: ``python benchmarks/skill.py`` (defaults: 160 steps per run at lr 3e-3, 4/3 of the demo's budget, 16 runs, two at a
time; about 30 minutes on 2 cores), or ``--steps 150 --models res_3ddr_unet`` for a quicker look.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pandas as pd

from seacast.evaluation.baselines import TIDE_REFERENCES

ROOT = Path(__file__).resolve().parents[1]
SEACAST = [sys.executable, "-m", "seacast.cli"]
MODELS = ["3ddr_unet", "res_3ddr_unet", "inception_res_3ddr_unet", "asymm_inception_res_3ddr_unet"]
STORES = {
    "seed0-2024": {"path": "data/twin_dutch_coast.zarr", "sets": []},
    "seed1-2025": {
        "path": "data/twin_seed1_2025.zarr",
        "sets": ["twin.seed=1", "months=2025-01:2025-12", "raw_dir=data/raw_seed1_2025"],
    },
}
EXPERIMENT = "configs/experiments/twin_demo.yaml"
DATA = "configs/data/twin_dutch_coast.yaml"
REFERENCES = ["persistence", "climatology", *TIDE_REFERENCES]  # the ones evaluate scores


def run(command: list[str], log: Path, threads: int | None = None) -> None:
    log.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if threads:
        # jobs side by side share the cores: more threads than cores only adds contention
        env["OMP_NUM_THREADS"] = str(threads)
    with open(log, "w") as handle:
        done = subprocess.run(command, cwd=ROOT, stdout=handle, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}; see {log}")


def make_store(name: str, spec: dict, logs: Path) -> Path:
    path = ROOT / spec["path"]
    if path.exists():
        return path
    sets = [arg for s in spec["sets"] for arg in ("--set", s)]
    run([*SEACAST, "fetch", "--config", DATA, *sets], logs / f"fetch-{name}.log")
    run(
        [*SEACAST, "regrid", "--config", DATA, *sets, "--set", f"store.path={spec['path']}"],
        logs / f"regrid-{name}.log",
    )
    return path


def train_and_score(
    store_name: str, store: Path, model: str, base: str, args: argparse.Namespace
) -> tuple[str, float]:
    name = f"skill-{store_name}-{model}-{base}"
    started = time.perf_counter()
    if args.reuse and (args.reports / name / "skill_vs_best.csv").is_file():
        return name, 0.0
    epochs = max(1, args.steps // args.steps_per_epoch)
    run(
        [
            *SEACAST,
            "train",
            "--config",
            EXPERIMENT,
            "--model",
            model,
            "--name",
            name,
            "--overwrite",
            "--no-progress",
            "--set",
            f"store={store}",
            "--set",
            f"model.base={base}",
            "--set",
            f"trainer.epochs={epochs}",
            "--set",
            f"trainer.steps_per_epoch={args.steps_per_epoch}",
            "--set",
            f"trainer.patience={epochs}",
            "--set",
            f"trainer.optimizer.lr={args.lr}",
            "--set",
            f"runs_dir={args.runs}",
        ],
        args.logs / f"train-{name}.log",
        args.threads,
    )
    run(
        [
            *SEACAST,
            "evaluate",
            str(Path(args.runs) / name),
            "--split",
            "test",
            "--by",
            "season",
            "--every",
            "3",
            "--out",
            str(args.reports / name),
            "--no-figures",
        ],
        args.logs / f"evaluate-{name}.log",
        args.threads,
    )
    return name, time.perf_counter() - started


def summarise(done: list[tuple[str, str, str, str]], args: argparse.Namespace) -> pd.DataFrame:
    rows = []
    for name, store_name, model, base in done:
        metrics = pd.read_csv(args.reports / name / "metrics.csv")
        best = pd.read_csv(args.reports / name / "skill_vs_best.csv")
        # pooled over seasons: MSE weighted by the count of points
        metrics["sse"] = metrics["mse"] * metrics["count"]
        pooled = metrics.groupby(["reference", "variable", "lead_time"])[["sse", "count"]].sum()
        rmse = (pooled["sse"] / pooled["count"]) ** 0.5
        for (variable, lead), cell in best[best["group"] != "all"].groupby(
            ["variable", "lead_time"]
        ):
            row = {
                "store": store_name,
                "model": model,
                "base": base,
                "variable": variable,
                "lead_time": int(lead),
                "model_rmse": float(rmse[("model", variable, lead)]),
            }
            for ref in REFERENCES:
                row[ref] = float(rmse.get((ref, variable, lead), float("nan")))
            best_ref = min(REFERENCES, key=lambda r: row[r])
            row["best_reference"] = best_ref
            row["ratio"] = row["model_rmse"] / row[best_ref]
            row["seasons_won"] = f"{int(cell['beats'].sum())}/{len(cell)}"
            rows.append(row)
    return pd.DataFrame(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=160, help="training steps per run")
    parser.add_argument("--steps-per-epoch", type=int, default=40)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--bases", nargs="+", default=["tide", "persistence"])
    parser.add_argument("--stores", nargs="+", default=list(STORES), choices=list(STORES))
    parser.add_argument("--jobs", type=int, default=2, help="trainings side by side")
    parser.add_argument(
        "--reuse", action="store_true", help="keep runs already scored in --reports (resume)"
    )
    parser.add_argument("--runs", default="runs/skill")
    parser.add_argument("--reports", type=Path, default=Path("reports/skill"))
    parser.add_argument("--logs", type=Path, default=Path("reports/skill/logs"))
    args = parser.parse_args()
    args.threads = max(1, (os.cpu_count() or 1) // args.jobs)
    args.reports, args.logs = ROOT / args.reports, ROOT / args.logs

    stores = {name: make_store(name, STORES[name], args.logs) for name in args.stores}
    jobs = [
        (store_name, path, model, base)
        for store_name, path in stores.items()
        for model in args.models
        for base in args.bases
    ]
    print(
        f"{len(jobs)} runs of {args.steps} steps (lr {args.lr:g}), {args.jobs} at a time; "
        f"experiment {EXPERIMENT}",
        flush=True,
    )
    done = []
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        results = pool.map(lambda job: train_and_score(*job, args), jobs)
        for (store_name, _, model, base), (name, seconds) in zip(jobs, results, strict=True):
            print(f"  {name}: {seconds:.0f} s", flush=True)
            done.append((name, store_name, model, base))
    table = summarise(done, args)
    out = args.reports / "skill.csv"
    table.to_csv(out, index=False)
    pd.set_option("display.width", 200)
    pd.set_option("display.max_rows", 500)
    shown = table[
        ["store", "model", "base", "variable", "lead_time", "model_rmse", *REFERENCES]
        + ["best_reference", "ratio", "seasons_won"]
    ]
    print("\nRMSE on the test split (all seasons pooled); ratio = model / best reference")
    print(shown.to_string(index=False, float_format=lambda v: f"{v:.4f}"))
    wins = (
        table.assign(win=table["ratio"] < 1).groupby(["store", "base"])["win"].agg(["sum", "count"])
    )
    print(
        "\ncells (variable x lead) where the model beats the best reference, pooled over seasons:"
    )
    print(wins.to_string())
    print(f"\nwritten {out}")


if __name__ == "__main__":
    main()
