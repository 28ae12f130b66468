"""Scheduled forecasts: lock, idempotence, exit codes, failures, log file, cron/systemd text."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pandas as pd
import pytest
from helpers_forecast import TINY, tiny_run
from typer.testing import CliRunner

from seacast.cli import app
from seacast.cron import (
    ExitCode,
    LockHeld,
    RunLock,
    crontab_line,
    scheduled_forecast,
    systemd_units,
)
from seacast.store import (
    append_to_store,
    finalise_store,
    open_store,
    store_config,
    store_write_lock,
)
from seacast.synthetic import synthetic_dataset


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tiny_run(tmp_path_factory.mktemp("tiny"))


@pytest.fixture
def store(run_dir, tmp_path) -> Path:
    """A private copy of the run's store, so appending does not disturb other tests."""
    copy = tmp_path / "store.zarr"
    shutil.copytree(run_dir.parent.parent / "store.zarr", copy)
    return copy


def _append_hours(store: Path, hours: int) -> None:
    """What `fetch` + `regrid` append would do: later frames, then fresh attrs."""
    ds = open_store(store)
    last = pd.Timestamp(ds["time"].values[-1])
    config = store_config(ds)
    ds.close()
    new = synthetic_dataset(
        shape=TINY["shape"],
        hours=hours,
        variables=TINY["variables"],
        start=str(last + pd.Timedelta(hours=1)),
    )
    append_to_store(store, new)
    finalise_store(store, config=config, step_hours=1.0)


def test_lock_is_exclusive_across_processes_and_released_on_exit(tmp_path):
    lock_path = tmp_path / "forecast.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from seacast.cron import RunLock; lock = RunLock(sys.argv[1]); lock.acquire(); "
            "print('held', flush=True); time.sleep(30)",
            str(lock_path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld, match=f"pid {holder.pid}"):
            RunLock(lock_path).acquire()
    finally:
        holder.kill()
        holder.wait()
    with RunLock(lock_path):  # the kernel dropped the dead holder's lock: no stale lock file
        pass


def test_concurrent_runs_then_a_repeated_run(run_dir, store, tmp_path):
    out = tmp_path / "forecasts"
    inside, release = threading.Event(), threading.Event()
    codes: list[ExitCode] = []

    def slow_update(path: Path) -> None:
        inside.set()
        assert release.wait(30)
        _append_hours(path, 5)

    first = threading.Thread(
        target=lambda: codes.append(
            scheduled_forecast(
                run_dir, out, update=True, store_path=store, update_store=slow_update
            )
        )
    )
    first.start()
    assert inside.wait(30)
    # a second run while the first holds the lock does nothing
    assert scheduled_forecast(run_dir, out, store_path=store) == ExitCode.LOCKED
    assert not list(out.glob("*.zarr"))
    release.set()
    first.join(60)
    assert codes == [ExitCode.SUCCESS]
    newest = pd.Timestamp(TINY["start"]) + pd.Timedelta(hours=TINY["hours"] + 5 - 1)
    assert [p.name for p in out.glob("*.zarr")] == [f"{newest:%Y-%m-%dT%H}.zarr"]
    # the same init time again: nothing to do, unless forced
    assert scheduled_forecast(run_dir, out, store_path=store) == ExitCode.NO_NEW_DATA
    assert scheduled_forecast(run_dir, out, store_path=store, force=True) == ExitCode.SUCCESS


def test_failure_midway_leaves_no_forecast_and_frees_the_lock(run_dir, store, tmp_path):
    out = tmp_path / "forecasts"

    def broken_update(path: Path) -> None:
        raise OSError("connection reset while fetching")

    with pytest.raises(OSError, match="connection reset"):
        scheduled_forecast(run_dir, out, update=True, store_path=store, update_store=broken_update)
    assert not list(out.glob("*.zarr")) and not list(out.glob(".tmp-*"))
    assert scheduled_forecast(run_dir, out, store_path=store) == ExitCode.SUCCESS


