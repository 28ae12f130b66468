"""A gain on the tide + regressed anomaly, refitted on the last weeks, on a held-out year.

What ``forecast --adapt zo --adapt-target gain`` does, in closed form and for every init time:
per lead time and variable, the gain ``g = sum(A y) / sum(A A)`` of the regressed anomaly ``A``
against the true anomaly ``y`` over the pairs known at the init time in the last W days
(clipped to 0-1.5, kept only where it lowers that window's MSE by 2 %), applied to the next
forecast. Prints MSE(gain x regressed) / MSE(regressed) per window, inits every 6 h.

    .venv/bin/python benchmarks/adapt_gain_window.py --run RUN [--held-out data/twin_seed1_2025.zarr]
"""

import argparse
import sys
import warnings
from pathlib import Path

import numpy as np
import xarray as xr

sys.path.insert(0, str(Path(__file__).parent))
from anomaly_persistence import anomalies  # noqa: E402

from seacast.anomaly_regression import fit_for_run  # noqa: E402
from seacast.config import ExperimentConfig, load_config  # noqa: E402
from seacast.tides import load_tides  # noqa: E402
from seacast.windows import open_samples  # noqa: E402

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--run", type=Path, required=True, help="a tide-aware run folder")
parser.add_argument("--held-out", type=Path, default=Path("data/twin_seed1_2025.zarr"))
args = parser.parse_args()
run, held = args.run, args.held_out
cfg = load_config(ExperimentConfig, run / "config.yaml")
variables = list(cfg.samples.variables)
tides = load_tides(run / "tides.nc").select(variables)
sets = open_samples(cfg.store, cfg.samples)
fit = fit_for_run(cfg, tides, sets.plan)
print("choice", fit.choice)
hours, anomaly = anomalies(held, tides, variables)  # [T, C, P]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    sea = np.asarray(xr.open_zarr(held, consolidated=False)["sea_mask"].values, dtype=bool)
lags = cfg.samples.lags
leads = list(cfg.samples.lead_times)
inits = np.arange(lags - 1, len(hours) - max(leads))
field = np.full((len(hours), anomaly.shape[1], *sea.shape), np.nan, dtype=np.float32)
field[:, :, sea] = anomaly
pred = np.empty((len(inits), len(leads), anomaly.shape[1], sea.sum()), np.float32)
for a in range(0, len(inits), 256):
    idx = inits[a : a + 256]
    w = np.stack([field[idx - lags + 1 + k] for k in range(lags)], axis=1)
    pred[a : a + 256] = fit.predict(w, sea)[..., sea]
for W in (28, 42, 56, 90):
    print(
        f"window {W} d: MSE(gain x regressed) / MSE(regressed), inits every 6 h after the first window"
    )
    for i, L in enumerate(leads):
        truth = anomaly[inits + L]  # [n, C, P]
        A = pred[:, i]
        ay = np.einsum("ncp,ncp->nc", A, truth)
        aa = np.einsum("ncp,ncp->nc", A, A)
        cay, caa = np.cumsum(ay, 0), np.cumsum(aa, 0)
        wh = W * 24
        rows = []
        sel = np.arange(wh + L, len(inits), 6)
        hi = sel - L  # pairs known at t0: init s <= t0 - L
        lo = sel - L - wh
        g = (cay[hi] - cay[lo]) / np.maximum(caa[hi] - caa[lo], 1e-12)
        g = np.clip(g, 0, 1.5)
        # the window's own gain: keep g only where it lowers the window's MSE by >= 2 %
        cyy = np.cumsum(np.einsum("ncp,ncp->nc", truth, truth), 0)
        yy = cyy[hi] - cyy[lo]
        ay_w = cay[hi] - cay[lo]
        aa_w = caa[hi] - caa[lo]
        e_one = yy - 2 * ay_w + aa_w
        e_g = yy - 2 * g * ay_w + g * g * aa_w
        g = np.where(e_g <= 0.98 * e_one, g, 1.0)
        e1 = ((truth[sel] - A[sel]) ** 2).mean(axis=(0, 2))
        eg = ((truth[sel] - g[:, :, None] * A[sel]) ** 2).mean(axis=(0, 2))
        et = (truth[sel] ** 2).mean(axis=(0, 2))
        print(
            f"  +{L:>2} h "
            + "  ".join(
                f"{v} {eg[c] / e1[c]:.3f} (tide {et[c] / e1[c]:.2f}, median g {np.median(g[:, c]):.2f})"
                for c, v in enumerate(variables)
            )
        )
