"""`seacast regrid`: real CMEMS fixtures, synthetic CMEMS-shaped files, appends, bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from helpers_regrid import BOX, SRC_LAT, SRC_LON, coast, data_config, write_raw_month
from typer.testing import CliRunner

from seacast.cli import app
from seacast.config import BBox
from seacast.errors import DataError
from seacast.regrid import regrid_config, regrid_files, target_grid
from seacast.store import open_store, store_fingerprint, store_gaps, store_step_hours
from seacast.synthetic import cmems_like_file, smooth_field

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
MED = FIXTURES / "cmems_mod_med_phy-sal_anfc_4.2km-3D_PT1H-m_sample.nc"
GLO = FIXTURES / "cmems_mod_glo_phy-so_anfc_P1D_northsea.nc"
needs_fixtures = pytest.mark.skipif(
    not MED.exists() or not GLO.exists(), reason=f"CMEMS fixtures absent ({FIXTURES})"
)


def expected_values(
    var: str, hours, lat=SRC_LAT, lon=SRC_LON, shape=(8, 8), land=True
) -> np.ndarray:
    """The surface field of :func:`cmems_like_file` regridded the way regrid should do it."""
    field = smooth_field(lat, lon, np.asarray(hours, dtype=float), var)
    if land:
        field = np.where(coast(lat, lon), np.nan, field)
    source = xr.Dataset(
        {var: (("time", "latitude", "longitude"), field.astype(np.float32))},
        coords={
            "time": np.arange(len(hours)),
            "latitude": lat.astype(np.float32),
            "longitude": lon.astype(np.float32),
        },
    )
    out = source.regrid.conservative(
        target_grid(BOX, shape), latitude_coord="latitude", skipna=True, nan_threshold=0.75
    )
    return out[var].values


# --------------------------------------------------------------------------- real fixtures


@needs_fixtures
def test_med_hourly_fixture_takes_the_surface_level(tmp_path):
    box = BBox(lat_min=35.05, lat_max=35.6, lon_min=26.25, lon_max=27.0)
    report = regrid_files([MED], tmp_path / "med.zarr", bbox=box, shape=(8, 8))
    ds = open_store(tmp_path / "med.zarr")
    assert ds.sizes["time"] == 217 and store_step_hours(ds) == 1.0
    assert report.frames_written == 217 and store_gaps(ds) == []
    src = xr.open_dataset(MED)
    target = target_grid(box, (8, 8))
    got = ds["so"].values
    diffs = []
    for level in (0, 1):  # the levels differ by up to ~0.03 psu in this file
        manual = (
            src[["so"]]
            .isel(depth=level)
            .regrid.conservative(target, latitude_coord="latitude", skipna=True, nan_threshold=0.75)
        )
        diffs.append(float(np.nanmax(np.abs(got - manual["so"].values))))
    assert diffs[0] < 1e-5 < 1e-3 < diffs[1]
    mask = ds["sea_mask"].values
    assert mask.any() and np.isnan(ds["so"].values[:, ~mask]).all()


@needs_fixtures
def test_glo_daily_fixture_gives_a_daily_store_with_land(tmp_path):
    report = regrid_files([GLO], tmp_path / "ns.zarr", bbox=BOX, shape=(16, 16))
    ds = open_store(tmp_path / "ns.zarr")
    assert store_step_hours(ds) == 24 and ds.sizes["time"] == 2
    assert report.step_hours == 24
    sea = ds["sea_mask"]
    assert bool(sea.sel(latitude=54.0, longitude=3.5, method="nearest"))  # open North Sea
    assert not bool(sea.sel(latitude=52.0, longitude=7.0, method="nearest"))  # Germany/Netherlands
    so = ds["so"].values[:, sea.values]
    assert np.isfinite(so).all() and so.min() > 20 and so.max() < 36


# --------------------------------------------------------------------------- synthetic CMEMS-shaped files


@pytest.mark.slow
def test_config_layout_appends_rebuilds_and_is_idempotent(tmp_path):
    for month in ("2024-01", "2024-02", "2024-03"):
        write_raw_month(tmp_path / "raw", month)
    store = tmp_path / "store.zarr"

    first = regrid_config(data_config(tmp_path, "2024-02"))
    assert first.created and first.frames_written == 29 * 24
    # an earlier month: the store is rebuilt in time order
    second = regrid_config(data_config(tmp_path, "2024-01:2024-02"))
    assert (
        second.rebuilt
        and second.frames_written == 31 * 24
        and second.frames_already_present == 29 * 24
    )
    # a later month: appended
    third = regrid_config(data_config(tmp_path, "2024-01:2024-03"))
    assert not third.rebuilt and not third.created and third.frames_written == 31 * 24
    ds = open_store(store)
    times = pd.DatetimeIndex(ds["time"].values)
    assert times.equals(pd.date_range("2024-01-01", "2024-03-31T23:00", freq="h"))
    assert store_gaps(ds) == []
    assert json.loads(ds.attrs["seacast_config"])["months"] == {
        "start": "2024-01",
        "end": "2024-03",
    }
    assert list(ds.data_vars) and set(ds.data_vars) == {"uo", "vo", "so", "zos", "sea_mask"}
    before = store_fingerprint(ds)
    values = ds["zos"].isel(time=slice(700, 800)).values
    again = regrid_config(data_config(tmp_path, "2024-01:2024-03"))
    assert again.frames_written == 0 and again.frames_already_present == len(times)
    ds = open_store(store)
    assert store_fingerprint(ds) == before and ds.sizes["time"] == len(times)
    np.testing.assert_array_equal(ds["zos"].isel(time=slice(700, 800)).values, values)
    # the surface level of the 3-D variables, and the 2-D variable as is
    sea = ds["sea_mask"].values
    for var in ("so", "zos"):
        expected = expected_values(var, [24.0])[0]
        got = ds[var].sel(time="2024-01-02T00:00").values
        assert np.abs(got - expected)[sea].max() < 1e-4  # the deeper level is +0.5
    # different grid config: refused, unless --overwrite
    with pytest.raises(DataError, match=r"different config[\s\S]*grid"):
        regrid_config(data_config(tmp_path, "2024-01", grid={"shape": [16, 16]}))
    redone = regrid_config(
        data_config(tmp_path, "2024-01", grid={"shape": [16, 16]}), overwrite=True
    )
    assert redone.created and open_store(store).sizes["latitude"] == 16
    leftovers = [p for p in tmp_path.iterdir() if p.name.startswith(".") and p.suffix != ".lock"]
    assert not leftovers  # no temp stores left (the lock file stays: see seacast.locks)


def _synthetic_file(
    path: Path, times, *, lat=SRC_LAT, lon=SRC_LON, land=True, variables=("so", "zos")
) -> Path:
    return cmems_like_file(
        path,
        times=times,
        latitude=lat,
        longitude=lon,
        variables=variables,
        land=coast(lat, lon) if land else None,
    )


@pytest.mark.parametrize("method", ["conservative", "bilinear"])
def test_area_mean_of_a_smooth_field_survives(tmp_path, method):
    times = pd.date_range("2024-01-01", periods=3, freq="h")
    lat = np.arange(50.0, 56.0, 0.05)
    lon = np.arange(1.5, 8.5, 0.05)
    src = _synthetic_file(
        tmp_path / "fine.nc", times, lat=lat, lon=lon, land=False, variables=("so", "zos")
    )
    regrid_files([src], tmp_path / "s.zarr", bbox=BOX, shape=(16, 16), method=method)
    ds = open_store(tmp_path / "s.zarr")
    source = (
        xr.open_dataset(src).isel(depth=0).sel(latitude=slice(51, 55), longitude=slice(2.5, 7.5))
    )
    weights = np.cos(np.deg2rad(source["latitude"]))
    for var in ("so", "zos"):
        src_mean = float(source[var].isel(time=1).weighted(weights).mean())
        out = ds[var].isel(time=1)
        out_mean = float(out.weighted(np.cos(np.deg2rad(ds["latitude"]))).mean())
        scale = max(abs(src_mean), float(source[var].std()))
        assert abs(out_mean - src_mean) < 0.01 * scale, (var, out_mean, src_mean)


def test_land_mask_and_coastal_cells(tmp_path):
    times = pd.date_range("2024-01-01", periods=2, freq="h")
    lat = np.arange(50.9, 55.1, 0.02)
    lon = np.arange(2.4, 7.6, 0.02)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    land = lo > 5.0  # a straight coast at 5.0 E
    src = cmems_like_file(
        tmp_path / "c.nc", times=times, latitude=lat, longitude=lon, variables=("zos",), land=land
    )
    # 10 columns of 0.5 deg: 2.5-3, ..., 4.5-5.0 is sea, 5.0-5.5 land; shift the coast into a cell
    regrid_files(
        [src],
        tmp_path / "a.zarr",
        bbox=BBox(lat_min=51, lat_max=55, lon_min=2.6, lon_max=7.6),
        shape=(8, 10),
    )
    ds = open_store(tmp_path / "a.zarr")
    mask = ds["sea_mask"].values
    lon_t = ds["longitude"].values  # edges 2.6, 3.1, ..., 4.6, 5.1: the cell 4.6-5.1 is 80 % sea
    assert mask[:, lon_t < 4.6].all()
    assert mask[:, (lon_t > 4.6) & (lon_t < 5.1)].all(), "a mostly-sea coastal cell must survive"
    assert not mask[:, lon_t > 5.1].any()
    assert np.isfinite(ds["zos"].values[:, mask]).all()
    assert np.isnan(ds["zos"].values[:, ~mask]).all()


def test_bad_times_are_sorted_deduplicated_and_reported(tmp_path):
    times = pd.date_range("2024-01-01", periods=48, freq="h")
    kept = times.delete([10, 11, 12])  # a gap of three hours
    shuffled = kept[np.random.default_rng(0).permutation(len(kept))]
    with_dups = shuffled.append(kept[[5, 6]])
    path = _synthetic_file(tmp_path / "messy.nc", with_dups)
    # an all-NaN frame at 20:00
    ds = xr.open_dataset(path).load()
    ds["zos"][{"time": int(np.where(with_dups == pd.Timestamp("2024-01-01T20:00"))[0][0])}] = np.nan
    ds.close()
    ds.to_netcdf(tmp_path / "messy2.nc")
    report = regrid_files([tmp_path / "messy2.nc"], tmp_path / "m.zarr", bbox=BOX, shape=(8, 8))
    text = "\n".join(report.messages())
    assert "duplicated" in text and "not in order" in text and "all-NaN" in text
    assert report.all_nan_frames == ["2024-01-01T20:00:00"]
    store = open_store(tmp_path / "m.zarr")
    got = pd.DatetimeIndex(store["time"].values)
    assert got.is_monotonic_increasing and got.is_unique and len(got) == 48 - 3 - 1
    assert store_gaps(store) == [
        ["2024-01-01T10:00:00", "2024-01-01T12:00:00"],
        ["2024-01-01T20:00:00", "2024-01-01T20:00:00"],
    ]
    # values belong to their times after sorting
    sea = store["sea_mask"].values
    expected = expected_values("zos", [30.0])[0]
    assert np.abs(store["zos"].sel(time="2024-01-02T06:00").values - expected)[sea].max() < 1e-4


def test_months_on_different_grids_are_regridded_consistently(tmp_path):
    jan = _synthetic_file(
        tmp_path / "jan.nc", pd.date_range("2024-01-31T22:00", periods=2, freq="h")
    )
    fine_lat, fine_lon = np.arange(50.8, 55.2, 0.1), np.arange(2.3, 7.7, 0.1)
    feb = _synthetic_file(
        tmp_path / "feb.nc",
        pd.date_range("2024-02-01", periods=2, freq="h"),
        lat=fine_lat,
        lon=fine_lon,
    )
    report = regrid_files([jan, feb], tmp_path / "g.zarr", bbox=BOX, shape=(8, 8))
    assert len(report.grids) == 2 and "different source grids" in "\n".join(report.messages())
    ds = open_store(tmp_path / "g.zarr")
    assert ds.sizes["time"] == 4 and store_gaps(ds) == []
    expected = np.concatenate(
        [
            expected_values("zos", [742.0, 743.0]),
            expected_values("zos", [744.0, 745.0], lat=fine_lat, lon=fine_lon),
        ]
    )
    sea = ds["sea_mask"].values
    assert np.abs(ds["zos"].values - expected)[:, sea].max() < 1e-4
    # both grids see the same smooth field, so the months agree to within the grids' difference
    coarse_vs_fine = expected_values("zos", [744.0]) - expected_values(
        "zos", [744.0], lat=fine_lat, lon=fine_lon
    )
    assert np.nanmax(np.abs(coarse_vs_fine)[:, sea]) < 0.15


def test_bad_inputs_raise_clear_errors(tmp_path):
    times = pd.date_range("2024-01-01", periods=4, freq="h")
    good = _synthetic_file(tmp_path / "good.nc", times)
    corrupt = tmp_path / "corrupt.nc"
    corrupt.write_bytes(b"this is not netcdf" * 100)
    with pytest.raises(DataError, match="corrupt.nc"):
        regrid_files([corrupt], tmp_path / "x.zarr", bbox=BOX, shape=(8, 8))
    truncated = tmp_path / "truncated.nc"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(DataError, match="truncated.nc"):
        regrid_files([truncated], tmp_path / "x.zarr", bbox=BOX, shape=(8, 8))
    with pytest.raises(DataError, match=r"\['thetao'\] not found[\s\S]*\['so', 'zos'\]"):
        regrid_files(
            [good], tmp_path / "x.zarr", bbox=BOX, shape=(8, 8), variables=["so", "thetao"]
        )
    daily = _synthetic_file(tmp_path / "daily.nc", pd.date_range("2024-01-02", periods=3, freq="D"))
    with pytest.raises(DataError, match="mix time steps"):
        regrid_files([good, daily], tmp_path / "x.zarr", bbox=BOX, shape=(8, 8))
    with pytest.raises(DataError, match=r"no sea cell[\s\S]*good.nc"):
        regrid_files(
            [good],
            tmp_path / "x.zarr",
            bbox=BBox(lat_min=10, lat_max=12, lon_min=2, lon_max=4),
            shape=(8, 8),
        )
    with pytest.raises(DataError, match="no raw files"):
        regrid_config(data_config(tmp_path, "2024-05"))
    assert not (tmp_path / "x.zarr").exists()


def test_cli_regrid_and_info(tmp_path):
    times = pd.date_range("2024-01-01", periods=6, freq="h")
    src = _synthetic_file(tmp_path / "in.nc", times)
    store = tmp_path / "cli.zarr"
    runner = CliRunner()
    args = [
        "regrid",
        str(src),
        "--out",
        str(store),
        "--bbox",
        "51",
        "55",
        "2.5",
        "7.5",
        "--shape",
        "8",
        "8",
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "created" in result.output and "6 time steps" in result.output
    again = runner.invoke(app, args)
    assert again.exit_code == 0 and "nothing new" in again.output
    info = runner.invoke(app, ["info", str(store)])
    assert info.exit_code == 0, info.output
    for word in ("so", "zos", "8 x 8", "every 1 h", "gaps: 0", "sea fraction", "std"):
        assert word in info.output
    bad = runner.invoke(app, [*args[:-2], "16", "16"])  # same store, another grid
    assert bad.exit_code == 1 and "different config" in bad.output
    missing = runner.invoke(app, ["info", str(tmp_path / "none.zarr")])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_dask_distributed_scheduler(tmp_path):
    distributed = pytest.importorskip("dask.distributed")
    times = pd.date_range("2024-01-31T20:00", periods=8, freq="h")  # spans two months: two units
    src = _synthetic_file(tmp_path / "in.nc", times[:4])
    src2 = _synthetic_file(tmp_path / "in2.nc", times[4:])
    with distributed.LocalCluster(
        n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None
    ) as cluster:
        report = regrid_files(
            [src, src2],
            tmp_path / "d.zarr",
            bbox=BOX,
            shape=(8, 8),
            dask_address=cluster.scheduler_address,
        )
    assert report.frames_written == 8 and report.units == ["2024-01", "2024-02"]
    assert open_store(tmp_path / "d.zarr").sizes["time"] == 8