def test_an_update_while_a_manual_regrid_holds_the_store_exits_locked(run_dir, store, tmp_path):
    out = tmp_path / "forecasts"

    def update_like_regrid(path: Path) -> None:
        with store_write_lock(path):  # what regrid_units takes before writing
            raise AssertionError("the store lock should have been refused")

    with store_write_lock(store):
        code = scheduled_forecast(
            run_dir, out, update=True, store_path=store, update_store=update_like_regrid
        )
    assert code == ExitCode.LOCKED
    assert not list(out.glob("*.zarr"))


def test_cli_exit_codes_and_log_file(run_dir, store, tmp_path):
    runner = CliRunner()
    log = tmp_path / "logs" / "forecast.log"
    args = [
        "forecast",
        "--run",
        str(run_dir),
        "--latest",
        "--store",
        str(store),
        "--out",
        str(tmp_path / "fc"),
        "--log-file",
        str(log),
    ]
    assert runner.invoke(app, args).exit_code == ExitCode.SUCCESS
    assert runner.invoke(app, args).exit_code == ExitCode.NO_NEW_DATA
    missing = [
        "forecast",
        "--run",
        str(tmp_path / "no_such_run"),
        "--latest",
        "--out",
        str(tmp_path / "fc"),
        "--log-file",
        str(log),
    ]
    result = runner.invoke(app, missing)
    assert result.exit_code == ExitCode.FAILURE
    text = log.read_text()
    assert (
        "wrote forecast" in text
        and "exists already" in text
        and "forecast failed" in text
        and "no_such_run" in text
    )


def test_crontab_and_systemd_text_use_absolute_paths(tmp_path):
    line = crontab_line(
        "runs/demo",
        "forecasts/demo",
        "logs/f.log",
        workdir=tmp_path,
        seacast_bin="/opt/venv/bin/seacast",
    )
    assert line.startswith("17 * * * * cd ")
    assert f"--run {tmp_path}/runs/demo --latest --update --out {tmp_path}/forecasts/demo" in line
    assert f"--log-file {tmp_path}/logs/f.log" in line and "/opt/venv/bin/seacast forecast" in line
    units = systemd_units("runs/demo", workdir=tmp_path, seacast_bin="/opt/venv/bin/seacast")
    service, timer = units["seacast-forecast.service"], units["seacast-forecast.timer"]
    assert "Type=oneshot" in service and f"WorkingDirectory={tmp_path}" in service
    assert f"SuccessExitStatus={ExitCode.NO_NEW_DATA.value} {ExitCode.LOCKED.value}" in service
    assert "OnCalendar=*-*-* *:17:00" in timer and "Persistent=true" in timer
    result = CliRunner().invoke(
        app, ["cron", "--print", "--run", "runs/demo", "--adapt-hours", "72"]
    )
    assert (
        result.exit_code == 0
        and "crontab" in result.output
        and "--adapt zo --adapt-hours 72" in result.output
    )


def test_update_uses_the_config_recorded_in_the_store(store, monkeypatch):
    """--update needs no config file: the store's DataConfig, months extended to this month."""
    import seacast.fetch
    import seacast.regrid
    from seacast.cron import update_store_from_sources

    seen = {}
    monkeypatch.setattr(seacast.fetch, "fetch", lambda cfg, **kw: seen.setdefault("fetch", cfg))
    monkeypatch.setattr(
        seacast.regrid, "regrid_config", lambda cfg, **kw: seen.setdefault("regrid", cfg)
    )
    update_store_from_sources(store)
    cfg = seen["fetch"]
    assert seen["regrid"] is cfg and cfg.store.path == store
    assert cfg.months.start == "2024-02" and cfg.months.end == pd.Timestamp.now(tz="UTC").strftime(
        "%Y-%m"
    )
    assert cfg.variables == list(TINY["variables"])
