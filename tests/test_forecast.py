"""seacast forecast: file schema, init-time rules, clear errors, atomic writes, ZO adaptation."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from helpers_forecast import TINY, experiment, shifted_store, tiny_run

from seacast.errors import ConfigError, DataError
from seacast.forecast import driver as forecast_module  # patched where it writes
from seacast.forecast import forecast, forecast_dataset, resolve_init_time, valid_init_times
from seacast.synthetic import synthetic_store


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("tiny"))


def _open(path: Path) -> xr.Dataset:
    return (
        xr.open_zarr(path, consolidated=False) if path.suffix == ".zarr" else xr.open_dataset(path)
    )


def test_forecast_dataset_schema():
    sea = np.array([[True, False], [True, True]])
    values = np.arange(2 * 1 * 2 * 2, dtype=float).reshape(2, 1, 2, 2)
    ds = forecast_dataset(
        values,
        init_time="2024-05-01T06",
        lead_hours=[6, 12],
        latitude=[51.0, 52.0],
        longitude=[3.0, 4.0],
        variables=["zos"],
        sea_mask=sea,
        provenance={"seacast_run": "runs/x", "seacast_adaptation": {"a": 1}},
    )
    assert ds["zos"].dims == ("init_time", "lead_time", "latitude", "longitude")
    assert ds["lead_time"].dtype.kind == "m"
    assert ds["valid_time"].dims == ("init_time", "lead_time")
    assert ds["valid_time"].values[0, 1] == np.datetime64("2024-05-01T18:00")
    assert (
        np.isnan(ds["zos"].values[0, :, 0, 1]).all()
        and np.isfinite(ds["zos"].values[0, :, sea]).all()
    )
    assert (
        ds["zos"].attrs["standard_name"] == "sea_surface_height_above_geoid"
        and ds["zos"].attrs["units"] == "m"
    )
    assert ds.attrs["Conventions"].startswith("CF-")
    assert json.loads(ds.attrs["seacast_adaptation"]) == {"a": 1}
    with pytest.raises(DataError, match="do not match"):
        forecast_dataset(
            values[:1],
            init_time="2024-05-01",
            lead_hours=[6, 12],
            latitude=[0, 1],
            longitude=[0, 1],
            variables=["zos"],
            sea_mask=sea,
        )


def test_init_time_rules_name_the_earliest_valid_time():
    hours = np.arange(100, 120, dtype=np.int64)
    valid = valid_init_times(hours, 1.0, [], lags=3)
    assert hours[valid[0]] == 102 and hours[valid[-1]] == 119
    assert resolve_init_time(hours, valid, "latest", 3) == 19
    earliest = pd.Timestamp("1970-01-01") + pd.Timedelta(hours=102)
    with pytest.raises(DataError, match=f"earliest valid one, {earliest:%Y-%m-%dT%H}"):
        resolve_init_time(hours, valid, pd.Timestamp("1970-01-01") + pd.Timedelta(hours=101), 3)
    # a gap: times 110..111 missing -> 112 and 113 lack history
    gappy = np.concatenate([np.arange(100, 110), np.arange(112, 120)])
    valid = valid_init_times(gappy, 1.0, [], lags=3)
    assert 112 not in gappy[valid] and 113 not in gappy[valid] and 114 in gappy[valid]


def test_forecast_file_schema_units_land_and_provenance(run_dir, tmp_path):
    result = forecast(run_dir, out_dir=tmp_path / "fc", init_time="2024-03-05T06", plots=True)
    assert result.path.name == "2024-03-05T06.zarr" and not result.skipped
    ds = _open(result.path)
    store = xr.open_zarr(run_dir.parent.parent / "store.zarr", consolidated=False)
    sea = store["sea_mask"].values
    assert dict(ds.sizes) == {"init_time": 1, "lead_time": 2, "latitude": 32, "longitude": 32}
    assert list(ds["lead_time"].values.astype("timedelta64[h]").astype(int)) == TINY["lead_times"]
    assert ds["valid_time"].values[0, -1] == np.datetime64("2024-03-05T09:00")
    np.testing.assert_allclose(ds["latitude"].values, store["latitude"].values)
    for var in TINY["variables"]:
        values = ds[var].values[0]
        assert np.isnan(values[:, ~sea]).all() and np.isfinite(values[:, sea]).all()
        # physical units: within the range the store's values span (plus a margin), not [0.1, 1]
        lo, hi = float(store[var].min()), float(store[var].max())
        span = hi - lo
        assert values[:, sea].min() > lo - span and values[:, sea].max() < hi + span
        assert ds[var].attrs["units"]
    assert ds.attrs["seacast_run_name"] == "tiny" and ds.attrs["seacast_adapted"] == "false"
    assert json.loads(ds.attrs["seacast_config"])["samples"]["lags"] == TINY["lags"]
    assert ds.attrs["seacast_config_fingerprint"]
    assert sorted(p.name for p in result.plots) == ["2024-03-05T06_uo.png", "2024-03-05T06_zos.png"]
    assert all(p.stat().st_size > 1000 for p in result.plots)


def test_netcdf_format_and_latest(run_dir, tmp_path):
    result = forecast(run_dir, out_dir=tmp_path, fmt="netcdf")
    last = pd.Timestamp(TINY["start"]) + pd.Timedelta(hours=TINY["hours"] - 1)
    assert result.init_time == last and result.path.suffix == ".nc"
    with xr.open_dataset(result.path) as ds:
        assert ds["zos"].dims == ("init_time", "lead_time", "latitude", "longitude")
        assert ds["lead_time"].dtype.kind == "m"


def test_idempotent_unless_forced(run_dir, tmp_path):
    first = forecast(run_dir, out_dir=tmp_path)
    stamp = (first.path / "zarr.json").stat().st_mtime_ns
    again = forecast(run_dir, out_dir=tmp_path)
    assert again.skipped and (first.path / "zarr.json").stat().st_mtime_ns == stamp
    forced = forecast(run_dir, out_dir=tmp_path, force=True)
    assert not forced.skipped and forced.path == first.path
    assert sorted(p.name for p in tmp_path.iterdir()) == [first.path.name]


def test_failure_midway_leaves_no_partial_forecast(run_dir, tmp_path, monkeypatch):
    real = forecast_module.write_dataset

    def write_then_crash(ds, path, fmt):
        real(ds, path, fmt)  # the file is complete on disk under its temporary name...
        raise OSError("disk full")  # ...and then the process fails

    monkeypatch.setattr(forecast_module, "write_dataset", write_then_crash)
    with pytest.raises(OSError, match="disk full"):
        forecast(run_dir, out_dir=tmp_path, plots=True)
    assert list(tmp_path.iterdir()) == []


def test_clear_errors(run_dir, tmp_path):
    out = tmp_path / "fc"
    with pytest.raises(DataError, match="earliest valid one, 2024-02-20T02"):
        forecast(run_dir, out_dir=out, init_time="2024-02-20T01")
    with pytest.raises(DataError, match="after the newest valid init time"):
        forecast(run_dir, out_dir=out, init_time="2025-01-01T00")
    other = synthetic_store(
        tmp_path / "other.zarr",
        shape=(16, 16),
        hours=24,
        variables=TINY["variables"],
        start=TINY["start"],
    )
    with pytest.raises(DataError, match="16x16 grid, the run was trained on 32x32"):
        forecast(run_dir, out_dir=out, store_path=other)
    broken = tmp_path / "broken_run"
    shutil.copytree(run_dir, broken)
    (broken / "checkpoint_best.pt").unlink()
    with pytest.raises(DataError, match="no checkpoint_best.pt"):
        forecast(broken, out_dir=out)
    assert not out.exists() or not list(out.iterdir())


def test_a_store_on_other_coordinates_of_the_same_size_is_refused(run_dir, tmp_path):
    """The run's grid is that of the store it was trained on: same size, moved north, refused."""
    from seacast.config import DataConfig, GridConfig, StoreConfig, to_dict
    from seacast.store import finalise_store, write_new_store
    from seacast.synthetic import synthetic_dataset

    ds = synthetic_dataset(
        shape=TINY["shape"], hours=24, variables=TINY["variables"], start=TINY["start"]
    )
    ds = ds.assign_coords(latitude=ds["latitude"] + 1.0)
    moved = tmp_path / "moved.zarr"
    config = DataConfig(
        name="moved",
        source="twin",
        months="2024-02",
        variables=list(TINY["variables"]),
        grid=GridConfig(shape=TINY["shape"]),
        store=StoreConfig(path=moved, chunk_hours=24),
    )
    write_new_store(moved, ds, chunk_hours=24, overwrite=True)
    finalise_store(moved, config=to_dict(config), stats_period=None, step_hours=1.0)
    with pytest.raises(DataError, match="different grid than the run's"):
        forecast(run_dir, out_dir=tmp_path / "fc", store_path=moved)


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_zo_adaptation_reduces_error_on_a_shifted_period(tmp_path):
    """Synthetic twin stand-in: a store whose last week sits 0.6 m higher (a surge set-up).

    A model with no base trained before the shift is biased after it; adapting on the 48 h
    before the init time must cut the error of the forecast against the (held-out) truth.
    """
    from seacast.training.loop import train

    torch.set_num_threads(1)
    store = shifted_store(tmp_path / "shift.zarr")
    split = {
        "preset": "ranges",
        "train": {"start": "2024-03-01", "end": "2024-03-14T23"},
        "validation": {"start": "2024-03-15", "end": "2024-03-15T23"},
        "test": {"start": "2024-03-17", "end": "2024-03-24T23"},
    }
    cfg = experiment(
        "zo",
        store,
        tmp_path / "runs",
        lags=3,
        lead_times=[1],
        variables=["zos"],
        steps=30,
        base="none",
        lr=1e-2,
        split=split,
    )
    run_dir = train(cfg, progress=False).run_dir
    before = {
        name: _digest(run_dir / name) for name in ("checkpoint_best.pt", "checkpoint_last.pt")
    }

    truth = xr.open_zarr(store, consolidated=False)
    sea = truth["sea_mask"].values

    def mse(path: Path) -> float:
        with xr.open_zarr(path, consolidated=False) as ds:
            error = (
                ds["zos"].values[0, 0] - truth["zos"].sel(time=ds["valid_time"].values[0, 0]).values
            )
        return float(np.mean(error[sea] ** 2))

    init = "2024-03-21T12"
    plain = forecast(run_dir, init_time=init, out_dir=tmp_path / "fc")
    adapted = forecast(
        run_dir,
        init_time=init,
        out_dir=tmp_path / "fc",
        adapt="zo",
        adapt_hours=48,
        adapt_steps=30,
    )
    assert adapted.path.name == "2024-03-21T12-zo.zarr" and plain.path.exists()
    record = adapted.adaptation
    assert record["method"] == "zo-spsa-inplace-sgd"  # a run without a base adapts its network
    assert record["loss_after"] < 0.5 * record["loss_before"] and not record["reverted"]
    assert mse(adapted.path) < 0.5 * mse(plain.path)
    with xr.open_zarr(adapted.path, consolidated=False) as ds:
        assert ds.attrs["seacast_adapted"] == "true"
        assert json.loads(ds.attrs["seacast_adaptation"])["samples"] == record["samples"]
    # the trained run is never overwritten
    assert {name: _digest(run_dir / name) for name in before} == before
    # nor is there a gain to score it with: evaluate --adapt gain scores it as trained only
    from seacast.evaluation.evaluate import evaluate_runs

    scored = evaluate_runs([run_dir], by="all", out_dir=False, reports_dir=None, adapt="gain")
    assert [run.name for run in scored.runs] == [run_dir.name]


