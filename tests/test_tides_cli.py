"""``seacast tides``: fit a store's tide from the command line, see its constants, get clean errors."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from helpers_tides import known_constituents, tidal_store
from typer.testing import CliRunner

from seacast.cli import app
from seacast.cli.tides import parse_period
from seacast.store import open_store
from seacast.tides import load_tides

runner = CliRunner()
SHAPE = (10, 12)


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> Path:
    """A month of a known tide (M2, S2, K1, O1) in zos and uo, from 2024-01-01."""
    return tidal_store(
        tmp_path_factory.mktemp("tides_cli") / "coast.zarr", shape=SHAPE, hours=24 * 30
    )


def _flat(text: str) -> str:
    """The output with rich's line wrapping undone."""
    return " ".join(text.split())


def _row(output: str, name: str) -> list[str]:
    """The cells of the table row of constituent ``name``."""
    for line in output.splitlines():
        cells = [c.strip() for c in re.split(r"[│┃]", line) if c.strip()]
        if cells and cells[0] == name:
            # each variable's cell reads 'A g°'
            return [token.rstrip("°") for cell in cells[1:] for token in cell.split()]
    raise AssertionError(f"no row {name} in\n{output}")


def test_tides_writes_constants_and_map_and_prints_m2_at_the_point(store, tmp_path) -> None:
    with open_store(store) as ds:
        lat, lon = ds["latitude"].values, ds["longitude"].values
        sea = ds["sea_mask"].values.astype(bool)
    i, j = (int(k) for k in np.argwhere(sea)[len(np.argwhere(sea)) // 3])
    # a little off the cell centre: the command snaps to it and says so
    asked = (lat[i] + 0.2 * (lat[1] - lat[0]), lon[j] - 0.2 * (lon[1] - lon[0]))
    out = tmp_path / "report"

    result = runner.invoke(
        app, ["tides", str(store), "--point", f"{asked[0]},{asked[1]}", "--out", str(out)]
    )

    assert result.exit_code == 0, result.output
    assert (out / "tides.nc").is_file()
    assert (out / "cotidal_zos.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "cotidal_uo.png").exists()  # a map for zos only, when there is one
    assert f"{lat[i]:.4f},{lon[j]:.4f}" in result.output
    flat = _flat(result.output)
    assert "720 hours" in flat and "Rayleigh criterion" in flat
    amplitude, phase = (float(x) for x in _row(result.output, "M2")[:2])
    true_amplitude, true_phase = (m[i, j] for m in known_constituents(SHAPE, 0)["M2"])
    assert amplitude == pytest.approx(true_amplitude, rel=0.01)
    assert phase == pytest.approx(true_phase, abs=1.0)
    assert "zos (m)" in result.output and "α +24 h" in result.output
    tides = load_tides(out / "tides.nc")
    assert tides.variables == ["zos", "uo"]
    assert tides.damping_lead_times == [6, 12, 24]
    assert str(out / "tides.nc") in flat


def test_period_restricts_the_fit_and_the_default_folder_is_per_store(
    store, tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(
        app,
        [
            "tides",
            str(store),
            "--period",
            "2024-01-03:2024-01-20",
            "--variables",
            "uo",
            "--lead-times",
            "6",
            "--no-progress",
        ],
    )

    assert result.exit_code == 0, result.output
    folder = tmp_path / "reports" / "tides" / "coast"
    tides = load_tides(folder / "tides.nc")
    assert tides.period == ("2024-01-03T00:00", "2024-01-20T23:00")
    assert tides.fit_hours == 18 * 24
    assert tides.variables == ["uo"]
    assert (folder / "cotidal_uo.png").is_file()  # no zos asked for: the first variable's map


@pytest.mark.parametrize("period", ["2024-01-20", "2024-01-01:not-a-date", "2024-01-20:2024-01-02"])
def test_a_malformed_period_is_one_clear_error(store, tmp_path, period) -> None:
    result = runner.invoke(
        app, ["tides", str(store), "--period", period, "--out", str(tmp_path), "--no-progress"]
    )

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    flat = _flat(result.output)
    assert flat.count("error:") == 1
    assert f"--period '{period}'" in flat
    assert "START:END" in flat and "2024-01-01:2024-09-13" in flat
    assert not (tmp_path / "tides.nc").exists()


def test_period_sides_cover_their_whole_date_or_month() -> None:
    hour = 473352  # 2024-01-01T00:00, in hours since 1970
    assert parse_period("2024-01-01:2024-01-02", 0, 0) == (hour, hour + 47)
    assert parse_period("2024-01:2024-02", 0, 0) == (hour, hour + (31 + 29) * 24 - 1)
    assert parse_period("2024-01-01T06:00:2024-01-01T18:00", 0, 0) == (hour + 6, hour + 18)
    assert parse_period(":2024-01-01", 5, 10**6) == (5, hour + 23)


def test_a_point_outside_the_grid_names_the_grid_bounds(store, tmp_path) -> None:
    with open_store(store) as ds:
        lat, lon = ds["latitude"].values, ds["longitude"].values
    half_lat, half_lon = (lat[1] - lat[0]) / 2, (lon[1] - lon[0]) / 2

    result = runner.invoke(
        app,
        ["tides", str(store), "--point", f"{lat.max() + 1},{lon.mean()}", "--out", str(tmp_path)],
    )

    assert result.exit_code == 1
    assert "Traceback" not in result.output
    flat = _flat(result.output)
    assert "outside the store's grid" in flat
    assert f"latitude {lat.min() - half_lat:.4f}..{lat.max() + half_lat:.4f}" in flat
    assert f"longitude {lon.min() - half_lon:.4f}..{lon.max() + half_lon:.4f}" in flat
    assert not (tmp_path / "tides.nc").exists()
