"""The final report: one Markdown page combining evaluation, training and forecasts.

``write_report`` (called by a pipeline's ``report`` stage) writes ``reports/<name>/index.md`` from:

* evaluation outputs (folders written by ``seacast evaluate``): their Markdown is included with
  links fixed, otherwise their CSV tables and PNG figures;
* run folders ``runs/<name>/``: one summary row each from ``config.yaml``, ``meta.json`` and
  ``metrics.csv``, and a figure of the validation-loss curves;
* forecast plots (PNG globs).

Every part is optional: a missing or unreadable part becomes a note in the page, never an error,
so a report can be written after a partial pipeline.

This module offers :func:`write_report`, :func:`summarise_run` and :func:`markdown_table`.
"""

from __future__ import annotations

import contextlib
import glob
import json
import math
import numbers
import os
import re
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from seacast import __version__
from seacast.atomic import atomic_path, atomic_write_text

if TYPE_CHECKING:
    import pandas as pd

MAX_TABLE_ROWS = 40
_LINK = re.compile(r"(!?\[[^\]]*\]\()([^)\s]+)(\))")


def expand_globs(patterns: str | Sequence[str], workdir: Path) -> list[Path]:
    """Existing paths matching ``patterns`` (relative to ``workdir``, ``**`` allowed), each once.

    The one glob expander of reports and of the pipeline's freshness checks.
    """
    found: list[Path] = []
    for pattern in [patterns] if isinstance(patterns, str) else patterns:
        full = pattern if Path(pattern).is_absolute() else str(workdir / pattern)
        matches = (
            sorted(Path(p) for p in glob.glob(full, recursive=True))
            if glob.has_magic(pattern)
            else [Path(full)]
        )
        found.extend(p for p in matches if p.exists() and p not in found)
    return found


def _rel(target: Path, report_dir: Path) -> str:
    return Path(os.path.relpath(target.resolve(), report_dir.resolve())).as_posix()


def _format(value: Any, digits: int = 4) -> str:
    if value is None:
        return ""
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return f"{value:.{digits}g}" if math.isfinite(value) else "–"
    return str(value).replace("|", "\\|")


