"""`seacast fetch` (copernicus and files sources) and `seacast login`, against a fake client serving real CMEMS files.

Also the fetch driver's behaviour shared by every source: the lock, Ctrl-C, leftovers, and
the twin's cap at the present hour.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import time
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from helpers_fetch import (
    MED_DATASET,
    MED_FILE,
    MED_FRAMES,
    FakeMarineClient,
    med_config,
    tiled_sample,
)
from rich.console import Console
from typer.testing import CliRunner

from seacast.cli import app
from seacast.config import DataConfig, load_config
from seacast.errors import ConfigError, CredentialsError, DataError
from seacast.fetch import fetch, plan
from seacast.locks import LockHeld
from seacast.raw import Manifest, MonthFile, expected_times, fetch_lock, temporary_path
from seacast.sources import copernicus
from seacast.sources.copernicus import (
    Credentials,
    fetch_copernicus,
    month_bounds,
    request_fingerprint,
    resolve_credentials,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures"
needs_fixtures = pytest.mark.skipif(
    not (FIXTURES / MED_FILE).is_file(), reason=f"real CMEMS fixtures not found at {FIXTURES}"
)
ENV_NAMES = (
    "COPERNICUSMARINE_SERVICE_USERNAME",
    "COPERNICUSMARINE_SERVICE_PASSWORD",
    "COPERNICUS_MARINE_SERVICE_USERNAME",
    "COPERNICUS_MARINE_SERVICE_PASSWORD",
    "COPERNICUSMARINE_CREDENTIALS_DIRECTORY",
)


@pytest.fixture
def no_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty home and no credential variables: nothing to find."""
    home = tmp_path / "home"
    home.mkdir()
    for name in ENV_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(home))
    return home


