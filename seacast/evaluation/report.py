"""Evaluation output: Markdown and CSV tables, matplotlib + cmocean figures, an index page.

Offers:

* :func:`best_reference_table` - "skill vs the best reference": per variable and lead time,
  the strongest reference and whether each model beats it, season by season;
  :func:`skill_summary` - the same as numbers (from the scores or ``skill_vs_best.csv``),
  which the HTML report colours.
* :func:`comparison_table` - the paper's layout: rows model x trainer (and the references),
  columns variable x season, for one metric and lead time.
* :func:`markdown_table` - a DataFrame as a GitHub Markdown table (:mod:`seacast.reporting`'s).
* :func:`markdown_fragment` - the Markdown of an evaluation (tables and figure links),
  ready to paste into ``reports/<name>/index.md`` or a pipeline report page.
* :func:`plot_rmse_vs_lead`, :func:`plot_mean_error`, :func:`plot_sample` - the figures.
* :func:`write_evaluation_report` - write all of it to a folder (each file via a temp name, then rename):
  ``index.md`` (the Markdown tables and figures), ``metrics.csv`` (long form), one
  ``comparison_<metric>.csv`` per metric, and the PNG figures.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from seacast.atomic import atomic_path, atomic_write_text  # noqa: E402
from seacast.evaluation.baselines import REFERENCE_TITLES  # noqa: E402
from seacast.plots import color_limits, draw_field, units_of  # noqa: E402
from seacast.reporting import markdown_table  # noqa: E402 (the one table writer; callers import it here)

if TYPE_CHECKING:
    from seacast.evaluation.evaluate import EvaluationResults, RunScores

METRIC_TITLES = {
    "rmse": "RMSE",
    "mae": "MAE",
    "bias": "Bias (forecast - truth)",
    **{
        f"skill_{ref}": f"Skill vs {title} (1 - MSE/MSE_{ref})"
        for ref, title in REFERENCE_TITLES.items()
    },
}
BASELINE_STYLE = {
    "persistence": dict(color="0.35", ls="--"),
    "climatology": dict(color="0.6", ls=":"),
    "tide": dict(color="tab:cyan", ls="-.", lw=1.2),
    "tide_persisted": dict(color="tab:olive", ls="--", lw=1.2),
    "tide_damped": dict(color="k", ls="-", lw=1.6),
    "tide_regressed": dict(color="tab:purple", ls="-", lw=1.6),
}


def describe_split(split: str) -> str:
    """How a report names what was scored: 'the test split', or 'every time of a held-out store'."""
    return "every time of a held-out store" if split == "all" else f"the {split} split"


def row_labels(results: EvaluationResults) -> list[str]:
    """``model × trainer`` per run, with the run name added where two runs share it."""
    plain = [f"{r.model} × {r.trainer}" for r in results.runs]
    return [
        f"{p} ({r.name})" if plain.count(p) > 1 else p
        for p, r in zip(plain, results.runs, strict=True)
    ]


def _value(run: RunScores, metric: str, reference: str = "model"):
    if metric.startswith("skill_"):
        return run.skill[metric]
    return run.metrics[reference][metric]


def comparison_table(
    results: EvaluationResults, metric: str = "rmse", lead_time: int | None = None
) -> pd.DataFrame:
    """Rows model × trainer (baselines below for error metrics), columns (variable, group) at ``lead_time``.

    ``lead_time=None`` averages the metric over lead times (for RMSE: the root of the mean MSE).
    """
    variables = list(
        dict.fromkeys(
            v for r in results.runs for v in r.metrics["model"]["variable"].values.tolist()
        )
    )
    groups = [g for g in results.groups if any(_has_samples(r, g) for r in results.runs)]
    columns = pd.MultiIndex.from_product(
        [variables, groups], names=["variable", "season" if results.by == "season" else "group"]
    )
    rows: dict[str, list[float]] = {}

    def pick(run: RunScores, reference: str) -> list[float]:
        values = []
        for var in variables:
            for group in groups:
                if (
                    var not in run.metrics["model"]["variable"].values
                    or group not in run.metrics["model"]["group"].values
                ):
                    values.append(np.nan)
                    continue
                if lead_time is None and metric == "rmse":
                    cell = float(
                        np.sqrt(run.metrics[reference]["mse"].sel(variable=var, group=group).mean())
                    )
                else:
                    da = _value(run, metric, reference).sel(variable=var, group=group)
                    if lead_time is None:
                        cell = float(da.mean())
                    elif lead_time in da["lead_time"].values:
                        cell = float(da.sel(lead_time=lead_time))
                    else:
                        cell = np.nan
                values.append(cell)
        return values

    for label, run in zip(row_labels(results), results.runs, strict=True):
        rows[label] = pick(run, "model")
    if not metric.startswith("skill_"):
        # references do not depend on the model: take them from the first run with the lead time
        for reference in references_of(results):
            for run in results.runs:
                if reference in run.metrics and (
                    lead_time is None or lead_time in run.metrics[reference]["lead_time"].values
                ):
                    rows[REFERENCE_TITLES[reference]] = pick(run, reference)
                    break
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def references_of(results: EvaluationResults) -> list[str]:
    """The references scored for these runs, weakest first (as in REFERENCE_TITLES)."""
    return [r for r in REFERENCE_TITLES if any(r in run.metrics for run in results.runs)]


def skill_metrics(results: EvaluationResults) -> list[str]:
    return [f"skill_{r}" for r in references_of(results)]


def _pooled_mse(ds, variable: str, lead: int, groups: list[str]) -> float:
    cell = ds.sel(variable=variable, lead_time=lead, group=groups)
    count = cell["count"].values
    return float((cell["mse"].values * count).sum() / count.sum()) if count.sum() > 0 else np.nan


def best_reference_rows(results: EvaluationResults) -> pd.DataFrame:
    """Long form of "skill vs the best reference": one row per run x variable x lead time x group.

    The best reference of a cell is the one with the lowest MSE there (group ``all`` pools the
    groups); ``beats`` is model MSE < that MSE; ``skill`` is ``1 - MSE / MSE_best``.
    """
    references = references_of(results)
    rows = []
    for run in results.runs:
        model = run.metrics["model"]
        groups = [g for g in results.groups if _has_samples(run, g)]
        for variable in model["variable"].values.tolist():
            for lead in model["lead_time"].values.tolist():
                for group in [*groups, "all"]:
                    chosen = groups if group == "all" else [group]
                    scores = {
                        ref: _pooled_mse(run.metrics[ref], variable, lead, chosen)
                        for ref in references
                        if ref in run.metrics
                    }
                    best = min(
                        scores, key=lambda r: scores[r] if np.isfinite(scores[r]) else np.inf
                    )
                    mse = _pooled_mse(model, variable, lead, chosen)
                    rows.append(
                        {
                            "run": run.name,
                            "variable": variable,
                            "lead_time": int(lead),
                            "group": group,
                            "best_reference": best,
                            "reference_rmse": float(np.sqrt(scores[best])),
                            "model_rmse": float(np.sqrt(mse)),
                            "skill": 1.0 - mse / scores[best] if scores[best] > 0 else np.nan,
                            "beats": bool(mse < scores[best]),
                        }
                    )
    return pd.DataFrame(rows)


def skill_summary(long: pd.DataFrame) -> pd.DataFrame:
    """One row per variable x lead time x run of :func:`best_reference_rows` (or its CSV,
    ``skill_vs_best.csv``): the pooled best reference and its RMSE, the model's RMSE and skill,
    whether it beats that reference, and in how many groups (``won`` of ``groups``) it beats
    the best reference of the group."""
    rows = []
    for (variable, lead, run), cell in long.groupby(["variable", "lead_time", "run"], sort=False):
        pooled = cell[cell["group"] == "all"]
        if pooled.empty:
            continue
        groups = cell[cell["group"] != "all"]
        overall = pooled.iloc[0]
        rows.append(
            {
                "variable": variable,
                "lead_time": int(lead),
                "run": run,
                "best_reference": overall["best_reference"],
                "reference_rmse": float(overall["reference_rmse"]),
                "model_rmse": float(overall["model_rmse"]),
                "skill": float(overall["skill"]),
                "beats": bool(overall["beats"]),
                "won": int(groups["beats"].astype(bool).sum()),
                "groups": len(groups),
            }
        )
    return pd.DataFrame(rows)


def best_reference_table(results: EvaluationResults) -> pd.DataFrame:
    """Rows variable x lead time; the strongest reference (all groups pooled) and, per run, the
    model's RMSE, its skill against that reference and in how many groups it beats the best
    reference of the group."""
    summary = skill_summary(best_reference_rows(results))
    labels = dict(zip((r.name for r in results.runs), row_labels(results), strict=True))
    first = results.runs[0].name
    table: dict[str, dict[str, str]] = {}
    for (variable, lead), cell in summary.groupby(["variable", "lead_time"], sort=False):
        ref_row = cell[cell["run"] == first].iloc[0]
        row = {
            "best reference": REFERENCE_TITLES[ref_row["best_reference"]],
            "its RMSE": f"{ref_row['reference_rmse']:.4g}",
        }
        for run_name, label in labels.items():
            mine = cell[cell["run"] == run_name]
            if mine.empty:
                row[label] = "–"
                continue
            o = mine.iloc[0]
            won, n = o["won"], o["groups"]
            mark = "✅" if won == n and o["beats"] else ("❌" if won == 0 else "⚠️")
            row[label] = f"{mark} {o['model_rmse']:.4g} ({o['skill']:+.0%}, {won}/{n})"
        table[f"{variable} +{int(lead)} h"] = row
    return pd.DataFrame.from_dict(table, orient="index")


def _has_samples(run: RunScores, group: str) -> bool:
    ds = run.metrics["model"]
    return group in ds["group"].values and float(ds["count"].sel(group=group).sum()) > 0


def lead_times_of(results: EvaluationResults) -> list[int]:
    return sorted({int(h) for r in results.runs for h in r.metrics["model"]["lead_time"].values})


# --------------------------------------------------------------------------- figures


def _save(fig, path: Path) -> Path:
    try:
        with atomic_path(path, suffix=".tmp" + path.suffix) as tmp:
            fig.savefig(tmp, dpi=90)
    finally:
        plt.close(fig)
    return path


def plot_rmse_vs_lead(results: EvaluationResults, path: Path) -> Path:
    """RMSE against lead time: a panel per variable (rows) and group (columns), a line per run and baseline."""
    variables = list(
        dict.fromkeys(
            v for r in results.runs for v in r.metrics["model"]["variable"].values.tolist()
        )
    )
    groups = [g for g in results.groups if any(_has_samples(r, g) for r in results.runs)]
    fig, axes = plt.subplots(
        len(variables),
        len(groups),
        # wide enough for the legend below the panels, even with one group
        figsize=(max(3.2 * len(groups), 6.4), 2.6 * len(variables)),
        squeeze=False,
        layout="constrained",
    )
    labels = row_labels(results)
    for i, var in enumerate(variables):
        for j, group in enumerate(groups):
            ax = axes[i, j]
            for label, run in zip(labels, results.runs, strict=True):
                rmse = run.metrics["model"]["rmse"].sel(variable=var, group=group)
                ax.plot(rmse["lead_time"], rmse, marker="o", ms=3, label=label)
            first = results.runs[0]
            for reference, style in BASELINE_STYLE.items():
                if reference not in first.metrics:
                    continue
                rmse = first.metrics[reference]["rmse"].sel(variable=var, group=group)
                ax.plot(rmse["lead_time"], rmse, label=REFERENCE_TITLES[reference], **style)
            ax.set_title(f"{var} {group}", fontsize=9)
            ax.set_xlabel("lead time (h)", fontsize=8)
            ax.set_ylabel(f"RMSE ({units_of(var)})", fontsize=8)
            ax.tick_params(labelsize=7)
            ax.grid(alpha=0.3)
    # one legend for all panels, below them: inside a panel it hid that panel's lines
    handles, names = axes[0, 0].get_legend_handles_labels()
    fig.legend(
        handles,
        names,
        loc="outside lower center",
        ncols=_legend_columns(names, fig.get_figwidth()),
        fontsize=7,
        frameon=False,
    )
    fig.suptitle(f"RMSE against lead time ({describe_split(results.split)})", fontsize=10)
    return _save(fig, path)


def _legend_columns(names: list[str], width_in: float, fontsize: float = 7) -> int:
    """As many legend columns (up to 3) as fit across the figure: a wider legend is cut off."""
    # a character is about 0.55 em wide; the line sample and the gaps take about 0.6 in
    column_in = max(len(n) for n in names) * 0.55 * fontsize / 72 + 0.6
    return max(1, min(3, len(names), int(width_in // column_in)))


def plot_mean_error(run: RunScores, path: Path) -> Path:
    """Maps of the mean error (forecast - truth) per variable (rows) and lead time (columns)."""
    mean_error = run.metrics["model"]["mean_error"]
    variables, leads = mean_error["variable"].values, mean_error["lead_time"].values
    fig, axes = plt.subplots(
        len(variables),
        len(leads),
        figsize=(3.4 * len(leads), 2.9 * len(variables)),
        squeeze=False,
        layout="constrained",
    )
    for i, var in enumerate(variables):
        limits = color_limits(mean_error.sel(variable=var).values, var, error=True)
        for j, lead in enumerate(leads):
            draw_field(
                axes[i, j],
                mean_error.sel(variable=var, lead_time=lead).values,
                run.latitude,
                run.longitude,
                var,
                run.sea_mask,
                title=f"{var} +{int(lead)} h",
                units=units_of(var),
                limits=limits,
                error=True,
            )
    fig.suptitle(f"Mean error (forecast - truth), {run.name}", fontsize=10)
    return _save(fig, path)


def plot_sample(run: RunScores, path: Path) -> Path | None:
    """One forecast against the truth at the longest lead time: truth, forecast, error per variable."""
    sample = run.sample
    if sample is None:
        return None
    variables = run.metrics["model"]["variable"].values
    lead = int(run.metrics["model"]["lead_time"].values[-1])
    fig, axes = plt.subplots(
        len(variables), 3, figsize=(10.5, 2.9 * len(variables)), squeeze=False, layout="constrained"
    )
    valid = sample.init_time + pd.Timedelta(hours=lead)
    for i, var in enumerate(variables):
        truth, forecast = sample.truth[-1, i], sample.forecast[-1, i]
        limits = color_limits(np.stack([truth, forecast]), var)
        units = units_of(var)
        draw_field(
            axes[i, 0],
            truth,
            run.latitude,
            run.longitude,
            var,
            run.sea_mask,
            title=f"{var} truth",
            units=units,
            limits=limits,
        )
        draw_field(
            axes[i, 1],
            forecast,
            run.latitude,
            run.longitude,
            var,
            run.sea_mask,
            title=f"{var} forecast",
            units=units,
            limits=limits,
        )
        draw_field(
            axes[i, 2],
            forecast - truth,
            run.latitude,
            run.longitude,
            var,
            run.sea_mask,
            title=f"{var} forecast - truth",
            units=units,
            error=True,
        )
    fig.suptitle(
        f"{run.name}: init {sample.init_time:%Y-%m-%d %H:%M}, +{lead} h (valid {valid:%Y-%m-%d %H:%M})",
        fontsize=10,
    )
    return _save(fig, path)


# --------------------------------------------------------------------------- markdown and files


def markdown_fragment(
    results: EvaluationResults, base: Path | None = None, heading_level: int = 2
) -> str:
    """Markdown of the evaluation: comparison tables per lead time and the figures.

    Figure links are relative to ``base`` (default: the report folder), so the fragment
    works in ``reports/<name>/index.md`` or, with another ``base``, in a pipeline page.
    """
    h = "#" * heading_level
    out_dir = results.out_dir or Path(".")
    base = base or out_dir

    def link(name: str) -> str:
        return os.path.relpath(out_dir / name, base)

    parts = [
        f"{h} Evaluation on {describe_split(results.split)}",
        "",
        f"{h}# Skill vs the best reference",
        "",
        "Per variable and lead time: the strongest reference over the whole split and, for each "
        "model, its RMSE, its skill against that reference (1 − MSE / MSE_reference: above 0 is "
        f"better) and in how many {'seasons' if results.by == 'season' else 'groups'} it beats the "
        "strongest reference of that season. ✅ beats it everywhere, ⚠️ in some, ❌ nowhere.",
        "",
        markdown_table(best_reference_table(results)),
        "",
        _tide_note(results),
        "",
        f"Runs: {_runs_text(results.runs)}. "
        + (
            "The references read no weather forecast: a run that does knows more than they do, "
            "as a surge model driven by a weather centre does more than a tide table. "
            if any(r.forcing for r in results.runs)
            else ""
        )
        + "Scores on physical values over sea points only; seasons by init time. "
        "Climatology: hour-of-day by month means over each run's training period"
        + (
            f" ({results.runs[0].climatology_period[0][:10]} to {results.runs[0].climatology_period[1][:10]})"
            if results.runs[0].climatology_period
            else ""
        )
        + ". Skill = 1 − MSE / MSE_reference.",
        "",
    ]
    for lead in lead_times_of(results):
        parts += [f"{h}# Lead time +{lead} h", ""]
        for metric in ("rmse", *skill_metrics(results)):
            parts += [
                f"**{METRIC_TITLES[metric]}**",
                "",
                markdown_table(comparison_table(results, metric, lead)),
                "",
            ]
    figures = [p for p in results.files if p.suffix == ".png"]
    if figures:
        parts += [f"{h}# Figures", ""]
        for path in figures:
            parts += [f"![{path.stem}]({link(path.name)})", ""]
    parts += [
        f"Full tables: [metrics.csv]({link('metrics.csv')}), [comparison_rmse.csv]({link('comparison_rmse.csv')}).",
        "",
    ]
    return "\n".join(parts)


def _tide_note(results: EvaluationResults) -> str:
    sources = {(r.tide_source, r.tide_period) for r in results.runs if r.tide_source}
    if not sources:
        return "No tide references: these runs' stores or configs allow no tide fit."
    notes = []
    for source, period in sorted(sources, key=str):
        span = f" ({period[0][:10]} to {period[1][:10]})" if period else ""
        notes.append(f"{source}{span}")
    return (
        "References: persistence obs(t0); climatology (hour-of-day by month means); tide, the "
        "harmonic prediction at the valid time; tide + persisted anomaly, tide(t0+L) + "
        "(obs(t0) − tide(t0)); tide + damped anomaly, the anomaly scaled by a factor per variable "
        "and lead time fitted on the training split; tide + regressed anomaly, the anomaly at "
        "t0+L regressed on its lags at each point and over the basin, or (zos, uo, vo, up to "
        "+12 h) on the lags of the field's leading EOFs (ridge least squares on the training "
        "split; for each variable and lead time the form and its strength that did best on "
        "held-out training weeks, else the damped anomaly or the tide). Tidal constants: "
        + "; ".join(notes)
        + "."
        + "".join(
            f" The tide + regressed anomaly uses: {uses}."
            for uses in sorted({r.regressed_uses for r in results.runs if r.regressed_uses})
        )
    )


def _write_frame(frame: pd.DataFrame, path: Path) -> Path:
    atomic_write_text(path, frame.to_csv())
    return path


def write_evaluation_report(
    results: EvaluationResults, out_dir: Path, figures: bool = True
) -> list[Path]:
    """Write tables (CSV and Markdown), figures and ``index.md`` to ``out_dir``; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    results.out_dir = out_dir
    files: list[Path] = []
    long = results.table()
    atomic_write_text(out_dir / "metrics.csv", long.to_csv(index=False))
    files.append(out_dir / "metrics.csv")
    # the Markdown tables live in index.md only (a pipeline report includes every .md it finds)
    files.append(
        _write_frame(best_reference_rows(results).set_index("run"), out_dir / "skill_vs_best.csv")
    )
    for metric in ("rmse", *skill_metrics(results)):
        frames = []
        for lead in lead_times_of(results):
            table = comparison_table(results, metric, lead)
            flat = table.copy()
            flat.columns = [f"{var}_{group}" for var, group in table.columns]
            flat.insert(0, "lead_time_h", lead)
            frames.append(flat)
        files.append(
            _write_frame(pd.concat(frames).rename_axis("row"), out_dir / f"comparison_{metric}.csv")
        )
    if figures:
        files.append(plot_rmse_vs_lead(results, out_dir / "rmse_vs_lead.png"))
        for run in results.runs:
            files.append(plot_mean_error(run, out_dir / f"mean_error_{run.name}.png"))
            sample = plot_sample(run, out_dir / f"sample_{run.name}.png")
            if sample is not None:
                files.append(sample)
    results.files = files
    index = out_dir / "index.md"
    atomic_write_text(
        index,
        f"# Evaluation: {out_dir.name}\n\n"
        + markdown_fragment(results, base=out_dir, heading_level=2),
    )
    files.append(index)
    return files


def _runs_text(runs: Sequence[Any]) -> str:
    """```a` (214 samples), `b` (214 samples)``, with the weather forecast each reads: said once
    when every run reads the same one."""
    forcings = {run.forcing for run in runs}
    if len(runs) > 1 and len(forcings) == 1 and runs[0].forcing:
        names = ", ".join(f"`{run.name}` ({run.samples} samples)" for run in runs)
        return f"{names}; each reads the weather forecast {runs[0].forcing}"
    return ", ".join(_run_line(run) for run in runs)


def _run_line(run: Any) -> str:
    """```name` (214 samples)``, with the weather forecast it reads, if any."""
    forecast = f"; reads the weather forecast {run.forcing}" if run.forcing else ""
    return f"`{run.name}` ({run.samples} samples{forecast})"
