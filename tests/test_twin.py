"""The North Sea twin: layout like CMEMS, tides, surges, tracers, conservation, determinism, fetch.

One simulated month (April, 32x32) is shared by the physics tests; the other tests
run only the few hours or coarse months they need.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from seacast.config import DataConfig
from seacast.raw import Manifest
from seacast.sources import twin as twin_source
from seacast.sources.twin import fetch_twin, plan_twin
from seacast.twin import TwinModel, build_grid, nearest_sea_cell, simulate
from seacast.twin.tides import CONSTITUENTS, hours_since_epoch
from seacast.twin.weather import Weather

FIXTURES = Path(__file__).resolve().parents[1].parent / "shared" / "fixtures"
SHAPE = (32, 32)
DUTCH_COAST = {
    "Hoek van Holland": (52.0, 4.1),
    "Den Helder": (52.96, 4.75),
    "Vlissingen": (51.45, 3.55),
}


def twin_config(months: str, tmp_path: Path | None = None, **twin) -> DataConfig:
    settings = {"shape": list(SHAPE), "spinup_days": 3.0, **twin}
    raw = {"name": "twin_test", "source": "twin", "months": months, "twin": settings}
    if tmp_path is not None:
        raw["raw_dir"] = str(tmp_path / "raw")
    return DataConfig.model_validate(raw)


@pytest.fixture(scope="module")
def april() -> xr.Dataset:
    ((month, ds),) = list(simulate(twin_config("2024-04")))
    assert month == "2024-04"
    return ds


@pytest.fixture(scope="module")
def grid():
    return build_grid(51.0, 55.0, 2.5, 7.5, SHAPE)


def harmonic_fit(series: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares fit of mean + the five constituents to hourly series (time first).

    Returns (prediction, coefficients [1 + 2K, ...]).
    """
    hours = np.arange(series.shape[0], dtype=float)
    columns = [np.ones_like(hours)]
    for constituent in CONSTITUENTS:
        omega = 2 * np.pi / constituent.period_hours
        columns += [np.cos(omega * hours), np.sin(omega * hours)]
    design = np.stack(columns, axis=1)
    coef, *_ = np.linalg.lstsq(design, series.reshape(series.shape[0], -1), rcond=None)
    return (design @ coef).reshape(series.shape), coef


# ----------------------------------------------------------------------------- layout


def test_month_looks_like_a_cmems_hourly_file(april: xr.Dataset) -> None:
    ds = april
    ocean = ["zos", "uo", "vo", "so", "thetao"]
    weather = {"msl", "iews", "inss"}
    fresher = {f"{v}_{age}" for v in weather for age in ("06h", "12h", "18h")}
    assert set(ds.data_vars) == set(ocean) | weather | fresher
    assert ds["zos"].dims == ("time", "latitude", "longitude")
    for name in ("uo", "vo", "so", "thetao"):
        assert ds[name].dims == ("time", "depth", "latitude", "longitude")
    assert ds.sizes["depth"] == 1 and ds.sizes["time"] == 30 * 24
    assert all(ds[v].dtype == np.float32 for v in ds.data_vars)
    expected = {"zos": "m", "uo": "m s-1", "vo": "m s-1", "so": "1e-3", "thetao": "degrees_C"}
    assert {v: ds[v].attrs["units"] for v in ocean} == expected
    assert ds["zos"].attrs["standard_name"] == "sea_surface_height_above_geoid"
    assert ds["thetao"].attrs["standard_name"] == "sea_water_potential_temperature"
    assert ds["latitude"].attrs["units"] == "degrees_north" and ds["longitude"].attrs["axis"] == "X"
    times = pd.DatetimeIndex(ds["time"].values)
    assert times[0] == pd.Timestamp("2024-04-01") and (times == times.floor("h")).all()
    assert (np.diff(times.values) == np.timedelta64(1, "h")).all()
    assert ds.attrs["source"] == "seacast North Sea twin" and ds.attrs["seed"] == 0
    # land is NaN in every variable at every hour, sea is finite
    land = np.isnan(ds["zos"].values[0])
    assert 0.2 < land.mean() < 0.7
    for name in ocean:
        values = ds[name].values.reshape(ds.sizes["time"], *land.shape)
        assert np.isnan(values[:, land]).all() and np.isfinite(values[:, ~land]).all(), name


