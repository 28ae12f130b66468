"""The forecast driver: :func:`forecast` loads a run, picks the init time, optionally adapts, predicts
every lead time and writes the file atomically; :class:`ForecastResult` says what it did.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import xarray as xr

from seacast.config import ExperimentConfig, fingerprint, to_dict
from seacast.errors import ConfigError, DataError
from seacast.forecast.adaptation import (
    ADAPT_MMAP_THRESHOLD,
    ADAPT_TARGETS,
    DEFAULT_ADAPT_HOURS,
    AdaptationSite,
    adapt_gain,
    adapt_zo,
    fix_mmap_threshold,
    peak_rss_mb,
)
from seacast.forecast.inputs import (
    _read_frames,
    check_grid,
    model_input,
    resolve_init_time,
    resolve_store_path,
    valid_init_times,
)
from seacast.forecast.schema import forecast_dataset
from seacast.forecast.writing import _publish, _remove, forecast_name, write_dataset
from seacast.timeaxis import hour_to_stamp as _hours_to_stamp
from seacast.timeaxis import stamp_to_hour

# one logger for the whole forecast package, as when it was one module
log = logging.getLogger("seacast.forecast")


FORMATS = ("zarr", "netcdf")


@dataclass
class ForecastResult:
    """The outcome of :func:`forecast`."""

    path: Path
    init_time: pd.Timestamp
    skipped: bool
    adaptation: dict[str, Any] | None = None
    plots: list[Path] = field(default_factory=list)
    peak_rss_mb: float | None = None


def forecast(
    run_dir: Path | str,
    *,
    store_path: Path | str | None = None,
    init_time: str | pd.Timestamp = "latest",
    out_dir: Path | str = "forecasts",
    fmt: Literal["zarr", "netcdf"] = "zarr",
    plots: bool = False,
    adapt: Literal["zo"] | None = None,
    adapt_target: Literal["auto", "gain", "network"] = "auto",
    adapt_hours: int | None = None,
    adapt_steps: int = 40,
    adapt_lr: float | None = None,
    force: bool = False,
    which: str = "best",
    device: str = "cpu",
) -> ForecastResult:
    """Forecast every lead time of the run from ``init_time`` and write ``<out_dir>/<init>.zarr``.

    The file is written under a temporary name in ``out_dir`` and renamed when complete, so
    a failure midway leaves no partial forecast. If the forecast for that init time exists,
    nothing is done (``skipped=True``) unless ``force``.
    """
    from seacast.store import open_store
    from seacast.training.checkpoint import load_run

    run_dir, out_dir = Path(run_dir), Path(out_dir)
    _check_request(run_dir, fmt, adapt, which)
    if adapt_target not in ("auto", *ADAPT_TARGETS):
        raise ConfigError(
            f"unknown adaptation target '{adapt_target}'",
            f"use --adapt-target auto, {' or '.join(ADAPT_TARGETS)}",
        )
    store_path = resolve_store_path(run_dir, store_path)
    run = load_run(run_dir, which=which, device=device)
    if adapt_target == "auto":
        # the gain where the model has a base: it helped on three held-out years, the network did not
        has_base = getattr(run.model, "base_gain", None) is not None
        adapt_target = "gain" if has_base else "network"
    adapt_hours = adapt_hours or DEFAULT_ADAPT_HOURS[adapt_target]
    cfg: ExperimentConfig = run.config
    store = open_store(store_path)
    check_grid(store, run, store_path)
    window = _input_window(
        store, store_path, list(cfg.samples.variables), cfg.samples.lags, init_time, run.forcing
    )
    init = _hours_to_stamp(window.hours[window.init_index])

    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / forecast_name(init, fmt, adapted=adapt is not None)
    if final.exists() and not force:
        _check_same_run(final, fmt, run_dir)
        log.info("forecast %s exists: skipped (use --force to redo it)", final)
        store.close()
        return ForecastResult(final, init, skipped=True)

    adaptation = None
    if adapt == "zo":
        adaptation = _adapt(
            run, Path(store_path), window, adapt_target, adapt_hours, adapt_steps, adapt_lr
        )
    encoding = run.encoding_for(window.sea_mask)
    physical, valid_hours = _predict(run, encoding, window, device)
    peak = peak_rss_mb()
    if adaptation is not None:
        adaptation["peak_rss_mb"] = round(peak, 1)
    provenance = _provenance(run, run_dir, store, Path(store_path), init, adaptation, adapt_hours)
    ds = _forecast_file(run, store, window.sea_mask, physical, init, provenance)
    if run.tides is not None:
        _add_tide(ds, run, encoding, window.sea_mask, valid_hours)
    store.close()

    published = _write_forecast(ds, final, fmt, plots, list(cfg.samples.variables))
    log.info("forecast from %s written to %s", init, final)
    return ForecastResult(
        final,
        init,
        skipped=False,
        adaptation=adaptation,
        plots=published,
        peak_rss_mb=peak,
    )


def _check_request(run_dir: Path, fmt: str, adapt: str | None, which: str) -> None:
    """ConfigError for an unknown format or adaptation; DataError for a run without the checkpoint."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown forecast format '{fmt}'", f"use one of: {', '.join(FORMATS)}")
    if adapt not in (None, "zo"):
        raise ConfigError(f"unknown adaptation '{adapt}'", "use --adapt zo (or leave it out)")
    name = "checkpoint_best.pt" if which == "best" else "checkpoint_last.pt"
    if not (run_dir / name).is_file():
        raise DataError(
            f"run {run_dir} has no {name}"
            + ("" if run_dir.is_dir() else " (the folder does not exist)"),
            "train the run first (seacast train --config ...) or pass the right --run folder",
        )


