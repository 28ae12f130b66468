"""The tide + regressed anomaly per point only and with the spatial map, on the test split and a held-out store.

Fits the experiment's tide and both regressions on its training split (the same code as
``seacast train`` and ``seacast evaluate``), then prints per lead time and variable the MSE over the
tide's of: the damped anomaly, the regressed anomaly per point only (``tides.anomaly_modes: 0``) and
with the spatial map (the config's ``anomaly_modes``), on the test split's init times and on every
third init time of ``--held-out`` (a store never trained on: another twin seed or year), and what
the held-out training weeks chose. No training: a minute or two on the demo store.

    .venv/bin/python benchmarks/anomaly_map.py [--config configs/experiments/twin_demo.yaml] \\
        [--held-out data/twin_seed1_2025.zarr] [--modes 32] [--max-lead 12]
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
from anomaly_persistence import anomalies

ROOT = Path(__file__).resolve().parents[1]


def forecasts(fit, tides, store: Path, variables, lags: int, lead_times, inits) -> dict:
    """MSE over the tide's ``[n_lead, C]`` of the regression and of the damped anomaly at ``inits``."""
    import xarray as xr

    hours, anomaly = anomalies(store, tides, variables)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sea = np.asarray(xr.open_zarr(store, consolidated=False)["sea_mask"].values, dtype=bool)
    if inits is None:
        inits = np.arange(lags - 1, len(hours) - max(lead_times))[::3]
    field = np.zeros((len(hours), len(variables), *sea.shape), dtype=np.float32)
    field[:, :, sea] = anomaly
    predicted = np.concatenate(
        [
            fit.predict(np.stack([field[b - lags + 1 + k] for k in range(lags)], axis=1), sea)[
                ..., sea
            ]
            for b in np.array_split(inits, max(1, len(inits) // 256))
        ]
    )
    out = {"regressed": [], "damped": []}
    for i, lead in enumerate(lead_times):
        truth = anomaly[inits + lead]
        tide = np.mean(truth**2, axis=(0, 2))
        alpha = tides.damping_for([lead])[0][None, :, None]
        out["regressed"].append(np.mean((truth - predicted[:, i]) ** 2, axis=(0, 2)) / tide)
        out["damped"].append(np.mean((truth - alpha * anomaly[inits]) ** 2, axis=(0, 2)) / tide)
    return {k: np.array(v) for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=ROOT / "configs/experiments/twin_demo.yaml")
    parser.add_argument("--held-out", type=Path, default=ROOT / "data/twin_seed1_2025.zarr")
    parser.add_argument("--modes", type=int, default=None, help="tides.anomaly_modes (config's)")
    parser.add_argument("--max-lead", type=int, default=None, help="tides.anomaly_modes_max_lead")
    args = parser.parse_args()

    from seacast.anomaly_regression import fit_for_run
    from seacast.config import ExperimentConfig, load_config
    from seacast.store import open_store
    from seacast.tides import fit_tides, train_periods
    from seacast.windows import open_samples

    cfg = load_config(ExperimentConfig, args.config)
    store_path = Path(cfg.store) if Path(cfg.store).is_absolute() else ROOT / cfg.store
    cfg = cfg.model_copy(update={"store": str(store_path)})
    tides_cfg = cfg.tides.model_copy(
        update={
            k: v
            for k, v in (("anomaly_modes", args.modes), ("anomaly_modes_max_lead", args.max_lead))
            if v is not None
        }
    )
    variables, lead_times, lags = (
        list(cfg.samples.variables),
        list(cfg.samples.lead_times),
        cfg.samples.lags,
    )
    sets = open_samples(store_path, cfg.samples)
    store = open_store(store_path)
    tides = fit_tides(
        store,
        variables,
        train_periods(sets.plan),
        constituents=tides_cfg.constituents,
        rayleigh=tides_cfg.rayleigh,
        long_period=tides_cfg.long_period,
        lead_times=lead_times,
    )
    hours, _ = anomalies(store_path, tides, variables)
    position = {int(h): i for i, h in enumerate(hours)}
    test_inits = np.array([position[int(h)] for h in sets.test.init_hours])
    fits = {}
    for name, modes in (("per point", 0), ("with the map", tides_cfg.anomaly_modes)):
        began = time.perf_counter()
        run_cfg = cfg.model_copy(
            update={"tides": tides_cfg.model_copy(update={"anomaly_modes": modes})}
        )
        fits[name] = fit_for_run(run_cfg, tides, sets.plan)
        print(
            f"{name}: fitted in {time.perf_counter() - began:.0f} s, chose {fits[name].choice.tolist()}"
        )
    print(
        f"\n{args.config.name}: {tides_cfg.anomaly_modes} EOFs up to +{tides_cfg.anomaly_modes_max_lead} h, "
        f"{lags} lags; MSE over the tide's"
    )
    header = ["scored on", "lead", "forecast"] + variables
    print("| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    scored = [("test split", store_path, test_inits)]
    if args.held_out and args.held_out.exists():
        scored.append((f"held-out {args.held_out.name}", args.held_out, None))
    for label, path, inits in scored:
        results = {
            name: forecasts(fit, tides, path, variables, lags, lead_times, inits)
            for name, fit in fits.items()
        }
        for i, lead in enumerate(lead_times):
            rows = [("damped", results["per point"]["damped"][i])] + [
                (f"regressed, {name}", results[name]["regressed"][i]) for name in fits
            ]
            for forecast, values in rows:
                cells = " | ".join(f"{v:.3f}" for v in values)
                print(f"| {label} | +{lead} h | {forecast} | {cells} |")


if __name__ == "__main__":
    main()
