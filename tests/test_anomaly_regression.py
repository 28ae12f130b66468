"""The tide + regressed anomaly reference: what it learns, what it refuses to learn, and from when."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from seacast.anomaly_regression import AnomalyRegression, fit_anomaly_regression


class NoTide:
    """Tidal constants of a sea without tide: the anomaly is the observation."""

    period = ("", "")
    damping = np.zeros((1, 1))

    def __init__(self, lead_times: list[int], damping: float = 0.0) -> None:
        self.lead_times = lead_times
        self.damping = np.full((len(lead_times), 1), damping)

    def select(self, variables):
        return self

    def predict(self, hours):
        return np.zeros((len(hours), 1, 4, 4), dtype=np.float32)

    def damping_for(self, lead_times):
        return self.damping


def _store(values: np.ndarray, start: str = "2024-01-01") -> xr.Dataset:
    """A 4x4 one-variable store whose every sea point holds ``values`` (land in one corner)."""
    hours = len(values)
    sea = np.ones((4, 4), dtype=bool)
    sea[0, 0] = False
    field = np.broadcast_to(values[:, None, None], (hours, 4, 4)).astype(np.float32).copy()
    field[:, ~sea] = np.nan
    return xr.Dataset(
        {
            "zos": (("time", "latitude", "longitude"), field),
            "sea_mask": (("latitude", "longitude"), sea),
        },
        coords={
            "time": pd.date_range(start, periods=hours, freq="h"),
            "latitude": np.arange(4.0),
            "longitude": np.arange(4.0),
        },
    )


def _hours(ds: xr.Dataset) -> np.ndarray:
    return ((ds["time"].values - np.datetime64("1970-01-01")) // np.timedelta64(1, "h")).astype(int)


def test_a_basin_wide_oscillation_is_predicted_from_its_lags() -> None:
    # an undamped 30-hour seiche: two lags determine it exactly, persistence cannot follow it
    t = np.arange(24 * 120)
    ds = _store(np.sin(2 * np.pi * t / 30.0))
    hours = _hours(ds)
    fit = fit_anomaly_regression(ds, NoTide([6, 12]), ["zos"], [(hours[0], hours[-1])], [6, 12], 3)
    assert fit.choice[0, 0].startswith("ridge") and fit.choice[1, 0].startswith("ridge")
    window = np.stack([ds["zos"].values[100 - 2 + k] for k in range(3)])[None, :, None]
    predicted = fit.predict(window, ds["sea_mask"].values)
    truth = ds["zos"].values[[106, 112]]
    np.testing.assert_allclose(
        predicted[0, :, 0][:, ds["sea_mask"].values], truth[:, ds["sea_mask"].values], atol=1e-3
    )
    assert np.isnan(predicted[0, 0, 0, 0, 0])  # land stays land


def test_an_unpredictable_anomaly_is_forecast_as_no_anomaly() -> None:
    noise = np.random.default_rng(0).standard_normal(24 * 120)
    ds = _store(noise)
    hours = _hours(ds)
    fit = fit_anomaly_regression(ds, NoTide([12]), ["zos"], [(hours[0], hours[-1])], [12], 4)
    assert np.nanmax(np.abs(fit.coefficients)) < 0.1
    fresh = _store(np.random.default_rng(1).standard_normal(24 * 20))["zos"].values
    inits = np.arange(3, len(fresh) - 12)
    windows = np.stack([fresh[inits - 3 + k] for k in range(4)], axis=1)[:, :, None]
    predicted = fit.predict(windows, ds["sea_mask"].values)[:, 0, 0]
    truth = fresh[inits + 12]
    assert np.nanmean((truth - predicted) ** 2) < 1.01 * np.nanmean(truth**2)


def test_only_the_training_period_is_read() -> None:
    # the anomaly follows one law until day 60 and another after it: a fit on the first
    # 60 days must know only the first
    t = np.arange(24 * 120)
    values = np.where(t < 24 * 60, np.sin(2 * np.pi * t / 30.0), np.sin(2 * np.pi * t / 50.0))
    ds = _store(values)
    hours = _hours(ds)
    early = fit_anomaly_regression(
        ds, NoTide([6]), ["zos"], [(hours[0], hours[24 * 60 - 1])], [6], 3
    )
    later = fit_anomaly_regression(ds, NoTide([6]), ["zos"], [(hours[24 * 60], hours[-1])], [6], 3)
    assert isinstance(early, AnomalyRegression)
    assert not np.allclose(
        early.coefficients[0, 0, :, 1, 1], later.coefficients[0, 0, :, 1, 1], atol=1e-2
    )
    window = np.stack([ds["zos"].values[500 - 2 + k] for k in range(3)])[None, :, None]
    predicted = early.predict(window, ds["sea_mask"].values)[0, 0, 0, 1, 1]
    assert abs(predicted - ds["zos"].values[506, 1, 1]) < 1e-3
