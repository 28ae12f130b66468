"""Score trained runs on a split of their store, against persistence, climatology and the tide.

Offers:

* :func:`evaluate_runs` - the library entry point (the CLI and the pipeline call it): score
  each run on its ``test`` (or ``validation``) split, grouped by season, and write tables
  and figures to ``reports/<name>/``; or, with ``split="all"``, on every init time of a
  held-out store (another year or another twin: a test of a year, not of a few weeks), with
  the references still fitted on the run's own training period. Returns :class:`EvaluationResults`.
* :func:`score_model` - stream one model over a dataset into accumulators for the model and
  every reference (persistence, climatology, tide, tide + persisted, damped and regressed
  anomaly); memory does not depend on the number of samples.
* :func:`reference_tides` - the tide references of a run: its own ``tides.nc`` or, for a run
  without one, a fit on the run's training period (never on its validation or test times).
* :class:`RunScores`, :class:`EvaluationResults` - what comes back, with a long-form table.
* :func:`default_report_name` - the report folder name derived from the run names.

All scores are on physical (de-normalised) values over sea points only.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr
from torch import nn

from seacast.errors import ConfigError, DataError, check_writable
from seacast.evaluation.baselines import (
    TIDE_REFERENCES,
    Climatology,
    TideReferences,
    persistence,
)
from seacast.evaluation.metrics import (
    ErrorAccumulator,
    error_accum,
    error_compute,
    error_init,
    error_merge,
    skill_score,
)
from seacast.seasons import check_grouping, group_labels, group_names
from seacast.timeaxis import hour_to_stamp, hours_to_times

log = logging.getLogger("seacast.evaluate")

SPLITS = ("test", "validation", "all")
REFERENCES = ("persistence", "climatology", *TIDE_REFERENCES)


@dataclass
class SampleForecast:
    """One forecast against the truth, kept for the figure: physical ``[n_lead, C, H, W]``."""

    init_time: pd.Timestamp
    forecast: np.ndarray
    truth: np.ndarray


@dataclass
class RunScores:
    """Scores of one run: ``metrics`` per reference (model, persistence, climatology) and skill."""

    run_dir: Path
    name: str
    model: str
    trainer: str
    metrics: dict[str, xr.Dataset]
    skill: xr.Dataset
    samples: int
    latitude: np.ndarray
    longitude: np.ndarray
    sea_mask: np.ndarray
    sample: SampleForecast | None = None
    climatology_period: tuple[str, str] | None = None
    tide_source: str | None = None
    tide_period: tuple[str, str] | None = None
    regressed_uses: str | None = None  # AnomalyRegression.describe() of its reference
    forcing: str = ""  # the weather-forecast inputs it reads (ForcingInputs.describe), if any


@dataclass
class EvaluationResults:
    """Everything :func:`evaluate_runs` computed, and the files it wrote."""

    runs: list[RunScores]
    split: str
    by: str
    groups: tuple[str, ...]
    out_dir: Path | None = None
    files: list[Path] = field(default_factory=list)

    def table(self) -> pd.DataFrame:
        """Long-form scores: one row per run x reference x group x lead time x variable."""
        rows = []
        for run in self.runs:
            for reference, ds in run.metrics.items():
                frame = ds[["mse", "rmse", "mae", "bias", "count"]].to_dataframe().reset_index()
                if reference == "model":
                    skill = run.skill.to_dataframe().reset_index()
                    frame = frame.merge(skill, on=["group", "lead_time", "variable"], how="left")
                frame.insert(0, "reference", reference)
                frame.insert(0, "trainer", run.trainer)
                frame.insert(0, "model", run.model)
                frame.insert(0, "run", run.name)
                rows.append(frame)
        table = pd.concat(rows, ignore_index=True)
        return table.drop(columns=[c for c in ("samples",) if c in table.columns])


# --------------------------------------------------------------------------- scoring


def _accumulators(
    variables: list[str],
    lead_hours: list[int],
    groups: tuple[str, ...],
    shape: tuple[int, int],
    tides: TideReferences | None,
):
    references = REFERENCES[:2] + (tides.names() if tides is not None else ())
    return {
        "model": error_init(variables, lead_hours, groups, shape=shape),
        **{ref: error_init(variables, lead_hours, groups) for ref in references},
    }


def score_model(
    model: nn.Module,
    normaliser: Any,
    dataset: Any,
    *,
    lead_hours: list[int],
    groups: tuple[str, ...],
    labels: np.ndarray | str,
    climatology: Climatology | None,
    batch_size: int = 8,
    device: str = "cpu",
    keep_sample: int | None = None,
    tide_references: TideReferences | None = None,
    references: bool = True,
    gains: Any = None,
) -> tuple[dict[str, ErrorAccumulator], SampleForecast | None]:
    """Stream ``model`` over ``dataset`` (a window dataset) and accumulate model and reference errors.

    Model values are decoded with the dataset's encoding (the tide added back for tide-aware
    runs). ``labels`` gives the group of each sample (array as long as the dataset) or one label
    for all. ``keep_sample`` is the index of a sample whose forecast and truth are kept for a
    figure. Without ``tide_references`` only persistence and climatology are scored;
    ``references=False`` scores the model alone (the references came from another run).
    ``gains`` (init hours -> ``[B, n_lead, C]``) scores the model with each init time's own base
    gain, as ``forecast --adapt zo`` fits it (:func:`seacast.forecast.adaptation.gains_at_inits`).
    """
    from seacast.forecast.adaptation import predict_with_gains
    from seacast.windows import make_loader

    variables = list(normaliser.variables)
    sea_mask = np.asarray(dataset.sea_mask, dtype=bool)
    encoding = dataset.encoding
    accs = _accumulators(variables, lead_hours, groups, sea_mask.shape, tides=tide_references)
    if not references:
        accs = {"model": accs["model"]}
    sample = None
    model.eval()
    seen = 0
    lead_h = np.asarray(lead_hours, dtype=np.int64)
    # a window's frames are consecutive store times (windows never cross a gap)
    step_hours = int(np.min(np.diff(dataset.hours))) if len(dataset.hours) > 1 else 1
    for batch in make_loader(dataset, batch_size, device=device):
        x, y = batch["x"].to(device), batch["y"]
        init_hours = batch["init_time"].numpy().astype(np.int64)
        with torch.no_grad():
            if gains is None:
                prediction = model(x).float().cpu()
            else:
                prediction = predict_with_gains(model, x, gains(init_hours)).float().cpu()
        valid_hours = init_hours[:, None] + lead_h[None, :]
        # physical values, NaN on land (the metrics skip NaN)
        forecast = encoding.decode(prediction, valid_hours)
        truth = encoding.decode(y, valid_hours)
        # the input window in physical units, oldest first: [B, lags, C, H, W]
        lags = x.shape[2]
        input_hours = init_hours[:, None] - (lags - 1 - np.arange(lags))[None, :] * step_hours
        sea_inputs = x[:, : len(variables)].cpu()  # without the forcing channels
        inputs = encoding.decode(sea_inputs.permute(0, 2, 1, 3, 4), input_hours)
        n = len(x)
        batch_labels = [labels] * n if isinstance(labels, str) else list(labels[seen : seen + n])
        error_accum(accs["model"], forecast, truth, batch_labels, sea_mask)
        if references:
            _score_references(
                accs,
                inputs,
                truth,
                input_hours,
                valid_hours,
                batch_labels,
                sea_mask,
                climatology,
                tide_references,
            )
        if keep_sample is not None and seen <= keep_sample < seen + n:
            k = keep_sample - seen
            stamp = hour_to_stamp(batch["init_time"][k])
            sample = SampleForecast(stamp, forecast[k].copy(), truth[k].copy())
        seen += n
    return accs, sample


def _score_references(
    accs: dict[str, ErrorAccumulator],
    inputs: np.ndarray,
    truth: np.ndarray,
    input_hours: np.ndarray,
    valid_hours: np.ndarray,
    labels: list[str],
    sea_mask: np.ndarray,
    climatology: Climatology | None,
    tide_references: TideReferences | None,
) -> None:
    """Accumulate every reference's errors for one batch (physical ``inputs [B, lags, C, H, W]``
    at ``input_hours [B, lags]``, ``truth [B, n_lead, C, H, W]``)."""
    n_lead = valid_hours.shape[1]
    last = inputs[:, -1]
    error_accum(accs["persistence"], persistence(last, n_lead), truth, labels, sea_mask)
    if climatology is not None:
        valid = hours_to_times(valid_hours.reshape(-1))
        clim = climatology.predict(valid).reshape(truth.shape)
        error_accum(accs["climatology"], clim, truth, labels, sea_mask)
    if tide_references is not None:
        for ref, values in tide_references.forecasts(inputs, input_hours, valid_hours).items():
            error_accum(accs[ref], values, truth, labels, sea_mask)


def reference_tides(
    run: Any,
    sets: Any,
    store_path: Path,
    cache: dict[Any, Any] | None = None,
) -> TideReferences:
    """The run's tide references: its ``tides.nc`` when it has one, else a fit on its training
    period; and the regressed anomaly, fitted on that period with the run's lags.

    All see the training period only. Runs on the same store, variables, split and tide
    settings share one fit through ``cache``.
    """
    from seacast.tides import train_periods
    from seacast.training.loop import run_tides

    cfg = run.config
    variables, leads = list(cfg.samples.variables), list(cfg.samples.lead_times)
    periods = train_periods(sets.plan)
    cache = cache if cache is not None else {}
    if run.tides is not None and all(h in run.tides.damping_lead_times for h in leads):
        tides, source = run.tides.select(variables), "the run's tides.nc"
    else:
        key = (
            "tides",
            str(Path(store_path).resolve()),
            tuple(variables),
            tuple(leads),
            tuple(periods),
            json.dumps(cfg.tides.model_dump(), sort_keys=True),
        )
        if key not in cache:
            log.info("fitting tide references on the training period of %s", cfg.name)
            cache[key] = run_tides(
                cfg, sets, Path(store_path), reuse=False, save=False, store_path=Path(store_path)
            )
        tides = cache[key]
        source = "fitted at evaluation on the run's training period (the run has no tides.nc)"
    regression = _anomaly_regression(cfg, tides, sets.plan, store_path, cache)
    return TideReferences(
        tides, tides.damping_for(leads), source, regression, np.asarray(sets.sea_mask, bool)
    )


def _anomaly_regression(
    cfg: Any, tides: Any, plan: Any, store_path: Path, cache: dict[Any, Any]
) -> Any:
    """The regressed-anomaly reference of a run on ``plan``'s training period (shared through
    ``cache``), or None with a warning when that period is too short to fit one."""
    from seacast.anomaly_regression import fit_for_run
    from seacast.tides import train_periods

    periods = train_periods(plan)
    key = (
        "regression",
        str(Path(store_path).resolve()),
        tuple(cfg.samples.variables),
        tuple(cfg.samples.lead_times),
        int(cfg.samples.lags),
        tuple(periods),
        tides.period,
        tides.damping.tobytes(),
        int(cfg.tides.anomaly_modes),
        int(cfg.tides.anomaly_modes_max_lead),
    )
    if key not in cache:
        log.info("fitting the regressed-anomaly reference on the training period of %s", cfg.name)
        try:
            cache[key] = fit_for_run(cfg, tides, plan, store_path)
        except DataError as exc:
            log.warning("no regressed-anomaly reference for %s: %s", cfg.name, exc.problem)
            cache[key] = None
    return cache[key]


def _train_periods(plan: Any) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    periods = []
    for selection in plan.train:
        for lo, hi in selection.ranges:
            periods.append((hour_to_stamp(lo), hour_to_stamp(hi)))
    return periods


def _run_label(cfg: Any) -> tuple[str, str]:
    return cfg.model.name, cfg.trainer.name


def evaluate_run(
    run_dir: Path | str,
    *,
    split: str = "test",
    by: str = "season",
    store_path: Path | str | None = None,
    batch_size: int = 8,
    which: str = "best",
    device: str = "cpu",
    climatology_cache: dict[Any, Any] | None = None,
    every_hours: int = 1,
    adapt_hours: int | None = None,
) -> RunScores:
    """Score one run (see :func:`evaluate_runs`); with ``adapt_hours``, the run with its base
    gain refitted at each init time on that many hours before it (``<run>+gain``)."""
    from seacast.training.checkpoint import load_run
    from seacast.windows import open_samples

    run_dir = Path(run_dir)
    run = load_run(run_dir, which=which, device=device)
    cfg = run.config
    store_path = Path(store_path or cfg.store)
    if split == "all":
        sets, own = _held_out_sets(run, run_dir, store_path)
    else:
        sets = own = open_samples(store_path, cfg.samples)
    if run.tides is not None:
        sets = sets.with_tides(run.tides)
    sets = sets.with_forcing(run.forcing)
    datasets = _scored_datasets(sets, split, by, every_hours, cfg.trainer.preload_gb)
    total = sum(len(d) for d in datasets.values())
    if total == 0:
        raise DataError(
            f"the {split} split of {store_path} holds no sample for run {run_dir.name} (preset {sets.plan.preset})",
            "evaluate on a store that covers the run's test period, or use --split validation",
        )
    groups = group_names(by, tuple(datasets))
    cache = climatology_cache if climatology_cache is not None else {}
    # the references see the training period of the store the run trained on (with a
    # held-out store, that is the run's own store, not the one scored)
    own_store = own.store_path
    climatology, climatology_key = _climatology(cfg, own, own_store, cache)
    tides = reference_tides(run, own, own_store, cache)

    # runs scored on the same samples share their references' scores: compute them once
    scores_key = _reference_scores_key(climatology_key, cfg, by, datasets, tides)
    known = cache.get(scores_key)
    gains = None
    if adapt_hours is not None:
        gains = _adapted_gains(run, datasets, store_path, sets.sea_mask, adapt_hours, batch_size)
    merged, sample = _score_datasets(
        run,
        datasets,
        by=by,
        groups=groups,
        climatology=climatology,
        tides=tides,
        batch_size=batch_size,
        device=device,
        references=known is None,
        gains=gains,
    )
    if known is None:
        known = cache[scores_key] = {k: acc for k, acc in merged.items() if k != "model"}
    metrics, lat, lon = _metrics(merged | known, store_path)
    model_name, trainer = _run_label(cfg)
    if adapt_hours is not None:
        trainer = f"{trainer}, gain adapted"
    return RunScores(
        run_dir=run_dir,
        name=run_dir.name + ("+gain" if adapt_hours is not None else ""),
        model=model_name,
        trainer=trainer,
        metrics=metrics,
        skill=_skill(metrics),
        samples=total,
        latitude=lat,
        longitude=lon,
        sea_mask=np.asarray(sets.sea_mask, dtype=bool),
        sample=sample,
        climatology_period=climatology.period,
        tide_source=tides.source,
        tide_period=tides.tides.period,
        regressed_uses=tides.regression.describe() if tides.regression is not None else None,
        forcing=run.forcing.describe() if run.forcing is not None else "",
    )


def _has_base(run_dir: Path | str) -> bool:
    """Whether the run's model has a base, whose gain ``--adapt gain`` refits (logged if not)."""
    from seacast.config import ExperimentConfig, load_config

    config = Path(run_dir) / "config.yaml"
    if not config.is_file():
        return True  # evaluate_run says what is missing
    base = load_config(ExperimentConfig, config).model.base
    if base == "none":
        log.warning("%s has no base (model.base: none): scored as trained only", run_dir)
    return base != "none"