@dataclass
class _InputWindow:
    """The store's time axis and the ``lags`` physical frames up to the chosen init time."""

    hours: np.ndarray
    step_hours: float
    gaps: list[tuple[int, int]]
    sea_mask: np.ndarray
    init_index: int
    frame_indices: np.ndarray
    frames: np.ndarray  # [lags, C, H, W], NaN on land
    forcing_frames: torch.Tensor | None = None  # encoded weather forecast, init time .. horizon


def _input_window(
    store: xr.Dataset,
    store_path: Path,
    variables: list[str],
    lags: int,
    init_time: str | pd.Timestamp,
    forcing: Any = None,
) -> _InputWindow:
    """Resolve ``init_time`` and read its frames; 'latest' steps back past frames still being
    written. With ``forcing`` (the run's ForcingInputs) the init time needs the weather forecast
    up to its longest lead time, so the latest one is that much before the store's end."""
    from seacast.store import store_gaps, store_step_hours, time_hours

    hours = np.asarray(time_hours(store["time"].values), dtype=np.int64)
    step_hours = store_step_hours(store)
    gaps = [(stamp_to_hour(a), stamp_to_hour(b)) for a, b in store_gaps(store)]
    ahead = forcing.horizon_steps if forcing is not None else 0
    if forcing is not None:
        forcing.check_store(store)
    valid = valid_init_times(hours, step_hours, gaps, lags, ahead)
    init_index = resolve_init_time(hours, valid, init_time, lags)
    sea_mask = np.asarray(store["sea_mask"].values, dtype=bool)
    frame_indices = np.arange(init_index - lags + 1, init_index + 1)
    frames = _read_frames(store, variables, frame_indices)

    def read_ahead(index: int) -> np.ndarray:
        """The forecast's physical frames from the init time ``index`` to its horizon."""
        if forcing is None:
            return np.zeros((0, 0, *sea_mask.shape))
        return _read_frames(store, forcing.series, np.arange(index, index + ahead + 1))

    forecast_ahead = read_ahead(init_index)
    if str(init_time) == "latest":
        # a frame still NaN over sea was not written completely: step back to a whole window
        while not (
            np.isfinite(frames[:, :, sea_mask]).all()
            and np.isfinite(forecast_ahead[:, :, sea_mask]).all()
        ):
            earlier = valid[valid < init_index]
            if earlier.size == 0:
                raise DataError(
                    f"store {store_path} holds no complete window of {lags} frames",
                    "re-run regrid for the recent months",
                )
            init_index = int(earlier[-1])
            frame_indices = np.arange(init_index - lags + 1, init_index + 1)
            frames = _read_frames(store, variables, frame_indices)
            forecast_ahead = read_ahead(init_index)
    # from the init time on, as with_channels indexes them
    forcing_frames = forcing.encode(forecast_ahead, sea_mask) if forcing is not None else None
    return _InputWindow(
        hours, step_hours, gaps, sea_mask, init_index, frame_indices, frames, forcing_frames
    )


def _adapt(
    run: Any,
    store_path: Path,
    window: _InputWindow,
    target: str,
    adapt_hours: int,
    steps: int,
    lr: float | None,
) -> dict[str, Any]:
    """:func:`adapt_gain` or :func:`adapt_zo` on the hours before the window's init time; its record."""
    site = AdaptationSite(
        run,
        store_path,
        window.init_index,
        window.hours,
        window.step_hours,
        window.gaps,
        window.sea_mask,
    )
    fixed = fix_mmap_threshold()  # the memory of inference over the adaptation's passes
    if target == "gain":
        record = adapt_gain(site, adapt_hours=adapt_hours)
    else:
        record = adapt_zo(site, adapt_hours=adapt_hours, steps=steps, lr=lr, seed=run.config.seed)
    return record | {"mmap_threshold": ADAPT_MMAP_THRESHOLD if fixed else None}


