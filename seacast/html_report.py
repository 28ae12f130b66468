"""The report a forecaster opens: one self-contained HTML page next to the Markdown one.

:func:`write_report_pages` writes ``index.md`` (:func:`seacast.reporting.write_report`) and
``index.html`` side by side; ``seacast report`` and a pipeline's ``report`` stage both call it.
The HTML page (:func:`write_html_report`) reads the same inputs and shows, in this order:

* the headline: each model's skill against the best reference, by variable and lead time, as a
  table coloured green where the model beats that reference and red where it loses
  (from the evaluations' ``skill_vs_best.csv``);
* the forecast maps, one lead time at a time (a small selector; without JavaScript all show),
  redrawn from the forecast datasets beside the forecast plots, else those plots as they are;
* the training curves and one summary row per run;
* the evaluations' figures (RMSE against lead time, maps of the error against the truth);
* the full tables, folded away in ``<details>``;
* one section per run: data provenance, code version and the run's config.

Figures are embedded as base64 PNG, so the page is one file that opens without a network or
its folder. Every part is optional: what is missing becomes a note in the page, never an error.
The page is rendered by jinja2 from ``seacast/templates/report.html.j2`` with autoescape on.
"""

from __future__ import annotations

import base64
import contextlib
import json
import math
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from seacast import __version__
from seacast.atomic import atomic_write_text
from seacast.reporting import (
    budget_note,
    draw_training_curves,
    expand_globs,
    forecast_plots,
    summarise_run,
    write_report,
)

MAX_HTML_TABLE_ROWS = 300
MAX_FORECASTS = 3  # forecast datasets redrawn by lead time, the newest
# the order variables are shown in when a forecast holds several
VARIABLE_ORDER = ("zos", "uo", "vo", "so", "thetao", "VHM0")
# skill at which a cell reaches its full colour; smaller wins and losses are paler
FULL_COLOUR_SKILL = 0.2
BEATS_RGB = (26, 152, 80)
LOSES_RGB = (215, 48, 39)


@dataclass
class ReportPages:
    """The two pages of a report, side by side in one folder."""

    markdown: Path
    html: Path


@dataclass
class Figure:
    title: str
    src: str  # a data: URI
    caption: str = ""


@dataclass
class Table:
    title: str
    header: list[str]
    rows: list[list[str]]
    note: str = ""
    anchors: list[str] = field(default_factory=list)  # a link target per row, where rows have one


@dataclass
class HeadlineCell:
    text: str
    detail: str
    css_class: str  # "beats" or "loses"
    colour: str  # background, stronger for a larger skill
    title: str  # the tooltip: the numbers in words


@dataclass
class Headline:
    """Skill vs the best reference of one evaluation: rows variable x lead, a column per run."""

    evaluation: str
    runs: list[tuple[str, str]]  # (run name, model x trainer or "")
    rows: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Evaluation:
    name: str
    headline: Headline | None
    figures: list[Figure]
    tables: list[Table]
    links: list[tuple[str, str]]  # (label, relative path) of files too long to show


@dataclass
class LeadMaps:
    """One forecast's maps, one figure per lead time."""

    name: str
    leads: list[int]
    figures: dict[int, Figure]


@dataclass
class RunSection:
    name: str
    anchor: str
    facts: list[tuple[str, str]]
    config_text: str


# --------------------------------------------------------------------------- small helpers


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii")


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "–" if not math.isfinite(value) else f"{value:.{digits}g}"
    return str(value)


def _anchor(name: str) -> str:
    return "run-" + "".join(c if c.isalnum() or c in "-_" else "-" for c in name)


