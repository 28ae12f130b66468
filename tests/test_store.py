"""The Zarr store contract: synthetic stores, validation, statistics, gaps, fingerprints, appends."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import xarray as xr
import zarr

from seacast.errors import DataError
from seacast.store import (
    append_to_store,
    compute_stats,
    finalise_store,
    find_gaps,
    open_store,
    store_config,
    store_fingerprint,
    store_gaps,
    store_stats,
    store_step_hours,
    store_variables,
    write_new_store,
)
from seacast.synthetic import synthetic_dataset, synthetic_store


@pytest.fixture(scope="module")
def small_store(tmp_path_factory):
    return synthetic_store(
        tmp_path_factory.mktemp("store") / "small.zarr", shape=(16, 16), hours=72
    )


def test_synthetic_store_follows_the_contract(small_store):
    ds = open_store(small_store)
    assert store_variables(ds) == ["uo", "vo", "so", "zos"]
    assert dict(ds.sizes) == {"time": 72, "latitude": 16, "longitude": 16}
    for var in store_variables(ds):
        assert ds[var].dtype == np.float32
        assert ds[var].dims == ("time", "latitude", "longitude")
        assert ds[var].encoding["chunks"] == (24, 16, 16)
    mask = ds["sea_mask"].values
    assert mask.dtype == bool and 0.7 < mask.mean() < 0.9
    values = ds["so"].values
    assert np.isnan(values[:, ~mask]).all() and np.isfinite(values[:, mask]).all()
    group = zarr.open_group(str(small_store), mode="r")
    assert group.metadata.zarr_format == 3
    assert group["time"].dtype == np.int64
    assert group["time"].attrs["units"] == "hours since 1970-01-01"
    assert store_step_hours(ds) == 1.0
    assert store_gaps(ds) == []
    assert store_config(ds)["variables"] == ["uo", "vo", "so", "zos"]
    for key in (
        "seacast_stats",
        "seacast_config",
        "seacast_gaps",
        "seacast_step_hours",
        "seacast_fingerprint",
    ):
        json.loads(ds.attrs[key])


def test_stats_are_those_of_the_sea_values(small_store):
    ds = open_store(small_store)
    stats = store_stats(ds)
    so = ds["so"].values.astype(np.float64)
    assert stats["so"]["mean"] == pytest.approx(np.nanmean(so), rel=1e-6)
    assert stats["so"]["std"] == pytest.approx(np.nanstd(so), rel=1e-5)
    assert stats["so"]["min"] == pytest.approx(np.nanmin(so))
    assert stats["so"]["max"] == pytest.approx(np.nanmax(so))


def test_stats_period_limits_the_statistics(tmp_path):
    path = synthetic_store(
        tmp_path / "s.zarr", shape=(8, 8), hours=72, stats_period=("2024-01-01", "2024-01-01")
    )
    ds = open_store(path)
    first_day = ds["zos"].sel(time="2024-01-01").values.astype(np.float64)
    assert store_stats(ds)["zos"]["mean"] == pytest.approx(np.nanmean(first_day), rel=1e-6)
    assert json.loads(ds.attrs["seacast_stats_period"]) == [
        "2024-01-01T00:00:00",
        "2024-01-01T23:00:00",
    ]
    stats, used = compute_stats(ds, ("2030-01-01", "2030-02-01"))  # no data there: all times
    assert used == ["2024-01-01T00:00:00", "2024-01-03T23:00:00"]


def test_daily_store_keeps_hours_encoding(tmp_path):
    path = synthetic_store(tmp_path / "daily.zarr", shape=(8, 8), hours=10, step_hours=24)
    ds = open_store(path)
    assert store_step_hours(ds) == 24
    raw = zarr.open_group(str(path), mode="r")["time"][:]
    assert np.array_equal(np.diff(raw), np.full(9, 24))


def test_fingerprint_is_stable_and_tracks_the_data(tmp_path, small_store):
    ds = open_store(small_store)
    assert store_fingerprint(ds) == store_fingerprint(open_store(small_store))
    other = synthetic_store(tmp_path / "other.zarr", shape=(16, 16), hours=72, seed=1)
    assert store_fingerprint(open_store(other)) != store_fingerprint(ds)


def test_variable_order_follows_the_config(tmp_path):
    path = synthetic_store(
        tmp_path / "v.zarr", shape=(8, 8), hours=4, variables=("zos", "thetao", "uo")
    )
    assert store_variables(open_store(path)) == ["zos", "thetao", "uo"]


def test_find_gaps_reports_missing_ranges():
    times = pd.date_range("2024-01-01", periods=10, freq="h").delete([3, 4, 7]).values
    assert find_gaps(times, 1.0) == [
        ["2024-01-01T03:00:00", "2024-01-01T04:00:00"],
        ["2024-01-01T07:00:00", "2024-01-01T07:00:00"],
    ]
    span = (pd.Timestamp("2023-12-31T22:00"), pd.Timestamp("2024-01-01T10:00"))
    gaps = find_gaps(times, 1.0, span)
    assert gaps[0] == ["2023-12-31T22:00:00", "2023-12-31T23:00:00"]
    assert gaps[-1] == ["2024-01-01T10:00:00", "2024-01-01T10:00:00"]


def test_append_skips_present_times_and_refuses_earlier_ones(tmp_path):
    data = synthetic_dataset(shape=(8, 8), hours=48)
    path = write_new_store(tmp_path / "a.zarr", data.isel(time=slice(0, 24)))
    finalise_store(path, config={"variables": ["uo", "vo", "so", "zos"]})
    assert append_to_store(path, data.isel(time=slice(0, 24))) == 0
    assert append_to_store(path, data.isel(time=slice(12, 48))) == 24
    finalise_store(path)
    ds = open_store(path)
    assert ds.sizes["time"] == 48
    xr.testing.assert_allclose(ds["uo"].load(), data["uo"])
    path2 = write_new_store(tmp_path / "b.zarr", data.isel(time=slice(24, 48)))
    with pytest.raises(DataError, match="already reaches"):
        append_to_store(path2, data.isel(time=slice(0, 24)))


def test_gaps_are_recorded(tmp_path):
    data = synthetic_dataset(shape=(8, 8), hours=48)
    kept = data.isel(time=np.r_[0:10, 15:48])
    path = write_new_store(tmp_path / "g.zarr", kept)
    finalise_store(path, config={}, step_hours=1.0)
    assert store_gaps(open_store(path)) == [["2024-01-01T10:00:00", "2024-01-01T14:00:00"]]


def test_open_store_names_the_problem(tmp_path, small_store):
    with pytest.raises(DataError, match="does not exist"):
        open_store(tmp_path / "missing.zarr")
    (tmp_path / "junk.zarr").mkdir()
    with pytest.raises(DataError, match="cannot be opened"):
        open_store(tmp_path / "junk.zarr")
    # a plain xarray store without the seacast attrs
    plain = open_store(small_store).load()
    plain.attrs = {}
    for name in plain.variables:
        plain[name].encoding = {}
    plain.to_zarr(tmp_path / "plain.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(DataError, match="lacks the attrs"):
        open_store(tmp_path / "plain.zarr")
    # float64 data is not a store
    wrong = open_store(small_store).load()
    wrong["so"] = wrong["so"].astype(np.float64)
    for name in wrong.variables:
        wrong[name].encoding = {}
    wrong.to_zarr(tmp_path / "wrong.zarr", zarr_format=3, consolidated=False)
    with pytest.raises(DataError, match="so is float64"):
        open_store(tmp_path / "wrong.zarr")


def test_write_new_store_refuses_to_replace_without_overwrite(tmp_path, small_store):
    data = synthetic_dataset(shape=(8, 8), hours=4)
    path = write_new_store(tmp_path / "n.zarr", data)
    with pytest.raises(DataError, match="already exists"):
        write_new_store(path, data)
    write_new_store(path, data.isel(time=slice(0, 2)), overwrite=True)
    assert xr.open_zarr(path, consolidated=False).sizes["time"] == 2
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dirs left