# --------------------------------------------------------------------------- adapting the base gain


class _GainModel(torch.nn.Module):
    """``head + base_gain x base`` per (lead time, variable), as a tide-aware U-Net's output."""

    def __init__(self, head: torch.Tensor) -> None:
        super().__init__()
        self.head = head  # [n_lead, C, H, W]
        self.register_buffer("base_gain", torch.ones(head.shape[:2]))

    def forward(self, base: torch.Tensor) -> torch.Tensor:  # base: [B, n_lead, C, H, W]
        return self.head + self.base_gain[None, :, :, None, None] * base


def _gain_batches(true_gain: torch.Tensor, head: torch.Tensor, noise: float = 0.0):
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(6):
        base = torch.randn(4, *head.shape, generator=generator)
        target = head + true_gain[None, :, :, None, None] * base
        target = target + noise * torch.randn(target.shape, generator=generator)
        batches.append((base, target))
    return batches


def _gain_loss():
    from seacast.normalise import Normaliser
    from seacast.training.losses import make_loss

    normaliser = Normaliser(["a", "b"], "zscore", np.zeros(2), np.ones(2), 0.0)
    return make_loss(normaliser, np.ones((4, 4), dtype=bool), units="normalised")


def test_the_gain_fit_finds_each_fields_gain_from_forward_passes_alone() -> None:
    from seacast.forecast import fit_gain
    from seacast.training.zeroth_order.common import no_autograd

    head = torch.randn(3, 2, 4, 4, generator=torch.Generator().manual_seed(1))
    true_gain = torch.tensor([[0.6, 1.0], [0.3, 1.2], [0.0, 0.8]])
    model = _GainModel(head)
    with no_autograd():
        fitted = fit_gain(
            model, _gain_batches(true_gain, head), _gain_loss(), required_gain=0.0, shrink=1.0
        )
    torch.testing.assert_close(model.base_gain, true_gain, atol=1e-4, rtol=0)
    assert np.all(fitted["loss_after"] <= fitted["loss_before"])