def test_the_files_carry_a_day_ahead_weather_forecast_over_land_and_sea(april: xr.Dataset) -> None:
    assert april["msl"].dims == ("time", "latitude", "longitude")
    assert {v: april[v].attrs["units"] for v in ("msl", "iews", "inss")} == {
        "msl": "Pa",
        "iews": "N m-2",
        "inss": "N m-2",
    }
    for name in ("msl", "iews", "inss"):
        assert np.isfinite(april[name].values).all(), name
        assert april[name].attrs["forecast_age_hours"] == 24.0
    # plausible weather: pressure within 930-1060 hPa, stress up to a gale's few N/m2
    assert float(april["msl"].min()) > 93000 and float(april["msl"].max()) < 106000
    stress = np.hypot(april["iews"].values, april["inss"].values)
    assert 0.01 < float(np.median(stress)) < 0.5 and float(stress.max()) < 5.0


def test_the_fresher_forecasts_know_the_storms_born_since_the_day_ahead_one(
    april: xr.Dataset,
) -> None:
    ages = {name: float(april[name].attrs["forecast_age_hours"]) for name in ("msl_06h", "msl_12h")}
    assert ages == {"msl_06h": 6.0, "msl_12h": 12.0}
    assert "issued 6 h ahead" in april["msl_06h"].attrs["long_name"]
    day_ahead, fresh = april["msl"].values, april["msl_06h"].values
    differs = np.abs(fresh - day_ahead).max(axis=(1, 2)) > 1.0  # Pa
    # a storm born in the last day is in the 6 h forecast but not yet in the day-ahead one
    assert 0.05 < differs.mean() < 0.95
    model = TwinModel(twin_config("2024-04"), pd.Timestamp("2024-04-01"))
    hours = model.hours
    model.weather.storms = [s for s in model.weather.storms if s.start_hours < hours - 30]
    np.testing.assert_array_equal(model.snapshot().get("msl_06h"), model.snapshot().get("msl"))


def test_the_weather_forecast_leaves_out_only_the_storms_born_after_it_was_issued() -> None:
    from seacast.twin.weather import Storm

    grid = build_grid(51.0, 55.0, 2.5, 7.5, (16, 16))
    weather = Weather(
        grid, seed=0, start=pd.Timestamp("2024-01-10"), end=pd.Timestamp("2024-01-20")
    )
    hours = hours_since_epoch(pd.Timestamp("2024-01-15"))
    old = Storm(hours - 30, 60.0, 2000.0, 300e3, 0.0, 0.0, 10.0, 0.0)
    new = Storm(hours - 10, 60.0, 2000.0, 300e3, 0.0, 0.0, 10.0, 0.0)
    weather.storms = [old]
    known = weather.fields(hours)
    weather.storms = [old, new]
    truth = weather.fields(hours)
    forecast = weather.fields(hours, known_at=hours - 24)
    for a, b in zip(forecast, known, strict=True):
        np.testing.assert_array_equal(a, b)  # the storm born 10 h ago is unknown a day earlier
    assert not np.allclose(truth[0], forecast[0])


@pytest.mark.skipif(
    not (FIXTURES / "cmems_mod_glo_phy-so_anfc_P1D_northsea.nc").exists(),
    reason="shared CMEMS fixtures absent",
)
def test_attributes_match_a_real_cmems_file(april: xr.Dataset) -> None:
    with xr.open_dataset(FIXTURES / "cmems_mod_glo_phy-so_anfc_P1D_northsea.nc") as real:
        for key in ("units", "standard_name", "long_name"):
            assert april["so"].attrs[key] == real["so"].attrs[key]
        for coord in ("latitude", "longitude", "depth"):
            for key in ("units", "standard_name", "axis"):
                assert april[coord].attrs[key] == real[coord].attrs[key]
        assert april["so"].dims == real["so"].dims


def test_the_basin_is_the_real_dutch_coast(grid) -> None:
    sea = grid.sea
    lat2, lon2 = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    assert not sea[(lat2 > 52.2) & (lat2 < 52.8) & (lon2 > 5.5)].any()  # Gelderland, not sea
    assert sea[(lat2 > 54.0)].all()  # the open North Sea
    assert not sea[
        (lat2 > 52.5) & (lat2 < 52.85) & (lon2 > 5.2) & (lon2 < 5.6)
    ].any()  # no IJsselmeer
    coast = grid.depth[sea & (grid.coast_distance_km < 1.5 * grid.dy / 1e3)]  # next to land
    offshore = grid.depth[sea & (grid.coast_distance_km > 100)]
    assert coast.max() < 20 and offshore.min() > 38
    assert grid.boundary.size > 0 and grid.river_cell is not None