def markdown_table(
    table: Sequence[str] | pd.DataFrame,
    rows: Sequence[Sequence[Any]] | None = None,
    *,
    digits: int = 4,
) -> str:
    """A GitHub-flavoured Markdown table (floats to ``digits`` significant digits, NaN as –).

    Either a header and its rows, or a DataFrame: its index becomes the first column, its values
    are right-aligned, and a two-level column index is joined with spaces.
    """
    if rows is None:  # a DataFrame
        frame = table
        columns = [
            " ".join(str(p) for p in col) if isinstance(col, tuple) else str(col)
            for col in frame.columns
        ]
        header = ["", *columns]
        rows = [[index, *row] for index, row in zip(frame.index, frame.to_numpy(), strict=True)]
        rule = "|---|" + "---:|" * len(columns)
    else:
        header = [str(h) for h in table]
        rule = "|" + "---|" * len(header)
    lines = ["| " + " | ".join(header) + " |", rule]
    lines += ["| " + " | ".join(_format(v, digits) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- training runs


def _read_metrics(path: Path) -> Any:
    import pandas as pd

    try:
        return pd.read_csv(path)
    except Exception:  # an empty or half-written CSV is reported as missing, not fatal
        return None


def _column(frame: Any, *words: str) -> str | None:
    for name in frame.columns:
        lowered = str(name).lower()
        if all(word in lowered for word in words):
            return str(name)
    return None


def _seconds(meta: dict[str, Any]) -> float | None:
    """Training time from meta.json, whichever of the usual keys the loop wrote."""
    for key in ("train_seconds", "training_seconds", "wall_seconds", "elapsed_seconds", "seconds"):
        if isinstance(meta.get(key), int | float):
            return float(meta[key])
    timings = meta.get("timings")
    if isinstance(timings, dict):
        for key in ("total", "total_seconds", "train", "train_seconds", "wall", "wall_seconds"):
            if isinstance(timings.get(key), int | float):
                return float(timings[key])
        numbers = [v for v in timings.values() if isinstance(v, int | float)]
        return float(sum(numbers)) if numbers else None
    return None


def summarise_run(run_dir: Path) -> dict[str, Any]:
    """What a run folder tells about itself: model, trainer, epochs, steps, losses, forwards, time."""
    summary: dict[str, Any] = {"run": run_dir.name}
    config: dict[str, Any] = {}
    with contextlib.suppress(OSError, yaml.YAMLError):
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) or {}
    meta: dict[str, Any] = {}
    with contextlib.suppress(OSError, json.JSONDecodeError):
        meta = json.loads((run_dir / "meta.json").read_text())
    model = config.get("model") if isinstance(config.get("model"), dict) else {}
    trainer = config.get("trainer") if isinstance(config.get("trainer"), dict) else {}
    summary["model"] = model.get("name") or meta.get("model")
    meta_trainer = meta.get("trainer")
    summary["trainer"] = trainer.get("name") or (
        meta_trainer.get("name") if isinstance(meta_trainer, dict) else meta_trainer
    )
    summary["seconds"] = _seconds(meta)
    summary["status"] = meta.get("status")
    frame = _read_metrics(run_dir / "metrics.csv") if (run_dir / "metrics.csv").is_file() else None
    summary["metrics"] = frame
    if frame is not None and len(frame):
        epoch = _column(frame, "epoch")
        step = _column(frame, "step")
        val = _column(frame, "val", "loss") or _column(frame, "val")
        train = _column(frame, "train", "loss") or _column(frame, "loss")
        forwards = _column(frame, "forward")
        summary["epochs"] = (
            int(frame[epoch].max()) + (1 if frame[epoch].min() == 0 else 0) if epoch else None
        )
        summary["steps"] = int(frame[step].max()) if step else None
        summary["best_val_loss"] = (
            float(frame[val].min()) if val and frame[val].notna().any() else None
        )
        if train and frame[train].notna().any():
            summary["last_train_loss"] = float(frame[train].dropna().iloc[-1])
        summary["forwards"] = float(frame[forwards].max()) if forwards else None
    return summary


def draw_training_curves(summaries: list[dict[str, Any]], path: Path) -> bool:
    """Validation loss against epoch (or step) for every run; False if no run has one."""
    curves = []
    for summary in summaries:
        frame = summary.get("metrics")
        if frame is None or not len(frame):
            continue
        val = _column(frame, "val", "loss") or _column(frame, "val")
        x = _column(frame, "epoch") or _column(frame, "step")
        if val and frame[val].notna().any():
            data = frame[[x, val]].dropna() if x else frame[[val]].dropna()
            curves.append(
                (summary["run"], data[x] if x else range(len(data)), data[val], x or "row")
            )
    if not curves:
        return False
    import matplotlib
    import matplotlib.ticker

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4 + 0.2 * ((len(curves) + 1) // 2)), layout="constrained")
    for name, xs, ys, _ in curves:
        ax.plot(list(xs), list(ys), marker=".", label=name)
    ax.set_xlabel(curves[0][3])
    ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))  # epochs, steps
    ax.set_ylabel("validation loss")
    if all((c[2] > 0).all() for c in curves):
        ax.set_yscale("log")
    # below the axes, not on them: a run's curve must not hide under another's label
    fig.legend(loc="outside lower center", ncols=2, fontsize="small", frameon=False)
    ax.grid(alpha=0.3)
    try:
        with atomic_path(path, suffix=".tmp.png") as tmp:
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return True


