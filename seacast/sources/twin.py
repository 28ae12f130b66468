"""``source: twin``: write the North Sea twin's months into the raw layout.

Offers :func:`fetch_twin`, which runs :func:`seacast.twin.simulate` once over
``cfg.months`` and writes each month to ``<raw_dir>/twin/nws_twin/<YYYY-MM>.nc``
through :func:`seacast.raw.write_month_atomic`; :func:`plan_twin` (the month files
and which are complete, for ``--dry-run``), :func:`twin_fingerprint` and
:data:`RAW_SOURCE` (the :class:`~seacast.sources.base.RawSource` of ``twin``).

A month is complete when the manifest lists it with the same twin fingerprint
(twin settings, box and the run's first month: a month's ocean state depends on
when the run started). Complete months are not written again, but the run still
passes through them, since the state carries over.

The twin never simulates past the present (UTC) hour: the current month is
written up to that hour and recorded ``in_progress`` (like the Copernicus
source's current month), so every run extends it until the month is over;
later months are not written and are reported as an error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pandas as pd
import xarray as xr
from rich.progress import Progress

from seacast.config import DataConfig, fingerprint, to_dict
from seacast.errors import DataError
from seacast.interrupts import check_interrupt
from seacast.progress import progress_bar
from seacast.raw import (
    Manifest,
    MonthFile,
    expected_times,
    in_progress,
    utc_now,
    write_month_atomic,
)
from seacast.sources.base import MarineClient, PlannedFile, ProgressCallback, no_progress
from seacast.twin import DATASET_NAME, run_span, simulate
from seacast.twin.output import VARIABLES, netcdf_encoding

SOURCE = "twin"


def twin_fingerprint(cfg: DataConfig) -> str:
    """What the content of a month depends on: twin settings, box, the run's first month and the
    variables written (months written before the weather forecast was are written again)."""
    return fingerprint(
        {
            "twin": to_dict(cfg.twin),
            "bbox": to_dict(cfg.bbox),
            "run_start": cfg.months.start,
            "variables": list(VARIABLES),
        }
    )


def plan_twin(cfg: DataConfig, force: bool = False) -> list[PlannedFile]:
    """The month files of ``cfg`` (uncompressed size estimate) and whether each is complete."""
    raw_dir = Path(cfg.raw_dir)
    manifest = Manifest(raw_dir, SOURCE)
    settings = twin_fingerprint(cfg)
    ny, nx = cfg.twin.shape
    planned = []
    for month in cfg.months.months():
        item = MonthFile(SOURCE, DATASET_NAME, month)
        complete = (
            not force
            and manifest.is_complete(item, raw_dir)
            and manifest.entries[item.key].get("fingerprint") == settings
        )
        size = ny * nx * len(expected_times(month)) * len(VARIABLES) * 4
        planned.append(
            PlannedFile(SOURCE, DATASET_NAME, month, VARIABLES, item.path(raw_dir), size, complete)
        )
    return planned


def _hour_bar() -> Progress:
    return progress_bar("[bold]{task.description}", "simulated hours")


@contextlib.contextmanager
def _hour_progress(progress: ProgressCallback | None, hours: int, label: str) -> Iterator[tuple]:
    """(advance_hours(n), set_label(text), month_done(label)): the caller's month callback,
    or, with none, a bar of simulated hours of our own."""
    if progress is not None:
        # the fetch driver's callback: one call per month file done
        yield (lambda n: None), (lambda text: None), progress
        return
    with _hour_bar() as bar:
        task = bar.add_task(label, total=hours)
        yield (
            (lambda n: bar.advance(task, n)),
            (lambda text: bar.update(task, description=text)),
            (lambda text: None),
        )
        bar.update(task, completed=hours)


def _run_hours(cfg: DataConfig, until: pd.Timestamp | None) -> int:
    """Hours the run for ``cfg`` steps (spin-up included), stopping at ``until`` if given."""
    start, _, end = run_span(cfg)
    if until is not None:
        end = min(end, until)
    return int((end - start) / pd.Timedelta(hours=1))


def _write_netcdf(ds: xr.Dataset, path: Path) -> None:
    """Write a month file one variable at a time, checking for Ctrl-C between them.

    Ctrl-C is held during a write (see :func:`seacast.raw.write_month_atomic`); in
    pieces, a stop waits for one variable (a fraction of a second), not the whole month.
    """
    encoding = netcdf_encoding(ds)
    coords = ds.drop_vars(list(ds.data_vars))
    coords.to_netcdf(
        path,
        mode="w",
        engine="netcdf4",
        format="NETCDF4",
        encoding={k: v for k, v in encoding.items() if k in coords.variables},
    )
    for name in ds.data_vars:
        check_interrupt()
        ds[[name]].drop_vars(list(ds.coords), errors="ignore").to_netcdf(
            path, mode="a", engine="netcdf4", format="NETCDF4", encoding={name: encoding[name]}
        )


def fetch_twin(
    cfg: DataConfig,
    progress: ProgressCallback | None = None,
    force: bool = False,
    now: pd.Timestamp | None = None,
) -> list[Path]:
    """Simulate ``cfg.months`` with the twin and write the month files; returns their paths.

    ``force`` rewrites complete months. ``progress(label)`` is called once per month file
    done (the fetch driver's callback); without one, a bar of simulated hours is shown
    instead. ``now`` (UTC, the
    present by default) caps the run: the current month is written up to that hour and
    recorded in progress; months after it are not written (a DataError names them).
    """
    raw_dir = Path(cfg.raw_dir)
    until = (now or utc_now()).floor("h")
    current = until.strftime("%Y-%m")
    planned = plan_twin(cfg, force)
    paths = [p.path for p in planned]
    future = [p.month for p in planned if p.month > current]
    todo = {p.month for p in planned if not p.complete and p.month <= current}
    if not todo:
        for p in planned:
            if progress is not None:
                progress(p.label)
        _refuse_future(future, until)
        return paths
    manifest = Manifest(raw_dir, SOURCE)
    settings = twin_fingerprint(cfg)
    # the run need not go past the last month still to write, nor past the present hour
    run_cfg = cfg.model_copy(deep=True)
    run_cfg.months = run_cfg.months.model_copy(update={"end": max(todo)})
    stop = until if in_progress(max(todo), until) else None
    hours = _run_hours(run_cfg, stop)
    with _hour_progress(progress, hours, f"twin {cfg.months}") as (advance, set_label, month_done):

        def on_hour(n: int) -> None:
            check_interrupt()  # a Ctrl-C stops the run between two simulated hours
            advance(n)

        months = simulate(run_cfg, on_hour=on_hour, until=stop)
        for month, ds in months:
            set_label(f"twin {month}")
            if month in todo:
                item = MonthFile(SOURCE, DATASET_NAME, month)
                running = in_progress(month, until)
                write_month_atomic(
                    item,
                    raw_dir,
                    lambda tmp, ds=ds: _write_netcdf(ds, tmp),
                    VARIABLES,
                    manifest,
                    check_times=not running,
                    info={"fingerprint": settings, "seed": cfg.twin.seed, "in_progress": running},
                )
            month_done(f"{DATASET_NAME} {month}")
        # months after the last one to write were complete already (or lie in the future)
        for p in planned:
            if p.month > max(todo):
                month_done(p.label)
    _refuse_future(future, until)
    return paths


def _refuse_future(future: list[str], until: pd.Timestamp) -> None:
    if future:
        raise DataError(
            f"{len(future)} month(s) lie after the present hour ({until:%Y-%m-%d %H}:00 UTC) and were "
            f"not simulated: {', '.join(future)}",
            f"end months at {until:%Y-%m} or earlier; the current month is written up to the present "
            "hour and extended by each run",
        )


class TwinRaw:
    """``source: twin`` as a :class:`~seacast.sources.base.RawSource`."""

    name = SOURCE

    def plan(self, cfg: DataConfig, force: bool = False) -> list[PlannedFile]:
        return plan_twin(cfg, force)

    def notes(self, cfg: DataConfig) -> list[str]:
        return [
            f"built-in North Sea twin, {cfg.twin.shape[0]} x {cfg.twin.shape[1]} grid, seed {cfg.twin.seed}"
        ]

    def fetch(
        self,
        cfg: DataConfig,
        *,
        force: bool = False,
        progress: ProgressCallback = no_progress,
        client: MarineClient | None = None,
        log: Callable[[str], None] | None = None,
    ) -> list[Path]:
        return fetch_twin(cfg, progress=progress, force=force)

    def datasets(self, cfg: DataConfig) -> list[str]:
        root = Path(cfg.raw_dir) / SOURCE
        return sorted(p.name for p in root.glob("*") if p.is_dir()) if root.is_dir() else []


RAW_SOURCE = TwinRaw()