# ----------------------------------------------------------------------------- tides


def test_coastal_spectrum_peaks_at_m2_with_s2_present(april: xr.Dataset, grid) -> None:
    j, i = nearest_sea_cell(grid, *DUTCH_COAST["Hoek van Holland"], coastal=True)
    series = april["zos"].values[:, j, i].astype(float)
    power = np.abs(np.fft.rfft(series - series.mean())) ** 2
    freq = np.fft.rfftfreq(len(series), d=1.0)  # cycles per hour; 720 h: M2 ~ bin 58, S2 = bin 60
    peak = int(np.argmax(power[1:])) + 1
    assert 12.3 < 1 / freq[peak] < 12.55  # M2, 12.42 h
    s2 = int(np.argmin(np.abs(freq - 1 / 12.0)))
    between = s2 - 1  # between M2 and S2: only leakage
    assert power[s2] > 10 * power[between]
    assert power[s2] > 100 * np.median(power)
    assert power[s2] < power[peak]


def test_tidal_range_along_the_dutch_coast_is_realistic(april: xr.Dataset, grid) -> None:
    for name, (lat, lon) in DUTCH_COAST.items():
        j, i = nearest_sea_cell(grid, lat, lon, coastal=True)
        tide, coef = harmonic_fit(april["zos"].values[:, j, i].astype(float))
        amplitudes = np.hypot(coef[1::2, 0], coef[2::2, 0])
        assert amplitudes.argmax() == 0, f"M2 should dominate at {name}: {amplitudes}"
        assert 1.0 < tide.max() - tide.min() < 4.0, name


def test_tide_forecast_beats_persistence_but_weather_prevents_a_perfect_one(
    april: xr.Dataset,
) -> None:
    zos = april["zos"].values.astype(float)
    sea = np.isfinite(zos[0])
    series = zos[:, sea]
    lead = 12
    persistence = np.sqrt(np.mean((series[lead:] - series[:-lead]) ** 2))
    tide, _ = harmonic_fit(series)
    harmonic = np.sqrt(np.mean((series - tide)[lead:] ** 2))
    assert harmonic < 0.6 * persistence, (harmonic, persistence)
    assert harmonic > 0.02, "the weather should leave a residual no tide table predicts"


# ----------------------------------------------------------------------------- tracers


def test_salinity_is_bounded_with_a_fresh_plume_at_the_river_mouth(april: xr.Dataset, grid) -> None:
    so = april["so"].values[:, 0]
    sea = grid.sea
    assert np.nanmin(so) >= 0.0 and np.nanmax(so) <= 36.0
    j, i = grid.river_cell
    mouth = so[:, max(j - 1, 0) : j + 2, max(i - 1, 0) : i + 2]
    lat2, _ = np.meshgrid(grid.lat, grid.lon, indexing="ij")
    offshore = so[:, sea & (lat2 > 54.3)]
    assert np.nanmean(mouth) < np.nanmean(offshore) - 2.0
    assert abs(np.nanmean(offshore) - 34.5) < 0.5


def test_temperature_follows_the_season_and_stays_plausible(april: xr.Dataset) -> None:
    thetao = april["thetao"].values
    assert np.nanmin(thetao) > 0.0 and np.nanmax(thetao) < 25.0
    first, last = np.nanmean(thetao[:24]), np.nanmean(thetao[-24:])
    assert last > first + 0.5  # spring warming


# ----------------------------------------------------------------------------- dynamics


def test_volume_is_conserved_in_a_closed_basin() -> None:
    cfg = twin_config("2024-01", closed_basin=True, tides=False, weather=True, river=False)
    model = TwinModel(cfg, pd.Timestamp("2024-01-10"))
    before = model.volume()
    area = float(model.grid.area[model.grid.sea].sum())
    moved = 0.0
    for _ in range(36):
        model.advance_hour()
        moved = max(moved, float(np.abs(model.dynamics.eta).max()))
    assert moved > 0.05, "the storms should move the water"
    assert abs(model.volume() - before) / area < 1e-9  # metres of mean level


def test_the_river_adds_exactly_its_discharge_in_a_closed_basin() -> None:
    from seacast.twin.tracers import river_discharge

    cfg = twin_config("2024-01", closed_basin=True, tides=False, weather=False, river=True)
    model = TwinModel(cfg, pd.Timestamp("2024-01-10"))
    before, hours = model.volume(), model.hours
    for _ in range(6):
        model.advance_hour()
    expected = sum(river_discharge(hours + h + 0.5) * 3600.0 for h in range(6))
    assert model.volume() - before == pytest.approx(expected, rel=1e-6)