def budget_note(summaries: list[dict[str, Any]]) -> str | None:
    """One sentence on the runs' training budgets: equal, or how backprop's and ZO's differ.

    A zeroth-order run given more steps than a backprop run is no like-for-like comparison;
    the page says so rather than let a starved backprop look beaten.
    """
    steps = {s["run"]: s.get("steps") for s in summaries if s.get("steps")}
    if len(steps) < 2:
        return None
    if len(set(steps.values())) == 1:
        note = f"Every run trained for the same budget: {next(iter(steps.values()))} steps."
        return note + _unconverged_note(summaries)
    backprop = [s["steps"] for s in summaries if s.get("trainer") == "backprop" and s.get("steps")]
    others = [s for s in summaries if s.get("trainer") != "backprop" and s.get("steps")]
    longer = [s["run"] for s in others if backprop and s["steps"] > max(backprop)]
    note = "Budgets differ: " + ", ".join(f"{run} {n} steps" for run, n in steps.items()) + "."
    if longer:
        note += (
            f" {', '.join(longer)} trained longer than every backprop run: compare them at "
            "equal budgets (benchmarks/zo_vs_bp.py) before reading a ranking into it."
        )
    return note + _unconverged_note(summaries)


def _unconverged_note(summaries: list[dict[str, Any]]) -> str:
    """Say so when runs stopped at their step budget rather than by early stopping."""
    known = [s for s in summaries if s.get("steps") and s.get("status")]
    capped = [s["run"] for s in known if "early_stopping" not in s["status"]]
    if not capped:
        return ""
    if len(capped) == len(known):
        who = "None of the runs stopped by early stopping: they were"
    else:
        who = f"{', '.join(capped)} did not stop by early stopping: " + (
            "they were" if len(capped) > 1 else "it was"
        )
    return (
        f" {who} cut at the step budget, not trained to convergence, so the ranking holds at "
        "this budget only (benchmarks/zo_vs_bp.py trains backprop until validation stops improving)."
    )


def _training_section(runs: list[str], workdir: Path, report_dir: Path) -> list[str]:
    lines = ["## Training", ""]
    run_dirs = [p for p in expand_globs(runs, workdir) if p.is_dir()]
    if not run_dirs:
        where = f"looked in {', '.join(runs)}" if runs else "none listed in the report stage"
        return [*lines, f"_No training runs found ({where})._", ""]
    summaries = [summarise_run(p) for p in run_dirs]
    header = [
        "run",
        "model",
        "trainer",
        "epochs",
        "steps",
        "best val loss",
        "last train loss",
        "forwards",
        "time (s)",
        "status",
    ]
    keys = [
        "run",
        "model",
        "trainer",
        "epochs",
        "steps",
        "best_val_loss",
        "last_train_loss",
        "forwards",
        "seconds",
        "status",
    ]
    lines.append(markdown_table(header, [[s.get(k) for k in keys] for s in summaries]))
    lines.append("")
    note = budget_note(summaries)
    if note:
        lines += [note, ""]
    lines.append(
        "Run folders: " + ", ".join(f"[{p.name}]({_rel(p, report_dir)})" for p in run_dirs)
    )
    lines.append("")
    figure = report_dir / "training_curves.png"
    try:
        drawn = draw_training_curves(summaries, figure)
    except Exception as exc:  # a figure must not cost the report
        lines += [f"_Training curves could not be drawn: {exc}._", ""]
    else:
        if drawn:
            lines += ["![validation loss per run](training_curves.png)", ""]
    return lines


# --------------------------------------------------------------------------- evaluation and forecasts


def _fix_links(text: str, source_dir: Path, report_dir: Path) -> str:
    """Rewrite relative links of an included page so they work from the report's folder."""

    def replace(match: re.Match[str]) -> str:
        target = match.group(2)
        if re.match(r"^[a-z]+:", target) or target.startswith(("#", "/")):
            return match.group(0)
        return f"{match.group(1)}{_rel(source_dir / target, report_dir)}{match.group(3)}"

    return _LINK.sub(replace, text)


def _demote(text: str) -> str:
    """Push an included page's headings two levels down, under our own."""
    return re.sub(r"^(#{1,4}) ", lambda m: "##" + m.group(1) + " ", text, flags=re.MULTILINE)


