"""Weather-forecast inputs (samples.forcing): what a sample holds, the model's start, a run learning
from them, and forecasts and evaluations of such a run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from seacast.config import (
    DataConfig,
    ExperimentConfig,
    GridConfig,
    SamplesConfig,
    StoreConfig,
    to_dict,
)
from seacast.forcing import block_weights
from seacast.models import build_model
from seacast.store import finalise_store, store_stats, write_new_store
from seacast.synthetic import synthetic_dataset
from seacast.windows import open_samples

SHAPE = (16, 16)
LEAD = 6


def forced_store(
    path: Path, hours: int = 24 * 10, seed: int = 2, ages: dict[str, float] | None = None
) -> Path:
    """A store where ``zos`` is a slow field plus a decaying response to ``iews``: its value 6 h
    ahead is mostly set by forcing still to come, as a surge is by the wind.

    ``ages``: series name -> ``forecast_age_hours``; a name other than ``iews`` adds that series
    as ``iews`` + 100 (to tell it apart)."""
    ds = synthetic_dataset(shape=SHAPE, hours=hours, variables=("zos",), seed=seed)
    rng = np.random.default_rng(seed)
    sea = ds["sea_mask"].values
    # forcing: a smooth pattern times a random amplitude each hour, defined over land too
    yy, xx = np.meshgrid(np.linspace(0, 1, SHAPE[0]), np.linspace(0, 1, SHAPE[1]), indexing="ij")
    pattern = 0.5 + yy + 0.5 * xx
    forcing = rng.standard_normal(hours)[:, None, None] * pattern[None]
    response = np.zeros_like(forcing)  # a surge that decays by 20 % an hour between winds
    for t in range(1, hours):
        response[t] = 0.8 * response[t - 1] + forcing[t]
    zos = ds["zos"].values + 0.3 * response
    ds["zos"] = (("time", "latitude", "longitude"), np.where(sea, zos, np.nan).astype(np.float32))
    ds["iews"] = (("time", "latitude", "longitude"), forcing.astype(np.float32))
    for name, age in (ages or {}).items():
        if name != "iews":
            ds[name] = (("time", "latitude", "longitude"), (forcing + 100.0).astype(np.float32))
        ds[name].attrs["forecast_age_hours"] = age
    times = pd.DatetimeIndex(ds["time"].values)
    config = DataConfig(
        name=path.stem,
        source="twin",
        months=f"{times[0]:%Y-%m}:{times[-1]:%Y-%m}",
        variables=["zos", "iews", *[n for n in ages or {} if n != "iews"]],
        grid=GridConfig(shape=SHAPE),
        store=StoreConfig(path=path, chunk_hours=24),
    )
    write_new_store(path, ds, chunk_hours=24, overwrite=True)
    finalise_store(path, config=to_dict(config), step_hours=1.0)
    return path


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    return forced_store(tmp_path_factory.mktemp("forcing") / "forced.zarr")


def _samples(**changes) -> SamplesConfig:
    raw = {
        "variables": ["zos"],
        "forcing": ["iews"],
        "lags": 3,
        "lead_times": [LEAD],
        "normalisation": "zscore",
    }
    return SamplesConfig.model_validate(raw | changes)


def test_block_weights_average_the_horizon_in_consecutive_blocks() -> None:
    weights = block_weights(24, 6)
    np.testing.assert_allclose(weights.sum(axis=1), 1.0)
    assert weights[0, :4].tolist() == [0.25] * 4 and weights[0, 4:].sum() == 0
    assert weights[5, 20:].tolist() == [0.25] * 4
    # a horizon shorter than the blocks repeats frames rather than leaving a block empty
    short = block_weights(2, 3)
    assert (short.sum(axis=1) == 1).all() and short[:, 1].sum() > 0


def test_a_variable_cannot_be_both_predicted_and_forcing() -> None:
    with pytest.raises(ValueError, match="both samples.variables and samples.forcing"):
        SamplesConfig.model_validate({"variables": ["zos", "iews"], "forcing": ["iews"]})


def test_a_missing_forcing_variable_names_the_config_field(store: Path) -> None:
    from seacast.errors import ConfigError

    with pytest.raises(ConfigError, match=r"no variables \['msl'\]") as err:
        open_samples(store, _samples(forcing=["msl"]))
    assert "samples.forcing" in str(err.value)


def test_a_sample_appends_the_forecast_ahead_as_block_means(store: Path) -> None:
    sets = open_samples(store, _samples())
    sample = sets.train[5]
    t0 = int(sets.train.init_indices[5])
    assert sample["x"].shape == (2, 3, *SHAPE)  # zos lags, then the forcing blocks
    assert sample["y"].shape == (1, 1, *SHAPE)
    ds = xr.open_zarr(store, consolidated=False)
    stats = store_stats(ds)["iews"]
    ahead = (ds["iews"].isel(time=slice(t0 + 1, t0 + 1 + LEAD)).values - stats["mean"]) / (
        stats["std"]
    )
    expected = ahead.reshape(3, 2, *SHAPE).mean(axis=1)  # 6 h in 3 blocks of 2 h
    expected = np.where(ds["sea_mask"].values, expected, 0.0)  # land 0, as every input
    np.testing.assert_allclose(sample["x"][1].numpy(), expected, rtol=1e-5, atol=1e-5)
    # the sea channel is the same as without forcing
    plain = open_samples(store, _samples(forcing=[])).train[5]
    torch.testing.assert_close(sample["x"][:1], plain["x"])


def test_each_hour_ahead_reads_the_freshest_forecast_issued_by_the_init_time(
    tmp_path: Path,
) -> None:
    path = forced_store(tmp_path / "ages.zarr", ages={"iews": 24.0, "iews_03h": 3.0})
    sets = open_samples(path, _samples())
    forcing = sets.train.forcing
    assert forcing.series_read() == {"iews": ["iews_03h", "iews"]}
    sample, t0 = sets.train[5], int(sets.train.init_indices[5])
    ds = xr.open_zarr(path, consolidated=False)
    stats = store_stats(ds)["iews"]  # every series of a variable is scaled as the variable
    day_ahead = ds["iews"].isel(time=slice(t0 + 1, t0 + 1 + LEAD)).values
    # t0 + 1 ... t0 + 3 h from the 3-hour forecast (+100 here), the rest from the day-ahead one
    ahead = np.concatenate([day_ahead[:3] + 100.0, day_ahead[3:]])
    expected = ((ahead - stats["mean"]) / stats["std"]).reshape(3, 2, *SHAPE).mean(axis=1)
    expected = np.where(ds["sea_mask"].values, expected, 0.0)
    np.testing.assert_allclose(sample["x"][1].numpy(), expected, rtol=1e-4, atol=1e-4)
    preloaded = open_samples(path, _samples()).train
    assert preloaded.preload()
    torch.testing.assert_close(preloaded[5]["x"], sample["x"])


def test_a_forecast_issued_less_far_ahead_than_the_lead_time_is_refused(tmp_path: Path) -> None:
    from seacast.errors import DataError

    path = forced_store(tmp_path / "short.zarr", ages={"iews": 3.0})
    with pytest.raises(DataError, match=r"issued at most 3 h ahead.*6 h after the init time"):
        open_samples(path, _samples())


def test_a_store_without_a_series_the_run_reads_is_refused(store: Path, tmp_path: Path) -> None:
    from seacast.errors import DataError

    fresher = forced_store(tmp_path / "fresher.zarr", ages={"iews": 24.0, "iews_03h": 3.0})
    forcing = open_samples(fresher, _samples()).train.forcing
    with pytest.raises(DataError, match=r"no forcing series \['iews_03h'\]"):
        open_samples(store, _samples()).with_forcing(forcing)


def test_preloaded_and_lazy_samples_agree(store: Path) -> None:
    lazy = open_samples(store, _samples()).train
    preloaded = open_samples(store, _samples()).train
    assert preloaded.preload()
    for k in (0, 17, len(lazy) - 1):
        torch.testing.assert_close(lazy[k]["x"], preloaded[k]["x"])


def test_the_forcing_channels_do_not_change_the_untrained_model(store: Path) -> None:
    """The base term reads the sea channels only: an untrained model is its reference, whatever
    the weather forecast says."""
    cfg = ExperimentConfig.model_validate(
        {
            "name": "f",
            "store": str(store),
            "samples": to_dict(_samples()),
            "model": {"name": "res_3ddr_unet", "filters": 2, "base": "persistence"},
        }
    )
    model = build_model(cfg.model, 2, 1, 3, [LEAD], SHAPE, seed=0).eval()
    x = torch.randn(2, 2, 3, *SHAPE)
    other = x.clone()
    other[:, 1] = torch.randn_like(other[:, 1])
    with torch.no_grad():
        torch.testing.assert_close(model(x), model(other))
        torch.testing.assert_close(model(x), x[:, :1, -1].unsqueeze(1))


def _experiment(store: Path, runs: Path, name: str, forcing: list[str]) -> ExperimentConfig:
    return ExperimentConfig.model_validate(
        {
            "name": name,
            "store": str(store),
            "runs_dir": str(runs),
            "seed": 3,
            "samples": to_dict(_samples(forcing=forcing))
            | {"split": {"preset": "fractions", "fractions": [0.6, 0.2, 0.2]}},
            "model": {"name": "3ddr_unet", "filters": 2, "dropout": 0.0, "base": "persistence"},
            "trainer": {
                "batch_size": 8,
                "epochs": 16,
                "max_val_samples": 24,
                "patience": 5,
                "optimizer": {"lr": 1e-2, "schedule": "none"},
            },
        }
    )


@pytest.fixture(scope="module")
def runs(store: Path, tmp_path_factory) -> dict[str, Path]:
    from seacast.training.loop import train

    root = tmp_path_factory.mktemp("forcing-runs")
    return {
        name: train(_experiment(store, root, name, forcing), progress=False).run_dir
        for name, forcing in (("with", ["iews"]), ("without", []))
    }


def test_a_run_with_the_forecast_learns_what_the_sea_cannot_know(store: Path, runs) -> None:
    from seacast.training.checkpoint import load_run

    losses = {}
    for name, run_dir in runs.items():
        run = load_run(run_dir)
        assert (run.forcing is not None) == (name == "with")
        losses[name] = run.best_val
    # measured 0.28 against 0.46 (16 epochs of 18 steps)
    assert losses["with"] < 0.75 * losses["without"], losses


def test_a_forecast_starts_at_the_latest_time_the_weather_forecast_covers(
    store: Path, runs, tmp_path: Path
) -> None:
    from seacast.errors import DataError
    from seacast.forecast import forecast

    result = forecast(runs["with"], out_dir=tmp_path / "fc")
    end = pd.Timestamp(xr.open_zarr(store, consolidated=False)["time"].values[-1])
    assert result.init_time == end - pd.Timedelta(hours=LEAD)
    with xr.open_zarr(result.path, consolidated=False) as ds:
        assert np.isfinite(ds["zos"].values[..., ds["sea_mask"].values]).all()
    with pytest.raises(DataError, match="after the newest valid init time"):
        forecast(runs["with"], out_dir=tmp_path / "late", init_time=f"{end:%Y-%m-%dT%H}")
    # the run without the forecast starts from the store's last hour
    assert forecast(runs["without"], out_dir=tmp_path / "plain").init_time == end


def test_a_run_with_the_forecast_is_evaluated_and_adapted(runs) -> None:
    from seacast.evaluation.evaluate import evaluate_run

    scores = evaluate_run(runs["with"], split="test", by="all", adapt_hours=48)
    model_mse = float(scores.metrics["model"]["mse"].sel(variable="zos").mean())
    persistence = float(scores.metrics["persistence"]["mse"].sel(variable="zos").mean())
    assert np.isfinite(model_mse) and model_mse < persistence


def test_the_model_applies_the_forecast_regression_as_the_reference_code_does() -> None:
    """The regressed base with forecast features, in torch (the model) and numpy (the fit's
    own predict), on random weights: the same forecast."""
    from seacast.anomaly_regression import AnomalyRegression
    from seacast.config import ModelConfig

    rng = np.random.default_rng(4)
    lags, n_lead, shape = 3, 2, (16, 16)
    sea = np.ones(shape, dtype=bool)
    sea[:4, :5] = False
    model = build_model(
        ModelConfig(name="3ddr_unet", filters=2, base="tide", anomaly_base="regressed"),
        3,  # zos, then two forecast variables
        1,
        lags,
        [6, 12],
        shape,
        seed=0,
    ).eval()
    n_feat = 2 * lags + 2 * 2 * lags
    assert tuple(model.base_regression.shape) == (n_lead, 1, n_feat, *shape)
    coefficients = np.where(sea, rng.normal(0, 0.3, (n_lead, 1, n_feat, *shape)), np.nan)
    regression = AnomalyRegression(
        ["zos"], [6, 12], lags, coefficients, np.full((n_lead, 1), "ridge 0"), 100, None, 2 * lags
    )
    with torch.no_grad():
        model.base_regression.copy_(torch.from_numpy(np.nan_to_num(coefficients)).float())
        model.base_sea_points.fill_(float(sea.sum()))
    x = torch.where(torch.from_numpy(sea), torch.randn(2, 3, lags, *shape), 0.0)
    with torch.no_grad():
        ours = model(x).numpy()
    anomaly = np.where(sea, x[:, :1].permute(0, 2, 1, 3, 4).numpy(), np.nan)
    theirs = regression.predict(anomaly, sea, forcing=x[:, 1:].numpy())
    np.testing.assert_allclose(np.where(sea, ours, np.nan), theirs, atol=1e-4, equal_nan=True)


def test_a_tide_aware_run_starts_from_the_anomaly_regressed_on_the_forecast(
    store: Path, tmp_path: Path
) -> None:
    from seacast.training.checkpoint import load_run
    from seacast.training.loop import train

    best = {}
    for name, forcing in (("with", ["iews"]), ("without", [])):
        cfg = _experiment(store, tmp_path, name, forcing)
        cfg.model.base, cfg.model.anomaly_base = "tide", "regressed"
        cfg.trainer.epochs, cfg.trainer.steps_per_epoch = 1, 1
        cfg.trainer.optimizer.lr = 1e-6  # one tiny step: the validation loss is the start's
        run = load_run(train(cfg, progress=False).run_dir)
        best[name] = run.best_val
    assert run.model.base_regression.shape[2] == 2 * 3  # the run without: lags and basin lags
    assert best["with"] < 0.5 * best["without"], best


def test_the_evaluation_report_says_which_runs_read_a_weather_forecast(runs, tmp_path) -> None:
    from seacast.evaluation.evaluate import evaluate_runs

    evaluate_runs(
        [runs["with"], runs["without"]], by="all", out_dir=tmp_path / "report", figures=False
    )
    text = (tmp_path / "report" / "index.md").read_text()
    assert "`with` (" in text and "reads the weather forecast iews" in text
    assert "The references read no weather forecast" in text
    assert "`without` (" in text and text.count("reads the weather forecast") == 1


def test_a_second_run_on_the_same_store_and_split_reads_its_start_from_the_cache(
    store: Path, tmp_path: Path, monkeypatch, caplog
) -> None:
    import seacast.anomaly_regression as regression
    from seacast.training.checkpoint import load_run
    from seacast.training.loop import train

    monkeypatch.setenv("SEACAST_CACHE", str(tmp_path / "cache"))

    def start_of(name: str) -> torch.Tensor:
        cfg = _experiment(store, tmp_path / "runs", name, ["iews"])
        cfg.model.base, cfg.model.anomaly_base = "tide", "regressed"
        cfg.trainer.epochs, cfg.trainer.steps_per_epoch = 1, 1
        cfg.trainer.optimizer.lr = 1e-12  # the saved start is the fitted one
        return load_run(train(cfg, progress=False).run_dir).model.base_regression.clone()

    fitted = start_of("first")
    (cached,) = (tmp_path / "cache").glob("anomaly_regression-*.npz")

    def no_fit(*args, **kwargs):
        raise AssertionError("fitted again")

    with monkeypatch.context() as patch:
        patch.setattr(regression, "fit_anomaly_regression", no_fit)
        torch.testing.assert_close(start_of("second"), fitted)
    cached.write_bytes(b"not an npz")  # a damaged cache file costs a refit, not the run
    torch.testing.assert_close(start_of("third"), fitted)
    assert "cannot read the cached fit" in caplog.text
    assert regression.load_regression(cached).lead_times == [LEAD]


def test_runs_that_read_the_same_forecast_are_told_so_once() -> None:
    from types import SimpleNamespace

    from seacast.evaluation.report import _runs_text

    same = [SimpleNamespace(name=n, samples=9, forcing="msl, iews") for n in ("a", "b")]
    assert _runs_text(same) == (
        "`a` (9 samples), `b` (9 samples); each reads the weather forecast msl, iews"
    )
    mixed = [same[0], SimpleNamespace(name="c", samples=9, forcing="")]
    assert (
        _runs_text(mixed)
        == "`a` (9 samples; reads the weather forecast msl, iews), `c` (9 samples)"
    )