def test_surge_variance_is_higher_in_winter_than_in_summer() -> None:
    variances = {}
    for month in ("2024-01", "2024-07"):
        ((_, ds),) = list(simulate(twin_config(month, tides=False, river=False, spinup_days=1.0)))
        zos = ds["zos"].values
        sea = np.isfinite(zos[0])
        variances[month] = float(np.var(zos[:, sea], axis=0).mean())
    assert variances["2024-01"] > 2.0 * variances["2024-07"] > 0.0, variances


def test_a_coarse_multi_month_run_stays_finite_and_bounded() -> None:
    cfg = twin_config("2024-01:2024-03", shape=[16, 16], spinup_days=1.0)
    for month, ds in simulate(cfg):
        for name, bound in (("zos", 5.0), ("uo", 3.0), ("vo", 3.0)):
            values = ds[name].values
            assert np.nanmax(np.abs(values)) < bound, (month, name)
        assert np.nanmin(ds["so"].values) >= 0.0 and np.nanmax(ds["so"].values) <= 36.0
        assert np.isfinite(ds["zos"].values[:, ~np.isnan(ds["zos"].values[0])]).all()


# ----------------------------------------------------------------------------- fetch


def _mtime_ns(path: Path) -> int:
    return path.stat().st_mtime_ns


def test_same_seed_gives_identical_files_and_complete_months_are_skipped(tmp_path: Path) -> None:
    small = {"shape": [16, 16], "spinup_days": 0.5}
    first = twin_config("2024-02", tmp_path / "a", **small)
    second = twin_config("2024-02", tmp_path / "b", **small)
    [path_a] = fetch_twin(first)
    [path_b] = fetch_twin(second)
    assert path_a.read_bytes() == path_b.read_bytes()
    assert path_a == tmp_path / "a" / "raw" / "twin" / "nws_twin" / "2024-02.nc"

    # extend the months: February is complete and not rewritten, March continues the same run
    stamp = _mtime_ns(path_a)
    longer = twin_config("2024-02:2024-03", tmp_path / "a", **small)
    labels: list[str] = []
    paths = fetch_twin(longer, progress=labels.append)
    assert _mtime_ns(path_a) == stamp
    assert labels == ["nws_twin 2024-02", "nws_twin 2024-03"]
    (_, feb), (_, mar) = list(simulate(longer))
    with xr.open_dataset(paths[1]) as written:
        np.testing.assert_array_equal(written["zos"].values, mar["zos"].values)
        assert written.attrs == mar.attrs
    assert not list((tmp_path / "a" / "raw" / "twin").rglob("*.partial*"))
    assert set(Manifest(tmp_path / "a" / "raw", "twin").entries) == {
        "nws_twin/2024-02",
        "nws_twin/2024-03",
    }

    # another seed is another twin: the months are no longer complete
    assert all(p.complete for p in plan_twin(longer))
    assert not any(
        p.complete
        for p in plan_twin(twin_config("2024-02:2024-03", tmp_path / "a", **small, seed=1))
    )


def test_different_seeds_give_different_weather() -> None:
    states = []
    for seed in (0, 1):
        model = TwinModel(
            twin_config("2024-01", shape=[16, 16], tides=False, seed=seed),
            pd.Timestamp("2024-01-01"),
        )
        for _ in range(72):
            model.advance_hour()
        states.append(model.dynamics.eta.copy())
    assert np.abs(states[0] - states[1]).max() > 0.01


def test_a_failed_month_leaves_no_file_and_no_manifest_entry(tmp_path: Path, monkeypatch) -> None:
    cfg = twin_config("2024-02:2024-03", tmp_path, shape=[16, 16], spinup_days=0.5)
    real = simulate

    def broken(cfg, on_hour=None, until=None):
        for month, ds in real(cfg, on_hour=on_hour, until=until):
            if month == "2024-03":
                raise RuntimeError("killed")
            yield month, ds

    monkeypatch.setattr(twin_source, "simulate", broken)
    with pytest.raises(RuntimeError):
        fetch_twin(cfg)
    folder = Path(cfg.raw_dir) / "twin" / "nws_twin"
    assert sorted(os.listdir(folder)) == ["2024-02.nc"]
    assert set(Manifest(Path(cfg.raw_dir), "twin").entries) == {"nws_twin/2024-02"}