def _csv_table(path: Path) -> str:
    frame = _read_metrics(path)
    if frame is None:
        return f"_{path.name} could not be read._"
    rows = frame.head(MAX_TABLE_ROWS).values.tolist()
    table = markdown_table([str(c) for c in frame.columns], rows)
    if len(frame) > MAX_TABLE_ROWS:
        table += f"\n\n_First {MAX_TABLE_ROWS} of {len(frame)} rows; all in {path.name}._"
    return table


def _evaluation_section(
    evaluations: list[str], workdir: Path, report_dir: Path, own_page: Path
) -> list[str]:
    lines = ["## Evaluation", ""]
    found = expand_globs(evaluations, workdir)
    if not found:
        where = (
            f"looked in {', '.join(evaluations)}"
            if evaluations
            else "none listed in the report stage"
        )
        return [*lines, f"_No evaluation found ({where})._", ""]
    for item in found:
        files = sorted(p for p in item.rglob("*") if p.is_file()) if item.is_dir() else [item]
        files = [
            f for f in files if f.resolve() != own_page.resolve() and not f.name.startswith(".")
        ]
        pages = [f for f in files if f.suffix == ".md"]
        if pages:  # the evaluation wrote its own page, headed by its name: include it as it is
            for page in pages:
                lines += [
                    _demote(_fix_links(page.read_text(), page.parent, report_dir)).strip(),
                    "",
                ]
            continue
        lines += [f"### {item.name}", ""]
        tables = [f for f in files if f.suffix == ".csv"]
        figures = [f for f in files if f.suffix in (".png", ".svg", ".jpg")]
        for table in tables:
            lines += [
                f"**{table.stem}** ([csv]({_rel(table, report_dir)}))",
                "",
                _csv_table(table),
                "",
            ]
        lines += [f"![{fig.stem}]({_rel(fig, report_dir)})" for fig in figures]
        if not tables and not figures:
            lines.append(f"_{item.name} holds no tables or figures._")
        lines.append("")
    return lines


def forecast_plots(matches: list[Path]) -> list[Path]:
    """The PNG plots among ``matches``: the files themselves, and those inside a named folder."""
    plots: list[Path] = []
    for path in matches:
        found = sorted(path.glob("*.png")) if path.is_dir() else [path] if path.is_file() else []
        plots.extend(p for p in found if p not in plots)
    return plots


def _forecast_section(forecasts: list[str], workdir: Path, report_dir: Path) -> list[str]:
    lines = ["## Forecasts", ""]
    plots = forecast_plots(expand_globs(forecasts, workdir))
    if not plots:
        where = (
            f"looked in {', '.join(forecasts)}" if forecasts else "none listed in the report stage"
        )
        return [*lines, f"_No forecast plots found ({where})._", ""]
    for plot in plots:
        lines += [f"![{plot.stem}]({_rel(plot, report_dir)})", ""]
    return lines


def write_report(
    path: Path | str,
    *,
    title: str,
    runs: list[str] | None = None,
    evaluations: list[str] | None = None,
    forecasts: list[str] | None = None,
    workdir: Path | str = ".",
) -> Path:
    """Write the combined report page to ``path`` (atomically) and return it.

    ``runs``, ``evaluations`` and ``forecasts`` are paths or globs relative to ``workdir``; links in
    the page are relative to the page's folder, so the folder can be moved with its inputs.
    """
    workdir = Path(workdir)
    path = Path(path)
    report_dir = path.parent
    report_dir.mkdir(parents=True, exist_ok=True)
    lines = [
        f"# {title}",
        "",
        f"_Written by seacast {__version__} on {time.strftime('%Y-%m-%d %H:%M')}._",
        "",
        *_evaluation_section(evaluations or [], workdir, report_dir, path),
        *_training_section(runs or [], workdir, report_dir),
        *_forecast_section(forecasts or [], workdir, report_dir),
    ]
    atomic_write_text(path, "\n".join(lines).rstrip() + "\n")
    return path


__all__ = ["budget_note", "expand_globs", "markdown_table", "summarise_run", "write_report"]
