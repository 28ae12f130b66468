"""Harmonic tides: the fit against utide, the tide references, tide-aware models and runs."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import utide
import xarray as xr
from helpers_forecast import experiment
from helpers_tides import known_constituents, tidal_store

from seacast.config import ModelConfig
from seacast.errors import DataError
from seacast.evaluation.baselines import TideReferences, persistence
from seacast.models import build_model
from seacast.store import finalise_store, open_store, store_config, time_hours, write_new_store
from seacast.synthetic import synthetic_store
from seacast.tides import fit_tides, load_tides, select_constituents, train_periods
from seacast.windows import open_samples

LEADS = [1, 6]


@pytest.fixture(scope="module")
def pure_tide(tmp_path_factory) -> Path:
    return tidal_store(tmp_path_factory.mktemp("tide") / "pure.zarr", hours=24 * 40)


@pytest.fixture(scope="module")
def surge(tmp_path_factory) -> Path:
    """A known tide plus an AR(1) surge with coefficient 0.9 per hour."""
    return tidal_store(
        tmp_path_factory.mktemp("surge") / "surge.zarr", hours=24 * 60, anomaly_ar=0.9
    )


def _all_hours(store_path: Path) -> list[tuple[int, int]]:
    with open_store(store_path) as store:
        hours = time_hours(store["time"].values)
    return [(int(hours[0]), int(hours[-1]))]


def _fit(store_path: Path, periods=None, **options):
    with open_store(store_path) as store:
        return fit_tides(
            store,
            ["zos", "uo"],
            periods or _all_hours(store_path),
            lead_times=options.pop("lead_times", LEADS),
            **options,
        )


def test_rayleigh_criterion_resolves_more_constituents_with_a_longer_record() -> None:
    month, _, _ = select_constituents(24 * 20)
    year, _, _ = select_constituents(24 * 366)
    assert {"M2", "S2", "K1", "O1", "M4"} <= set(month)
    assert (
        "N2" not in month and "N2" in year
    )  # N2 beats against M2 over 27.6 days: 20 days cannot split them
    assert len(month) < 40 < len(year)


def test_a_synthetic_tide_with_known_constituents_is_recovered(pure_tide: Path) -> None:
    tides = _fit(pure_tide)
    with open_store(pure_tide) as store:
        sea = store["sea_mask"].values.astype(bool)
    for v in range(2):
        for name, (amplitude, phase) in known_constituents(sea.shape, v).items():
            k = tides.constituents.index(name)
            np.testing.assert_allclose(tides.amplitude[k, v][sea], amplitude[sea], rtol=1e-3)
            wrapped = (tides.phase[k, v][sea] - phase[sea] + 180) % 360 - 180
            assert np.abs(wrapped).max() < 0.1
    # constituents absent from the data come out (nearly) empty
    k = tides.constituents.index("M4")
    assert np.nanmax(tides.amplitude[k]) < 1e-3


def test_amplitudes_and_phases_match_utide_solve_at_grid_points(tmp_path: Path) -> None:
    """On fields with a tide, a slow drift and noise (not a pure tide), as utide would fit them."""
    store_path = synthetic_store(
        tmp_path / "s.zarr", shape=(16, 16), hours=24 * 45, variables=("zos",)
    )
    with open_store(store_path) as store:
        hours = time_hours(store["time"].values)
        periods = [(int(hours[0]), int(hours[24 * 35]))]  # a training period, not the whole store
        tides = fit_tides(store, ["zos"], periods)
        zos = store["zos"].values
        sea = store["sea_mask"].values.astype(bool)
    points = [tuple(p) for p in np.argwhere(sea)[[0, len(np.argwhere(sea)) // 2, -1]]]
    t = hours[: 24 * 35 + 1].astype("datetime64[h]")
    for i, j in points:
        solved = utide.solve(
            t,
            zos[: 24 * 35 + 1, i, j].astype(np.float64),
            lat=tides.nodal_latitude,
            method="ols",
            conf_int="none",
            trend=False,
            nodal=True,
            constit=tides.constituents,
            verbose=False,
        )
        for name in ("M2", "S2", "K1", "O1"):
            k, m = tides.constituents.index(name), list(solved.name).index(name)
            if solved.A[m] < 0.01:
                continue
            assert tides.amplitude[k, 0, i, j] == pytest.approx(solved.A[m], rel=0.02), name
            diff = (tides.phase[k, 0, i, j] - solved.g[m] + 180) % 360 - 180
            assert abs(diff) < 2.0, name


def test_tide_only_reference_is_exact_on_a_pure_tide(pure_tide: Path) -> None:
    tides = _fit(pure_tide)
    with open_store(pure_tide) as store:
        hours = time_hours(store["time"].values)
        truth = np.stack([store[v].values for v in ("zos", "uo")], axis=1)
    references = TideReferences(tides, tides.damping_for(LEADS), "test")
    init = np.array([100, 300, 500])
    valid = init[:, None] + np.array(LEADS)[None]
    refs = references.forecasts(truth[init], hours[init], hours[valid])
    error = refs["tide"] - truth[valid]
    assert np.nanmax(np.abs(error)) < 1e-4
    assert np.nanmax(np.abs(refs["tide_persisted"] - truth[valid])) < 1e-4


def test_persisted_anomaly_equals_persistence_when_the_tide_is_zero(pure_tide: Path) -> None:
    tides = _fit(pure_tide)
    tides.mean[:], tides.cos[:], tides.sin[:] = 0.0, 0.0, 0.0
    rng = np.random.default_rng(0)
    last = rng.standard_normal((2, 2, 16, 16)).astype(np.float32)
    init = np.array([473352, 473400])
    refs = TideReferences(tides, np.full((2, 2), 0.5), "zero").forecasts(
        last, init, init[:, None] + np.array(LEADS)[None]
    )
    np.testing.assert_array_equal(refs["tide_persisted"], persistence(last, 2))
    np.testing.assert_allclose(refs["tide_damped"], 0.5 * persistence(last, 2))


def test_damping_recovers_the_decay_of_an_ar1_anomaly(surge: Path) -> None:
    tides = _fit(surge, lead_times=[1, 6])
    # the anomaly is 0.9**L correlated L hours apart; the fit absorbs a little of it
    np.testing.assert_allclose(tides.damping_for([1, 6])[:, 0], [0.9, 0.9**6], atol=0.06)
    assert tides.anomaly_std[0] == pytest.approx(0.1, rel=0.25)


def test_tides_are_fitted_on_the_training_period_only(pure_tide: Path, tmp_path: Path) -> None:
    """Changing what lies outside the fit period changes nothing in the constants."""
    hours = _all_hours(pure_tide)[0]
    period = [(hours[0], hours[0] + 24 * 30)]
    before = _fit(pure_tide, period)
    with xr.open_zarr(pure_tide, consolidated=False, zarr_format=3) as ds:
        data = ds[["zos", "uo", "sea_mask"]].load()
        config = store_config(ds)
    later = data["time"] > np.datetime64(int(period[0][1]), "h")
    data["zos"] = (data["zos"] + 3.0 * later).astype(np.float32)  # a surge the fit must not see
    changed = write_new_store(tmp_path / "changed.zarr", data, chunk_hours=24)
    finalise_store(changed, config=config, step_hours=1.0)
    after = _fit(changed, period)
    np.testing.assert_array_equal(before.cos, after.cos)
    np.testing.assert_array_equal(before.mean, after.mean)
    np.testing.assert_array_equal(before.damping, after.damping)


def test_constants_survive_a_round_trip_through_tides_nc(pure_tide: Path, tmp_path: Path) -> None:
    tides = _fit(pure_tide)
    loaded = load_tides(tides.save(tmp_path / "tides.nc"))
    hours = np.arange(480000, 480048)  # 2024-10: beyond the store, the nodal phase still applies
    np.testing.assert_allclose(loaded.predict(hours), tides.predict(hours), atol=1e-6)
    assert loaded.constituents == tides.constituents and loaded.period == tides.period
    with pytest.raises(DataError, match="do not exist"):
        load_tides(tmp_path / "none.nc")


def _two_test_forecasts(model, sets):
    """Two test samples' inputs, init and valid hours, and the model's physical forecasts."""
    batch = [sets.test[k] for k in (0, 5)]
    x = torch.stack([b["x"] for b in batch])
    init = np.array([int(b["init_time"]) for b in batch])
    valid = init[:, None] + np.array(LEADS)[None]
    with torch.no_grad():
        forecast = sets.encoding.decode(model(x), valid)
    return x, init, valid, forecast


def test_zero_initialised_tide_aware_model_equals_the_damped_reference(surge: Path) -> None:
    cfg = experiment(
        "t", surge, surge.parent, lags=3, lead_times=LEADS, variables=("zos", "uo"), steps=1
    )
    sets = open_samples(surge, cfg.samples)
    tides = _fit(surge, train_periods(sets.plan))
    sets = sets.with_tides(tides)
    model = build_model(
        ModelConfig(name="res_3ddr_unet", filters=2, base="tide"), 2, 2, 3, LEADS, (16, 16), seed=0
    )
    with torch.no_grad():
        model.base_weight.copy_(torch.from_numpy(tides.damping_for(LEADS)))
    model.eval()
    x, init, valid, forecast = _two_test_forecasts(model, sets)
    last = sets.encoding.decode(x[:, :, -1], init)
    reference = TideReferences(tides, tides.damping_for(LEADS), "t").forecasts(last, init, valid)
    np.testing.assert_allclose(forecast, reference["tide_damped"], atol=1e-5, equal_nan=True)


def _regressed_start(surge: Path):
    """A tide-aware model on the regressed anomaly, started from it: ``(cfg, sets, tides, model)``."""
    from seacast.training.loop import start_at_tide_reference

    cfg = experiment(
        "t", surge, surge.parent, lags=3, lead_times=LEADS, variables=("zos", "uo"), steps=1
    )
    cfg = cfg.model_copy(
        update={
            "model": ModelConfig(
                name="res_3ddr_unet", filters=2, base="tide", anomaly_base="regressed"
            )
        }
    )
    sets = open_samples(surge, cfg.samples)
    tides = _fit(surge, train_periods(sets.plan), lead_times=LEADS)
    sets = sets.with_tides(tides)
    model = build_model(cfg.model, 2, 2, 3, LEADS, (16, 16), seed=0)
    start_at_tide_reference(model, tides, cfg, sets)
    return cfg, sets, tides, model


def test_zero_initialised_model_on_the_regressed_anomaly_equals_that_reference(
    surge: Path,
) -> None:
    cfg, sets, tides, model = _regressed_start(surge)
    assert float(model.base_regression.abs().sum()) > 0
    model.eval()
    x, init, valid, forecast = _two_test_forecasts(model, sets)
    input_hours = init[:, None] + np.arange(-2, 1)[None]
    inputs = sets.encoding.decode(x.permute(0, 2, 1, 3, 4), input_hours)
    from seacast.evaluation.evaluate import _anomaly_regression

    regression = _anomaly_regression(cfg, tides, sets.plan, surge, {})
    np.testing.assert_allclose(
        model.base_regression.numpy(), np.nan_to_num(regression.coefficients), atol=1e-6
    )
    # weights on every lag and on the basin mean, the same in the model and the reference
    rng = np.random.default_rng(0)
    weights = rng.normal(0.0, 0.3, regression.coefficients.shape)
    regression.coefficients = np.where(sets.sea_mask, weights, np.nan)
    with torch.no_grad():
        model.base_regression.copy_(torch.from_numpy(np.nan_to_num(regression.coefficients)))
        forecast = sets.encoding.decode(model(x), valid)
    reference = TideReferences(
        tides, tides.damping_for(LEADS), "t", regression, sets.sea_mask
    ).forecasts(inputs, input_hours, valid)
    np.testing.assert_allclose(forecast, reference["tide_regressed"], atol=1e-4, equal_nan=True)


@pytest.fixture(scope="module")
def tide_run(surge: Path, tmp_path_factory) -> Path:
    from seacast.training.loop import train

    cfg = experiment(
        "tide-aware",
        surge,
        tmp_path_factory.mktemp("runs"),
        lags=3,
        lead_times=LEADS,
        variables=("zos", "uo"),
        steps=3,
        base="tide",
    )
    return train(cfg, progress=False).run_dir


def test_a_tide_aware_run_saves_its_constants_fitted_on_its_training_period(tide_run: Path) -> None:
    from seacast.training.checkpoint import load_run

    run = load_run(tide_run)
    tides = load_tides(tide_run / "tides.nc")
    sets = open_samples(run.config.store, run.config.samples)
    train_end = max(hi for _, hi in train_periods(sets.plan))
    assert np.datetime64(tides.period[1]) <= np.datetime64(int(train_end), "h")
    np.testing.assert_allclose(run.model.base_weight.numpy(), tides.damping_for(LEADS), rtol=1e-6)
    assert run.meta["tides"]["constituents"] == tides.constituents


def test_a_forecast_from_a_tide_aware_run_carries_the_tide_at_its_valid_times(
    tide_run: Path, tmp_path: Path
) -> None:
    from seacast.forecast import forecast

    result = forecast(tide_run, init_time="latest", out_dir=tmp_path)
    tides = load_tides(tide_run / "tides.nc")
    with xr.open_zarr(result.path, consolidated=False) as ds:
        valid = time_hours(ds["valid_time"].values.reshape(-1))
        np.testing.assert_allclose(
            ds["zos_tide"].values[0], tides.predict(valid)[:, 0], atol=1e-5, equal_nan=True
        )
        assert "M2" in ds.attrs["seacast_tides"]
        # the forecast is the tide plus a small correction, not a field far from it
        gap = np.nanmax(np.abs(ds["zos"].values - ds["zos_tide"].values))
        assert gap < 0.6


def test_adapting_a_tide_aware_run_fits_one_gain_per_lead_and_variable_by_default(
    tide_run: Path, tmp_path: Path
) -> None:
    from seacast.forecast import forecast

    result = forecast(tide_run, init_time="latest", out_dir=tmp_path, adapt="zo", adapt_hours=240)
    record = result.adaptation
    gains = np.asarray(record["gain"])
    assert record["target"] == "gain" and gains.shape == (len(LEADS), 2)
    assert np.all((gains >= 0.0) & (gains <= 1.5))
    assert record["loss_after"] <= record["loss_before"]
    assert record["forwards"] == 2 * record["samples"] and result.path.name.endswith("-zo.zarr")
    # the newest samples count for the short lead time only
    short, long = record["samples_per_lead"]
    assert short == record["samples"] and 0 < long < short


def test_gain_adaptation_reads_no_frame_after_the_init_time(
    tide_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from seacast.config import ExperimentConfig, load_config
    from seacast.forecast import adaptation, forecast

    store_path = load_config(ExperimentConfig, tide_run / "config.yaml").store
    with xr.open_zarr(store_path, consolidated=False) as store:
        init_index = store.sizes["time"] - 40
        init_time = f"{store['time'].values[init_index].astype('datetime64[h]')}"
    read: list[int] = []

    def recording_read(store, variables, frames):
        read.append(int(np.max(frames)))
        return real_read(store, variables, frames)

    real_read = adaptation._read_frames
    monkeypatch.setattr(adaptation, "_read_frames", recording_read)
    result = forecast(
        tide_run,
        init_time=init_time,
        out_dir=tmp_path,
        adapt="zo",
        adapt_target="gain",
        adapt_hours=240,
    )
    assert read and max(read) == init_index
    assert result.adaptation["last_init"] < init_time


def test_a_tide_aware_run_without_its_tides_nc_is_a_clear_error(
    tide_run: Path, tmp_path: Path
) -> None:
    from seacast.training.checkpoint import load_run

    copy = tmp_path / "copy"
    shutil.copytree(tide_run, copy)
    (copy / "tides.nc").unlink()
    with pytest.raises(DataError, match="tides.nc"):
        load_run(copy)


def test_a_run_without_tide_constants_is_scored_against_tides_fitted_on_its_training_period(
    surge: Path, tmp_path: Path
) -> None:
    from seacast.evaluation.evaluate import evaluate_runs
    from seacast.training.loop import train

    cfg = experiment(
        "old", surge, tmp_path, lags=3, lead_times=LEADS, variables=("zos", "uo"), steps=2
    )
    run_dir = train(cfg, progress=False).run_dir
    assert not (run_dir / "tides.nc").exists()
    results = evaluate_runs([run_dir], by="all", out_dir=tmp_path / "report", figures=False)
    run = results.runs[0]
    assert "fitted at evaluation" in run.tide_source
    assert {"tide", "tide_persisted", "tide_damped"} <= set(run.metrics)
    # on a known tide plus a surge the damped anomaly is the strongest reference
    mse = {r: float(run.metrics[r]["mse"].mean()) for r in ("persistence", "tide", "tide_damped")}
    assert mse["tide_damped"] < mse["tide"] and mse["tide_damped"] < mse["persistence"]
    index = (tmp_path / "report" / "index.md").read_text()
    assert "fitted at evaluation on the run's training period" in index


def test_the_gains_for_many_init_times_are_those_each_forecast_fits(
    tide_run: Path, tmp_path: Path
) -> None:
    from seacast.config import ExperimentConfig, load_config
    from seacast.forecast import forecast
    from seacast.forecast.adaptation import AdaptationSite, gains_at_inits
    from seacast.training.checkpoint import load_run
    from seacast.windows import Timeline

    store_path = load_config(ExperimentConfig, tide_run / "config.yaml").store
    with xr.open_zarr(store_path, consolidated=False) as store:
        timeline = Timeline.from_store(store)
        sea_mask = store["sea_mask"].values.astype(bool)
    inits = np.asarray([len(timeline.hours) - 41, len(timeline.hours) - 1])
    site = AdaptationSite(
        load_run(tide_run), Path(store_path), 0, timeline.hours, timeline.step_hours, [], sea_mask
    )
    gains = gains_at_inits(site, inits, adapt_hours=240, batch=4)
    assert np.any(gains < 0.9) and np.any(gains[0] != gains[1])  # not all kept at 1
    for index, expected in zip(inits, gains, strict=True):
        stamp = str(np.datetime64(int(timeline.hours[index]), "h"))
        fitted = forecast(
            tide_run,
            init_time=stamp,
            out_dir=tmp_path / stamp,
            adapt="zo",
            adapt_hours=240,
        ).adaptation["gain"]
        np.testing.assert_allclose(fitted, expected, atol=1e-4)


def test_evaluating_with_gain_adaptation_adds_each_run_as_forecast_adapts_it(
    tide_run: Path, tmp_path: Path
) -> None:
    from seacast.evaluation.evaluate import evaluate_runs

    results = evaluate_runs(
        [tide_run],
        by="all",
        out_dir=tmp_path / "report",
        figures=False,
        every_hours=3,
        adapt="gain",
        adapt_hours=240,
    )
    plain, adapted = results.runs
    assert adapted.name == f"{tide_run.name}+gain" and "gain adapted" in adapted.trainer
    assert adapted.samples == plain.samples
    # the same references, another model score
    np.testing.assert_array_equal(plain.metrics["tide"]["mse"], adapted.metrics["tide"]["mse"])
    assert not np.allclose(plain.metrics["model"]["mse"], adapted.metrics["model"]["mse"])
    assert f"{tide_run.name}+gain" in (tmp_path / "report" / "skill_vs_best.csv").read_text()


def test_a_model_on_a_spatial_map_equals_that_reference(surge: Path) -> None:
    from seacast.anomaly_regression import SpatialMap
    from seacast.evaluation.evaluate import _anomaly_regression
    from seacast.training.loop import _install_spatial_map

    cfg, sets, tides, model = _regressed_start(surge)
    model.eval()
    regression = _anomaly_regression(cfg, tides, sets.plan, surge, {})
    # a map of 5 random EOFs on zos alone, used at every lead time, with random weights
    rng = np.random.default_rng(0)
    sea = np.asarray(sets.sea_mask)
    regression.spatial = SpatialMap(
        channels=np.array([0]),
        eofs=np.where(sea, rng.normal(0, 0.1, (5, 1, 16, 16)), 0).astype(np.float32),
        scale=np.array([0.7], dtype=np.float32),
        weights=rng.normal(0, 0.3, (len(LEADS), 3, 5, 5)).astype(np.float32),
        residual=np.where(sea, rng.uniform(0, 1, (len(LEADS), 1, 16, 16)), 0).astype(np.float32),
        use=np.ones((len(LEADS), 2), dtype=np.float32),
    )
    _install_spatial_map(model, regression.spatial, tides, ["zos", "uo"])
    x, init, valid, forecast = _two_test_forecasts(model, sets)
    input_hours = init[:, None] + np.arange(-2, 1)[None]
    inputs = sets.encoding.decode(x.permute(0, 2, 1, 3, 4), input_hours)
    reference = TideReferences(
        tides, tides.damping_for(LEADS), "t", regression, sets.sea_mask
    ).forecasts(inputs, input_hours, valid)
    np.testing.assert_allclose(forecast, reference["tide_regressed"], atol=1e-4, equal_nan=True)
    without = TideReferences(
        tides,
        tides.damping_for(LEADS),
        "t",
        _anomaly_regression(cfg, tides, sets.plan, surge, {}),
        sets.sea_mask,
    ).forecasts(inputs, input_hours, valid)
    assert np.nanmax(np.abs(without["tide_regressed"] - forecast)) > 1e-3  # the map counts
    # and it survives a checkpoint round trip, K included
    state = model.state_dict()
    again = build_model(cfg.model, 2, 2, 3, LEADS, (16, 16), seed=1)
    again.load_state_dict(state)
    assert again.base_eofs.shape[0] == 5
    torch.testing.assert_close(again.base_eof_weights, model.base_eof_weights)


def test_a_regressed_checkpoint_saved_before_the_spatial_map_loads_as_per_point() -> None:
    cfg = ModelConfig(name="res_3ddr_unet", filters=2, base="tide", anomaly_base="regressed")
    old = build_model(cfg, 2, 2, 3, LEADS, (16, 16), seed=0)
    state = {k: v for k, v in old.state_dict().items() if not k.startswith("base_eof")}
    model = build_model(cfg, 2, 2, 3, LEADS, (16, 16), seed=1)
    model.load_state_dict(state)
    assert model.base_eofs.shape[0] == 0
    x = torch.randn(2, 2, 3, 16, 16)
    torch.testing.assert_close(model.eval()(x), old.eval()(x))
