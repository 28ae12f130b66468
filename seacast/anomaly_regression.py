"""The tide + regressed anomaly: the anomaly at t0 + L from its lags at each point and over the basin.

With ``a = obs - tide`` and ``ā`` its mean over the sea points (the basin-wide set-up, which
reaches a point hours later), each sea point, variable and lead time ``L`` gets

    â(t0 + L) = Σ_k w_k a(t0 - k) + Σ_k v_k ā(t0 - k),    k = 0 .. lags - 1

fitted by ridge least squares on the training period only (``benchmarks/anomaly_persistence.py``
and ``docs/tides.md`` show why: the damped anomaly alone leaves most of the predictable part at
+6 and +12 h). For each lead time and variable, every fifth week of the training period is held
out and the candidate that predicts it best from the other weeks is kept: a ridge strength of
:data:`RIDGE_GRID` (the coefficients then refitted on every week), or the damped anomaly alone, or
the tide alone. A regression is kept only if it beats the better of those two by
:data:`REQUIRED_GAIN` on the held-out weeks: a smaller gain (+24 h, often) does not carry over to
another year (measured on the twin's 2025: zos +24 h lost 3.7 % to the damped anomaly).

Offers :class:`AnomalyRegression` (``predict`` from physical anomaly windows),
:func:`fit_anomaly_regression` (one streamed pass over the training period) and
:func:`fit_for_run` (the same for an experiment: its store, variables, lead times, lags and split).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from seacast.errors import DataError

# relative ridge strengths tried: lambda x the mean of the features' squares at each point
RIDGE_GRID = (0.0, 0.01, 0.1, 1.0, 10.0)
RIDGE_FLOOR = 1e-6
# a regression must beat the damped anomaly and the tide by this share on the held-out weeks
REQUIRED_GAIN = 0.02
HOLDOUT_BLOCK_HOURS = 7 * 24
HOLDOUT_EVERY = 5
INIT_CHUNK = 192  # init times per block of features (memory: 192 x C x points x 2 lags float32)


@dataclass
class AnomalyRegression:
    """``coefficients [n_lead, C, 2 lags, H, W]`` (NaN on land): own lags first (k = 0 is the init
    time), then the basin-mean lags. ``choice [n_lead, C]``: what the held-out weeks chose, a
    ridge strength (``ridge 0.01``), or ``damped`` / ``tide`` where no regression beat them."""

    variables: list[str]
    lead_times: list[int]
    lags: int
    coefficients: np.ndarray
    choice: np.ndarray
    samples: int

    def predict(self, anomaly: np.ndarray, sea_mask: np.ndarray) -> np.ndarray:
        """Anomaly windows ``[B, lags, C, H, W]`` (oldest first, NaN on land) -> ``[B, n_lead, C, H, W]``."""
        sea = np.asarray(sea_mask, dtype=bool)
        window = np.asarray(anomaly, dtype=np.float32)[:, -self.lags :]
        own = np.nan_to_num(window[:, ::-1])  # k = 0 (init time) first
        basin = np.nanmean(np.where(sea, own, np.nan), axis=(-2, -1))  # [B, lags, C]
        coef = np.nan_to_num(self.coefficients.astype(np.float32))
        predicted = np.einsum("bkchw,lckhw->blchw", own, coef[:, :, : self.lags])
        predicted += np.einsum("bkc,lckhw->blchw", basin, coef[:, :, self.lags :])
        return np.where(sea, predicted, np.nan)

    def select(self, variables: Sequence[str]) -> AnomalyRegression:
        k = [self.variables.index(v) for v in variables]
        return AnomalyRegression(
            list(variables),
            self.lead_times,
            self.lags,
            self.coefficients[:, k],
            self.choice[:, k],
            self.samples,
        )


class _Sums:
    """Normal equations per variable and sea point (shared by the lead times), and the targets'."""

    def __init__(self, n_lead: int, n_var: int, n_sea: int, n_feat: int) -> None:
        self.xtx = np.zeros((n_var, n_sea, n_feat, n_feat))
        self.xty = np.zeros((n_lead, n_var, n_sea, n_feat))
        self.yty = np.zeros((n_lead, n_var, n_sea))
        self.count = 0

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """``x [n, C, P, f]``, ``y [n_lead, n, C, P]`` (float32: a block's sums are short; the
        running sums are float64)."""
        self.xtx += np.einsum("ncpf,ncpg->cpfg", x, x, optimize=True)
        self.xty += np.einsum("ncpf,lncp->lcpf", x, y, optimize=True)
        self.yty += np.einsum("lncp,lncp->lcp", y, y)
        self.count += len(x)


