"""Checkpoints and run folders: atomic saves, RNG states, and loading a trained run.

Offered:

* :func:`save_checkpoint` - ``torch.save`` to a temp name in the same folder, fsync, then
  ``os.replace``: a save interrupted midway never replaces the previous checkpoint, and a
  Ctrl-C during it stops the command once the file is in place.
* :func:`load_checkpoint` - read one (``weights_only``: no code is unpickled).
* :func:`rng_state` / :func:`set_rng_state` - every RNG the loop draws from (python,
  numpy, torch CPU and CUDA), so a resumed run continues the same random streams.
* :func:`load_run` - a run folder's model (eval mode), config, normaliser and meta.

A checkpoint is a dict with keys ``model``, ``optimizer``, ``scheduler``, ``epoch`` (epochs
completed), ``step``, ``best_val``, ``rng``, ``config`` (ExperimentConfig dict) and, for
:func:`load_run`, ``model_args`` and ``normaliser``.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from seacast.atomic import atomic_path
from seacast.config import ExperimentConfig, validate
from seacast.errors import DataError
from seacast.interrupts import safe_points
from seacast.normalise import Normaliser

BEST = "checkpoint_best.pt"
LAST = "checkpoint_last.pt"


def save_checkpoint(state: dict[str, Any], path: Path | str) -> Path:
    """Write ``state`` to ``path`` atomically (temp file, fsync, rename).

    A Ctrl-C or SIGTERM during the write is held until the file is in place: raised inside
    ``torch.save`` it would surface as torch's RuntimeError from the zip writer instead.
    """
    path = Path(path)
    with safe_points(), atomic_path(path) as tmp, open(tmp, "wb") as handle:
        torch.save(state, handle)
        handle.flush()
        os.fsync(handle.fileno())
    return path


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint` (DataError if missing or damaged)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"checkpoint {path} does not exist", "train the run first: seacast train --config ..."
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises several unrelated types for a damaged file
        reason = str(exc).strip().split(". ")[0][:160]  # torch's reasons run to a paragraph
        raise DataError(
            f"checkpoint {path} cannot be read, it is damaged or truncated "
            f"({type(exc).__name__}: {reason})",
            _damaged_fix(path),
        ) from None


def _damaged_fix(path: Path) -> str:
    """What works instead of a damaged checkpoint: --resume reads only checkpoint_last.pt."""
    best, last = path.parent / BEST, path.parent / LAST
    again = "start the run again: the same seacast train command with --overwrite, without --resume"
    if path.name == LAST:
        if best.is_file():
            # the best checkpoint holds the whole training state of its epoch, so it resumes
            return (
                f"replace it with the best epoch's checkpoint, which holds the whole training "
                f"state: cp {best} {last}, then rerun with --resume; or {again}"
            )
        return again
    if path.name == BEST and last.is_file():
        return f"use the last checkpoint (--checkpoint last), or {again}"
    return again


def rng_state() -> dict[str, Any]:
    """The state of every RNG the loop uses, in types ``weights_only`` loading accepts."""
    np_state = np.random.get_state()
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), *np_state[2:]],
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` saved."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state(
        (name, keys.numpy().astype(np.uint32), int(pos), int(has_gauss), float(cached))
    )
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])


@dataclass
class LoadedRun:
    """A trained run, ready for forecasting or evaluation."""

    model: nn.Module
    config: ExperimentConfig
    normaliser: Normaliser
    meta: dict[str, Any]
    checkpoint_path: Path
    epoch: int
    step: int
    best_val: float
    model_args: dict[str, Any]
    tides: Any = None  # TidalConstants of a tide-aware run (runs/<name>/tides.nc), else None
    forcing: Any = None  # ForcingInputs of a run with weather-forecast inputs, else None

    def encoding_for(self, sea_mask: np.ndarray) -> Any:
        """The run's :class:`~seacast.encoding.SampleEncoding` on a grid with ``sea_mask``."""
        from seacast.encoding import SampleEncoding

        return SampleEncoding(self.normaliser, sea_mask, self.tides)


def build_from_args(config: ExperimentConfig, model_args: dict[str, Any]) -> nn.Module:
    """The model of ``config`` with the data-dependent arguments saved in a checkpoint."""
    from seacast.models import build_model

    return build_model(
        config.model,
        in_channels=model_args["in_channels"],
        out_channels=model_args["out_channels"],
        lags=model_args["lags"],
        lead_times=list(model_args["lead_times"]),
        shape=tuple(model_args["shape"]),
    )


def load_run(
    run_dir: Path | str, which: str = "best", device: str | torch.device = "cpu"
) -> LoadedRun:
    """Load ``runs/<name>/checkpoint_<which>.pt`` (which: best or last) with its config and meta."""
    run_dir = Path(run_dir)
    if which not in ("best", "last"):
        raise DataError(f"unknown checkpoint '{which}'", "use which='best' or which='last'")
    if not run_dir.is_dir():
        raise DataError(
            f"run folder {run_dir} does not exist", "train it first: seacast train --config ..."
        )
    path = run_dir / (BEST if which == "best" else LAST)
    state = load_checkpoint(path, map_location=device)
    config = validate(ExperimentConfig, state["config"], str(path))
    model = build_from_args(config, state["model_args"])
    model.load_state_dict(state["model"])
    model.to(device).eval()
    meta_path = run_dir / "meta.json"
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    normaliser = Normaliser.from_dict(state["normaliser"])
    tides = None
    if config.model.base == "tide":
        from seacast.tides import TIDES_FILE, load_tides

        tides = load_tides(
            run_dir / TIDES_FILE
        )  # a tide-aware model cannot forecast without its tide
    forcing = None
    if state.get("forcing"):
        from seacast.forcing import ForcingInputs

        forcing = ForcingInputs.from_dict(state["forcing"])
    return LoadedRun(
        model=model,
        config=config,
        normaliser=normaliser,
        meta=meta,
        checkpoint_path=path,
        epoch=int(state["epoch"]),
        step=int(state["step"]),
        best_val=float(state["best_val"]),
        model_args=dict(state["model_args"]),
        tides=tides,
        forcing=forcing,
    )
