"""What a forecast starts from: the store, the valid init times, the grid check and the model input."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import xarray as xr

from seacast.config import ExperimentConfig
from seacast.errors import ConfigError, DataError
from seacast.timeaxis import hour_to_stamp as _hours_to_stamp
from seacast.timeaxis import stamp_to_hour

# one logger for the whole forecast package, as when it was one module
log = logging.getLogger("seacast.forecast")


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
    hours: np.ndarray,
    step_hours: float,
    gaps: list[tuple[int, int]],
    lags: int,
    ahead_steps: int = 0,
) -> np.ndarray:
    """Indices of the store times that have ``lags`` consecutive frames ending at them (and
    ``ahead_steps`` after them: a run with weather-forecast inputs reads the forecast ahead)."""
    from seacast.splits import Selection
    from seacast.windows import Timeline

    if len(hours) == 0:
        return np.zeros(0, dtype=np.int64)
    timeline = Timeline(np.asarray(hours, dtype=np.int64), step_hours, list(gaps))
    indices, _ = timeline.select(Selection(((int(hours[0]), int(hours[-1])),)), lags, [ahead_steps])
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