def _predict(
    run: Any, encoding: Any, window: _InputWindow, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """The physical forecast ``[n_lead, C, H, W]`` (NaN on land) and its valid hours."""
    run.model.eval()
    lead_hours = list(run.config.samples.lead_times)
    valid_hours = int(window.hours[window.init_index]) + np.asarray(lead_hours, dtype=np.int64)
    x = model_input(window.frames, encoding, window.hours[window.frame_indices])
    if run.forcing is not None:
        x = run.forcing.with_channels(x[0], window.forcing_frames, 0)[None]
    x = x.to(device)
    log.debug("before the forecast pass: peak RSS %.1f MiB", peak_rss_mb())
    with torch.no_grad():
        prediction = run.model(x)  # [1, n_lead, C, H, W] normalised
    log.debug("after the forecast pass: peak RSS %.1f MiB", peak_rss_mb())
    return encoding.decode(prediction[0], valid_hours), valid_hours


def _provenance(
    run: Any,
    run_dir: Path,
    store: xr.Dataset,
    store_path: Path,
    init: pd.Timestamp,
    adaptation: dict[str, Any] | None,
    adapt_hours: int,
) -> dict[str, Any]:
    """The forecast file's global attrs: which run, checkpoint, config, store and adaptation."""
    cfg: ExperimentConfig = run.config
    return {
        "seacast_run": str(run_dir.resolve()),
        "seacast_run_name": cfg.name,
        "seacast_checkpoint": run.checkpoint_path.name,
        "seacast_checkpoint_epoch": run.epoch,
        "seacast_model": cfg.model.name,
        "seacast_trainer": cfg.trainer.name,
        "seacast_config_fingerprint": fingerprint(cfg),
        "seacast_config": to_dict(cfg),
        "seacast_store": str(store_path.resolve()),
        "seacast_store_fingerprint": str(store.attrs.get("seacast_fingerprint", "")).strip('"'),
        "seacast_trained_store_fingerprint": str(run.meta.get("store_fingerprint", "")),
        "seacast_lags": cfg.samples.lags,
        "seacast_base": cfg.model.base,
        "seacast_tides": run.tides.provenance() if run.tides is not None else {},
        "seacast_adapted": "true" if adaptation else "false",
        "seacast_adaptation": adaptation or {},
        "history": f"{pd.Timestamp.now(tz='UTC'):%Y-%m-%dT%H:%M:%SZ} seacast forecast --run {run_dir} --init-time {init:%Y-%m-%dT%H}"
        + (f" --adapt zo --adapt-hours {adapt_hours}" if adaptation else ""),
    }


def _forecast_file(
    run: Any,
    store: xr.Dataset,
    sea_mask: np.ndarray,
    physical: np.ndarray,
    init: pd.Timestamp,
    provenance: dict[str, Any],
) -> xr.Dataset:
    """The forecast file's dataset, with the store's variable attrs."""
    variables = list(run.config.samples.variables)
    variable_attrs = {
        v: {
            k: store[v].attrs[k]
            for k in ("units", "standard_name", "long_name")
            if k in store[v].attrs
        }
        for v in variables
    }
    return forecast_dataset(
        physical,
        init_time=init,
        lead_hours=list(run.config.samples.lead_times),
        latitude=store["latitude"].values,
        longitude=store["longitude"].values,
        variables=variables,
        sea_mask=sea_mask,
        variable_attrs=variable_attrs,
        provenance=provenance,
    )


def _add_tide(
    ds: xr.Dataset, run: Any, encoding: Any, sea_mask: np.ndarray, valid_hours: np.ndarray
) -> None:
    """``<var>_tide``: what a tide table says at the valid times, next to the forecast that starts from it."""
    tide = encoding.tide(valid_hours)
    for k, var in enumerate(run.config.samples.variables):
        ds[f"{var}_tide"] = (
            ds[var].dims,
            np.where(sea_mask, tide[:, k], np.nan)[None].astype(np.float32),
            {
                **{a: ds[var].attrs[a] for a in ("units",) if a in ds[var].attrs},
                "long_name": f"harmonic tide prediction of {var} at the valid time",
                "comment": "from the run's tides.nc (" + ", ".join(run.tides.period) + ")",
            },
        )


def _write_forecast(
    ds: xr.Dataset, final: Path, fmt: str, plots: bool, variables: list[str]
) -> list[Path]:
    """Write ``ds`` (and its maps) under a temporary folder, then publish them; returns the maps."""
    out_dir = final.parent
    tmp_dir = out_dir / f".tmp-{final.stem}-{uuid.uuid4().hex[:8]}"
    tmp_dir.mkdir()
    plot_paths: list[Path] = []
    try:
        write_dataset(ds, tmp_dir / final.name, fmt)
        if plots:
            from seacast.plots import forecast_maps

            plot_paths = forecast_maps(ds, tmp_dir, final.stem.split(".")[0], variables)
        published = []
        for path in plot_paths:
            target = out_dir / path.name
            _publish(path, target)
            published.append(target)
        # the forecast file goes last: its presence means the whole forecast is there
        _publish(tmp_dir / final.name, final)
    finally:
        _remove(tmp_dir)
    return published


def _check_same_run(path: Path, fmt: str, run_dir: Path) -> None:
    """An existing forecast for the init time from another run is a conflict, not 'done'."""
    try:
        opened = xr.open_zarr(path, consolidated=False) if fmt == "zarr" else xr.open_dataset(path)
        with opened as existing:
            other = existing.attrs.get("seacast_run")
    except Exception:  # unreadable: treat as someone else's file
        other = "an unreadable file"
    if other != str(run_dir.resolve()):
        raise DataError(
            f"{path} exists and was made by {other}, not by {run_dir}",
            "use another --out folder for this run, or --force to replace it",
        )