@pytest.fixture
def credentials(no_credentials: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPERNICUSMARINE_SERVICE_USERNAME", "jdoe")
    monkeypatch.setenv("COPERNICUSMARINE_SERVICE_PASSWORD", "secret")


def _manifest(raw_dir: Path) -> dict:
    path = raw_dir / "copernicus" / "manifest.json"
    return json.loads(path.read_text())["complete"] if path.exists() else {}


def _leftovers(raw_dir: Path) -> list[Path]:
    return [p for p in raw_dir.rglob("*") if ".partial" in p.name]


# --------------------------------------------------------------------------- plan / dry-run


def test_dry_run_plan_sizes_without_toolbox_or_network(tmp_path: Path) -> None:
    """--dry-run in a fresh interpreter: sockets disabled, and copernicusmarine never imported."""
    code = f"""
import socket, sys
def refuse(*a, **k):
    raise RuntimeError("network access during --dry-run")
socket.socket.connect = refuse
socket.create_connection = refuse
from typer.testing import CliRunner
from seacast.cli import app
result = CliRunner().invoke(app, ["fetch", "--config", "configs/data/nws_dutch_coast.yaml", "--dry-run",
                                  "--set", "months=2026-01:2026-02", "--set", "raw_dir={tmp_path}"])
print(result.output)
assert result.exit_code == 0, result.output
assert "copernicusmarine" not in sys.modules, "the toolbox was imported"
"""
    env = {k: v for k, v in os.environ.items() if k not in ENV_NAMES} | {
        "HOME": str(tmp_path),
        "COLUMNS": "160",
    }
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "cmems_mod_nws_phy-cur_anfc_1.5km-2D_PT1H-i" in done.stdout
    assert "8 of 8 month file(s) to fetch" in done.stdout


def test_plan_estimates_grid_times_hours_variables(tmp_path: Path) -> None:
    cfg = load_config(
        DataConfig,
        PROJECT_ROOT / "configs/data/nws_dutch_coast.yaml",
        ["months=2024-02:2024-03", f"raw_dir={tmp_path}"],
    )
    the_plan = plan(cfg)
    assert len(the_plan.files) == 4 * 2
    ny, nx = copernicus.estimate_grid(cfg)
    assert 280 < ny < 310 and 210 < nx < 240  # 4 x 5 degrees at 1.5 km, 53 N
    cur_feb = next(f for f in the_plan.files if "cur" in f.dataset and f.month == "2024-02")
    assert cur_feb.estimated_bytes == ny * nx * 29 * 24 * 2 * 4
    assert the_plan.estimated_bytes == sum(f.estimated_bytes for f in the_plan.files)


def test_shipped_configs_load() -> None:
    for name, product in (
        ("nws_dutch_coast", "NWSHELF_ANALYSISFORECAST_PHY_004_013"),
        ("nws_multiyear", "NWSHELF_MULTIYEAR_PHY_004_009"),
    ):
        cfg = load_config(DataConfig, PROJECT_ROOT / f"configs/data/{name}.yaml")
        assert cfg.source == "copernicus" and cfg.copernicus.product == product
        fetched = sorted(v for d in cfg.copernicus.datasets for v in d.variables)
        assert fetched == sorted(["zos", "uo", "vo", "so", "thetao"])
        assert all("PT1H" in d.id for d in cfg.copernicus.datasets)


# --------------------------------------------------------------------------- copernicus


@needs_fixtures
def test_fetch_writes_checked_months_and_skips_them_next_time(
    tmp_path: Path, credentials: None
) -> None:
    cfg = med_config(tmp_path / "raw")
    client = FakeMarineClient(FIXTURES)
    result = fetch(cfg, client=client)
    assert client.months_requested() == ["2024-01", "2024-02"]
    assert [p.name for p in result.paths] == ["2024-01.nc", "2024-02.nc"]
    with xr.open_dataset(result.paths[1]) as feb:
        assert feb.sizes["time"] == 29 * 24
        np.testing.assert_array_equal(feb["time"].values, expected_times("2024-02"))
        # the served data are the sample's frames, tiled, in the requested box
        with xr.open_dataset(FIXTURES / MED_FILE) as sample:
            np.testing.assert_array_equal(
                feb["so"].isel(time=MED_FRAMES + 3).values,
                sample["so"]
                .sel(latitude=feb.latitude, longitude=feb.longitude)
                .isel(time=3)
                .values,
            )
        assert np.isnan(feb["so"].values).any()  # land stays NaN
    entries = _manifest(cfg.raw_dir)
    assert set(entries) == {f"{MED_DATASET}/2024-01", f"{MED_DATASET}/2024-02"}
    assert entries[f"{MED_DATASET}/2024-02"]["n_times"] == 29 * 24
    assert not _leftovers(cfg.raw_dir)
    # a second run finds both complete: no call at all
    again = FakeMarineClient(FIXTURES)
    result = fetch(cfg, client=again)
    assert again.calls == [] and result.fetched == 0 and result.already_complete == 2


@needs_fixtures
def test_transient_errors_are_retried_then_succeed(tmp_path: Path, credentials: None) -> None:
    cfg = med_config(tmp_path / "raw", months="2024-01")
    client = FakeMarineClient(FIXTURES, transient_failures=2)
    sleeps: list[float] = []
    paths = fetch_copernicus(cfg, client=client, sleep=sleeps.append)
    assert len(client.calls) == 3 and paths[0].exists()
    assert sleeps == [0.0, 0.0]  # backoff 0 in tests; doubling is checked below
    # exponential backoff: 1, 2, 4 s, then a clear error; nothing recorded
    cfg = med_config(tmp_path / "raw2", months="2024-01", retries=3, backoff_seconds=1.0)
    sleeps.clear()
    with pytest.raises(DataError, match="failed after 4 tries") as info:
        fetch_copernicus(
            cfg, client=FakeMarineClient(FIXTURES, transient_failures=10), sleep=sleeps.append
        )
    assert sleeps == [1.0, 2.0, 4.0]
    assert "run the same command again later" in str(info.value)
    assert _manifest(cfg.raw_dir) == {} and not _leftovers(cfg.raw_dir)


@needs_fixtures
def test_rejected_credentials_are_a_credentials_error(tmp_path: Path, credentials: None) -> None:
    import copernicusmarine

    cfg = med_config(tmp_path / "raw", months="2024-01")
    client = FakeMarineClient(
        FIXTURES, error=copernicusmarine.InvalidUsernameOrPassword("bad password")
    )
    with pytest.raises(CredentialsError, match="rejected the credentials") as info:
        fetch(cfg, client=client)
    assert "seacast login" in str(info.value)
    assert len(client.calls) == 1  # never retried
    assert _manifest(cfg.raw_dir) == {} and not list((cfg.raw_dir / "copernicus").rglob("*.nc"))


def test_no_credentials_fails_before_any_call(tmp_path: Path, no_credentials: Path) -> None:
    cfg = med_config(tmp_path / "raw", months="2024-01")
    client = FakeMarineClient(FIXTURES)
    with pytest.raises(CredentialsError, match="no Copernicus Marine credentials") as info:
        fetch(cfg, client=client)
    assert "seacast login" in str(info.value) and "COPERNICUSMARINE_SERVICE_USERNAME" in str(
        info.value
    )
    assert client.calls == []


@needs_fixtures
def test_empty_and_incomplete_months_are_reported_and_never_complete(
    tmp_path: Path, credentials: None
) -> None:
    cfg = med_config(tmp_path / "raw", months="2024-01:2024-03")
    client = FakeMarineClient(FIXTURES, empty_months={"2024-02"}, short_months={"2024-03"})
    with pytest.raises(DataError) as info:
        fetch(cfg, client=client)
    message = str(info.value)
    assert "2 of 3 month file(s) could not be completed" in message
    assert "2024-02" in message and "no data" in message
    assert "2024-03" in message and "expected 744" in message
    assert set(_manifest(cfg.raw_dir)) == {f"{MED_DATASET}/2024-01"}
    folder = cfg.raw_dir / "copernicus" / MED_DATASET
    assert sorted(p.name for p in folder.iterdir()) == ["2024-01.nc"]


@needs_fixtures
def test_killed_run_leaves_nothing_complete_and_the_next_run_resumes(
    tmp_path: Path, credentials: None
) -> None:
    cfg = med_config(tmp_path / "raw")
    with pytest.raises(KeyboardInterrupt):
        fetch(cfg, client=FakeMarineClient(FIXTURES, kill_months={"2024-02"}))
    folder = cfg.raw_dir / "copernicus" / MED_DATASET
    # the toolbox's own temporary file (.2024-02.partial.nc.<random>) is gone too
    assert sorted(p.name for p in folder.iterdir()) == ["2024-01.nc"]
    assert set(_manifest(cfg.raw_dir)) == {f"{MED_DATASET}/2024-01"}
    # a SIGKILL leaves the partial files behind (ours and the toolbox's): the next run
    # must not trust them, and removes them under the lock, other months' too
    leftover = temporary_path(folder / "2024-02.nc")
    leftover.write_bytes(b"CDF\x01 half a file")
    toolbox_leftovers = [
        folder / f"{leftover.name}.k3x9q0ab",
        folder / ".2023-12.partial.nc.0f1e2d3c",
        folder.parent / ".manifest.json.x1y2.tmp",
    ]
    for path in toolbox_leftovers:
        path.write_bytes(b"CDF\x01 half a file")
    client = FakeMarineClient(FIXTURES)
    fetch(cfg, client=client)
    assert client.months_requested() == ["2024-02"]
    assert not leftover.exists() and not any(p.exists() for p in toolbox_leftovers)
    assert set(_manifest(cfg.raw_dir)) == {f"{MED_DATASET}/2024-01", f"{MED_DATASET}/2024-02"}
    with xr.open_dataset(folder / "2024-02.nc") as feb:
        assert feb.sizes["time"] == 29 * 24


@needs_fixtures
def test_ctrl_c_during_a_download_removes_its_files_and_releases_the_lock(
    tmp_path: Path, credentials: None
) -> None:
    cfg = med_config(tmp_path / "raw")
    client = FakeMarineClient(FIXTURES, interrupt_months={"2024-02"})
    with pytest.raises(KeyboardInterrupt):
        fetch(cfg, client=client)
    folder = cfg.raw_dir / "copernicus" / MED_DATASET
    assert sorted(p.name for p in folder.iterdir()) == ["2024-01.nc"]
    assert set(_manifest(cfg.raw_dir)) == {f"{MED_DATASET}/2024-01"}
    assert not (cfg.raw_dir / "copernicus" / ".fetch.lock.pid").exists()
    again = FakeMarineClient(FIXTURES)
    fetch(cfg, client=again)  # the lock is free and February is fetched
    assert again.months_requested() == ["2024-02"] and not _leftovers(cfg.raw_dir)


@needs_fixtures
def test_downloaded_files_get_plain_permissions(tmp_path: Path, credentials: None) -> None:
    """The toolbox downloads through mkstemp (0600); raw files are shared like the twin's (0644)."""
    cfg = med_config(tmp_path / "raw", months="2024-01")
    saved = os.umask(0o022)
    try:
        [path] = fetch(cfg, client=FakeMarineClient(FIXTURES)).paths
    finally:
        os.umask(saved)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@needs_fixtures
def test_a_truncated_complete_month_is_fetched_again(tmp_path: Path, credentials: None) -> None:
    cfg = med_config(tmp_path / "raw")
    fetch(cfg, client=FakeMarineClient(FIXTURES))
    jan = cfg.raw_dir / "copernicus" / MED_DATASET / "2024-01.nc"
    data = jan.read_bytes()
    jan.write_bytes(data[: len(data) // 2])  # a disk filled up, a copy cut short
    assert not Manifest(cfg.raw_dir, "copernicus").is_complete(
        MonthFile("copernicus", MED_DATASET, "2024-01"), cfg.raw_dir
    )
    assert [f.month for f in plan(cfg).todo] == ["2024-01"]
    client = FakeMarineClient(FIXTURES)
    fetch(cfg, client=client)
    assert client.months_requested() == ["2024-01"]
    assert jan.stat().st_size == _manifest(cfg.raw_dir)[f"{MED_DATASET}/2024-01"]["bytes"]
    assert plan(cfg).todo == []


@needs_fixtures
def test_the_served_version_is_recorded_and_a_new_one_is_fetched_again(tmp_path: Path) -> None:
    creds = Credentials("jdoe", "secret")
    raw = tmp_path / "raw"
    fetch_copernicus(
        med_config(raw, months="2024-01:2024-02"),
        client=FakeMarineClient(FIXTURES),
        credentials=creds,
    )
    # the sample's own version, from its subset:datasetId attribute
    assert {e["dataset_version"] for e in _manifest(raw).values()} == {"202311"}

    # the service moves to 202511: the month fetched next shows it, and the older ones follow
    messages: list[str] = []
    cfg = med_config(raw, months="2024-01:2024-03")
    client = FakeMarineClient(FIXTURES, served_version="202511")
    fetch_copernicus(cfg, client=client, credentials=creds, log=messages.append)
    assert client.months_requested() == ["2024-03", "2024-01", "2024-02"]
    assert {e["dataset_version"] for e in _manifest(raw).values()} == {"202511"}
    assert any("now served in version 202511" in m and "2024-01, 2024-02" in m for m in messages)
    again = FakeMarineClient(FIXTURES, served_version="202511")
    fetch_copernicus(cfg, client=again, credentials=creds)
    assert again.calls == []

    # a month the new version cannot serve is kept, with a warning, and not asked for again
    messages.clear()
    cfg = med_config(raw, months="2024-01:2024-04")
    client = FakeMarineClient(FIXTURES, served_version="202611", empty_months={"2024-01"})
    fetch_copernicus(cfg, client=client, credentials=creds, log=messages.append)
    assert client.months_requested() == ["2024-04", "2024-01", "2024-02", "2024-03"]
    jan = _manifest(raw)[f"{MED_DATASET}/2024-01"]
    assert jan["dataset_version"] == "202511" and jan["kept_for_version"] == "202611"
    assert any("kept" in m and "2024-01" in m for m in messages)
    assert plan(cfg).todo == []
    again = FakeMarineClient(FIXTURES, served_version="202611")
    fetch_copernicus(cfg, client=again, credentials=creds)
    assert again.calls == []


@needs_fixtures
def test_a_retry_line_is_printed_once(
    tmp_path: Path, credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # as under the CLI: no logging handler anywhere, so Python's last resort prints to stderr
    monkeypatch.setattr(logging.root, "handlers", [])
    last_resort = io.StringIO()
    monkeypatch.setattr(logging, "lastResort", logging.StreamHandler(last_resort))
    shown = io.StringIO()
    cfg = med_config(tmp_path / "raw", months="2024-01")
    fetch(
        cfg,
        client=FakeMarineClient(FIXTURES, transient_failures=1),
        show_progress=True,
        console=Console(file=shown, width=400),
    )
    printed = shown.getvalue() + last_resort.getvalue()
    assert printed.count("retry 1/3") == 1, printed
    # with a log file (cron), the line goes there, once
    log_file = tmp_path / "fetch.log"
    handler = logging.FileHandler(log_file)
    logging.getLogger("seacast").addHandler(handler)
    try:
        fetch(cfg, force=True, client=FakeMarineClient(FIXTURES, transient_failures=1))
    finally:
        logging.getLogger("seacast").removeHandler(handler)
        handler.close()
    assert log_file.read_text().count("retry 1/3") == 1


@needs_fixtures
@pytest.mark.parametrize(
    ("change", "message", "fix"),
    [
        (
            {"id": "cmems_mod_nws_phy-sst_anfc_1.5km-2D_PT1H-i"},
            "DatasetNotFound",
            "copernicus.datasets[].id",
        ),
        (
            {"variables": ["so", "zos"]},
            "VariableDoesNotExistInTheDataset",
            "copernicus.datasets[].variables",
        ),
    ],
)
def test_permanent_errors_stop_with_the_reason(
    tmp_path: Path, credentials: None, change: dict, message: str, fix: str
) -> None:
    cfg = med_config(tmp_path / "raw")
    spec = cfg.copernicus.datasets[0].model_copy(update=change)
    cfg.copernicus.datasets = [spec]
    client = FakeMarineClient(FIXTURES)
    with pytest.raises(DataError, match=message) as info:
        fetch(cfg, client=client)
    assert fix in str(info.value)
    assert len(client.calls) == 1  # not retried, and the other month is not tried


@needs_fixtures
def test_changed_request_is_fetched_again(tmp_path: Path, credentials: None) -> None:
    cfg = med_config(tmp_path / "raw", months="2024-01")
    fetch(cfg, client=FakeMarineClient(FIXTURES))
    assert plan(cfg).todo == []
    cfg.bbox = cfg.bbox.model_copy(update={"lat_max": 35.4})
    assert len(plan(cfg).todo) == 1
    client = FakeMarineClient(FIXTURES)
    fetch(cfg, client=client)
    assert len(client.calls) == 1
    entry = _manifest(cfg.raw_dir)[f"{MED_DATASET}/2024-01"]
    assert entry["request"] == request_fingerprint(cfg, cfg.copernicus.datasets[0], "2024-01")


@needs_fixtures
def test_current_month_is_fetched_up_to_now_and_stays_in_progress(tmp_path: Path) -> None:
    cfg = med_config(tmp_path / "raw", months="2024-02")
    now = pd.Timestamp("2024-02-10T05:42")
    assert month_bounds("2024-02", 1.0, now) == ("2024-02-01T00:00:00", "2024-02-10T05:00:00")
    client = FakeMarineClient(FIXTURES)
    creds = Credentials("jdoe", "secret")
    fetch_copernicus(cfg, client=client, credentials=creds, now=now)
    assert client.calls[0]["end_datetime"] == "2024-02-10T05:00:00"
    entry = _manifest(cfg.raw_dir)[f"{MED_DATASET}/2024-02"]
    assert entry["in_progress"] is True and entry["n_times"] == 9 * 24 + 6
    assert not Manifest(cfg.raw_dir, "copernicus").is_complete(
        MonthFile("copernicus", MED_DATASET, "2024-02"), cfg.raw_dir
    )
    # the next run refreshes it; once the month is over it becomes complete
    fetch_copernicus(cfg, client=client, credentials=creds, now=pd.Timestamp("2024-03-02"))
    assert (
        len(client.calls) == 2
        and _manifest(cfg.raw_dir)[f"{MED_DATASET}/2024-02"]["in_progress"] is False
    )
    assert plan(cfg).todo == []


def test_a_second_fetch_of_the_same_source_is_refused(tmp_path: Path, credentials: None) -> None:
    cfg = med_config(tmp_path / "raw", months="2024-01")
    folder = cfg.raw_dir / "copernicus"
    with (
        fetch_lock(cfg.raw_dir, "copernicus"),
        pytest.raises(LockHeld, match="another seacast fetch is writing to") as info,
    ):
        fetch(cfg, client=FakeMarineClient(FIXTURES))
    # the shared lock helper: the refusal names the folder and the holder's pid
    assert str(folder) in str(info.value) and f"pid {os.getpid()}" in str(info.value)
    assert "complete months are skipped" in str(info.value)
    assert not (folder / ".fetch.lock.pid").exists()  # released: the pid note is gone
    with fetch_lock(cfg.raw_dir, "copernicus"):  # and it can be taken again
        pass


# --------------------------------------------------------------------------- credentials and login


def test_credentials_come_from_env_then_file_then_netrc(
    no_credentials: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    home = no_credentials
    assert resolve_credentials() is None
    (home / ".netrc").write_text(
        "machine auth.marine.copernicus.eu login netuser password netpass\n"
    )
    (home / ".netrc").chmod(0o600)
    assert resolve_credentials() == Credentials("netuser", "netpass", str(home / ".netrc"))
    folder = home / ".copernicusmarine"
    folder.mkdir()
    text = "[credentials]\nusername=fileuser\npassword=filepass\n"
    (folder / ".copernicusmarine-credentials").write_text(base64.b64encode(text.encode()).decode())
    assert resolve_credentials().username == "fileuser"
    monkeypatch.setenv("COPERNICUSMARINE_SERVICE_USERNAME", "envuser")
    assert resolve_credentials().username == "fileuser"  # both variables are needed
    monkeypatch.setenv("COPERNICUSMARINE_SERVICE_PASSWORD", "envpass")
    found = resolve_credentials()
    assert (found.username, found.password) == ("envuser", "envpass")
    assert "envpass" not in repr(found)


@needs_fixtures
def test_login_stores_credentials_without_prompting(tmp_path: Path) -> None:
    client = FakeMarineClient(FIXTURES)
    path = copernicus.login("jdoe", "secret", client=client, directory=tmp_path)
    assert path == tmp_path / ".copernicusmarine-credentials"
    assert client.login_calls == [
        {
            "username": "jdoe",
            "password": "secret",
            "configuration_file_directory": tmp_path,
            "force_overwrite": True,
        }
    ]
    with pytest.raises(CredentialsError, match="rejected the username 'jdoe'"):
        copernicus.login(
            "jdoe",
            "wrong",
            client=FakeMarineClient(FIXTURES, login_result=False),
            directory=tmp_path,
        )


def test_cli_login(monkeypatch: pytest.MonkeyPatch, no_credentials: Path) -> None:
    runner = CliRunner()
    # not a terminal and no arguments: an error, never a prompt
    result = runner.invoke(app, ["login"])
    assert result.exit_code == 1
    assert "cannot ask for them outside a terminal" in " ".join(result.output.split())
    fake = FakeMarineClient(FIXTURES)
    monkeypatch.setattr(copernicus, "ToolboxClient", lambda: fake)
    result = runner.invoke(app, ["login", "--username", "jdoe", "--password", "secret"])
    assert result.exit_code == 0, result.output
    assert "logged in as jdoe" in " ".join(result.output.split())
    assert (
        fake.login_calls[0]["configuration_file_directory"] == no_credentials / ".copernicusmarine"
    )


# --------------------------------------------------------------------------- files


def _files_config(
    tmp_path: Path, pattern: str, months: str = "2024-01", **files: object
) -> DataConfig:
    return DataConfig.model_validate(
        {
            "name": "local",
            "source": "files",
            "months": months,
            "variables": ["so"],
            "raw_dir": str(tmp_path / "raw"),
            "files": {
                "glob": pattern,
                "dataset": "med",
                "rename": {"lat": "latitude", "lon": "longitude", "sal": "so"},
                "variables": ["so"],
                **files,
            },
        }
    )


def _foreign_names(ds: xr.Dataset) -> xr.Dataset:
    return ds.rename({"latitude": "lat", "longitude": "lon", "so": "sal"})


@needs_fixtures
def test_files_are_renamed_merged_and_split_by_month(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    hours = pd.date_range("2024-01-01", "2024-02-01T23:00", freq="h")
    ds = tiled_sample(FIXTURES / MED_FILE, hours)
    # two overlapping files, out of order in time, with foreign names
    _foreign_names(ds.isel(time=slice(400, None))).to_netcdf(incoming / "a_late.nc")
    _foreign_names(ds.isel(time=slice(0, 420))).to_netcdf(incoming / "b_early.nc")
    cfg = _files_config(tmp_path, str(incoming / "*.nc"))
    result = fetch(cfg)
    assert [p.name for p in result.paths] == ["2024-01.nc"]
    with xr.open_dataset(result.paths[0]) as jan:
        assert set(jan.data_vars) == {"so"} and {"latitude", "longitude", "depth"} <= set(
            jan.coords
        )
        np.testing.assert_array_equal(jan["time"].values, expected_times("2024-01"))
        np.testing.assert_array_equal(jan["so"].values, ds["so"].isel(time=slice(0, 744)).values)
    entry = json.loads((cfg.raw_dir / "files" / "manifest.json").read_text())["complete"][
        "med/2024-01"
    ]
    assert entry["complete_time_axis"] is True and len(entry["source_files"]) == 2
    assert plan(cfg).todo == []


def _local_month_file(path: Path, month: str, value: float) -> None:
    """A whole month of hourly frames on a 3 x 4 grid, with the foreign names of _files_config."""
    times = expected_times(month)
    data = np.full((len(times), 3, 4), value, dtype=np.float32)
    xr.Dataset(
        {"sal": (("time", "lat", "lon"), data)},
        coords={"time": times, "lat": [52.0, 52.5, 53.0], "lon": [3.0, 3.5, 4.0, 4.5]},
    ).to_netcdf(path)


def test_dry_run_lists_exactly_what_the_fetch_fetches_after_a_request_change(
    tmp_path: Path,
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    for month, value in (("2024-01", 35.0), ("2024-02", 34.0)):
        _local_month_file(incoming / f"{month}.nc", month, value)
    cfg = _files_config(tmp_path, str(incoming / "*.nc"), months="2024-01:2024-02")
    raw = cfg.raw_dir / "files" / "med"

    def fetched_months(cfg: DataConfig) -> list[str]:
        """The months a fetch really rewrites (their files change on disk)."""
        before = {p.stem: p.stat().st_mtime_ns for p in raw.glob("*.nc")}
        time.sleep(0.01)  # a rewrite gets a later mtime
        fetch(cfg)
        after = {p.stem: p.stat().st_mtime_ns for p in raw.glob("*.nc")}
        return sorted(m for m in after if before.get(m) != after[m])

    assert [f.month for f in plan(cfg).todo] == ["2024-01", "2024-02"]
    assert fetched_months(cfg) == ["2024-01", "2024-02"]
    assert plan(cfg).todo == []

    # an input file replaced: its month's request changes, the other month's does not
    _local_month_file(incoming / "2024-02.nc", "2024-02", 33.0)
    planned = [f.month for f in plan(cfg).todo]
    assert planned == ["2024-02"]
    assert fetched_months(cfg) == planned

    # another rename mapping: every month's request changes
    cfg = _files_config(
        tmp_path,
        str(incoming / "*.nc"),
        months="2024-01:2024-02",
        rename={"lat": "latitude", "lon": "longitude", "sal": "so", "unused": "x"},
    )
    planned = [f.month for f in plan(cfg).todo]
    assert planned == ["2024-01", "2024-02"]
    assert fetched_months(cfg) == planned
    assert plan(cfg).todo == []


@needs_fixtures
def test_files_partial_month_is_an_error_unless_allowed(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    with xr.open_dataset(FIXTURES / MED_FILE) as sample:
        _foreign_names(sample).to_netcdf(incoming / "sample.nc")
    cfg = _files_config(tmp_path, str(incoming / "*.nc"), months="2024-01:2024-02")
    with pytest.raises(DataError) as info:
        fetch(cfg)
    message = str(info.value)
    assert "2024-01" in message and "expected 744" in message
    assert "2024-02: no data" in message and "2024-01-01 00:00 to 2024-01-10 00:00" in message
    assert not (cfg.raw_dir / "files" / "med" / "2024-01.nc").exists()
    cfg = _files_config(tmp_path, str(incoming / "*.nc"), partial_months=True)
    fetch(cfg)
    with xr.open_dataset(cfg.raw_dir / "files" / "med" / "2024-01.nc") as jan:
        assert jan.sizes["time"] == 217


@needs_fixtures
def test_ctrl_c_stops_the_files_source_between_months(tmp_path: Path) -> None:
    from seacast.interrupts import safe_points
    from seacast.sources.files import fetch_files

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    hours = pd.date_range("2024-01-01", "2024-02-29T23:00", freq="h")
    _foreign_names(tiled_sample(FIXTURES / MED_FILE, hours)).to_netcdf(incoming / "a.nc")
    cfg = _files_config(tmp_path, str(incoming / "*.nc"), months="2024-01:2024-02")

    def ctrl_c_after_january(label: str) -> None:
        os.kill(os.getpid(), signal.SIGINT)  # held by safe_points, as under seacast fetch

    with pytest.raises(KeyboardInterrupt), safe_points():
        fetch_files(cfg, progress=ctrl_c_after_january)
    folder = cfg.raw_dir / "files" / "med"
    assert sorted(p.name for p in folder.iterdir()) == ["2024-01.nc"]


@needs_fixtures
def test_corrupt_file_is_named(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    data = (FIXTURES / MED_FILE).read_bytes()
    (incoming / "broken.nc").write_bytes(data[: len(data) // 3])
    cfg = _files_config(tmp_path, str(incoming / "*.nc"))
    with pytest.raises(DataError, match="broken.nc") as info:
        fetch(cfg)
    assert "truncated or corrupt" in str(info.value)


@needs_fixtures
def test_missing_variable_lists_what_is_there(tmp_path: Path) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    with xr.open_dataset(FIXTURES / MED_FILE) as sample:
        sample.rename({"latitude": "lat", "longitude": "lon", "so": "salinity"}).to_netcdf(
            incoming / "s.nc"
        )
    cfg = _files_config(tmp_path, str(incoming / "*.nc"))
    with pytest.raises(
        DataError, match=r"lacks variable\(s\) \['so'\]; the variables there are \['salinity'\]"
    ):
        fetch(cfg)
    cfg = _files_config(tmp_path, str(tmp_path / "nowhere" / "*.nc"))
    with pytest.raises(DataError, match="no files match"):
        plan(cfg)


# --------------------------------------------------------------------------- twin dispatch and CLI


def test_twin_source_is_dispatched_lazily(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from seacast.sources.base import PlannedFile

    calls = []
    path = tmp_path / "raw" / "twin" / "nws_twin" / "2024-01.nc"

    class FakeTwin:
        name = "twin"

        def plan(self, cfg: DataConfig, force: bool = False) -> list[PlannedFile]:
            return [PlannedFile("twin", "nws_twin", "2024-01", ("zos",), path, 10, False)]

        def notes(self, cfg: DataConfig) -> list[str]:
            return []

        def fetch(self, cfg: DataConfig, *, force=False, progress=None, client=None, log=None):
            assert callable(progress)  # the driver's one progress type: a month-file callback
            progress("nws_twin 2024-01")
            calls.append((cfg.name, force))
            return [path]

    module = types.ModuleType("seacast.sources.twin")
    module.RAW_SOURCE = FakeTwin()  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "seacast.sources.twin", module)
    cfg = DataConfig.model_validate(
        {"name": "demo", "source": "twin", "months": "2024-01", "raw_dir": str(tmp_path / "raw")}
    )
    assert plan(cfg).estimated_bytes == 10
    result = fetch(cfg, force=True)
    assert calls == [("demo", True)] and result.paths == [path] and result.fetched == 1


def test_every_source_is_in_the_registry() -> None:
    from seacast.config import DataConfig as Config
    from seacast.sources import SOURCE_MODULES, raw_source

    names = Config.model_fields["source"].annotation.__args__  # type: ignore[union-attr]
    assert set(names) == set(SOURCE_MODULES)
    assert all(raw_source(name).name == name for name in names)
    with pytest.raises(ConfigError, match="unknown source"):
        raw_source("ftp")


@needs_fixtures
def test_cli_fetch_runs_with_progress_and_reports(
    tmp_path: Path, credentials: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    with xr.open_dataset(FIXTURES / MED_FILE) as sample:
        _foreign_names(sample).to_netcdf(incoming / "sample.nc")
    config = tmp_path / "local.yaml"
    cfg = _files_config(tmp_path, str(incoming / "*.nc"), partial_months=True)
    config.write_text(json.dumps(json.loads(cfg.model_dump_json())))
    runner = CliRunner()
    result = runner.invoke(app, ["fetch", "--config", str(config)])
    assert result.exit_code == 0, result.output
    assert "fetched 1 month file(s), 0 already complete" in " ".join(result.output.split())
    result = runner.invoke(
        app, ["fetch", "--config", str(config), "--set", "files.glob=/nowhere/*.nc"]
    )
    assert result.exit_code == 1 and "no files match" in " ".join(result.output.split())


# --------------------------------------------------------------------------- the twin: now, Ctrl-C


def _twin_config(raw_dir: Path, months: str, shape: int = 16) -> DataConfig:
    return DataConfig.model_validate(
        {
            "name": "tiny_twin",
            "source": "twin",
            "months": months,
            "raw_dir": str(raw_dir),
            "twin": {"shape": [shape, shape], "spinup_days": 0.25},
        }
    )


def _twin_manifest(raw_dir: Path) -> dict:
    return json.loads((raw_dir / "twin" / "manifest.json").read_text())["complete"]


def test_twin_never_simulates_past_the_present_hour(tmp_path: Path) -> None:
    from seacast.sources.twin import fetch_twin

    raw = tmp_path / "raw"
    # `forecast --update` on 2026-12-01 at 05:42 UTC: December up to 05:00, nothing later
    with pytest.raises(DataError, match="after the present hour") as info:
        fetch_twin(_twin_config(raw, "2026-12:2027-01"), now=pd.Timestamp("2026-12-01T05:42"))
    assert "2027-01" in str(info.value)
    dec = raw / "twin" / "nws_twin" / "2026-12.nc"
    assert sorted(p.name for p in dec.parent.iterdir()) == ["2026-12.nc"]
    with xr.open_dataset(dec) as ds:
        np.testing.assert_array_equal(ds["time"].values, expected_times("2026-12")[:6])
    entry = _twin_manifest(raw)["nws_twin/2026-12"]
    assert entry["in_progress"] is True and entry["n_times"] == 6
    cfg = _twin_config(raw, "2026-12")
    assert [f.month for f in plan(cfg).todo] == ["2026-12"]  # in progress: never complete

    # each run extends it to its present hour
    fetch_twin(cfg, now=pd.Timestamp("2026-12-01T07:00"))
    with xr.open_dataset(dec) as ds:
        partial = ds.load()
    assert partial.sizes["time"] == 8 and _twin_manifest(raw)["nws_twin/2026-12"]["in_progress"]

    # once the month is over it is written whole and complete; its first hours are those written before
    fetch_twin(cfg, now=pd.Timestamp("2027-01-01T00:10"))
    with xr.open_dataset(dec) as ds:
        assert ds.sizes["time"] == 31 * 24
        xr.testing.assert_identical(ds.isel(time=slice(0, 8)).load(), partial)
    assert _twin_manifest(raw)["nws_twin/2026-12"]["in_progress"] is False
    assert plan(cfg).todo == []


@pytest.mark.slow
def test_ctrl_c_during_a_twin_fetch_stops_cleans_up_and_a_rerun_completes(tmp_path: Path) -> None:
    """`seacast fetch` on the twin gets SIGINT while February's data are being written.

    That used to hang for good: the KeyboardInterrupt landed in xarray's lock release and
    the close after it waited on that lock.
    """
    raw = tmp_path / "raw"
    cfg = _twin_config(raw, "2024-01:2024-02")
    config = tmp_path / "tiny_twin.yaml"
    config.write_text(cfg.model_dump_json())
    # a terminal's Ctrl-C, even where this test runs with SIGINT ignored
    code = (
        "import signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        "from seacast.cli import app; sys.argv = ['seacast', 'fetch', '--config', sys.argv[1]]; app()"
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code, str(config)],
        cwd=PROJECT_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    folder = raw / "twin" / "nws_twin"
    february = temporary_path(folder / "2024-02.nc")
    deadline = time.monotonic() + 120
    # 100 kB in: the data are being written (the C call that Ctrl-C used to break into)
    while not february.exists() or february.stat().st_size < 100_000:
        if child.poll() is not None or time.monotonic() > deadline:
            child.kill()
            pytest.fail("the fetch ended before February was written: " + child.communicate()[0])
        time.sleep(0.002)
    january = (folder / "2024-01.nc").stat().st_mtime_ns
    child.send_signal(signal.SIGINT)
    sent = time.monotonic()
    try:
        output = child.communicate(timeout=20)[0]
    except subprocess.TimeoutExpired:
        child.kill()
        pytest.fail("still running 20 s after Ctrl-C: " + child.communicate()[0][-2000:])
    assert time.monotonic() - sent < 5, output
    # the CLI's exit status for Ctrl-C, or death by SIGINT if KeyboardInterrupt got through
    assert child.returncode in (130, -signal.SIGINT), output
    # no partial or temporary file, and no pid note of a lock still held
    left = sorted(p.name for p in raw.rglob("*") if p.is_file())
    assert left in (
        [".fetch.lock", "2024-01.nc", "manifest.json"],
        [".fetch.lock", "2024-01.nc", "2024-02.nc", "manifest.json"],  # Ctrl-C came too late
    ), left
    assert set(_twin_manifest(raw)) == {f"nws_twin/{p.stem}" for p in folder.glob("*.nc")}

    # a rerun is not refused, keeps January and completes February
    result = fetch(cfg)
    assert [p.name for p in result.paths] == ["2024-01.nc", "2024-02.nc"]
    assert (folder / "2024-01.nc").stat().st_mtime_ns == january
    entries = _twin_manifest(raw)
    assert set(entries) == {"nws_twin/2024-01", "nws_twin/2024-02"}
    assert entries["nws_twin/2024-02"]["n_times"] == 29 * 24
    assert not entries["nws_twin/2024-02"]["in_progress"]
    assert plan(cfg).todo == []