def test_the_gain_fit_ignores_the_targets_not_known_at_the_init_time() -> None:
    from seacast.forecast import fit_gain

    head = torch.zeros(2, 2, 4, 4)
    true_gain = torch.tensor([[0.6, 1.0], [0.3, 1.2]])
    known = torch.tensor([[1.0, 1.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]])
    batches = []
    for base, target in _gain_batches(true_gain, head):
        target = target.clone()
        target[3, 1] = 1e3  # the last sample's second lead time lies past the init time
        batches.append((base, target, known))
    model = _GainModel(head)
    fit_gain(model, batches, _gain_loss(), required_gain=0.0, shrink=1.0)
    torch.testing.assert_close(model.base_gain, true_gain, atol=1e-4, rtol=0)


def test_the_gain_fit_keeps_a_gain_that_would_gain_less_than_its_threshold() -> None:
    from seacast.forecast import fit_gain

    head = torch.zeros(1, 2, 4, 4)
    # with noise of std 0.5: field 0's best gain 0.97 would lower its loss by 0.4 %, field 1's 0.5 by half
    model = _GainModel(head)
    batches = _gain_batches(torch.tensor([[0.97, 0.5]]), head, noise=0.5)
    fitted = fit_gain(model, batches, _gain_loss(), shrink=1.0)
    assert model.base_gain[0, 0] == 1.0
    assert abs(float(model.base_gain[0, 1]) - 0.5) < 0.05
    assert fitted["loss_after"][0, 0] == fitted["loss_before"][0, 0]


