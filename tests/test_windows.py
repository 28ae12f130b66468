"""Samples: frames read, normalisation, land, gaps and the named splits."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from seacast.config import SamplesConfig, SplitConfig
from seacast.errors import ConfigError, DataError
from seacast.normalise import Normaliser
from seacast.splits import PAPER_HOURS_NEEDED, SEASONS, Selection, plan_split, season_of_hours
from seacast.store import finalise_store, store_stats, write_new_store
from seacast.synthetic import synthetic_dataset, synthetic_store
from seacast.windows import Timeline, make_loader, open_samples

VARIABLES = ["uo", "zos"]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("windows") / "store.zarr"
    return synthetic_store(path, shape=(32, 32), hours=24 * 8, variables=VARIABLES, seed=3)


def _samples(store, **kwargs) -> SamplesConfig:
    base = {"variables": VARIABLES, "lags": 4, "lead_times": [1, 5]}
    return SamplesConfig.model_validate(base | kwargs)


def _hours(start: str, periods: int) -> np.ndarray:
    times = pd.date_range(start, periods=periods, freq="h")
    return (
        ((times - pd.Timestamp("1970-01-01")) // pd.Timedelta(hours=1)).to_numpy().astype(np.int64)
    )


def test_samples_hold_the_right_frames(store):
    sets = open_samples(store, _samples(store, normalisation="zscore"))
    ds = xr.open_zarr(store, consolidated=False)
    stats = store_stats(ds)
    sample = sets.train[7]
    t0 = int(sets.train.init_indices[7])
    assert int(sample["init_time"]) == int(sets.timeline.hours[t0])
    assert sample["x"].shape == (2, 4, 32, 32)
    assert sample["y"].shape == (2, 2, 32, 32)
    sea = ds["sea_mask"].values
    for c, var in enumerate(VARIABLES):
        mean, std = stats[var]["mean"], stats[var]["std"]
        inputs = ds[var].isel(time=slice(t0 - 3, t0 + 1)).values
        expected_x = np.where(sea, (inputs - mean) / std, 0.0)
        np.testing.assert_allclose(sample["x"][c].numpy(), expected_x, rtol=1e-5, atol=1e-5)
        for k, lead in enumerate([1, 5]):
            target = ds[var].isel(time=t0 + lead).values
            expected_y = np.where(sea, (target - mean) / std, 0.0)
            np.testing.assert_allclose(sample["y"][k, c].numpy(), expected_y, rtol=1e-5, atol=1e-5)
    assert torch.equal(sample["sea_mask"], torch.from_numpy(sea))


def test_land_is_zero_and_sea_is_in_range(store):
    sets = open_samples(store, _samples(store))
    sample = sets.validation[0]
    land = ~sample["sea_mask"]
    assert land.any()
    assert (sample["x"][:, :, land] == 0).all()
    assert (sample["y"][:, :, land] == 0).all()
    sea_values = sample["x"][:, :, sample["sea_mask"]]
    # minmax to [0.1, 1] over the stats period, which here is the whole store
    assert sea_values.min() >= 0.1 - 1e-5 and sea_values.max() <= 1 + 1e-5


def test_normaliser_still_imports_from_windows():
    import seacast.windows

    assert seacast.windows.Normaliser is Normaliser


@pytest.mark.parametrize("method", ["minmax", "zscore"])
def test_normaliser_round_trip(method):
    stats = {
        "uo": {"min": -1.0, "max": 2.0, "mean": 0.3, "std": 0.5},
        "so": {"min": 30.0, "max": 35.0, "mean": 34.0, "std": 0.8},
    }
    norm = Normaliser.from_stats(stats, ["uo", "so"], method)
    x = (
        torch.stack([torch.linspace(-1, 2, 50), torch.linspace(30, 35, 50)])
        .reshape(1, 2, 5, 10)
        .double()
    )
    back = norm.denormalise(norm.normalise(x, channel_dim=1), channel_dim=1)
    torch.testing.assert_close(back, x)
    restored = Normaliser.from_dict(norm.to_dict())
    torch.testing.assert_close(
        restored.normalise(x, channel_dim=1), norm.normalise(x, channel_dim=1)
    )
    if method == "minmax":
        scaled = norm.normalise(x, channel_dim=1)
        torch.testing.assert_close(
            scaled.amin(dim=(0, 2, 3)), torch.tensor([0.1, 0.1], dtype=torch.float64)
        )
        torch.testing.assert_close(
            scaled.amax(dim=(0, 2, 3)), torch.tensor([1.0, 1.0], dtype=torch.float64)
        )


def test_timeline_skips_and_counts_windows_across_gaps():
    hours = _hours("2024-01-01", 100)
    hours = np.delete(hours, [40])  # a missing time
    gap = (int(hours[70]), int(hours[71]))  # a recorded gap over two stored times
    timeline = Timeline(hours, 1.0, [gap])
    (lo, hi) = (int(hours[0]), int(hours[-1]))
    indices, skipped = timeline.select(Selection(((lo, hi),)), lags=3, lead_steps=[2])
    # every kept window is contiguous in time and clear of the recorded gap
    for i in indices:
        span = hours[i - 2 : i + 3]
        assert np.all(np.diff(span) == 1)
        assert span[-1] < gap[0] or span[0] > gap[1]
    # inits 2..97 with a whole window, less the absent hour 40: 95 candidates.
    # The missing hour 40 breaks windows [t-2, t+2] for t in 38..42 (40 itself absent): 4;
    # the recorded gap over hours 71-72 catches t in 69..74: 6.
    assert skipped == 4 + 6
    assert len(indices) == 95 - 10


def test_store_gaps_are_skipped(tmp_path):
    ds = synthetic_dataset(shape=(32, 32), hours=24 * 4, variables=VARIABLES, seed=1)
    ds = ds.isel(time=np.setdiff1d(np.arange(ds.sizes["time"]), [30, 31]))
    path = tmp_path / "gappy.zarr"
    write_new_store(path, ds, chunk_hours=24)
    finalise_store(path, config={}, step_hours=1.0)
    sets = open_samples(
        path, _samples(path, split={"preset": "fractions", "fractions": [1.0, 0.0, 0.0]})
    )
    # windows [t-3, t+5] touching the missing hours 30-31: t in 25..34, less the two absent inits
    assert sets.train.skipped == (31 + 3) - (30 - 5) + 1 - 2
    assert sets.skipped["train"] == sets.train.skipped
    hours = sets.timeline.hours
    for i in sets.train.init_indices:
        assert hours[i + 5] - hours[i - 3] == 8


def test_paper_split_windows():
    hours = _hours("2022-01-01", PAPER_HOURS_NEEDED)
    plan = plan_split(SplitConfig(preset="paper"), hours)
    assert list(plan.test) == ["spring", "summer", "autumn", "winter"]
    first = int(hours[0])
    assert plan.train[0].ranges == ((first, first + 8759),)
    assert plan.validation[0].ranges == ((first + 9503, first + 10007),)
    assert plan.test["winter"][0].ranges == ((first + 16632, first + 17136),)
    timeline = Timeline(hours, 1.0)
    train, skipped = timeline.select(plan.train[0], lags=10, lead_steps=[48])
    assert skipped == 0
    assert train[0] == 9 and train[-1] == 8759 - 48
    spring, _ = timeline.select(plan.test["spring"][0], lags=10, lead_steps=[48])
    assert spring[0] == 10031 + 9 and spring[-1] == 10511 - 48


def test_paper_split_says_how_long_the_store_must_be():
    with pytest.raises(DataError, match=str(PAPER_HOURS_NEEDED)):
        plan_split(SplitConfig(preset="paper"), _hours("2024-01-01", 9000))


def test_seasons_split_tests_by_meteorological_season():
    hours = _hours("2023-01-01", 24 * 731)
    cfg = SplitConfig.model_validate(
        {
            "preset": "seasons",
            "train": {"start": "2023-01-01", "end": "2023-10-31"},
            "validation": {"start": "2023-11-01", "end": "2023-11-30"},
            "test": {"start": "2023-12-01", "end": "2024-11-30"},
        }
    )
    plan = plan_split(cfg, hours)
    assert set(plan.test) == set(SEASONS)
    timeline = Timeline(hours, 1.0)
    test_lo = int(_hours("2023-12-01", 1)[0])
    test_hi = int(_hours("2024-11-30T23", 1)[0])
    total = 0
    for season in SEASONS:
        indices, _ = timeline.select(plan.test[season][0], lags=4, lead_steps=[6])
        assert len(indices) > 0
        assert (season_of_hours(hours[indices]) == season).all()
        assert hours[indices - 3].min() >= test_lo and hours[indices + 6].max() <= test_hi
        total += len(indices)
    whole, _ = timeline.select(Selection(plan.test["DJF"][0].ranges), lags=4, lead_steps=[6])
    assert total == len(whole)
    djf, _ = timeline.select(plan.test["DJF"][0], lags=4, lead_steps=[6])
    months = set(pd.DatetimeIndex(hours[djf].astype("datetime64[h]")).month)
    assert months == {12, 1, 2}


def test_blocks_split_puts_every_season_in_train_validation_and_test():
    hours = _hours("2024-01-01", 24 * 366)
    cfg = SplitConfig.model_validate({"preset": "blocks", "block_days": 7})
    plan = plan_split(cfg, hours)
    timeline = Timeline(hours, 1.0)
    chosen = {}
    for name, selections in (("train", plan.train), ("validation", plan.validation)):
        chosen[name], _ = timeline.select(selections[0], lags=6, lead_steps=[24])
    chosen["test"], _ = timeline.select(plan.test["test"][0], lags=6, lead_steps=[24])
    for name, indices in chosen.items():
        assert set(season_of_hours(hours[indices])) == set(SEASONS), name
    # no frame of one split's windows is a frame of another's
    frames = {
        name: set(np.concatenate([hours[indices + k] for k in range(-5, 25)]).tolist())
        for name, indices in chosen.items()
    }
    assert not frames["train"] & frames["validation"]
    assert not frames["train"] & frames["test"]
    assert not frames["validation"] & frames["test"]
    # five training weeks in seven, and windows span neighbouring training weeks
    assert 0.66 < len(chosen["train"]) / len(hours) < 0.72
    assert plan.train[0].ranges[0] == (int(hours[0]), int(hours[0]) + 5 * 7 * 24 - 1)


def test_blocks_split_needs_a_training_block():
    with pytest.raises(ValueError, match="no 'train' block"):
        SplitConfig.model_validate({"preset": "blocks", "block_cycle": ["validation", "test"]})


def test_split_ranges_must_be_given_and_disjoint():
    hours = _hours("2023-01-01", 24 * 60)
    with pytest.raises(ConfigError, match="missing: test"):
        plan_split(
            SplitConfig.model_validate(
                {
                    "preset": "ranges",
                    "train": {"start": "2023-01-01", "end": "2023-01-20"},
                    "validation": {"start": "2023-01-21", "end": "2023-01-25"},
                }
            ),
            hours,
        )
    with pytest.raises(ConfigError, match="overlap"):
        plan_split(
            SplitConfig.model_validate(
                {
                    "preset": "ranges",
                    "train": {"start": "2023-01-01", "end": "2023-01-20"},
                    "validation": {"start": "2023-01-20", "end": "2023-01-25"},
                    "test": {"start": "2023-01-26", "end": "2023-02-20"},
                }
            ),
            hours,
        )


def test_fraction_splits_share_no_frame(store):
    sets = open_samples(store, _samples(store))
    hours = sets.timeline.hours

    def span(ds):
        return hours[ds.init_indices - 3].min(), hours[ds.init_indices + 5].max()

    assert span(sets.train)[1] < span(sets.validation)[0]
    assert span(sets.validation)[1] < span(sets.test)[0]


def test_lead_time_must_fit_the_step(store):
    with pytest.raises(ConfigError, match="multiple"):
        open_samples(
            store, _samples(store, lead_times=[1]).model_copy(update={"lead_times": [1.5]})
        )


def test_loader_workers_give_the_same_batches(store):
    sets = open_samples(store, _samples(store))
    serial = next(iter(make_loader(sets.train, 6, num_workers=0)))
    parallel = next(iter(make_loader(sets.train, 6, num_workers=2)))
    assert torch.equal(serial["x"], parallel["x"]) and torch.equal(serial["y"], parallel["y"])


def test_preloaded_samples_equal_the_lazily_read_ones(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", shape=(16, 16), hours=24 * 6)
    sets = open_samples(store, _samples(store))
    lazy = [sets.train[k] for k in (0, 7, len(sets.train) - 1)]
    assert sets.train.preload(max_gb=1.0)
    for k, sample in zip((0, 7, len(sets.train) - 1), lazy, strict=True):
        preloaded = sets.train[k]
        torch.testing.assert_close(preloaded["x"], sample["x"], rtol=0, atol=0)
        torch.testing.assert_close(preloaded["y"], sample["y"], rtol=0, atol=0)
    assert sets.train.thinned(3)._memory is not None  # a thinned copy shares the frames


def test_a_split_larger_than_preload_gb_is_read_lazily(tmp_path: Path) -> None:
    store = synthetic_store(tmp_path / "s.zarr", shape=(16, 16), hours=24 * 6)
    sets = open_samples(store, _samples(store))
    assert not sets.train.preload(max_gb=1e-6)
    assert not sets.validation.preload(max_gb=0)
    assert sets.train[0]["x"].shape[0] == len(sets.train.variables)
