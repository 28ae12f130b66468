"""Running forecasts on a schedule: a lock file, exit codes, a log file and the cron/systemd text.

Offers:

* :class:`ExitCode` - what a scheduled run tells cron or systemd: success, no new data,
  locked (another run is busy) and failure.
* :class:`RunLock` - the forecast folder's exclusive, non-blocking lock (the project's one
  lock helper, :mod:`seacast.locks`). A store update also takes the store's lock, so a
  manual regrid and a cron update never write the store at once.
* :func:`setup_file_logging` - send seacast's log records to a file (one line per record).
* :func:`scheduled_forecast` - lock, optionally fetch and append what is new, then forecast
  from the newest complete init time; returns an :class:`ExitCode`.
* :func:`crontab_line`, :func:`systemd_units` - ready-to-paste text for the user's paths.

Idempotence lives in :func:`seacast.forecast.forecast`: a forecast for an init time that
already exists is skipped unless ``force``; atomicity too (temp path, then rename).
"""

from __future__ import annotations

import contextlib
import enum
import logging
import shlex
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from seacast.locks import LockHeld, exclusive_lock

log = logging.getLogger("seacast")

LOCK_NAME = ".seacast-forecast.lock"


class ExitCode(enum.IntEnum):
    """Exit status of ``seacast forecast --latest`` (systemd: ``SuccessExitStatus=10 11``)."""

    SUCCESS = 0
    """A new forecast was written."""
    FAILURE = 1
    """Something went wrong; the log says what. No partial forecast is left behind."""
    NO_NEW_DATA = 10
    """Nothing to do: the forecast for the newest complete init time exists already."""
    LOCKED = 11
    """Another scheduled run holds the lock; this one did nothing."""


class RunLock:
    """The forecast folder's lock (:func:`seacast.locks.exclusive_lock`) as an object with acquire/release."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self._held: contextlib.ExitStack | None = None

    def acquire(self) -> None:
        stack = contextlib.ExitStack()
        stack.enter_context(exclusive_lock(self.path, "forecast is running"))
        self._held = stack

    def release(self) -> None:
        if self._held is not None:
            self._held.close()
            self._held = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def setup_file_logging(path: Path | str, level: int = logging.INFO) -> logging.Handler:
    """Append seacast's log records to ``path`` (created with its folder). Returns the handler."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(
        logging.Formatter("%(asctime)s %(levelname)s pid=%(process)d %(name)s: %(message)s")
    )
    log.addHandler(handler)
    log.setLevel(min(level, log.level or level))
    return handler


def scheduled_forecast(
    run_dir: Path | str,
    out_dir: Path | str = "forecasts",
    *,
    update: bool = False,
    force: bool = False,
    init_time: str = "latest",
    store_path: Path | str | None = None,
    lock_path: Path | str | None = None,
    update_store: Callable[[Path], Any] | None = None,
    **forecast_options: Any,
) -> ExitCode:
    """One scheduled run: lock, update the store (optional), forecast ``init_time`` (the newest by default).

    Returns :attr:`ExitCode.SUCCESS` when a forecast was written, :attr:`ExitCode.NO_NEW_DATA`
    when it existed already, :attr:`ExitCode.LOCKED` when another run is busy. Errors
    propagate (the CLI logs them and exits with :attr:`ExitCode.FAILURE`).
    """
    from seacast.forecast import forecast, resolve_store_path

    out_dir = Path(out_dir)
    lock = RunLock(lock_path or out_dir / LOCK_NAME)
    try:
        lock.acquire()
    except LockHeld as exc:
        log.warning("%s", exc.problem)
        return ExitCode.LOCKED
    try:
        store = resolve_store_path(run_dir, store_path)
        if update:
            try:
                (update_store or update_store_from_sources)(store)
            except LockHeld as exc:  # a manual regrid is appending to the store: try next hour
                log.warning("%s", exc.problem)
                return ExitCode.LOCKED
        result = forecast(
            run_dir,
            store_path=store,
            init_time=init_time,
            out_dir=out_dir,
            force=force,
            **forecast_options,
        )
        if result.skipped:
            log.info(
                "forecast for %s exists already at %s: nothing to do", result.init_time, result.path
            )
            return ExitCode.NO_NEW_DATA
        log.info("wrote forecast for %s to %s", result.init_time, result.path)
        return ExitCode.SUCCESS
    finally:
        lock.release()


