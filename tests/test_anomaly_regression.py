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


def _travelling_pulses(hours: int, seed: int) -> xr.Dataset:
    """A 4 x 16 store of pulses born at random at the west edge, moving east one cell an hour."""
    rng = np.random.default_rng(seed)
    inflow = np.convolve(rng.standard_normal(hours + 16), np.ones(3) / 3, mode="same")
    field = np.empty((hours, 4, 16), dtype=np.float32)
    for column in range(16):
        field[:, :, column] = inflow[16 - column : 16 - column + hours, None]
    return xr.Dataset(
        {
            "zos": (("time", "latitude", "longitude"), field),
            "sea_mask": (("latitude", "longitude"), np.ones((4, 16), dtype=bool)),
        },
        coords={
            "time": pd.date_range("2024-01-01", periods=hours, freq="h"),
            "latitude": np.arange(4.0),
            "longitude": np.arange(16.0),
        },
    )


class NoTideOn(NoTide):
    def predict(self, hours):
        return np.zeros((len(hours), 1, 4, 16), dtype=np.float32)


def _mse_on_fresh_pulses(fit: AnomalyRegression, lead: int) -> float:
    fresh = _travelling_pulses(24 * 10, seed=1)["zos"].values
    inits = np.arange(2, len(fresh) - lead)
    windows = np.stack([fresh[inits - 2 + k] for k in range(3)], axis=1)[:, :, None]
    predicted = fit.predict(windows, np.ones((4, 16), dtype=bool))[:, 0, 0]
    return float(np.mean((fresh[inits + lead] - predicted)[..., lead:] ** 2))


def test_a_travelling_anomaly_is_predicted_by_the_spatial_map_not_per_point() -> None:
    # at a point the next pulse is random; the field shows it three cells upstream
    ds = _travelling_pulses(24 * 60, seed=0)
    hours = _hours(ds)
    period = [(hours[0], hours[-1])]
    per_point = fit_anomaly_regression(ds, NoTideOn([3]), ["zos"], period, [3], 3)
    spatial = fit_anomaly_regression(ds, NoTideOn([3]), ["zos"], period, [3], 3, modes=16)
    assert spatial.choice[0, 0] == "spatial" and per_point.choice[0, 0] != "spatial"
    assert np.all(spatial.coefficients[0, 0] == 0)  # the map replaces the per-point weights
    assert _mse_on_fresh_pulses(spatial, 3) < 0.05 * _mse_on_fresh_pulses(per_point, 3)
    assert spatial.describe() == "+3 h map (zos)"


def test_the_spatial_map_is_not_offered_beyond_its_longest_lead_time() -> None:
    ds = _travelling_pulses(24 * 60, seed=0)
    hours = _hours(ds)
    fit = fit_anomaly_regression(
        ds,
        NoTideOn([3, 6]),
        ["zos"],
        [(hours[0], hours[-1])],
        [3, 6],
        3,
        modes=16,
        modes_max_lead=3,
    )
    assert fit.choice[0, 0] == "spatial" and fit.choice[1, 0] != "spatial"
    assert fit.spatial is not None and fit.spatial.use.tolist() == [[1.0], [0.0]]


def test_salinity_is_left_to_the_per_point_regression() -> None:
    ds = _travelling_pulses(24 * 60, seed=0).rename({"zos": "so"})
    hours = _hours(ds)
    fit = fit_anomaly_regression(
        ds, NoTideOn([3]), ["so"], [(hours[0], hours[-1])], [3], 3, modes=16
    )
    assert fit.spatial is None and fit.choice[0, 0] != "spatial"


def test_with_the_forecast_the_map_is_corrected_per_point_by_the_weather_to_come() -> None:
    from seacast.forcing import ForcingInputs

    def pulses_and_wind(seed: int) -> xr.Dataset:
        # pulses travel as before; a uniform wind adds its own (white) push at the same hour
        ds = _travelling_pulses(24 * 60 if seed == 0 else 24 * 10, seed=seed)
        wind = np.random.default_rng(seed + 10).standard_normal(ds.sizes["time"])
        wind = np.broadcast_to(wind[:, None, None], ds["zos"].shape).astype(np.float32)
        ds["zos"] = ds["zos"] + 0.5 * wind
        ds["iews"] = (("time", "latitude", "longitude"), wind.copy())
        return ds

    ds = pulses_and_wind(0)
    hours = _hours(ds)
    forcing = ForcingInputs.from_stats({"iews": {"mean": 0.0, "std": 1.0}}, ["iews"], 3, 3)
    args = (ds, NoTideOn([3]), ["zos"], [(hours[0], hours[-1])], [3], 3)
    map_only = fit_anomaly_regression(*args, modes=16)
    corrected = fit_anomaly_regression(*args, modes=16, forcing=forcing)
    assert map_only.choice[0, 0] == "spatial"
    assert str(corrected.choice[0, 0]).startswith("spatial + ridge")
    assert corrected.describe() == "+3 h map + per point with the weather forecast (zos)"

    fresh = pulses_and_wind(1)
    sea = np.ones((4, 16), dtype=bool)
    values = fresh["zos"].values
    inits = np.arange(2, len(values) - 3)
    windows = np.stack([values[inits - 2 + k] for k in range(3)], axis=1)[:, :, None]
    encoded = forcing.read(fresh, np.arange(len(values)), sea)
    channels = np.stack([forcing.channels(encoded[i + forcing.offsets()]).numpy() for i in inits])

    def mse(fit: AnomalyRegression, **kwargs) -> float:
        predicted = fit.predict(windows, sea, **kwargs)[:, 0, 0]
        return float(np.mean((values[inits + 3] - predicted)[..., 3:] ** 2))

    # the map cannot know the wind at t0 + 3 h (0.25 of its variance is left); the forecast does
    assert mse(corrected, forcing=channels) < 0.3 * mse(map_only)


def test_a_saved_regression_predicts_as_the_fitted_one(tmp_path) -> None:
    from seacast.anomaly_regression import load_regression

    ds = _travelling_pulses(24 * 60, seed=0)
    hours = _hours(ds)
    fit = fit_anomaly_regression(
        ds, NoTideOn([3]), ["zos"], [(hours[0], hours[-1])], [3], 3, modes=16
    )
    loaded = load_regression(fit.save(tmp_path / "fit.npz"))
    assert loaded.describe() == fit.describe() and loaded.samples == fit.samples
    fresh = _travelling_pulses(24 * 10, seed=1)["zos"].values
    windows = np.stack([fresh[k : k + 3] for k in range(50)])[:, :, None]
    sea = np.ones((4, 16), dtype=bool)
    np.testing.assert_array_equal(loaded.predict(windows, sea), fit.predict(windows, sea))