def _solve(xtx: np.ndarray, xty: np.ndarray, ridge: float) -> np.ndarray:
    """Ridge solutions ``[C, P, f]`` for one lead time (``xty [C, P, f]``)."""
    n_feat = xtx.shape[-1]
    scale = np.trace(xtx, axis1=-2, axis2=-1)[..., None, None] / n_feat
    # a floor keeps collinear features (a point's own lags and the basin's, in a small basin) stable
    system = xtx + (max(ridge, RIDGE_FLOOR) * scale + 1e-12) * np.eye(n_feat)
    return np.linalg.solve(system, xty[..., None])[..., 0]


def _held_out_error(sums: _Sums, lead: int, w: np.ndarray) -> np.ndarray:
    """Sum over points of the squared error of ``w`` on ``sums`` (per variable)."""
    quad = np.einsum("cpf,cpfg,cpg->cp", w, sums.xtx, w)
    return (sums.yty[lead] - 2 * np.einsum("cpf,cpf->cp", w, sums.xty[lead]) + quad).sum(-1)


def fit_anomaly_regression(
    store: xr.Dataset,
    tides: object,
    variables: Sequence[str],
    periods: Sequence[tuple[int, int]],
    lead_times: Sequence[int],
    lags: int,
) -> AnomalyRegression:
    """Fit the regression on the store's hours inside ``periods`` (the training split) only.

    ``tides`` (:class:`~seacast.tides.TidalConstants`) gives the anomaly. An init time counts
    when its lags and every lead time lie in one period, on consecutive hourly frames.
    """
    from seacast.store import time_hours

    variables, lead_times = list(variables), [int(h) for h in lead_times]
    hours = np.asarray(time_hours(store["time"].values), dtype=np.int64)
    sea = np.asarray(store["sea_mask"].values, dtype=bool)
    inits = _valid_inits(hours, periods, lags, max(lead_times))
    if len(inits) < 10 * 2 * lags:
        raise DataError(
            f"the training period has {len(inits)} whole windows of {lags} lags and "
            f"{max(lead_times)} h: too few to fit the regressed-anomaly reference",
            "train on a longer period, or use model.anomaly_base: damped",
        )
    # every fifth week is held out, so the ridge is chosen on every season the training has
    # (every fifth day in a training period shorter than five weeks)
    span = int(hours[inits[-1]] - hours[inits[0]])
    block = HOLDOUT_BLOCK_HOURS if span >= HOLDOUT_EVERY * HOLDOUT_BLOCK_HOURS else 24
    held = (hours[inits] - hours[0]) // block % HOLDOUT_EVERY == HOLDOUT_EVERY - 1
    parts = [
        (inits[~held], _Sums(len(lead_times), len(variables), int(sea.sum()), 2 * lags)),
        (inits[held], _Sums(len(lead_times), len(variables), int(sea.sum()), 2 * lags)),
    ]
    tides = tides.select(variables)  # type: ignore[attr-defined]
    for chosen, sums in parts:
        for start in range(0, len(chosen), INIT_CHUNK):
            block = chosen[start : start + INIT_CHUNK]
            _accumulate(store, tides, variables, hours, sea, block, lags, lead_times, sums)

    fit, check = parts[0][1], parts[1][1]
    n_lead, n_var, n_sea = len(lead_times), len(variables), int(sea.sum())
    damping = tides.damping_for(lead_times)  # type: ignore[attr-defined]
    choice = np.empty((n_lead, n_var), dtype=object)
    coefficients = np.full((n_lead, n_var, 2 * lags, *sea.shape), np.nan)
    for lead in range(n_lead):
        # candidates: the ridge grid, the damped anomaly alone and the tide alone (no anomaly)
        candidates = {f"ridge {r:g}": _solve(fit.xtx, fit.xty[lead], r) for r in RIDGE_GRID}
        damped = np.zeros((n_var, n_sea, 2 * lags))
        damped[:, :, 0] = damping[lead][:, None]
        candidates |= {"damped": damped, "tide": np.zeros_like(damped)}
        names = list(candidates)
        errors = np.stack([_held_out_error(check, lead, w) for w in candidates.values()])
        simple = [names.index("damped"), names.index("tide")]
        for c in range(n_var):
            name = names[int(np.argmin(errors[:, c]))]
            fallback = simple[int(np.argmin(errors[simple, c]))]
            # a gain this small on held-out weeks is not worth the regression's weights
            small_gain = errors[names.index(name), c] > (1 - REQUIRED_GAIN) * errors[fallback, c]
            if name.startswith("ridge") and small_gain:
                name = names[fallback]
            choice[lead, c] = name
            if name.startswith("ridge"):
                w = _solve(
                    fit.xtx[c] + check.xtx[c],
                    fit.xty[lead, c] + check.xty[lead, c],
                    float(name.split()[1]),
                )
            else:
                w = candidates[name][c]
            coefficients[lead, c][:, sea] = w.T
    return AnomalyRegression(
        variables, lead_times, lags, coefficients, choice, fit.count + check.count
    )


