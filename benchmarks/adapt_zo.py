"""``forecast --adapt zo`` on a season the model never saw: RMSE before and after, against the tide.

A tide-aware backprop run trained on the demo's twin (seed 0, 2024) forecasts from init times
spread over a season of another twin (seed 1, 2025: another year and weather), once as
trained and once adapted with ``--adapt zo`` on the ``--adapt-hours`` before the init time
(``--adapt-target gain``: the base anomaly's gain per lead time and variable; ``network``:
in-place SPSA on every weight; both in the memory of inference, see
``benchmarks/forecast_memory.py``). Both go through ``seacast.forecast.forecast``, the
function behind ``seacast forecast``. Prints the RMSE per variable and lead time (sea points,
all init times pooled) of the two forecasts and of the references a forecaster would use,
each fitted on the run's training period: the run's tide table, the tide plus the damped
anomaly and the tide plus the regressed anomaly; then each forecast over the strongest of them.

    .venv/bin/python benchmarks/adapt_zo.py --run RUN [--store data/twin_seed1_2025.zarr]
        [--season 2025-09-01:2025-11-30] [--inits 24] [--adapt-target gain] [--adapt-hours H]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a tide-aware run folder")
    parser.add_argument("--store", type=Path, default=Path("data/twin_seed1_2025.zarr"))
    parser.add_argument("--season", default="2025-09-01:2025-11-30", help="START:END of the inits")
    parser.add_argument("--inits", type=int, default=24, help="init times, evenly spread")
    parser.add_argument("--adapt-target", choices=["gain", "network"], default="gain")
    parser.add_argument("--adapt-hours", type=int, default=None, help="default: the target's")
    parser.add_argument("--adapt-steps", type=int, default=40)
    parser.add_argument("--adapt-lr", type=float, default=None)
    args = parser.parse_args()

    import torch

    from seacast.anomaly_regression import fit_for_run
    from seacast.forecast import forecast
    from seacast.timeaxis import times_to_hours
    from seacast.training.checkpoint import load_run
    from seacast.windows import open_samples

    torch.set_num_threads(1)
    run = load_run(args.run)
    if run.tides is None:
        raise SystemExit(f"{args.run} is not tide-aware (model.base: tide): nothing to compare")
    variables = list(run.config.samples.variables)
    leads = list(run.config.samples.lead_times)
    tides = run.tides.select(variables)
    alpha = tides.damping_for(leads)  # [lead, C]
    lags = run.config.samples.lags
    regression = fit_for_run(
        run.config, tides, open_samples(run.config.store, run.config.samples).plan
    )
    store = xr.open_zarr(args.store, consolidated=False)
    start, end = args.season.split(":")
    inits = pd.date_range(start, end, periods=args.inits).round("h")
    sea = store["sea_mask"].values.astype(bool) if "sea_mask" in store else None

    errors: dict[str, list[np.ndarray]] = {
        "as trained": [],
        "adapted": [],
        "tide": [],
        "tide + damped anomaly": [],
        "tide + regressed anomaly": [],
    }
    seconds: list[float] = []
    reverted = 0
    with tempfile.TemporaryDirectory() as tmp:
        for k, init in enumerate(inits):
            stamp = f"{init:%Y-%m-%dT%H}"
            plain = forecast(
                args.run, store_path=args.store, init_time=stamp, out_dir=Path(tmp) / "plain"
            )
            started = time.perf_counter()
            adapted = forecast(
                args.run,
                store_path=args.store,
                init_time=stamp,
                out_dir=Path(tmp) / "zo",
                adapt="zo",
                adapt_target=args.adapt_target,
                adapt_hours=args.adapt_hours,
                adapt_steps=args.adapt_steps,
                adapt_lr=args.adapt_lr,
            )
            seconds.append(time.perf_counter() - started)
            reverted += bool(adapted.adaptation and adapted.adaptation.get("reverted"))
            with (
                xr.open_zarr(plain.path, consolidated=False) as fp,
                xr.open_zarr(adapted.path, consolidated=False) as fz,
            ):
                valid = fp["valid_time"].values[0]
                truth = np.stack([store[v].sel(time=valid).values for v in variables], axis=1)
                lag_times = init.to_datetime64() - np.arange(lags)[::-1] * np.timedelta64(1, "h")
                lag_hours = times_to_hours(lag_times)
                lagged = store[variables].sel(time=lag_times)
                anomalies = np.stack([lagged[v].values for v in variables], axis=1) - tides.predict(
                    lag_hours
                )  # [lags, C, H, W], oldest first
                anomaly0 = anomalies[-1]
                tide = np.stack([fp[f"{v}_tide"].values[0] for v in variables], axis=1)
                damped = tide + alpha[:, :, None, None] * anomaly0[None]
                regressed = tide + regression.predict(anomalies[None], sea)[0]
                for name, field in (
                    ("as trained", np.stack([fp[v].values[0] for v in variables], axis=1)),
                    ("adapted", np.stack([fz[v].values[0] for v in variables], axis=1)),
                    ("tide", tide),
                    ("tide + damped anomaly", damped),
                    ("tide + regressed anomaly", regressed),
                ):
                    errors[name].append(field - truth)  # [lead, C, H, W]
            print(f"  {k + 1}/{len(inits)} {stamp}", flush=True)

    mask = sea if sea is not None else np.isfinite(errors["tide"][0][0, 0])
    print(
        f"\n{args.run.name} on {args.store.name}, {len(inits)} inits {start}..{end}; adaptation: "
        f"{args.adapt_target}, {args.adapt_hours or 'default'} h, median {np.median(seconds):.1f} s a forecast, "
        f"{reverted} reverted (worse on its own window)"
    )
    header = "  ".join(f"{v} +{lead}h" for lead in leads for v in variables)
    print(f"RMSE per variable and lead time\n{'forecast':24s} {header}")
    rmse = {}
    for name, values in errors.items():
        stacked = np.stack(values)  # [inits, lead, C, H, W]
        rmse[name] = np.sqrt(np.nanmean(stacked[..., mask] ** 2, axis=(0, -1)))  # [lead, C]
        print(
            f"{name:24s} "
            + "  ".join(
                f"{rmse[name][i, c]:.4g}" for i in range(len(leads)) for c in range(len(variables))
            )
        )
    references = ("tide", "tide + damped anomaly", "tide + regressed anomaly")
    best = np.min(np.stack([rmse[name] for name in references]), axis=0)
    for name in ("as trained", "adapted"):
        print(
            f"{name + ' / best ref':24s} "
            + "  ".join(
                f"{rmse[name][i, c] / best[i, c]:.3f}"
                for i in range(len(leads))
                for c in range(len(variables))
            )
        )


if __name__ == "__main__":
    main()
