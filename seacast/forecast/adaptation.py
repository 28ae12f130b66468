"""Zeroth-order adaptation of a loaded run on the latest hours, holding the tensors of inference.

Two targets (``forecast --adapt zo --adapt-target ...``; ``auto``, the default, picks ``gain``
for a run with a base and ``network`` otherwise):

* ``gain`` (:func:`adapt_gain`): the gain of a tide-aware model's base anomaly, one per lead time
  and variable, recalibrated on the last weeks. The anomaly of another year or season persists
  differently from the training period's; 12 numbers are few enough to fit from forward passes
  alone. :func:`gains_at_inits` gives the same gains at many init times at once (``seacast
  evaluate --adapt gain``); results on held-out twin years: ``docs/forecast-evaluate.md``,
  "Adapting before forecasting".
* ``network`` (:func:`adapt_zo`): in-place SPSA on every weight, on one-sample batches.

Both run after :func:`fix_mmap_threshold`, so that hundreds of passes stay in the memory of one.
"""

from __future__ import annotations

import ctypes
import logging
import os
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
ADAPT_TARGETS = ("gain", "network")
DEFAULT_ADAPT_HOURS = {"gain": 56 * 24, "network": 168}
GAIN_BOUNDS = (0.0, 1.5)
# a new gain must lower the window's loss of its (lead time, variable) by this share
GAIN_REQUIRED_GAIN = 0.02
GAIN_PROBE = 0.5  # the loss is quadratic in the gain: any probe size gives the same vertex
# a new gain goes this share of the way to the window's best: the window's gain is a noisy guess
# of the next day's (held-out twin years: benchmarks/README.md, "Adapting before forecasting")
GAIN_SHRINK = 0.5


# glibc's mmap threshold for blocks freed and made again pass after pass (see fix_mmap_threshold)
ADAPT_MMAP_THRESHOLD = 128 * 1024
_M_MMAP_THRESHOLD = -3  # mallopt's parameter number in glibc's malloc.h