def _adapted_gains(
    run: Any,
    datasets: dict[str, Any],
    store_path: Path,
    sea_mask: np.ndarray,
    adapt_hours: int,
    batch_size: int,
) -> Any:
    """Init hours -> the base gains ``forecast --adapt zo`` fits at those init times."""
    from seacast.forecast.adaptation import AdaptationSite, gains_at_inits
    from seacast.store import open_store
    from seacast.windows import Timeline

    if getattr(run.model, "base_gain", None) is None:
        raise ConfigError(
            f"--adapt gain needs runs with a base (model.base: {run.config.model.base})",
            "evaluate this run without --adapt, or train it with model.base: tide",
        )
    store = open_store(store_path)
    try:
        timeline = Timeline.from_store(store)
    finally:
        store.close()
    init_hours = np.unique(np.concatenate([d.init_hours for d in datasets.values()]))
    position = np.searchsorted(timeline.hours, init_hours)
    site = AdaptationSite(
        run, store_path, 0, timeline.hours, timeline.step_hours, list(timeline.gaps), sea_mask
    )
    log.info("fitting the gain at %d init times (%d h windows)", len(init_hours), adapt_hours)
    gains = gains_at_inits(site, position, adapt_hours=adapt_hours, batch=batch_size)

    def lookup(hours: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(gains[np.searchsorted(init_hours, hours)], dtype=torch.float32)

    return lookup


def _held_out_sets(run: Any, run_dir: Path, store_path: Path) -> tuple[Any, Any]:
    """The samples of a held-out store as one split (its ``train`` holds every init time),
    and the run's own samples, whose training period the references are fitted on."""
    from seacast.config import SplitConfig
    from seacast.windows import open_samples

    cfg = run.config
    own = open_samples(cfg.store, cfg.samples)
    whole = cfg.samples.model_copy(
        update={"split": SplitConfig(preset="fractions", fractions=(1.0, 0.0, 0.0))}
    )
    sets = open_samples(store_path, whole)
    if store_path.resolve() == own.store_path.resolve() or sets.fingerprint == own.fingerprint:
        raise ConfigError(
            f"--split all scores every time of {store_path}, the store run {run_dir.name} trained "
            "on: its training samples would count as test",
            "pass a held-out store with --store (another year or twin seed), or use --split test",
        )
    if sets.shape != own.shape or not np.array_equal(sets.sea_mask, own.sea_mask):
        raise DataError(
            f"the store {store_path} is on another grid than run {run_dir.name}'s store "
            f"({sets.shape[0]}x{sets.shape[1]} against {own.shape[0]}x{own.shape[1]}, or another "
            "land mask)",
            "regrid the held-out data with the same grid settings as the run's store",
        )
    return sets, own


def _scored_datasets(
    sets: Any, split: str, by: str, every_hours: int, preload_gb: float
) -> dict[str, Any]:
    """The datasets scored, by group name ('' for one group): thinned and preloaded."""
    if split == "all":
        datasets = {"all" if by == "split" else "": sets.train}
    elif split == "test":
        datasets = dict(sets.test_groups) if by == "split" else {"": sets.test}
    else:
        datasets = {"validation" if by == "split" else "": sets.validation}
    # scoring every few hours keeps the tide's phases sampled evenly at a fraction of the cost
    datasets = {name: dataset.thinned(every_hours) for name, dataset in datasets.items()}
    for dataset in datasets.values():
        dataset.preload(preload_gb)
    return datasets


def _climatology(
    cfg: Any, sets: Any, store_path: Path, cache: dict[Any, Any]
) -> tuple[Climatology, tuple[Any, ...]]:
    """The climatology of the run's training period (shared through ``cache``) and its cache key."""
    from seacast.store import open_store

    periods = _train_periods(sets.plan)
    key = (str(store_path.resolve()), tuple(cfg.samples.variables), tuple(periods))
    if key not in cache:
        store = open_store(store_path)
        cache[key] = Climatology.from_store(store, cfg.samples.variables, periods)
        store.close()
    return cache[key], key


def _reference_scores_key(
    climatology_key: tuple[Any, ...],
    cfg: Any,
    by: str,
    datasets: dict[str, Any],
    tides: TideReferences,
) -> tuple[Any, ...]:
    """What the references' scores depend on: store, variables, samples, leads, grouping, tides."""
    samples_key = hashlib.sha256(
        b"".join(d.init_hours.astype(np.int64).tobytes() for d in datasets.values())
    ).hexdigest()
    return (
        "reference-scores",
        climatology_key,
        tuple(cfg.samples.lead_times),
        int(cfg.samples.lags),  # the regressed anomaly reads the run's lags
        by,
        tuple(datasets),
        samples_key,
        tides.tides.period,
        tuple(tides.tides.constituents),
        tides.damping.tobytes(),
        tides.names(),
    )


def _score_datasets(
    run: Any,
    datasets: dict[str, Any],
    *,
    by: str,
    groups: tuple[str, ...],
    climatology: Climatology,
    tides: TideReferences,
    batch_size: int,
    device: str,
    references: bool,
    gains: Any = None,
) -> tuple[dict[str, ErrorAccumulator], SampleForecast | None]:
    """:func:`score_model` over each dataset, merged; keeps the middle sample of the first one."""
    merged: dict[str, ErrorAccumulator] | None = None
    sample = None
    for name, dataset in datasets.items():
        if len(dataset) == 0:
            continue
        labels: np.ndarray | str = (
            name if by == "split" else group_labels(hours_to_times(dataset.init_hours), by)
        )
        accs, kept = score_model(
            run.model,
            run.normaliser,
            dataset,
            lead_hours=list(run.config.samples.lead_times),
            groups=groups,
            labels=labels,
            climatology=climatology,
            batch_size=batch_size,
            device=device,
            keep_sample=len(dataset) // 2 if sample is None else None,
            tide_references=tides,
            references=references,
            gains=gains,
        )
        sample = sample or kept
        merged = accs if merged is None else {k: error_merge(merged[k], accs[k]) for k in accs}
    assert merged is not None
    return merged, sample


def _metrics(
    accs: dict[str, ErrorAccumulator], store_path: Path
) -> tuple[dict[str, xr.Dataset], np.ndarray, np.ndarray]:
    """Each accumulator's metrics (error maps on the store's coordinates), and those coordinates."""
    metrics = {reference: error_compute(acc) for reference, acc in accs.items()}
    with xr.open_zarr(store_path, consolidated=False, zarr_format=3) as store:
        lat, lon = store["latitude"].values, store["longitude"].values
    for ds in metrics.values():
        if "mean_error" in ds:
            ds.coords["latitude"] = lat
            ds.coords["longitude"] = lon
    return metrics, lat, lon


def _skill(metrics: dict[str, xr.Dataset]) -> xr.Dataset:
    """The model's MSE skill against each reference scored."""
    return xr.Dataset(
        {
            f"skill_{ref}": skill_score(metrics["model"]["mse"], metrics[ref]["mse"])
            for ref in REFERENCES
            if ref in metrics
        }
    )


def default_report_name(run_dirs: list[Path | str], split: str = "test") -> str:
    """``<run>-<split>`` for one run, ``<a>+<b>[+<c>]-<split>`` for up to three, else a short hash."""
    names = [Path(p).name for p in run_dirs]
    if len(names) <= 3:
        return "+".join(names) + f"-{split}"
    digest = hashlib.sha256("\n".join(sorted(names)).encode()).hexdigest()[:8]
    return f"compare-{len(names)}runs-{digest}-{split}"


def evaluate_runs(
    run_dirs: list[Path | str],
    split: str = "test",
    by: str = "season",
    out_dir: Path | str | None = None,
    *,
    name: str | None = None,
    reports_dir: Path | str = "reports",
    store_path: Path | str | None = None,
    batch_size: int = 8,
    which: str = "best",
    device: str = "cpu",
    figures: bool = True,
    every_hours: int = 1,
    adapt: str | None = None,
    adapt_hours: int = 56 * 24,
) -> EvaluationResults:
    """Score each run on ``split`` grouped ``by`` season (or ``all``, or the split's own ``split`` groups).

    Writes Markdown and CSV tables, figures and ``index.md`` to ``out_dir`` (default
    ``reports_dir/<name>``, ``name`` derived from the runs) unless ``out_dir`` is False-y and
    ``reports_dir`` is None. ``every_hours`` > 1 scores only init times on multiples of that
    many hours (a cheaper, evenly spread subset). ``adapt="gain"`` also scores each run with a
    base as ``forecast --adapt zo`` would forecast it (``<run>+gain``: the base gain refitted at
    each init time on the ``adapt_hours`` before it). Returns the results (the pipeline's report
    stage uses them).
    """
    from seacast.evaluation.report import write_evaluation_report

    if not run_dirs:
        raise ConfigError(
            "no run folders to evaluate",
            "pass one or more runs, e.g. seacast evaluate runs/demo-res_3ddr_unet-backprop",
        )
    if split not in SPLITS:
        raise ConfigError(
            f"unknown split '{split}'", f"use --split with one of: {', '.join(SPLITS)}"
        )
    check_grouping(by)
    if adapt not in (None, "gain"):
        raise ConfigError(f"unknown adaptation '{adapt}'", "use --adapt gain, or leave it out")
    if out_dir is None and reports_dir is not None:
        out_dir = Path(reports_dir) / (name or default_report_name(run_dirs, split))
    if out_dir:
        # a read-only or missing place fails now, not after all the scoring
        check_writable(out_dir, "--out DIR")
    cache: dict[Any, Any] = {}
    runs = []
    for run_dir in run_dirs:
        log.info("evaluating %s on the %s split", run_dir, split)
        for hours in (None, adapt_hours) if adapt and _has_base(run_dir) else (None,):
            runs.append(
                evaluate_run(
                    run_dir,
                    split=split,
                    by=by,
                    store_path=store_path,
                    batch_size=batch_size,
                    which=which,
                    device=device,
                    climatology_cache=cache,
                    every_hours=every_hours,
                    adapt_hours=hours,
                )
            )
    groups = tuple(
        dict.fromkeys(g for run in runs for g in run.metrics["model"]["group"].values.tolist())
    )
    results = EvaluationResults(runs=runs, split=split, by=by, groups=groups)
    if out_dir:
        results.out_dir = Path(out_dir)
        results.files = write_evaluation_report(results, Path(out_dir), figures=figures)
    return results
