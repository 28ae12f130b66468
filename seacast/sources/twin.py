"""``source: twin``: write the North Sea twin's months into the raw layout.

Offers :func:`fetch_twin`, which runs :func:`seacast.twin.simulate` once over
``cfg.months`` and writes each month to ``<raw_dir>/twin/nws_twin/<YYYY-MM>.nc``
through :func:`seacast.raw.write_month_atomic`; :func:`plan_twin` (the month files
and which are complete, for ``--dry-run``) and :func:`twin_fingerprint`.

A month is complete when the manifest lists it with the same twin fingerprint
(twin settings, box and the run's first month: a month's ocean state depends on
when the run started). Complete months are not written again, but the run still
passes through them, since the state carries over.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

from rich.progress import (
    Progress,
)

from seacast.config import DataConfig, fingerprint, to_dict
from seacast.progress import progress_bar
from seacast.raw import Manifest, MonthFile, expected_times, write_month_atomic
from seacast.sources.base import PlannedFile, ProgressCallback
from seacast.twin import DATASET_NAME, simulate, total_hours
from seacast.twin.output import VARIABLES, netcdf_encoding

SOURCE = "twin"


def twin_fingerprint(cfg: DataConfig) -> str:
    """What the content of a month depends on: twin settings, box and the run's first month."""
    return fingerprint(
        {"twin": to_dict(cfg.twin), "bbox": to_dict(cfg.bbox), "run_start": cfg.months.start}
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
def _hour_progress(
    progress: Progress | ProgressCallback | None, hours: int, label: str
) -> Iterator[tuple]:
    """(advance_hours(n), set_label(text), month_done(label)) for a rich Progress or a month callback."""
    if progress is not None and not isinstance(progress, Progress):
        # the fetch driver's callback: one call per month file done
        yield (lambda n: None), (lambda text: None), progress
        return
    bar = progress if progress is not None else _hour_bar()
    with bar if progress is None else contextlib.nullcontext():
        task = bar.add_task(label, total=hours)
        yield (
            (lambda n: bar.advance(task, n)),
            (lambda text: bar.update(task, description=text)),
            (lambda text: None),
        )
        bar.update(task, completed=hours)


def fetch_twin(
    cfg: DataConfig, progress: Progress | ProgressCallback | None = None, force: bool = False
) -> list[Path]:
    """Simulate ``cfg.months`` with the twin and write the month files; returns their paths.

    ``force`` rewrites complete months. ``progress`` is a rich Progress to add a bar of
    simulated hours to (one is made and shown if None), or the fetch driver's
    ``progress(label)`` callback, called once per month file done.
    """
    raw_dir = Path(cfg.raw_dir)
    planned = plan_twin(cfg, force)
    paths = [p.path for p in planned]
    todo = {p.month for p in planned if not p.complete}
    if not todo:
        for p in planned:
            if callable(progress) and not isinstance(progress, Progress):
                progress(p.label)
        return paths
    manifest = Manifest(raw_dir, SOURCE)
    settings = twin_fingerprint(cfg)
    # the run need not go past the last month still to write
    run_cfg = cfg.model_copy(deep=True)
    run_cfg.months = run_cfg.months.model_copy(update={"end": max(todo)})
    hours = total_hours(run_cfg)
    with _hour_progress(progress, hours, f"twin {cfg.months}") as (advance, set_label, month_done):
        for month, ds in simulate(run_cfg, on_hour=advance):
            set_label(f"twin {month}")
            if month in todo:
                item = MonthFile(SOURCE, DATASET_NAME, month)
                encoding = netcdf_encoding(ds)
                write_month_atomic(
                    item,
                    raw_dir,
                    lambda tmp, ds=ds, encoding=encoding: ds.to_netcdf(
                        tmp, engine="netcdf4", format="NETCDF4", encoding=encoding
                    ),
                    VARIABLES,
                    manifest,
                    info={"fingerprint": settings, "seed": cfg.twin.seed},
                )
            month_done(f"{DATASET_NAME} {month}")
        # months after the last one to write were complete already
        for p in planned:
            if p.month > max(todo):
                month_done(p.label)
    return paths
