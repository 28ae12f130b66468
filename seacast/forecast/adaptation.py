"""Zeroth-order adaptation of a loaded run on the latest hours (:func:`adapt_zo`), at the memory of
inference.
"""

from __future__ import annotations

import logging
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr

from seacast.config import ExperimentConfig
from seacast.errors import ConfigError
from seacast.forecast.inputs import _read_frames
from seacast.timeaxis import hour_to_stamp as _hours_to_stamp

# one logger for the whole forecast package, as when it was one module
log = logging.getLogger("seacast.forecast")


DEFAULT_ADAPT_LR = 3e-3


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
    seconds = _spsa_steps(model, window, trainer, loss_fn, steps, seed)
    after = mean_loss()
    reverted = not after < before
    if reverted:
        _restore_trained_weights(run, window.device)
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


def _spsa_steps(
    model: torch.nn.Module,
    window: _AdaptationWindow,
    trainer: Any,
    loss_fn: Any,
    steps: int,
    seed: int,
) -> float:
    """``steps`` SPSA steps on one-sample batches of ``window``, in a seeded order; returns the seconds."""
    from seacast.training.rules import make_rule

    torch.manual_seed(seed)
    rule = make_rule("spsa", model, trainer)
    order = np.random.default_rng(seed).permutation(np.resize(np.arange(len(window)), steps))
    started = time.perf_counter()
    for k in order:
        rule.step(model, *window.sample(int(k)), loss_fn)
    return time.perf_counter() - started


def _restore_trained_weights(run: Any, device: torch.device) -> None:
    """Back to the trained weights, memory-mapped from the checkpoint (no second copy kept meanwhile)."""
    state = torch.load(run.checkpoint_path, map_location=device, weights_only=True, mmap=True)
    run.model.load_state_dict(state["model"])
    del state
