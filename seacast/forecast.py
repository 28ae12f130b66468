"""Forecasts from a trained run: the lags frames up to an init time in, a forecast file out.

Offers:

* :func:`forecast` - load a run, pick the init time, optionally adapt the model with
  zeroth-order SGD on the latest hours, predict every lead time and write the file
  atomically (idempotent: an existing forecast for the init time is kept unless ``force``).
* :class:`ForecastResult` - where it went, for which init time, and whether it was skipped.
* :func:`forecast_dataset` - the forecast file schema (WeatherBench 2 layout): dims
  ``init_time, lead_time, latitude, longitude``, coord ``valid_time``, physical values,
  NaN on land, CF attrs and provenance. Tests build valid examples with it too.
* :func:`valid_init_times`, :func:`resolve_init_time` - which init times have a whole
  history of ``lags`` frames, with clear errors naming the earliest/latest valid one.
* :func:`adapt_zo` - fine-tune the loaded model (a copy of the run; the run's checkpoint is
  never written) on the latest hours with the ``spsa`` rule and in-place SGD, which needs
  no ``.grad`` tensors and no activations kept: the memory of inference.
* :func:`check_grid` - refuse a store on a different grid than the run's.
* :func:`resolve_store_path` - the store a run forecasts from (its config's, or given).
"""

from __future__ import annotations

import json
import logging
import os
import resource
import shutil
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import xarray as xr

from seacast import __version__
from seacast.config import ExperimentConfig, fingerprint, to_dict
from seacast.errors import ConfigError, DataError
from seacast.plots import CF_ATTRS
from seacast.timeaxis import hour_to_stamp as _hours_to_stamp
from seacast.timeaxis import stamp_to_hour

log = logging.getLogger("seacast.forecast")

FORMATS = ("zarr", "netcdf")
DEFAULT_ADAPT_LR = 3e-3
_SUFFIX = {"zarr": ".zarr", "netcdf": ".nc"}


@dataclass
class ForecastResult:
    """The outcome of :func:`forecast`."""

    path: Path
    init_time: pd.Timestamp
    skipped: bool
    adaptation: dict[str, Any] | None = None
    plots: list[Path] = field(default_factory=list)
    peak_rss_mb: float | None = None


# --------------------------------------------------------------------------- schema