def _read_csv(path: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_csv(path)
    except Exception:  # an empty or half-written CSV is shown as unreadable, not fatal
        return None


def _cell_colour(skill: float, beats: bool) -> str:
    """White blended towards green (beats) or red (loses) by the size of the skill."""
    strength = 0.3 + 0.7 * min(1.0, abs(skill) / FULL_COLOUR_SKILL) if math.isfinite(skill) else 0.3
    r, g, b = BEATS_RGB if beats else LOSES_RGB
    mix = [round(255 + (c - 255) * strength * 0.75) for c in (r, g, b)]
    return f"rgb({mix[0]}, {mix[1]}, {mix[2]})"


# --------------------------------------------------------------------------- evaluations


def headline_from(long: Any, evaluation: str, labels: dict[str, str]) -> Headline | None:
    """The coloured table's content from ``skill_vs_best.csv`` (long form)."""
    from seacast.evaluation.baselines import REFERENCE_TITLES
    from seacast.evaluation.report import skill_summary
    from seacast.plots import units_of

    needed = {"run", "variable", "lead_time", "group", "best_reference", "skill", "beats"}
    if long is None or not needed <= set(long.columns) or long.empty:
        return None
    summary = skill_summary(long)
    if summary.empty:
        return None
    runs = list(dict.fromkeys(summary["run"]))
    headline = Headline(evaluation, [(run, labels.get(run, "")) for run in runs])
    groups_word = "seasons" if set(long["group"]) & {"DJF", "MAM", "JJA", "SON"} else "groups"
    for (variable, lead), cell in summary.groupby(["variable", "lead_time"], sort=False):
        first = cell.iloc[0]
        reference = REFERENCE_TITLES.get(first["best_reference"], first["best_reference"])
        cells: list[HeadlineCell | None] = []
        for run in runs:
            mine = cell[cell["run"] == run]
            if mine.empty:
                cells.append(None)
                continue
            o = mine.iloc[0]
            beats = bool(o["beats"])
            cells.append(
                HeadlineCell(
                    text=f"{'✓' if beats else '✗'} {o['skill']:+.1%}",
                    detail=f"RMSE {o['model_rmse']:.3g} · won {o['won']}/{o['groups']}",
                    css_class="beats" if beats else "loses",
                    colour=_cell_colour(float(o["skill"]), beats),
                    title=(
                        f"{run}: RMSE {o['model_rmse']:.4g} against {reference}'s "
                        f"{o['reference_rmse']:.4g} (skill {o['skill']:+.2%}); beats the best "
                        f"reference in {o['won']} of {o['groups']} {groups_word}"
                    ),
                )
            )
        first_of_variable = not headline.rows or headline.rows[-1]["variable"] != variable
        headline.rows.append(
            {
                "first_of_variable": first_of_variable,
                "span": int(summary.loc[summary["variable"] == variable, "lead_time"].nunique()),
                "variable": variable,
                "lead": int(lead),
                "reference": reference,
                "reference_rmse": f"{first['reference_rmse']:.3g} {units_of(variable)}".strip(),
                "cells": cells,
            }
        )
    return headline


def _frame_table(title: str, frame: Any, note: str = "") -> Table:
    shown = frame.head(MAX_HTML_TABLE_ROWS)
    rows = [[_fmt(v) for v in row] for row in shown.astype(object).values.tolist()]
    if len(frame) > MAX_HTML_TABLE_ROWS:
        note = (note + " " if note else "") + f"First {MAX_HTML_TABLE_ROWS} of {len(frame)} rows."
    return Table(title, [str(c) for c in frame.columns], rows, note)


def _evaluation(folder: Path, report_dir: Path, labels: dict[str, str]) -> Evaluation:
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    best = folder / "skill_vs_best.csv"
    headline = headline_from(_read_csv(best), folder.name, labels) if best.is_file() else None
    figures = []
    # the overview first, then the error maps (mean error, then one forecast against the truth)
    order = {"rmse_vs_lead": 0, "mean_error": 1, "sample": 2}
    for png in sorted(
        (f for f in files if f.suffix == ".png"),
        key=lambda f: (next((v for k, v in order.items() if f.stem.startswith(k)), 3), f.name),
    ):
        figures.append(Figure(png.stem.replace("_", " "), _data_uri(png), _figure_caption(png)))
    tables, links = [], []
    for csv in (f for f in files if f.suffix == ".csv"):
        if csv.name == "metrics.csv":  # every cell of every score: a file to open, not a table
            links.append((csv.name, _relative(csv, report_dir)))
            continue
        frame = _read_csv(csv)
        if frame is None:
            tables.append(Table(csv.stem, [], [], f"{csv.name} could not be read."))
        else:
            tables.append(_frame_table(csv.stem.replace("_", " "), frame, csv.name))
    return Evaluation(folder.name, headline, figures, tables, links)


def _figure_caption(png: Path) -> str:
    if png.stem.startswith("mean_error"):
        return "Mean error (forecast − truth) over the split, per variable and lead time."
    if png.stem.startswith("sample"):
        return "One forecast against the truth at the longest lead time, and its error."
    if png.stem == "rmse_vs_lead":
        return "RMSE against lead time: the models and every reference, per variable and season."
    return ""


def _relative(path: Path, report_dir: Path) -> str:
    import os

    return Path(os.path.relpath(path.resolve(), report_dir.resolve())).as_posix()


# --------------------------------------------------------------------------- forecasts


def _forecast_datasets(matches: list[Path]) -> list[Path]:
    """The forecast datasets to redraw: those named, the latest in a named folder, and the one
    each named plot was drawn from (``<init>_<variable>.png`` beside ``<init>.zarr``).

    A cron folder holds a dataset per hour: only the newest :data:`MAX_FORECASTS` are shown.
    """
    found: list[Path] = []
    for path in matches:
        if path.suffix in (".zarr", ".nc"):
            found.append(path)
        elif path.is_dir():
            found += sorted([*path.glob("*.zarr"), *path.glob("*.nc")], key=lambda p: p.name)[-1:]
        elif path.suffix == ".png":
            found += [
                d
                for d in [*path.parent.glob("*.zarr"), *path.parent.glob("*.nc")]
                if path.stem.startswith(d.stem + "_")
            ]
    unique = sorted(dict.fromkeys(p.resolve() for p in found), key=lambda p: p.name)
    return unique[-MAX_FORECASTS:]


def _open_forecast(path: Path) -> Any:
    import xarray as xr

    try:
        if path.suffix == ".zarr":
            ds = xr.open_zarr(path, consolidated=False)
        else:
            ds = xr.open_dataset(path)
    except Exception:  # not a dataset seacast wrote: its plots are shown instead
        return None
    if not {"lead_time", "init_time", "latitude", "longitude"} <= set(ds.dims) | set(ds.coords):
        ds.close()
        return None
    return ds


def _truth_at_valid_times(ds: Any, names: list[str]) -> dict[int, dict[str, Any]]:
    """``{hours: {variable: field}}`` from the forecast's store where it holds the valid time
    (a forecast from the past); empty for a forecast into the future or a store that is gone."""
    import numpy as np
    import pandas as pd
    import xarray as xr

    store_path = ds.attrs.get("seacast_store")
    if not store_path or not Path(store_path).exists():
        return {}
    try:
        store = xr.open_zarr(store_path, consolidated=False)
    except Exception:  # not a store we can read: no error maps, the forecast maps still show
        return {}
    try:
        if not np.array_equal(store["latitude"].values, ds["latitude"].values) or not (
            np.array_equal(store["longitude"].values, ds["longitude"].values)
        ):
            return {}
        times = pd.DatetimeIndex(store["time"].values)
        init = pd.Timestamp(ds["init_time"].values[0])
        truth: dict[int, dict[str, Any]] = {}
        for lead in ds["lead_time"].values:
            hours = int(pd.Timedelta(lead) / pd.Timedelta(hours=1))
            valid = init + pd.Timedelta(hours=hours)
            if valid in times:
                truth[hours] = {
                    var: store[var].sel(time=valid).values.astype(float)
                    for var in names
                    if var in store and store[var].dims == ("time", "latitude", "longitude")
                }
        return {hours: fields for hours, fields in truth.items() if fields}
    finally:
        store.close()


def _lead_maps(datasets: list[Path], scratch: Path) -> tuple[list[LeadMaps], list[str]]:
    from seacast.plots import forecast_lead_maps, forecast_variables

    maps, problems = [], []
    for k, path in enumerate(datasets):
        ds = _open_forecast(path)
        if ds is None:
            continue
        try:
            ds = ds.load()
            present = forecast_variables(ds)
            names = [v for v in VARIABLE_ORDER if v in present] + [
                v for v in present if v not in VARIABLE_ORDER
            ]
            if not names:
                continue
            truth = _truth_at_valid_times(ds, names)
            drawn = forecast_lead_maps(ds, scratch, f"forecast{k}", names, truth)
        except Exception as exc:  # a figure must not cost the report
            problems.append(f"The maps of {path.name} could not be drawn: {exc}.")
            continue
        finally:
            ds.close()
        source = path.name + ("; below, the forecast − the truth from its store" if truth else "")
        figures = {
            hours: Figure(f"+{hours} h", _data_uri(png), source) for hours, png in drawn.items()
        }
        maps.append(LeadMaps(path.stem, sorted(figures), figures))
    return maps, problems


# --------------------------------------------------------------------------- runs


def _run_section(run_dir: Path) -> RunSection:
    meta: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        meta = json.loads((run_dir / "meta.json").read_text())
    config_text = ""
    with contextlib.suppress(OSError):
        config_text = (run_dir / "config.yaml").read_text()
    config: dict[str, Any] = {}
    with contextlib.suppress(yaml.YAMLError):
        config = yaml.safe_load(config_text) or {} if config_text else {}
    code = meta.get("code_version") if isinstance(meta.get("code_version"), dict) else {}
    samples = meta.get("samples") if isinstance(meta.get("samples"), dict) else {}
    tides = meta.get("tides") if isinstance(meta.get("tides"), dict) else {}
    variables = (config.get("samples") or {}).get("variables") if config else None
    facts = [
        ("model", meta.get("model") or (config.get("model") or {}).get("name")),
        ("trainer", meta.get("trainer") or (config.get("trainer") or {}).get("name")),
        ("status", meta.get("status")),
        ("trained", " to ".join(str(meta[k]) for k in ("started", "finished") if meta.get(k))),
        ("store", meta.get("store") or config.get("store")),
        ("store fingerprint", meta.get("store_fingerprint")),
        ("config fingerprint", meta.get("config_fingerprint")),
        ("variables", ", ".join(variables) if isinstance(variables, list) else None),
        ("samples", _samples_text(samples)),
        ("tide fit", " to ".join(tides.get("period", [])) if tides.get("period") else None),
        ("seacast", code.get("seacast")),
        ("git", code.get("git")),
        ("torch", meta.get("torch")),
        ("device", meta.get("device")),
        ("parameters", meta.get("parameters")),
    ]
    shown = [(k, _fmt(v)) for k, v in facts if v not in (None, "", [])]
    return RunSection(run_dir.name, _anchor(run_dir.name), shown, config_text)


def _samples_text(samples: dict[str, Any]) -> str:
    """``{"train": 6120, "test": {"test": 1289}}`` as ``train 6120, test 1289`` (named test sets kept)."""
    parts = []
    for split in ("train", "validation", "test"):
        count = samples.get(split)
        if isinstance(count, int):
            parts.append(f"{split} {count}")
        elif isinstance(count, dict):
            parts += [
                f"{split} {n}" if name == split else f"{split} {name} {n}"
                for name, n in count.items()
                if isinstance(n, int)
            ]
    return ", ".join(parts)


_RUN_COLUMNS = [
    ("run", "run"),
    ("model", "model"),
    ("trainer", "trainer"),
    ("epochs", "epochs"),
    ("steps", "steps"),
    ("best val loss", "best_val_loss"),
    ("last train loss", "last_train_loss"),
    ("forwards", "forwards"),
    ("time (s)", "seconds"),
    ("status", "status"),
]


# --------------------------------------------------------------------------- the page


def _environment() -> Any:
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("seacast", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def write_html_report(
    path: Path | str,
    *,
    title: str,
    runs: list[str] | None = None,
    evaluations: list[str] | None = None,
    forecasts: list[str] | None = None,
    workdir: Path | str = ".",
) -> Path:
    """Write the self-contained HTML page to ``path`` (atomically) and return it.

    ``runs``, ``evaluations`` and ``forecasts`` are paths or globs relative to ``workdir``, as
    for :func:`seacast.reporting.write_report`.
    """
    workdir, path = Path(workdir), Path(path)
    report_dir = path.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    runs, evaluations, forecasts = runs or [], evaluations or [], forecasts or []
    notes: dict[str, list[str]] = {"forecasts": [], "training": [], "evaluations": []}

    run_dirs, summaries, run_table = _training_part(runs, workdir, notes)
    labels = {
        s["run"]: f"{s['model']} × {s['trainer']}"
        for s in summaries
        if s.get("model") and s.get("trainer")
    }
    evaluation_parts = _evaluation_parts(evaluations, workdir, report_dir, labels, notes)
    curves, lead_maps, plot_figures = _figures(summaries, forecasts, workdir, notes)

    html = (
        _environment()
        .get_template("report.html.j2")
        .render(
            title=title,
            version=__version__,
            written=time.strftime("%Y-%m-%d %H:%M"),
            evaluations=evaluation_parts,
            lead_maps=lead_maps,
            forecast_plots=plot_figures,
            curves=curves,
            run_table=run_table,
            run_sections=[_run_section(p) for p in run_dirs],
            notes=notes,
        )
    )
    atomic_write_text(path, html)
    return path


def _training_part(
    runs: list[str], workdir: Path, notes: dict[str, list[str]]
) -> tuple[list[Path], list[dict[str, Any]], Table]:
    """The run folders matched by ``runs``, their summaries and the table of them (a note if none)."""
    run_dirs = [p for p in expand_globs(runs, workdir) if p.is_dir()]
    summaries = [summarise_run(p) for p in run_dirs]
    run_table = Table(
        "training runs",
        [h for h, _ in _RUN_COLUMNS],
        [[_fmt(s.get(k)) for _, k in _RUN_COLUMNS] for s in summaries],
        anchors=[_anchor(p.name) for p in run_dirs],
    )
    if not run_dirs:
        notes["training"].append(
            f"No training runs found ({'looked in ' + ', '.join(runs) if runs else 'none given'})."
        )
    budget = budget_note(summaries)
    if budget:
        notes["training"].append(budget)
    return run_dirs, summaries, run_table


def _evaluation_parts(
    evaluations: list[str],
    workdir: Path,
    report_dir: Path,
    labels: dict[str, str],
    notes: dict[str, list[str]],
) -> list[Evaluation]:
    """One part per evaluation folder matched; a note when there is none or none has a headline."""
    folders = [p for p in expand_globs(evaluations, workdir) if p.is_dir()]
    evaluation_parts = [_evaluation(folder, report_dir, labels) for folder in folders]
    if not folders:
        notes["evaluations"].append(
            "No evaluation found "
            f"({'looked in ' + ', '.join(evaluations) if evaluations else 'none given'})."
        )
    elif not any(e.headline for e in evaluation_parts):
        notes["evaluations"].append(
            "No skill_vs_best.csv in the evaluations: written by `seacast evaluate`."
        )
    return evaluation_parts


def _figures(
    summaries: list[dict[str, Any]],
    forecasts: list[str],
    workdir: Path,
    notes: dict[str, list[str]],
) -> tuple[Figure | None, list[LeadMaps], list[Figure]]:
    """The training curves, the forecasts' maps by lead time, and the forecast plots shown as they are.

    A figure that cannot be drawn becomes a note: a figure must not cost the report.
    """
    matched = expand_globs(forecasts, workdir)
    with tempfile.TemporaryDirectory(prefix="seacast-report-") as scratch:
        scratch_dir = Path(scratch)
        curves = None
        try:
            if draw_training_curves(summaries, scratch_dir / "training_curves.png"):
                curves = Figure(
                    "validation loss per run", _data_uri(scratch_dir / "training_curves.png")
                )
        except Exception as exc:  # a figure must not cost the report
            notes["training"].append(f"Training curves could not be drawn: {exc}.")
        lead_maps, problems = _lead_maps(_forecast_datasets(matched), scratch_dir)
    notes["forecasts"] += problems
    # plots are shown as they are only where no dataset could be redrawn by lead time
    plot_figures = (
        []
        if lead_maps
        else [Figure(p.stem, _data_uri(p)) for p in forecast_plots(matched) if p.suffix == ".png"]
    )
    if not lead_maps and not plot_figures:
        notes["forecasts"].append(
            "No forecast maps found "
            f"({'looked in ' + ', '.join(forecasts) if forecasts else 'none given'})."
        )
    return curves, lead_maps, plot_figures


def write_report_pages(
    markdown_path: Path | str,
    *,
    title: str,
    runs: list[str] | None = None,
    evaluations: list[str] | None = None,
    forecasts: list[str] | None = None,
    workdir: Path | str = ".",
) -> ReportPages:
    """Write ``index.md`` at ``markdown_path`` and ``index.html`` beside it, from the same inputs."""
    markdown_path = Path(markdown_path)
    if markdown_path.suffix == ".html":  # a report stage that names the HTML page
        markdown_path = markdown_path.with_suffix(".md")
    parts = dict(runs=runs, evaluations=evaluations, forecasts=forecasts, workdir=workdir)
    markdown = write_report(markdown_path, title=title, **parts)
    html = write_html_report(markdown_path.with_suffix(".html"), title=title, **parts)
    return ReportPages(markdown, html)


__all__ = ["ReportPages", "headline_from", "write_html_report", "write_report_pages"]