def fix_mmap_threshold(nbytes: int = ADAPT_MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold for the rest of the process, before hundreds of forward passes.

    glibc raises the threshold each time a large block is freed, so a pass's activations soon
    come from the heap, which then grows pass after pass: a gain adaptation peaked at 1.13x a
    plain forecast's RSS, against 1.02x with the threshold fixed at 128 KiB, for 20 % more time
    (``benchmarks/forecast_memory.py``). Leaves a ``MALLOC_MMAP_THRESHOLD_`` set in the
    environment alone; a no-op off glibc. Returns whether the threshold was set.
    """
    if "MALLOC_MMAP_THRESHOLD_" in os.environ or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, int(nbytes)))


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far, in MiB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024


@dataclass
class AdaptationSite:
    """Where an adaptation runs: the loaded run, the store it reads, the init time's index in it
    and the store's time axis (hours, step and gaps)."""

    run: Any
    store_path: Path
    init_index: int
    hours: np.ndarray
    step_hours: float
    gaps: list[tuple[int, int]]
    sea_mask: np.ndarray

    def timeline(self) -> Any:
        from seacast.windows import Timeline

        return Timeline(np.asarray(self.hours, dtype=np.int64), self.step_hours, list(self.gaps))


@dataclass
class _AdaptationWindow:
    """The samples of the adaptation window, encoded once (N hours x C x H x W float32)."""

    frames: torch.Tensor
    indices: np.ndarray  # the samples' last-lag frames, as store indices
    first_frame: int
    lags: int
    lead_offsets: np.ndarray
    device: torch.device
    forcing: Any = None  # the run's ForcingInputs
    forcing_frames: torch.Tensor | None = None  # encoded, from first_frame on

    def __len__(self) -> int:
        return len(self.indices)

    def sample(self, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        j = int(self.indices[k]) - self.first_frame
        x = self.frames[j - self.lags + 1 : j + 1].permute(1, 0, 2, 3)
        if self.forcing is not None:
            x = self.forcing.with_channels(x, self.forcing_frames, j)
        y = self.frames[j + self.lead_offsets][None]
        return x[None].contiguous().to(self.device), y.to(self.device)


def _adaptation_window(
    run: Any,
    store_path: Path,
    timeline: Any,
    init_index: int,
    adapt_hours: int,
    sea_mask: np.ndarray,
) -> _AdaptationWindow:
    """The whole samples in the ``adapt_hours`` before the init time, read and encoded once."""
    cfg: ExperimentConfig = run.config
    lags = cfg.samples.lags
    lead_steps = [timeline.steps(h, "lead time") for h in cfg.samples.lead_times]
    indices = _window_samples(run, timeline, init_index, adapt_hours)
    first_frame = int(indices[0]) - lags + 1
    last_frame = int(indices[-1]) + max(lead_steps)
    with xr.open_zarr(store_path, consolidated=False, zarr_format=3, chunks=None) as store:
        window = _read_frames(
            store, list(cfg.samples.variables), np.arange(first_frame, last_frame + 1)
        )
        # the weather forecast known at each sample's init time (issued by then), so read ahead
        forcing_frames = (
            run.forcing.read(store, np.arange(first_frame, last_frame + 1), sea_mask)
            if run.forcing is not None
            else None
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
        forcing=run.forcing,
        forcing_frames=forcing_frames,
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
    site: AdaptationSite,
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

    run, sea_mask = site.run, site.sea_mask
    cfg: ExperimentConfig = run.config
    timeline = site.timeline()
    window = _adaptation_window(
        run, site.store_path, timeline, site.init_index, adapt_hours, sea_mask
    )
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


def fit_gain(
    model: torch.nn.Module,
    batches: Any,
    loss_fn: Any,
    *,
    probe: float = GAIN_PROBE,
    bounds: tuple[float, float] = GAIN_BOUNDS,
    required_gain: float = GAIN_REQUIRED_GAIN,
    shrink: float = GAIN_SHRINK,
) -> dict[str, np.ndarray]:
    """Set ``model.base_gain [n_lead, C]`` to the best gain on ``batches``, by forward passes only.

    ``batches`` yields ``(x, y)`` or ``(x, y, known [B, n_lead])``: ``known`` is 0 where a
    target is not known yet (its lead time reaches past the init time), and those cells count
    for nothing. The model's output is ``head + gain x base`` per (lead time, variable) field,
    linear in the gain: two forwards, at ``g - probe`` and ``g + probe``, give the output at
    any gain, so each batch's loss at ``g - probe``, ``g`` and ``g + probe`` is known. Each
    field's loss is quadratic in its own gain: the three summed losses give its parabola, whose
    vertex (clipped to ``bounds``) is the best gain on the window. A field keeps its gain
    unless that one lowers its loss there by ``required_gain``, and then moves ``shrink`` of
    the way to it. Returns the old and new gains and each field's loss before and after.
    """
    gain = model.base_gain
    start = gain.detach().clone()
    sums = torch.zeros(3, *start.shape, dtype=torch.float64)
    for losses in _losses_at_three_gains(model, batches, loss_fn, start, probe):
        sums += losses.sum(dim=1)
    fitted = gain_from_parabolas(
        sums, start, probe=probe, bounds=bounds, required_gain=required_gain, shrink=shrink
    )
    with torch.no_grad():
        gain.copy_(torch.as_tensor(fitted["gain"]).to(gain.dtype))
    return fitted


def _losses_at_three_gains(
    model: torch.nn.Module, batches: Any, loss_fn: Any, start: torch.Tensor, probe: float
) -> Any:
    """Per batch, each sample's loss per field at gains ``start - probe``, ``start`` and
    ``start + probe``: ``[3, B, n_lead, C]`` float64, zero where ``known`` is 0. Two forwards a
    batch (the output is linear in the gain); the gain is ``start`` again afterwards."""
    gain = model.base_gain
    with torch.no_grad():
        for x, y, *known in batches:
            gain.copy_(start - probe)
            low = model(x)
            gain.copy_(start + probe)
            high = model(x)
            gain.copy_(start)
            weight = known[0] if known else torch.ones(low.shape[:2])
            cells = torch.stack(
                [
                    loss_fn.elementwise(out, y).sum(dim=(3, 4))  # [B, n_lead, C]
                    for out in (low, 0.5 * (low + high), high)
                ]
            )
            del low, high
            yield (cells * weight[None, :, :, None].to(cells.dtype)).double().cpu()


def gains_at_inits(
    site: AdaptationSite,
    init_indices: np.ndarray,
    *,
    adapt_hours: int = DEFAULT_ADAPT_HOURS["gain"],
    every: int = 3,
    batch: int = 8,
) -> np.ndarray:
    """The gains ``[n, n_lead, C]`` that :func:`adapt_gain` fits at each init time of
    ``init_indices`` (store indices; ``site.init_index`` is not used), for scoring many init
    times: each sample's losses are computed once, in batches of ``batch``, and each init time
    sums those of its own window, known at that init time. An init time whose window holds no
    whole sample (the store's first weeks) keeps the trained gain."""
    from seacast.training.losses import make_loss

    run, timeline = site.run, site.timeline()
    cfg: ExperimentConfig = run.config
    start = run.model.base_gain.detach().clone()
    windows = [
        _gain_window_or_none(run, timeline, int(i), adapt_hours, every) for i in init_indices
    ]
    if all(window is None for window in windows):
        return np.broadcast_to(start.double().numpy(), (len(windows), *start.shape)).copy()
    samples = np.unique(np.concatenate([w[0] for w in windows if w is not None]))
    lead_steps = np.asarray([timeline.steps(h, "lead time") for h in cfg.samples.lead_times])
    last = int(np.max(init_indices))
    readable = samples[:, None] + lead_steps[None, :] <= last
    loss_fn = make_loss(run.normaliser, site.sea_mask, units=cfg.trainer.loss_units)
    run.model.eval()
    batches = _read_samples(
        run,
        site.store_path,
        timeline,
        samples,
        readable,
        site.sea_mask,
        last_frame=last,
        batch=batch,
    )
    losses = torch.cat(
        list(_losses_at_three_gains(run.model, batches, loss_fn, start, GAIN_PROBE)), dim=1
    )
    gains = []
    for window in windows:
        if window is None:
            gains.append(start.double().numpy())
            continue
        indices, known = window
        rows = losses[:, np.searchsorted(samples, indices)]  # [3, n, n_lead, C]
        sums = (rows * torch.as_tensor(known, dtype=torch.float64)[None, :, :, None]).sum(dim=1)
        gains.append(gain_from_parabolas(sums, start)["gain"])
    return np.stack(gains)


def _gain_window_or_none(
    run: Any, timeline: Any, init_index: int, adapt_hours: int, every: int
) -> tuple[np.ndarray, np.ndarray] | None:
    try:
        return gain_window(run, timeline, init_index, adapt_hours, every)
    except ConfigError:  # no whole sample in the window
        return None


def predict_with_gains(
    model: torch.nn.Module, x: torch.Tensor, gains: torch.Tensor
) -> torch.Tensor:
    """The model's output with each sample's own base gain ``gains [B, n_lead, C]``: two
    forwards (at gains 0 and 1), as the output is linear in the gain."""
    start = model.base_gain.detach().clone()
    with torch.no_grad():
        model.base_gain.fill_(0.0)
        head = model(x)
        model.base_gain.fill_(1.0)
        with_base = model(x)
        model.base_gain.copy_(start)
    return head + gains.to(head.dtype)[..., None, None] * (with_base - head)


def gain_from_parabolas(
    sums: torch.Tensor | np.ndarray,
    start: torch.Tensor | np.ndarray,
    *,
    probe: float = GAIN_PROBE,
    bounds: tuple[float, float] = GAIN_BOUNDS,
    required_gain: float = GAIN_REQUIRED_GAIN,
    shrink: float = GAIN_SHRINK,
) -> dict[str, np.ndarray]:
    """The new gains from each field's summed losses ``sums [3, ...]`` at ``start - probe``,
    ``start`` and ``start + probe``: ``shrink`` of the way from ``start`` to the parabola's
    vertex, clipped to ``bounds``, where the vertex lowers the loss by ``required_gain``;
    ``start`` elsewhere (:func:`fit_gain`'s rule)."""
    minus, centre, plus = torch.as_tensor(sums, dtype=torch.float64)
    start = torch.as_tensor(start, dtype=torch.float64)
    slope = (plus - minus) / (2 * probe)
    curvature = (plus - 2 * centre + minus) / probe**2
    low, high = bounds
    vertex = start - slope / curvature.clamp(min=1e-30)
    candidate = torch.where(curvature > 0, vertex.clamp(low, high), start)
    step = candidate - start
    after = centre + slope * step + 0.5 * curvature * step**2
    keep = after <= (1 - required_gain) * centre
    step = shrink * step
    shrunk = centre + slope * step + 0.5 * curvature * step**2
    return {
        "gain_before": start.numpy(),
        "gain": torch.where(keep, start + step, start).numpy(),
        "loss_before": centre.numpy(),
        "loss_after": torch.where(keep, shrunk, centre).numpy(),
    }


def adapt_gain(
    site: AdaptationSite,
    *,
    adapt_hours: int,
    every: int = 3,
) -> dict[str, Any]:
    """Recalibrate the base gain of ``run.model`` on the samples in the latest ``adapt_hours``.

    A sample counts for a lead time when its lags and that lead time's target lie in the window
    (the newest samples count for the short lead times only), as known at the init time: no
    frame after it is read. The samples (one every ``every`` init times) are read and encoded
    one block at a time and go through the model one at a time, so the peak memory is that of
    inference (:func:`fit_gain`: two forwards a sample). Returns the record kept in the
    forecast's attrs.
    """
    from seacast.training.losses import make_loss

    run, sea_mask = site.run, site.sea_mask
    cfg: ExperimentConfig = run.config
    model = run.model
    if getattr(model, "base_gain", None) is None:
        raise ConfigError(
            f"--adapt-target gain needs a model with a base (this run has model.base: {cfg.model.base})",
            "use --adapt-target network, or a run trained with model.base: tide (or persistence)",
        )
    timeline = site.timeline()
    samples, known = gain_window(run, timeline, site.init_index, adapt_hours, every)
    expected = adapt_hours / (every * timeline.step_hours)
    if len(samples) < 0.5 * expected:
        log.warning(
            "gain adaptation: the %d h before the init time hold %d samples of the %d a full window "
            "gives (the store starts later or has gaps); the gains rest on fewer weeks",
            adapt_hours,
            len(samples),
            int(expected),
        )
    loss_fn = make_loss(run.normaliser, sea_mask, units=cfg.trainer.loss_units)
    model.eval()
    started = time.perf_counter()
    batches = _read_samples(
        run, site.store_path, timeline, samples, known, sea_mask, last_frame=site.init_index
    )
    fitted = fit_gain(model, batches, loss_fn)
    seconds = time.perf_counter() - started
    before, after = fitted["loss_before"].sum(), fitted["loss_after"].sum()
    log.info(
        "ZO gain adaptation on %d samples: window loss %.4g -> %.4g, gains %s",
        len(samples),
        before / len(samples),
        after / len(samples),
        np.round(fitted["gain"], 2).tolist(),
    )
    return {
        "method": "zo-gain-parabola",
        "target": "gain",
        "hours": adapt_hours,
        "samples": len(samples),
        "every": every,
        "first_init": f"{_hours_to_stamp(timeline.hours[samples[0]]):%Y-%m-%dT%H}",
        "last_init": f"{_hours_to_stamp(timeline.hours[samples[-1]]):%Y-%m-%dT%H}",
        "lead_times": list(cfg.samples.lead_times),
        "variables": list(cfg.samples.variables),
        "gain": np.round(fitted["gain"], 4).tolist(),
        "loss_before": float(before / len(samples)),
        "loss_after": float(after / len(samples)),
        "samples_per_lead": known.sum(axis=0).tolist(),
        "forwards": 2 * len(samples),
        "seconds": round(seconds, 3),
    }


def _window_samples(run: Any, timeline: Any, init_index: int, adapt_hours: int) -> np.ndarray:
    """Store indices of the samples whose frames (lags and every lead) lie in the window."""
    samples, known = _window_samples_per_lead(run, timeline, init_index, adapt_hours)
    return samples[known.all(axis=1)]


def gain_window(
    run: Any, timeline: Any, init_index: int, adapt_hours: int, every: int = 3
) -> tuple[np.ndarray, np.ndarray]:
    """The samples :func:`adapt_gain` fits on (one every ``every`` init times) and ``known
    [n, n_lead]``, which of their targets it uses."""
    samples, known = _window_samples_per_lead(run, timeline, init_index, adapt_hours)
    return samples[::every], known[::every]


def _window_samples_per_lead(
    run: Any, timeline: Any, init_index: int, adapt_hours: int
) -> tuple[np.ndarray, np.ndarray]:
    """The samples with a known target in the window, and ``known [n, n_lead]``: which of their
    lead times' targets lie in it (lags and target without gaps, none after the init time)."""
    from seacast.splits import Selection

    cfg: ExperimentConfig = run.config
    lags, lead_hours = cfg.samples.lags, list(cfg.samples.lead_times)
    t0 = int(timeline.hours[init_index])
    window = Selection(((int(t0 - adapt_hours + timeline.step_hours), t0),))
    per_lead = [
        timeline.select(window, lags, [timeline.steps(h, "lead time")])[0] for h in lead_hours
    ]
    samples = np.unique(np.concatenate(per_lead)).astype(np.int64)
    if len(samples) == 0 or any(len(indices) == 0 for indices in per_lead):
        needed = (lags - 1) * timeline.step_hours + max(lead_hours) + timeline.step_hours
        raise ConfigError(
            f"--adapt-hours {adapt_hours} holds no whole training sample before the init time "
            f"(a sample spans lags + the longest lead time = {needed:g} h, without gaps)",
            f"use --adapt-hours {int(needed) + 24} or more",
        )
    known = np.stack([np.isin(samples, indices) for indices in per_lead], axis=1)
    return samples, known


def _read_samples(
    run: Any,
    store_path: Path,
    timeline: Any,
    samples: np.ndarray,
    known: np.ndarray,
    sea_mask: np.ndarray,
    *,
    last_frame: int,
    block: int = 16,
    batch: int = 1,
) -> Any:
    """``(x [B, C, lags, H, W], y [B, n_lead, C, H, W], known [B, n_lead])`` for ``batch``
    samples at a time, read ``block`` samples at a time; no frame after ``last_frame`` (the init
    time) is read, and the targets past it are zeros with ``known`` 0."""
    cfg: ExperimentConfig = run.config
    lags = cfg.samples.lags
    lead_steps = np.asarray([timeline.steps(h, "lead time") for h in cfg.samples.lead_times])
    encoding = run.encoding_for(sea_mask)
    device = next(run.model.parameters()).device
    with xr.open_zarr(store_path, consolidated=False, zarr_format=3, chunks=None) as store:
        for start in range(0, len(samples), block):
            part = samples[start : start + block]
            first = int(part[0]) - lags + 1
            last = min(int(part[-1]) + int(lead_steps.max()), last_frame)
            frames = encoding.encode(
                _read_frames(store, list(cfg.samples.variables), np.arange(first, last + 1)),
                np.asarray(timeline.hours[first : last + 1]),
            )
            forcing = run.forcing
            if forcing is not None:
                # each sample's weather forecast was issued by its init time, so before this one
                ahead = np.arange(first, int(part[-1]) + forcing.horizon_steps + 1)
                forcing_frames = forcing.read(store, ahead, sea_mask)
            for a in range(0, len(part), batch):
                xs, ys = [], []
                for k in range(a, min(a + batch, len(part))):
                    j = int(part[k]) - first
                    x = frames[j - lags + 1 : j + 1].permute(1, 0, 2, 3)
                    if forcing is not None:
                        x = forcing.with_channels(x, forcing_frames, j)
                    xs.append(x)
                    mask = known[start + k]
                    y = torch.zeros((len(lead_steps), *frames.shape[1:]), dtype=frames.dtype)
                    y[mask] = frames[j + lead_steps[mask]]
                    ys.append(y)
                weight = torch.as_tensor(
                    known[start + a : start + a + len(xs)], dtype=torch.float32
                )
                x = torch.stack(xs).contiguous()
                yield x.to(device), torch.stack(ys).to(device), weight.to(device)
            del frames