def forecast_dataset(
    values: np.ndarray,
    *,
    init_time: Any,
    lead_hours: list[int],
    latitude: np.ndarray,
    longitude: np.ndarray,
    variables: list[str],
    sea_mask: np.ndarray,
    variable_attrs: dict[str, dict[str, Any]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> xr.Dataset:
    """A forecast file's dataset from physical ``values [n_lead, C, H, W]`` for one init time.

    Land (``~sea_mask``) is set to NaN whatever ``values`` holds there. ``provenance``
    entries become global attrs (non-strings stored as JSON so NetCDF accepts them).
    """
    values = np.asarray(values, dtype=np.float32)
    sea = np.asarray(sea_mask, dtype=bool)
    if values.shape != (len(lead_hours), len(variables), *sea.shape):
        raise DataError(
            f"forecast values {values.shape} do not match lead times x variables x grid "
            f"{(len(lead_hours), len(variables), *sea.shape)}",
            "pass values shaped [n_lead, n_variables, n_lat, n_lon]",
        )
    values = np.where(sea[None, None], values, np.nan).astype(np.float32)
    init = np.array([pd.Timestamp(init_time).to_datetime64()], dtype="datetime64[ns]")
    lead = np.array([np.timedelta64(int(h), "h") for h in lead_hours], dtype="timedelta64[ns]")
    dims = ("init_time", "lead_time", "latitude", "longitude")
    data_vars: dict[str, Any] = {}
    for k, var in enumerate(variables):
        attrs = {**CF_ATTRS.get(var, {}), **(variable_attrs or {}).get(var, {})}
        attrs.setdefault("long_name", var)
        attrs["coverage_content_type"] = "modelResult"
        data_vars[var] = (dims, values[None, :, k], attrs)
    data_vars["sea_mask"] = (
        ("latitude", "longitude"),
        sea.astype(np.int8),
        {
            "long_name": "sea mask",
            "flag_values": np.array([0, 1], dtype=np.int8),
            "flag_meanings": "land sea",
        },
    )
    ds = xr.Dataset(
        data_vars,
        coords={
            "init_time": (
                "init_time",
                init,
                {
                    "long_name": "forecast initialisation time",
                    "standard_name": "forecast_reference_time",
                },
            ),
            "lead_time": (
                "lead_time",
                lead,
                {"long_name": "forecast lead time", "standard_name": "forecast_period"},
            ),
            "latitude": (
                "latitude",
                np.asarray(latitude),
                {"standard_name": "latitude", "units": "degrees_north", "axis": "Y"},
            ),
            "longitude": (
                "longitude",
                np.asarray(longitude),
                {"standard_name": "longitude", "units": "degrees_east", "axis": "X"},
            ),
        },
    )
    ds = ds.assign_coords(valid_time=ds["init_time"] + ds["lead_time"])
    ds["valid_time"].attrs = {
        "long_name": "time the forecast is valid for",
        "standard_name": "time",
    }
    ds.attrs = {
        "Conventions": "CF-1.10",
        "title": "seacast forecast",
        "source": f"seacast {__version__}",
        "date_created": pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "featureType": "grid",
    }
    for key, value in (provenance or {}).items():
        ds.attrs[key] = (
            value if isinstance(value, str | int | float) else json.dumps(value, default=str)
        )
    for name in ("init_time", "valid_time"):
        ds[name].encoding = {"units": "hours since 1970-01-01", "dtype": "int64"}
    ds["lead_time"].encoding = {"units": "hours", "dtype": "int64"}
    return ds


# --------------------------------------------------------------------------- inputs


def resolve_store_path(run_dir: Path | str, store_path: Path | str | None = None) -> Path:
    """The store to forecast from: ``store_path`` if given, else the one in the run's config."""
    if store_path is not None:
        return Path(store_path)
    config_file = Path(run_dir) / "config.yaml"
    if not config_file.is_file():
        raise DataError(
            f"run folder {run_dir} has no config.yaml (is it a seacast run?)",
            "pass the run folder made by `seacast train` (runs/<name>), or --store explicitly",
        )
    from seacast.config import load_config

    return Path(load_config(ExperimentConfig, config_file).store)


def valid_init_times(
    hours: np.ndarray, step_hours: float, gaps: list[tuple[int, int]], lags: int
) -> np.ndarray:
    """Indices of the store times that have ``lags`` consecutive frames ending at them."""
    from seacast.splits import Selection
    from seacast.windows import Timeline

    if len(hours) == 0:
        return np.zeros(0, dtype=np.int64)
    timeline = Timeline(np.asarray(hours, dtype=np.int64), step_hours, list(gaps))
    indices, _ = timeline.select(Selection(((int(hours[0]), int(hours[-1])),)), lags, [0])
    return indices


def resolve_init_time(
    hours: np.ndarray, valid: np.ndarray, init_time: str | pd.Timestamp, lags: int
) -> int:
    """The store index of ``init_time`` ('latest' or a time), or a DataError naming a valid choice."""
    if len(valid) == 0:
        raise DataError(
            f"the store has no init time with {lags} consecutive frames of history",
            f"append more data (the run needs {lags} hourly frames before an init time)",
        )
    earliest, latest = _hours_to_stamp(hours[valid[0]]), _hours_to_stamp(hours[valid[-1]])
    if str(init_time) == "latest":
        return int(valid[-1])
    try:
        wanted = pd.Timestamp(init_time)
    except ValueError:
        raise ConfigError(
            f"init time '{init_time}' is not a time",
            "write 'latest' or an ISO time such as 2024-05-01T06",
        ) from None
    if wanted.tzinfo is not None:
        wanted = wanted.tz_convert("UTC").tz_localize(None)
    if wanted != wanted.floor("h"):  # the messages below print whole hours: never echo 06:30 as 06
        raise ConfigError(
            f"init time '{init_time}' is not on the hour: forecasts start at whole hours",
            f"use {wanted.floor('h'):%Y-%m-%dT%H} or {wanted.ceil('h'):%Y-%m-%dT%H}",
        )
    wanted_hours = stamp_to_hour(wanted)
    index = np.flatnonzero(hours == wanted_hours)
    if index.size and index[0] in set(valid.tolist()):
        return int(index[0])
    if wanted < earliest:
        raise DataError(
            f"init time {wanted:%Y-%m-%dT%H} has not enough history: the run needs {lags} frames up to it",
            f"use an init time at or after the earliest valid one, {earliest:%Y-%m-%dT%H}",
        )
    if wanted > latest:
        raise DataError(
            f"init time {wanted:%Y-%m-%dT%H} is after the newest valid init time {latest:%Y-%m-%dT%H} in the store",
            "use --init-time latest, or append newer data with --update",
        )
    before = valid[hours[valid] <= wanted_hours]
    nearest = _hours_to_stamp(hours[before[-1]]) if before.size else earliest
    raise DataError(
        f"init time {wanted:%Y-%m-%dT%H} is not a store time with {lags} consecutive frames of history (a gap or off the time step)",
        f"use a valid init time such as {nearest:%Y-%m-%dT%H} (earliest valid: {earliest:%Y-%m-%dT%H})",
    )


def check_grid(store: xr.Dataset, run: Any, store_path: Path) -> None:
    """DataError unless the store has the run's variables and grid (shape, and coords when known)."""
    from seacast.store import store_variables

    variables = list(run.config.samples.variables)
    missing = [v for v in variables if v not in store_variables(store)]
    if missing:
        raise DataError(
            f"store {store_path} lacks the variables {missing} the run was trained on",
            "forecast from the store the run was trained on (its config's `store`)",
        )
    shape = (store.sizes["latitude"], store.sizes["longitude"])
    expected = tuple(run.model_args.get("shape", shape))
    if shape != expected:
        raise DataError(
            f"store {store_path} is on a {shape[0]}x{shape[1]} grid, the run was trained on {expected[0]}x{expected[1]}",
            "forecast from a store on the run's grid (regrid with the run's data config) or train a run on this grid",
        )
    reference = _trained_grid(run, store_path)
    if reference is not None:
        lat, lon = reference
        if not (
            np.allclose(store["latitude"].values, lat, atol=1e-6)
            and np.allclose(store["longitude"].values, lon, atol=1e-6)
        ):
            raise DataError(
                f"store {store_path} is on a different grid than the run's (same size, other coordinates: "
                f"lat {float(store['latitude'][0]):.3f}..{float(store['latitude'][-1]):.3f}, "
                f"run lat {lat[0]:.3f}..{lat[-1]:.3f})",
                "forecast from a store regridded with the run's data config (same bbox and grid)",
            )


def _trained_grid(run: Any, store_path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    """Latitude and longitude of the store the run was trained on (its config's ``store``).

    Training records that store's path, not its coordinates, so the store itself is the
    reference. None when it is the store forecast from (nothing to compare) or is gone;
    a store there that cannot be read skips the check with a warning.
    """
    from seacast.store import open_store

    trained_on = Path(run.config.store)
    if not trained_on.exists() or trained_on.resolve() == Path(store_path).resolve():
        return None
    try:
        trained = open_store(trained_on)
    except DataError as exc:
        log.warning(
            "grid check skipped: the run's training store %s cannot be read (%s)",
            trained_on,
            exc.problem,
        )
        return None
    with trained:
        return trained["latitude"].values.astype(float), trained["longitude"].values.astype(float)


def model_input(frames: np.ndarray, encoding: Any, hours: np.ndarray) -> torch.Tensor:
    """Physical ``frames [lags, C, H, W]`` at ``hours`` -> model input ``[1, C, lags, H, W]``
    (the run's encoding: normalised, the tide removed for tide-aware runs, land 0)."""
    tensor = encoding.encode(frames, hours)
    return tensor.permute(1, 0, 2, 3).unsqueeze(0).contiguous()


def _read_frames(store: xr.Dataset, variables: list[str], indices: np.ndarray) -> np.ndarray:
    return np.stack([store[v].isel(time=indices).values for v in variables], axis=1)


# --------------------------------------------------------------------------- adaptation


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class _AdaptationWindow:
    """The samples of the adaptation window, encoded once (N hours x C x H x W float32)."""

    frames: torch.Tensor
    indices: np.ndarray  # the samples' last-lag frames, as store indices
    first_frame: int
    lags: int
    lead_offsets: np.ndarray
    device: torch.device

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[k]) - self.first_frame
        x = self.frames[j - self.lags + 1 : j + 1].permute(1, 0, 2, 3)[None].contiguous()
        y = self.frames[j + self.lead_offsets][None]
        return x.to(self.device), y.to(self.device)


def _adaptation_window(
    run: Any,
    store_path: Path,
    timeline: Any,
    init_index: int,
    adapt_hours: int,
    sea_mask: np.ndarray,
) -> _AdaptationWindow:
    """The whole samples in the ``adapt_hours`` before the init time, read and encoded once."""
    from seacast.splits import Selection

    cfg: ExperimentConfig = run.config
    lags, lead_hours = cfg.samples.lags, list(cfg.samples.lead_times)
    step_hours = timeline.step_hours
    lead_steps = [timeline.steps(h, "lead time") for h in lead_hours]
    t0 = int(timeline.hours[init_index])
    first = t0 - adapt_hours + step_hours
    indices, _ = timeline.select(Selection(((int(first), t0),)), lags, lead_steps)
    needed = (lags - 1) * step_hours + max(lead_hours) + step_hours
    if len(indices) == 0:
        raise ConfigError(
            f"--adapt-hours {adapt_hours} holds no whole training sample before the init time "
            f"(a sample spans lags + the longest lead time = {needed:g} h, without gaps)",
            f"use --adapt-hours {int(needed) + 24} or more",
        )
    first_frame = int(indices[0]) - lags + 1
    last_frame = int(indices[-1]) + max(lead_steps)
    with xr.open_zarr(store_path, consolidated=False, zarr_format=3, chunks=None) as store:
        window = _read_frames(
            store, list(cfg.samples.variables), np.arange(first_frame, last_frame + 1)
        )
    # the window is the one thing adaptation holds beyond inference
    frames = run.encoding_for(sea_mask).encode(
        window, np.asarray(timeline.hours[first_frame : last_frame + 1])
    )
    log.debug("adaptation window read: peak RSS %.1f MiB", peak_rss_mb())
    return _AdaptationWindow(
        frames=frames,
        indices=np.asarray(indices),
        first_frame=first_frame,
        lags=lags,
        lead_offsets=np.asarray(lead_steps),
        device=next(run.model.parameters()).device,
    )


def _adaptation_trainer(
    cfg: ExperimentConfig, lr: float | None, probes: int | None, epsilon: float | None
) -> Any:
    """The run's trainer config turned into in-place SPSA on one-sample batches."""
    spsa = cfg.trainer.spsa.model_copy(
        update={
            "inplace_sgd": True,
            "blockwise": False,
            **({"probes": probes} if probes else {}),
            **({"epsilon": epsilon} if epsilon else {}),
        }
    )
    return cfg.trainer.model_copy(
        update={
            "name": "spsa",
            "batch_size": 1,
            "spsa": spsa,
            "optimizer": cfg.trainer.optimizer.model_copy(
                update={"lr": lr or DEFAULT_ADAPT_LR, "weight_decay": 0.0}
            ),
        }
    )


def adapt_zo(
    run: Any,
    store_path: Path,
    init_index: int,
    hours: np.ndarray,
    step_hours: float,
    gaps: list[tuple[int, int]],
    sea_mask: np.ndarray,
    *,
    adapt_hours: int,
    steps: int = 40,
    lr: float | None = None,
    probes: int | None = None,
    epsilon: float | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Fine-tune ``run.model`` in place on the samples that lie wholly in the latest ``adapt_hours``.

    Uses the ``spsa`` rule with in-place SGD and batches of one sample: every step is
    ``2 x probes`` forward passes under ``no_grad`` and no ``.grad`` tensor is made, so the
    peak memory is that of inference. The model stays in eval mode (dropout off, BatchNorm
    statistics frozen): one-sample batches would make both noisy. If the adapted model is
    worse than the original on those samples, the original weights are restored (recorded).
    Returns a record of what was done, stored in the forecast's attrs.
    """
    from seacast.training.losses import make_loss
    from seacast.training.rules import make_rule
    from seacast.windows import Timeline

    cfg: ExperimentConfig = run.config
    timeline = Timeline(np.asarray(hours, dtype=np.int64), step_hours, list(gaps))
    window = _adaptation_window(run, store_path, timeline, init_index, adapt_hours, sea_mask)
    loss_fn = make_loss(run.normaliser, sea_mask, units=cfg.trainer.loss_units)
    trainer = _adaptation_trainer(cfg, lr, probes, epsilon)
    model = run.model
    model.eval()

    def mean_loss() -> float:
        with torch.no_grad():
            losses = (
                float(loss_fn(model(x), y).mean())
                for x, y in map(window.sample, range(len(window)))
            )
            return sum(losses) / len(window)

    before = mean_loss()
    log.debug("after the first loss: peak RSS %.1f MiB", peak_rss_mb())
    torch.manual_seed(seed)
    rule = make_rule("spsa", model, trainer)
    order = np.random.default_rng(seed).permutation(np.resize(np.arange(len(window)), steps))
    started = time.perf_counter()
    for k in order:
        rule.step(model, *window.sample(int(k)), loss_fn)
    seconds = time.perf_counter() - started
    after = mean_loss()
    reverted = not after < before
    if reverted:
        # back to the trained weights, memory-mapped from the checkpoint (no second copy kept meanwhile)
        state = torch.load(
            run.checkpoint_path, map_location=window.device, weights_only=True, mmap=True
        )
        model.load_state_dict(state["model"])
        del state
    model.eval()
    log.info(
        "ZO adaptation on %d samples, %d steps: loss %.4g -> %.4g%s",
        len(window),
        steps,
        before,
        after,
        " (worse: reverted)" if reverted else "",
    )
    return {
        "method": "zo-spsa-inplace-sgd",
        "hours": adapt_hours,
        "samples": len(window),
        "first_init": f"{_hours_to_stamp(timeline.hours[window.indices[0]]):%Y-%m-%dT%H}",
        "last_init": f"{_hours_to_stamp(timeline.hours[window.indices[-1]]):%Y-%m-%dT%H}",
        "steps": int(steps),
        "lr": trainer.optimizer.lr,
        "probes": trainer.spsa.probes,
        "epsilon": trainer.spsa.epsilon,
        "loss_before": before,
        "loss_after": after,
        "reverted": reverted,
        "seconds": round(seconds, 3),
    }


# --------------------------------------------------------------------------- writing


def forecast_name(init: pd.Timestamp, fmt: str, adapted: bool) -> str:
    """File name of a forecast: ``<YYYY-MM-DDTHH>[-zo].zarr`` or ``.nc``."""
    return f"{init:%Y-%m-%dT%H}{'-zo' if adapted else ''}{_SUFFIX[fmt]}"


def write_dataset(ds: xr.Dataset, path: Path, fmt: str) -> None:
    """Write ``ds`` to ``path`` (which must not exist) in ``fmt``."""
    if fmt == "zarr":
        ds.to_zarr(path, mode="w-", zarr_format=3, consolidated=False)
    else:
        ds.to_netcdf(path, engine="netcdf4")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _publish(tmp: Path, final: Path) -> None:
    """Move ``tmp`` onto ``final``, never half-replaced: a file by one rename, a Zarr
    directory by the store's own swap (:func:`seacast.store.replace_store`)."""
    if tmp.is_dir():
        from seacast.store import replace_store

        replace_store(tmp, final)
    else:
        os.replace(tmp, final)


# --------------------------------------------------------------------------- driver


def forecast(
    run_dir: Path | str,
    *,
    store_path: Path | str | None = None,
    init_time: str | pd.Timestamp = "latest",
    out_dir: Path | str = "forecasts",
    fmt: Literal["zarr", "netcdf"] = "zarr",
    plots: bool = False,
    adapt: Literal["zo"] | None = None,
    adapt_hours: int = 168,
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
    store_path = resolve_store_path(run_dir, store_path)
    run = load_run(run_dir, which=which, device=device)
    cfg: ExperimentConfig = run.config
    store = open_store(store_path)
    check_grid(store, run, store_path)
    window = _input_window(
        store, store_path, list(cfg.samples.variables), cfg.samples.lags, init_time
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
        adaptation = _adapt(run, Path(store_path), window, adapt_hours, adapt_steps, adapt_lr)
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


def _input_window(
    store: xr.Dataset,
    store_path: Path,
    variables: list[str],
    lags: int,
    init_time: str | pd.Timestamp,
) -> _InputWindow:
    """Resolve ``init_time`` and read its frames; 'latest' steps back past frames still being written."""
    from seacast.store import store_gaps, store_step_hours, time_hours

    hours = np.asarray(time_hours(store["time"].values), dtype=np.int64)
    step_hours = store_step_hours(store)
    gaps = [(stamp_to_hour(a), stamp_to_hour(b)) for a, b in store_gaps(store)]
    valid = valid_init_times(hours, step_hours, gaps, lags)
    init_index = resolve_init_time(hours, valid, init_time, lags)
    sea_mask = np.asarray(store["sea_mask"].values, dtype=bool)
    frame_indices = np.arange(init_index - lags + 1, init_index + 1)
    frames = _read_frames(store, variables, frame_indices)
    if str(init_time) == "latest":
        # a frame still NaN over sea was not written completely: step back to a whole window
        while not np.isfinite(frames[:, :, sea_mask]).all():
            earlier = valid[valid < init_index]
            if earlier.size == 0:
                raise DataError(
                    f"store {store_path} holds no complete window of {lags} frames",
                    "re-run regrid for the recent months",
                )
            init_index = int(earlier[-1])
            frame_indices = np.arange(init_index - lags + 1, init_index + 1)
            frames = _read_frames(store, variables, frame_indices)
    return _InputWindow(hours, step_hours, gaps, sea_mask, init_index, frame_indices, frames)


def _adapt(
    run: Any,
    store_path: Path,
    window: _InputWindow,
    adapt_hours: int,
    steps: int,
    lr: float | None,
) -> dict[str, Any]:
    """:func:`adapt_zo` on the hours before the window's init time; returns its record."""
    return adapt_zo(
        run,
        store_path,
        window.init_index,
        window.hours,
        window.step_hours,
        window.gaps,
        window.sea_mask,
        adapt_hours=adapt_hours,
        steps=steps,
        lr=lr,
        seed=run.config.seed,
    )


def _predict(
    run: Any, encoding: Any, window: _InputWindow, device: str
) -> tuple[np.ndarray, np.ndarray]:
    """The physical forecast ``[n_lead, C, H, W]`` (NaN on land) and its valid hours."""
    run.model.eval()
    lead_hours = list(run.config.samples.lead_times)
    valid_hours = int(window.hours[window.init_index]) + np.asarray(lead_hours, dtype=np.int64)
    x = model_input(window.frames, encoding, window.hours[window.frame_indices]).to(device)
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