def update_store_from_sources(store_path: Path) -> None:
    """Fetch what is new for the store's data config (up to this month) and append it to the store.

    The store records the DataConfig that made it, so a scheduled run needs no config file:
    the month range is extended to the current (UTC) month and fetch skips complete months.
    """
    import pandas as pd

    from seacast.config import DataConfig, validate
    from seacast.fetch import fetch
    from seacast.regrid import regrid_config
    from seacast.store import open_store, store_config

    ds = open_store(store_path)
    raw = store_config(ds)
    ds.close()
    this_month = pd.Timestamp.now(tz="UTC").strftime("%Y-%m")
    months = raw.get("months") or {}
    start = (
        months.get("start", this_month) if isinstance(months, dict) else str(months).split(":")[0]
    )
    raw["months"] = {"start": start, "end": max(this_month, start)}
    raw.setdefault("store", {})["path"] = str(store_path)
    cfg = validate(DataConfig, raw, f"data config recorded in {store_path}")
    log.info("fetching %s for months %s", cfg.name, cfg.months)
    fetch(cfg)
    log.info("appending new months to %s", store_path)
    report = regrid_config(cfg)
    log.info("store %s: %s", store_path, report)


# --------------------------------------------------------------------------- cron / systemd text


def _command(
    run_dir: Path, out_dir: Path, log_file: Path, seacast_bin: Path, extra: list[str]
) -> str:
    args = [str(seacast_bin), "forecast", "--run", str(run_dir), "--latest", "--update"]
    args += ["--out", str(out_dir), "--log-file", str(log_file), *extra]
    return shlex.join(args)


def default_seacast_bin() -> Path:
    """The ``seacast`` script next to the running Python (the venv's), else the name on PATH."""
    candidate = Path(sys.executable).parent / "seacast"
    return candidate if candidate.exists() else Path("seacast")


def crontab_line(
    run_dir: Path | str,
    out_dir: Path | str = "forecasts",
    log_file: Path | str = "logs/forecast.log",
    workdir: Path | str | None = None,
    minute: int = 17,
    seacast_bin: Path | str | None = None,
    extra: list[str] | None = None,
) -> str:
    """An hourly crontab line with absolute paths (cron has no working directory or venv)."""
    workdir = Path(workdir or Path.cwd()).resolve()
    absolute = [(workdir / Path(p)).resolve() for p in (run_dir, out_dir, log_file)]
    command = _command(*absolute, Path(seacast_bin or default_seacast_bin()), extra or [])
    # output goes to the log file already; cron would mail anything on stdout/stderr
    return f"{minute} * * * * cd {shlex.quote(str(workdir))} && {command} >/dev/null 2>&1"


def systemd_units(
    run_dir: Path | str,
    out_dir: Path | str = "forecasts",
    log_file: Path | str = "logs/forecast.log",
    workdir: Path | str | None = None,
    seacast_bin: Path | str | None = None,
    extra: list[str] | None = None,
    minute: int = 17,
) -> dict[str, str]:
    """A oneshot service and an hourly timer (``seacast-forecast.service`` / ``.timer``)."""
    workdir = Path(workdir or Path.cwd()).resolve()
    absolute = [(workdir / Path(p)).resolve() for p in (run_dir, out_dir, log_file)]
    command = _command(*absolute, Path(seacast_bin or default_seacast_bin()), extra or [])
    service = f"""[Unit]
Description=seacast hourly forecast ({absolute[0].name})
After=network-online.target
Wants=network-online.target

[Service]
Type=oneshot
WorkingDirectory={workdir}
ExecStart={command}
# 10 = no new data, 11 = another run holds the lock: both are fine
SuccessExitStatus={ExitCode.NO_NEW_DATA.value} {ExitCode.LOCKED.value}
Nice=10
"""
    timer = f"""[Unit]
Description=Run the seacast forecast every hour

[Timer]
OnCalendar=*-*-* *:{minute:02d}:00
Persistent=true
RandomizedDelaySec=120

[Install]
WantedBy=timers.target
"""
    return {"seacast-forecast.service": service, "seacast-forecast.timer": timer}


def schedule_text(
    run_dir: Path | str,
    out_dir: Path | str = "forecasts",
    log_file: Path | str = "logs/forecast.log",
    minute: int = 17,
    **kw: Any,
) -> str:
    """The text ``seacast cron --print`` shows: the crontab line, then both systemd units."""
    units = systemd_units(run_dir, out_dir, log_file, minute=minute, **kw)
    parts = [
        f"# crontab (crontab -e): every hour at minute {minute}",
        crontab_line(run_dir, out_dir, log_file, minute=minute, **kw),
        "",
    ]
    for name, text in units.items():
        parts += [f"# ~/.config/systemd/user/{name}", text]
    parts.append(
        "# enable: systemctl --user daemon-reload && systemctl --user enable --now seacast-forecast.timer"
    )
    return "\n".join(parts)
