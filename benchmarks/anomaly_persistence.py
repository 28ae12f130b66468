"""How long the anomaly (obs - tide) persists, on each split and a held-out year: why +12 h is hard.

The strongest reference and every tide-aware model's start is ``tide(t0+L) + alpha_L a(t0)``,
with ``alpha_L`` fitted by least squares on the training period. Its MSE against the tide
alone, over samples where both are scored, is ``1 - 2 alpha rho + alpha^2`` (for equal
variances), where ``rho`` is the anomaly's lag-L regression factor on those samples: it
loses to the tide wherever ``alpha > 2 rho``. This prints, per variable and lead time:

* ``alpha`` (fitted on the training split) and the best factor on validation, test and a
  held-out store (``--held-out``: every init time), with the damped reference's MSE / the tide's;
* the best factor month by month over the store, and its spread;
* the damped reference with ``alpha`` re-estimated over the last ``--window`` hours before each
  init (the most a window-based adaptation of the damping could know), against the fixed one;
* with ``--held-out``, the tide + regressed anomaly (:mod:`seacast.anomaly_regression`, fitted on
  the training split with the run's lags): its MSE over the damped reference's on the held-out store,
  per point only and with the spatial map of EOFs.

Numpy only; sea points pooled; samples are every init time whose window fits the split.

    .venv/bin/python benchmarks/anomaly_persistence.py --run RUN [--held-out data/twin_seed1_2025.zarr]
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]


def anomalies(store_path: Path, tides, variables: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Hours and the anomaly ``[T, C, n_sea]`` of ``store_path`` (float64)."""
    import xarray as xr

    from seacast.store import time_hours

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = xr.open_zarr(store_path, consolidated=False)
    hours = np.asarray(time_hours(ds["time"].values), dtype=np.int64)
    sea = np.asarray(ds["sea_mask"].values, dtype=bool)
    tide = tides.predict(hours)[..., sea]
    obs = np.stack([ds[v].values[:, sea] for v in variables], axis=1)
    return hours, (obs - tide).astype(np.float64)


def factor(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.nansum(x * y) / np.nansum(x * x))


def ratio_to_tide(x: np.ndarray, y: np.ndarray, alpha: np.ndarray | float) -> float:
    """MSE of ``tide + alpha a(t0)`` over MSE of the tide, on these pairs."""
    return float(np.nanmean((y - alpha * x) ** 2) / np.nanmean(y**2))


def windowed_alpha(anomaly: np.ndarray, lead: int, window: int) -> np.ndarray:
    """Per init index, the factor fitted on the pairs (s - lead, s) of the last ``window`` hours, in [0, 1]."""
    n = len(anomaly)
    cross, base = np.zeros(n), np.zeros(n)
    cross[lead:] = np.nansum(anomaly[:-lead] * anomaly[lead:], axis=1)
    base[lead:] = np.nansum(anomaly[:-lead] ** 2, axis=1)
    cc, cb = np.cumsum(cross), np.cumsum(base)
    shift = (
        np.concatenate([np.zeros(window), cc[:-window]]),
        np.concatenate([np.zeros(window), cb[:-window]]),
    )
    return np.clip((cc - shift[0]) / np.maximum(cb - shift[1], 1e-12), 0.0, 1.0)


def regressed_over_damped(
    cfg, tides, sets, held, held_out: Path
) -> tuple[dict[int, list[float]], dict[int, list[float]]]:
    """MSE over the damped anomaly's on the held-out store, per lead and variable, of the tide +
    regressed anomaly per point only and with the spatial map (the run's ``tides.anomaly_modes``)."""
    per_point = cfg.model_copy(update={"tides": cfg.tides.model_copy(update={"anomaly_modes": 0})})
    return (
        _regressed_over_damped(per_point, tides, sets, held, held_out),
        _regressed_over_damped(cfg, tides, sets, held, held_out),
    )


