"""Streaming metrics, seasons and baselines on hand-computed examples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seacast.errors import DataError
from seacast.evaluation.baselines import Climatology, persistence
from seacast.evaluation.metrics import (
    error_accum,
    error_compute,
    error_init,
    error_merge,
    skill_score,
)
from seacast.evaluation.seasons import group_labels, group_names, season_of


def _batch(values: list[float]) -> np.ndarray:
    """[B=1, lead=1, var=1, 1, n] from a list."""
    return np.asarray(values, dtype=float).reshape(1, 1, 1, 1, -1)


def test_each_metric_on_a_hand_computed_example():
    # errors: +1, -2, +3, 0 -> MSE 14/4, MAE 6/4, bias 2/4
    acc = error_init(["zos"], [6])
    error_accum(acc, _batch([2, 0, 4, 1]), _batch([1, 2, 1, 1]))
    out = error_compute(acc)
    assert out["mse"].item() == pytest.approx(3.5)
    assert out["rmse"].item() == pytest.approx(np.sqrt(3.5))
    assert out["mae"].item() == pytest.approx(1.5)
    assert out["bias"].item() == pytest.approx(0.5)
    assert out["count"].item() == 4


def test_land_and_nan_points_are_ignored():
    acc = error_init(["zos"], [6])
    forecast = _batch([2, 100, 4, np.nan])
    truth = _batch([1, 0, 1, 1])
    sea_mask = np.array([[True, False, True, True]])
    error_accum(acc, forecast, truth, sea_mask=sea_mask)
    out = error_compute(acc)
    # only points 0 and 2 count: errors +1, +3
    assert out["count"].item() == 2
    assert out["mse"].item() == pytest.approx(5.0)
    assert out["bias"].item() == pytest.approx(2.0)


def test_groups_variables_and_lead_times_are_kept_apart():
    acc = error_init(["uo", "vo"], [1, 6], groups=("DJF", "JJA"))
    forecast = np.zeros((2, 2, 2, 1, 1))
    truth = np.zeros_like(forecast)
    truth[0, 1, 0] = 2.0  # DJF sample, lead 6, uo: error -2
    truth[1, 0, 1] = -1.0  # JJA sample, lead 1, vo: error +1
    error_accum(acc, forecast, truth, groups=["DJF", "JJA"])
    out = error_compute(acc)
    assert out["bias"].sel(group="DJF", lead_time=6, variable="uo").item() == -2.0
    assert out["bias"].sel(group="JJA", lead_time=1, variable="vo").item() == 1.0
    assert out["mse"].sel(group="DJF", lead_time=1, variable="vo").item() == 0.0
    assert list(out["samples"].values) == [1, 1]


def test_streaming_equals_whole_array_and_merge_is_order_free():
    rng = np.random.default_rng(1)
    forecast = rng.normal(size=(12, 3, 2, 5, 6))
    truth = rng.normal(size=forecast.shape)
    sea = rng.random((5, 6)) > 0.3
    groups = ["DJF", "MAM"] * 6

    whole = error_compute(
        error_accum(
            error_init(["a", "b"], [1, 2, 3], ("DJF", "MAM"), shape=(5, 6)),
            forecast,
            truth,
            groups,
            sea,
        )
    )
    parts = []
    for lo in range(0, 12, 5):  # uneven batches
        acc = error_init(["a", "b"], [1, 2, 3], ("DJF", "MAM"), shape=(5, 6))
        parts.append(
            error_accum(acc, forecast[lo : lo + 5], truth[lo : lo + 5], groups[lo : lo + 5], sea)
        )
    streamed = error_compute(error_merge(error_merge(parts[2], parts[0]), parts[1]))
    for name in ("mse", "rmse", "mae", "bias", "count", "mean_error"):
        np.testing.assert_allclose(streamed[name].values, whole[name].values, rtol=1e-12)

    # and against a direct numpy computation for one cell
    rows = [i for i, g in enumerate(groups) if g == "MAM"]
    err = (forecast[rows, 2, 1] - truth[rows, 2, 1])[:, sea]
    assert whole["mse"].sel(group="MAM", lead_time=3, variable="b").item() == pytest.approx(
        (err**2).mean()
    )
    assert whole["mae"].sel(group="MAM", lead_time=3, variable="b").item() == pytest.approx(
        np.abs(err).mean()
    )
    mean_map = (forecast[:, 0, 0] - truth[:, 0, 0]).mean(axis=0)
    np.testing.assert_allclose(whole["mean_error"].values[0, 0][sea], mean_map[sea])


def test_merge_refuses_mismatched_accumulators():
    with pytest.raises(DataError, match="cannot merge"):
        error_merge(error_init(["a"], [1]), error_init(["a"], [2]))


def test_skill_score():
    assert skill_score(1.0, 4.0) == pytest.approx(0.75)
    assert skill_score(4.0, 4.0) == 0.0
    assert skill_score(8.0, 4.0) == pytest.approx(-1.0)


def test_seasons_by_init_month():
    times = pd.to_datetime(
        [
            "2024-12-31T23",
            "2024-01-15T00",
            "2024-03-01T00",
            "2024-06-30T00",
            "2024-09-01T00",
            "2024-11-30T00",
        ]
    )
    assert list(season_of(times)) == ["DJF", "DJF", "MAM", "JJA", "SON", "SON"]
    assert group_names("season") == ("DJF", "MAM", "JJA", "SON")
    assert list(group_labels(times[:2], "all")) == ["all", "all"]


def test_persistence_repeats_the_init_frame():
    last = np.arange(8, dtype=float).reshape(2, 1, 2, 2)
    out = persistence(last, 3)
    assert out.shape == (2, 3, 1, 2, 2)
    np.testing.assert_array_equal(out[:, 2], last)


def test_climatology_hour_of_day_by_month_from_training_period_only():
    import xarray as xr

    times = pd.date_range("2024-01-01", "2024-03-31T23", freq="h")
    hour = times.hour.to_numpy()[:, None, None]
    month = times.month.to_numpy()[:, None, None]
    values = (10.0 * month + hour + np.zeros((1, 2, 2))).astype(np.float32)
    values[:, 0, 0] = np.nan  # land
    store = xr.Dataset({"zos": (("time", "latitude", "longitude"), values)}, coords={"time": times})
    # training: January and February only; March is "test"
    clim = Climatology.from_store(store, ["zos"], [("2024-01-01", "2024-02-29T23")])
    assert clim.months_covered() == [1, 2]
    pred = clim.predict(pd.to_datetime(["2024-01-20T05", "2024-02-03T23", "2024-03-10T05"]))
    assert pred[0, 0, 1, 1] == pytest.approx(15.0)
    assert pred[1, 0, 1, 1] == pytest.approx(43.0)
    # March unseen in training: hour-of-day mean over Jan (31 days) and Feb (29 days)
    assert pred[2, 0, 1, 1] == pytest.approx((31 * 15 + 29 * 25) / 60)
    assert np.isnan(pred[0, 0, 0, 0])