def test_the_gain_fit_stays_within_its_bounds() -> None:
    from seacast.forecast import fit_gain

    head = torch.zeros(1, 2, 4, 4)
    model = _GainModel(head)
    fit_gain(model, _gain_batches(torch.tensor([[-0.5, 3.0]]), head), _gain_loss(), shrink=1.0)
    assert model.base_gain.tolist() == [[0.0, 1.5]]


def test_a_new_gain_goes_half_way_from_the_trained_one_to_the_windows_best() -> None:
    from seacast.forecast import fit_gain

    head = torch.zeros(1, 2, 4, 4)
    model = _GainModel(head)
    fitted = fit_gain(model, _gain_batches(torch.tensor([[0.4, 1.2]]), head), _gain_loss())
    torch.testing.assert_close(model.base_gain, torch.tensor([[0.7, 1.1]]), atol=1e-4, rtol=0)
    # the loss recorded is the loss at the gain set, between the trained and the best one's
    assert np.all(fitted["loss_after"] < fitted["loss_before"])


def test_gain_adaptation_of_a_model_without_a_base_names_the_network_target(tmp_path):
    from types import SimpleNamespace

    from seacast.forecast.adaptation import AdaptationSite, adapt_gain

    cfg = experiment(
        "no-base",
        tmp_path / "s.zarr",
        tmp_path,
        lags=3,
        lead_times=[1],
        variables=["zos"],
        steps=1,
        base="none",
    )
    run = SimpleNamespace(config=cfg, model=torch.nn.Linear(2, 2))
    site = AdaptationSite(run, tmp_path / "s.zarr", 0, np.arange(3), 1.0, [], np.ones((2, 2)))
    with pytest.raises(ConfigError, match="--adapt-target network"):
        adapt_gain(site, adapt_hours=48)


def test_an_adaptation_fixes_the_mmap_threshold_unless_the_environment_sets_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import platform

    from seacast.forecast.adaptation import fix_mmap_threshold

    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert fix_mmap_threshold() is False
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    if platform.libc_ver()[0] != "glibc":
        pytest.skip("mallopt's threshold is glibc's")
    assert fix_mmap_threshold() is True


def test_a_prediction_with_per_sample_gains_is_the_model_at_each_samples_gain() -> None:
    from seacast.forecast.adaptation import predict_with_gains

    head = torch.randn(2, 2, 4, 4, generator=torch.Generator().manual_seed(2))
    model = _GainModel(head)
    base = torch.randn(3, *head.shape, generator=torch.Generator().manual_seed(3))
    gains = torch.rand(3, 2, 2, generator=torch.Generator().manual_seed(4))
    predicted = predict_with_gains(model, base, gains)
    for k in range(3):
        model.base_gain.copy_(gains[k])
        torch.testing.assert_close(predicted[k], model(base[k : k + 1])[0])
    assert model.base_gain.tolist() == gains[2].tolist()  # left as it was set before the call