def _regressed_over_damped(cfg, tides, sets, held, held_out: Path) -> dict[int, list[float]]:
    import xarray as xr

    from seacast.anomaly_regression import fit_for_run

    fit = fit_for_run(cfg, tides, sets.plan)
    hours, anomaly, inits = held
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sea = np.asarray(xr.open_zarr(held_out, consolidated=False)["sea_mask"].values, dtype=bool)
    inits = inits[::3]
    lags = cfg.samples.lags
    field = np.full((len(hours), anomaly.shape[1], *sea.shape), np.nan, dtype=np.float32)
    field[:, :, sea] = anomaly
    windows = np.stack([field[inits - lags + 1 + k] for k in range(lags)], axis=1)
    predicted = fit.predict(windows, sea)[..., sea]  # [n, n_lead, C, P]
    out: dict[int, list[float]] = {}
    for i, lead in enumerate(cfg.samples.lead_times):
        alpha = tides.damping_for([lead])[0]
        truth = anomaly[inits + lead]
        damped = np.mean((truth - alpha[None, :, None] * anomaly[inits]) ** 2, axis=(0, 2))
        out[lead] = list(np.mean((truth - predicted[:, i]) ** 2, axis=(0, 2)) / damped)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a tide-aware run folder")
    parser.add_argument("--held-out", type=Path, default=None, help="a store not trained on")
    parser.add_argument("--window", type=int, default=120, help="hours of the windowed factor")
    args = parser.parse_args()

    from seacast.config import ExperimentConfig, load_config
    from seacast.tides import load_tides
    from seacast.windows import open_samples

    cfg = load_config(ExperimentConfig, args.run / "config.yaml")
    variables = list(cfg.samples.variables)
    tides = load_tides(args.run / "tides.nc").select(variables)
    sets = open_samples(cfg.store, cfg.samples)
    hours, anomaly = anomalies(Path(cfg.store), tides, variables)
    position = {int(h): i for i, h in enumerate(hours)}
    inits = {
        name: np.array([position[int(h)] for h in ds.init_hours])
        for name, ds in (
            ("train", sets.train),
            ("validation", sets.validation),
            ("test", sets.test),
        )
    }
    held = None
    if args.held_out:
        held_hours, held_anomaly = anomalies(args.held_out, tides, variables)
        reach = max(cfg.samples.lead_times)
        held = (held_hours, held_anomaly, np.arange(cfg.samples.lags - 1, len(held_hours) - reach))
    months = pd.DatetimeIndex(pd.to_datetime(hours, unit="h")).month.to_numpy()
    regressed = None
    if held is not None:
        regressed = regressed_over_damped(cfg, tides, sets, held, args.held_out)

    print(
        f"run {args.run.name}: store {cfg.store}, split {cfg.samples.split.preset}, tides {tides.period}"
    )
    print(
        "factor: fitted alpha (train) / best on that set; ratio: MSE of tide + alpha a(t0) / MSE of the tide"
    )
    for c, variable in enumerate(variables):
        for lead in cfg.samples.lead_times:
            alpha = float(tides.damping_for([lead])[0, c])
            cells = []
            for name, index in inits.items():
                x, y = anomaly[index, c], anomaly[index + lead, c]
                cells.append(f"{name} {factor(x, y):.2f} ({ratio_to_tide(x, y, alpha):.2f})")
            if held is not None:
                _, a, index = held
                x, y = a[index, c], a[index + lead, c]
                cells.append(f"held-out {factor(x, y):.2f} ({ratio_to_tide(x, y, alpha):.2f})")
            by_month = []
            for m in range(1, 13):
                index = np.flatnonzero(months == m)
                index = index[index + lead < len(hours)]
                if len(index) > lead:
                    by_month.append(factor(anomaly[index, c], anomaly[index + lead, c]))
            test = inits["test"]
            local = windowed_alpha(anomaly[:, c], lead, args.window)[test][:, None]
            x, y = anomaly[test, c], anomaly[test + lead, c]
            print(
                f"{variable} +{lead:>2} h  alpha {alpha:.2f} | "
                + " | ".join(cells)
                + f" | months {min(by_month):.2f}..{max(by_month):.2f}"
                + f" | test, last {args.window} h factor ({ratio_to_tide(x, y, local):.2f})"
                + (
                    f" | held-out, regressed / damped: per point {regressed[0][lead][c]:.2f}, "
                    f"with the map {regressed[1][lead][c]:.2f}"
                    if regressed
                    else ""
                )
            )


if __name__ == "__main__":
    main()
