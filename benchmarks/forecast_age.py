"""How much the age of the weather forecast matters, per lead time, on the twin.

A per-point ridge regression predicts the anomaly (obs - tide) at t0 + L from the sea alone (the
point's and the basin mean's lags) and, beside it, from the sea and a weather forecast of
pressure and wind stress at t0 + 1 ... t0 + 24 h, in six 4-hour block means at the point and over
the basin. The forecasts are the twin's own weather without the storms born after their issue
time (:meth:`seacast.twin.weather.Weather.fields`):

* **day-ahead**: each hour's value issued 24 h before it (the store's ``msl``, ``iews``, ``inss``);
* **freshest**: each hour t0 + k from the freshest of the series issued 6, 12, 18 and 24 h ahead that
  was issued by t0 (what ``samples.forcing`` reads from the twin's store);
* **issued at t0**: every hour from the forecast issued at the init time;
* **analysis**: the weather as it happened (leaks the future: an upper bound, not a forecast).

Tides fitted on the first 70 % of the store; the regressions on init times there (every 3 h),
scored on the last 15 %. Prints per lead time and variable the MSE over the sea-only regression's,
at ``--points`` random sea points. About 1.5 min on 2 cores for the demo store.

    .venv/bin/python benchmarks/forecast_age.py [--config configs/data/twin_dutch_coast.yaml]
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
import xarray as xr

from seacast.config import DataConfig, load_config
from seacast.store import time_hours
from seacast.tides import _read, fit_tides
from seacast.twin.model import TwinModel
from seacast.twin.tides import hours_since_epoch
from seacast.twin.weather import FORECAST_AGES_HOURS, RHO_WATER

LEAD_TIMES = (6, 12, 24)
HORIZON, BLOCKS, LAGS = 24, 6, 6
VARIABLES = ["uo", "vo", "zos"]
KINDS = ("day-ahead", "freshest", "issued at t0", "analysis")


def issue_time(kind: str, t0: float, hour: float) -> float | None:
    """When the forecast of ``hour`` read at ``t0`` was issued (None: the analysis)."""
    ahead = hour - t0
    if kind == "day-ahead":
        return hour - 24.0
    if kind == "freshest":
        return hour - min(a for a in FORECAST_AGES_HOURS if a >= ahead)
    return t0 if kind == "issued at t0" else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/data/twin_dutch_coast.yaml")
    parser.add_argument("--points", type=int, default=150)
    parser.add_argument("--every", type=int, default=3, help="hours between init times")
    args = parser.parse_args()

    cfg = load_config(DataConfig, args.config)
    store = xr.open_zarr(cfg.store.path, consolidated=False, zarr_format=3, chunks=None)
    hours = np.asarray(time_hours(store["time"].values), np.int64)
    n_time = len(hours)
    train_end, test_start = int(0.7 * n_time), int(0.85 * n_time)
    tides = fit_tides(store, VARIABLES, [(int(hours[0]), int(hours[train_end]))])
    anomaly = _read(store, VARIABLES, np.arange(n_time)) - tides.predict(hours)
    sea = np.asarray(store["sea_mask"].values, bool).ravel()
    anomaly = anomaly.reshape(n_time, len(VARIABLES), -1).astype(np.float64)
    basin = np.nanmean(anomaly[:, :, sea], axis=2)
    points = np.random.default_rng(0).choice(np.flatnonzero(sea), args.points, replace=False)

    first = pd.Timestamp(store["time"].values[0])
    weather = TwinModel(cfg, first - pd.Timedelta(days=6), pd.Timestamp(store["time"].values[-1]))
    twin_hours = hours_since_epoch(first) + (hours - hours[0])
    inits = np.arange(LAGS, n_time - HORIZON - 1, args.every)

    def forecast(kind: str) -> np.ndarray:
        """``[n_init, BLOCKS, 3, points + 1]``: block means at the points, then over the sea."""
        out = np.zeros((len(inits), HORIZON, 3, points.size + 1))
        for n, i in enumerate(inits):
            for k in range(1, HORIZON + 1):
                hour = twin_hours[i + k]
                p, tx, ty = weather.weather.fields(
                    hour, known_at=issue_time(kind, twin_hours[i], hour)
                )
                fields = np.stack([p, RHO_WATER * tx, RHO_WATER * ty]).reshape(3, -1)
                out[n, k - 1, :, :-1] = fields[:, points]
                out[n, k - 1, :, -1] = fields[:, sea].mean(axis=1)
        return out.reshape(len(inits), BLOCKS, HORIZON // BLOCKS, 3, -1).mean(axis=2)

    forecasts = {kind: forecast(kind) for kind in KINDS}
    train = inits < train_end - HORIZON
    test = inits >= test_start

    def test_mse(features: np.ndarray, target: np.ndarray, ridge: float = 1e-3) -> float:
        mean, std = features[train].mean(0), features[train].std(0) + 1e-12
        a = np.c_[(features[train] - mean) / std, np.ones(train.sum())]
        w = np.linalg.solve(a.T @ a + ridge * len(a) * np.eye(a.shape[1]), a.T @ target[train])
        b = np.c_[(features[test] - mean) / std, np.ones(test.sum())]
        return float(np.mean((b @ w - target[test]) ** 2))

    print(f"MSE over the sea-only regression's, {points.size} points, {test.sum()} test inits")
    print("| lead | variable | " + " | ".join(KINDS) + " |")
    print("|---|---|" + "---|" * len(KINDS))
    for lead in LEAD_TIMES:
        for c, variable in enumerate(VARIABLES):
            totals = dict.fromkeys(("sea only", *KINDS), 0.0)
            for j, p in enumerate(points):
                lags = np.stack(
                    [anomaly[inits - k, c, p] for k in range(LAGS)]
                    + [basin[inits - k, c] for k in range(LAGS)],
                    axis=1,
                )
                target = anomaly[inits + lead, c, p]
                totals["sea only"] += test_mse(lags, target)
                for kind, f in forecasts.items():
                    ahead = np.c_[
                        f[..., j].reshape(len(inits), -1), f[..., -1].reshape(len(inits), -1)
                    ]
                    totals[kind] += test_mse(np.c_[lags, ahead], target)
            ratios = " | ".join(f"{totals[k] / totals['sea only']:.3f}" for k in KINDS)
            print(f"| +{lead} h | {variable} | {ratios} |", flush=True)


if __name__ == "__main__":
    main()