def fit_for_run(
    cfg: Any, tides: object, plan: Any, store_path: Path | str | None = None
) -> AnomalyRegression:
    """The regression of experiment ``cfg`` on the training selections of split ``plan``."""
    from seacast.store import open_store
    from seacast.tides import train_periods

    store = open_store(store_path or cfg.store)
    try:
        return fit_anomaly_regression(
            store,
            tides,
            cfg.samples.variables,
            train_periods(plan),
            cfg.samples.lead_times,
            cfg.samples.lags,
        )
    finally:
        store.close()


def _valid_inits(
    hours: np.ndarray, periods: Sequence[tuple[int, int]], lags: int, reach: int
) -> np.ndarray:
    """Store indices whose frames ``i - lags + 1 .. i + reach`` are consecutive hours in one period."""
    n = len(hours)
    index = np.arange(lags - 1, n - reach)
    consecutive = hours[index + reach] - hours[index - lags + 1] == reach + lags - 1
    inside = np.zeros(len(index), dtype=bool)
    for lo, hi in periods:
        inside |= (hours[index - lags + 1] >= lo) & (hours[index + reach] <= hi)
    return index[consecutive & inside]


def _accumulate(
    store: xr.Dataset,
    tides: object,
    variables: list[str],
    hours: np.ndarray,
    sea: np.ndarray,
    inits: np.ndarray,
    lags: int,
    lead_times: list[int],
    sums: _Sums,
) -> None:
    """Add the init times ``inits`` (sorted store indices) to ``sums``."""
    from seacast.tides import _read

    first, last = int(inits[0]) - lags + 1, int(inits[-1]) + max(lead_times)
    frames = np.arange(first, last + 1)
    obs = _read(store, variables, frames)[..., sea]  # [t, C, P]
    anomaly = obs - tides.predict(hours[frames])[..., sea]  # type: ignore[attr-defined]
    anomaly = np.nan_to_num(anomaly.astype(np.float32))
    basin = anomaly.mean(axis=-1)  # [t, C]
    local = inits - first
    own = np.stack([anomaly[local - k] for k in range(lags)], axis=-1)  # [n, C, P, lags]
    mean = np.stack([basin[local - k] for k in range(lags)], axis=-1)  # [n, C, lags]
    x = np.concatenate([own, np.broadcast_to(mean[:, :, None], own.shape)], axis=-1)
    y = np.stack([anomaly[local + lead] for lead in lead_times])  # [n_lead, n, C, P]
    sums.add(np.ascontiguousarray(x), y)
