"""The training loop shared by every update rule (backprop and the zeroth-order rules).

Offered:

* :func:`train` - run an :class:`~seacast.config.ExperimentConfig` into ``runs/<name>/``.
* :class:`RunResult` - what a finished run reports.
* :func:`validation_loss` - mean per-sample loss of a model over a dataset.

Per step: ``optimizer.zero_grad``; ``rule.step`` writes ``param.grad`` (or updates the
weights itself); the optimiser applies it; the schedule moves. Per epoch: validation, the
best checkpoint by validation loss, early stopping, ``checkpoint_last.pt`` (atomic),
``metrics.csv`` and ``meta.json``. ``resume=True`` continues from ``checkpoint_last.pt``
and, with the same seed, gives the same weights as an uninterrupted run: the sampling
order comes from ``seed + epoch`` and every RNG state is in the checkpoint.

Under ``torchrun`` the loop runs data-parallel: backprop through DistributedDataParallel,
other rules by averaging their gradient estimates over ranks. Only rank 0 writes.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.progress import (
    Progress,
)
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DistributedSampler, Subset

import seacast
from seacast.atomic import atomic_write_text
from seacast.config import ExperimentConfig, fingerprint, to_dict, to_yaml
from seacast.errors import ConfigError, DataError, SeacastError
from seacast.interrupts import safe_points
from seacast.progress import progress_bar
from seacast.training.checkpoint import (
    BEST,
    LAST,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from seacast.training.distributed import (
    DistInfo,
    all_reduce_sum,
    average_gradients,
    cleanup,
    init_distributed,
)
from seacast.training.losses import make_loss
from seacast.training.rules import LossFn, UpdateRule, make_rule
from seacast.windows import SampleSets, WindowDataset, make_loader, open_samples

METRIC_FIELDS = (
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "best_val",
    "lr",
    "forwards",
    "samples",
    "epoch_seconds",
    "samples_per_s",
    "wall_seconds",
)
# sections that must match between a checkpoint and the config that resumes it
_RESUME_MUST_MATCH = ("store", "seed", "samples", "model")


@dataclass
class RunResult:
    """What :func:`train` reports."""

    run_dir: Path
    best_val: float
    best_epoch: int
    epochs: int
    steps: int
    stopped: str
    history: list[dict[str, float]] = field(default_factory=list)
    meta: dict[str, Any] = field(default_factory=dict)


def code_version() -> dict[str, str]:
    """seacast's version and, when the package sits in a git checkout, ``git describe``."""
    version = {"seacast": seacast.__version__}
    root = Path(seacast.__file__).resolve().parents[1]
    try:
        described = subprocess.run(
            ["git", "-C", str(root), "describe", "--always", "--dirty", "--tags"],
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if described.returncode == 0 and described.stdout.strip():
            version["git"] = described.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return version


def _set_determinism(cfg: ExperimentConfig) -> None:
    if cfg.trainer.deterministic:
        # cuBLAS needs this before its first use to be deterministic
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    random.seed(cfg.seed)
    np.random.seed(cfg.seed % 2**32)
    torch.manual_seed(cfg.seed)


def _optimizer(model: nn.Module, cfg: ExperimentConfig) -> torch.optim.Optimizer:
    opts = cfg.trainer.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if opts.name == "adam":
        return torch.optim.Adam(params, lr=opts.lr, weight_decay=opts.weight_decay)
    return torch.optim.SGD(
        params, lr=opts.lr, momentum=opts.momentum, weight_decay=opts.weight_decay
    )


def step_schedule(
    optimizer: torch.optim.Optimizer, schedule: str, total_steps: int, warmup_steps: int = 0
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """The per-step lr schedule: linear warm-up over ``warmup_steps``, then cosine to 0 (or flat)."""
    if not warmup_steps:
        if schedule == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(total_steps, 1))
        return None
    decay_steps = max(total_steps - warmup_steps, 1)

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule != "cosine":
            return 1.0
        return 0.5 * (1.0 + math.cos(math.pi * min(step - warmup_steps, decay_steps) / decay_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: ExperimentConfig, total_steps: int) -> Any:
    opts = cfg.trainer.optimizer
    schedule = opts.schedule
    if schedule in ("cosine", "none"):
        warmup = round(opts.warmup_fraction * total_steps)
        return step_schedule(optimizer, schedule, total_steps, warmup)
    if schedule == "plateau":
        patience = max(cfg.trainer.patience // 2, 1)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5, patience=patience)
    return None


def _val_subset(dataset: WindowDataset, cfg: ExperimentConfig, info: DistInfo) -> Subset:
    indices = np.arange(len(dataset))
    limit = cfg.trainer.max_val_samples
    if limit is not None and len(indices) > limit:
        indices = np.unique(np.linspace(0, len(indices) - 1, limit).round().astype(int))
    # each rank takes every world_size-th sample: no padding, so the mean is exact
    return Subset(dataset, indices[info.rank :: info.world_size].tolist())


@torch.no_grad()
def validation_loss(model: nn.Module, loader: Any, loss_fn: LossFn, info: DistInfo) -> float:
    """Mean per-sample loss over the loader's samples (summed over ranks)."""
    was_training = model.training
    model.eval()
    total = torch.zeros(2, dtype=torch.float64)
    for batch in loader:
        x = batch["x"].to(info.device, non_blocking=True)
        y = batch["y"].to(info.device, non_blocking=True)
        losses = loss_fn(model(x), y)
        total += torch.tensor([float(losses.double().sum()), losses.numel()], dtype=torch.float64)
    model.train(was_training)
    total = all_reduce_sum(
        total.to(info.device if info.device.type == "cuda" else "cpu"), info
    ).cpu()
    return float(total[0] / total[1]) if total[1] > 0 else float("nan")


def _write_metrics(path: Path, history: list[dict[str, float]]) -> None:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=METRIC_FIELDS)
    writer.writeheader()
    for row in history:
        writer.writerow({k: row.get(k, "") for k in METRIC_FIELDS})
    atomic_write_text(path, buffer.getvalue())


def _write_meta(path: Path, meta: dict[str, Any]) -> None:
    atomic_write_text(path, json.dumps(meta, indent=2, default=str) + "\n")


def _mark_interrupted(run_dir: Path) -> None:
    """Record a Ctrl-C in this run's meta.json (only a run this process marked ``running``)."""
    path = run_dir / "meta.json"
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return
    if meta.get("status") != "running":
        return
    meta["status"] = "interrupted"
    meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    meta["resume"] = (
        f"seacast train ... --resume continues from {run_dir / LAST}"
        if (run_dir / LAST).is_file()
        else "no epoch had finished: start the run again"
    )
    _write_meta(path, meta)


def _prepare_run_dir(cfg: ExperimentConfig, resume: bool, overwrite: bool, info: DistInfo) -> Path:
    run_dir = Path(cfg.runs_dir) / cfg.name
    last = run_dir / LAST
    if resume and not last.is_file():
        raise ConfigError(
            f"cannot resume: {last} does not exist",
            "start the run without --resume, or check --name / runs_dir",
        )
    if not resume and last.is_file() and not overwrite:
        raise ConfigError(
            f"run folder {run_dir} already holds a trained run",
            "pass --resume to continue it, --name to start a new run, or delete the folder",
        )
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if overwrite and not resume:
            for name in (BEST, LAST, "metrics.csv", "meta.json", "tides.nc"):
                (run_dir / name).unlink(missing_ok=True)
    return run_dir


def _sections_that_differ(
    saved: dict[str, Any], cfg: ExperimentConfig, sections: tuple[str, ...]
) -> list[str]:
    """The config sections of a checkpoint (its saved config) that are not those of ``cfg``."""
    current = to_dict(cfg)
    return [key for key in sections if saved.get(key) != current.get(key)]


def _check_resumable(saved: dict[str, Any], cfg: ExperimentConfig, path: Path) -> None:
    differs = _sections_that_differ(saved, cfg, _RESUME_MUST_MATCH)
    if differs:
        raise ConfigError(
            f"cannot resume {path}: its {', '.join(differs)} differ from the config given",
            "resume with the run's own config (runs/<name>/config.yaml), or start a new run with --name",
        )


def _progress(enabled: bool) -> Progress:
    return progress_bar(
        "[bold]{task.description}",
        "loss {task.fields[loss]}",
        "{task.fields[rate]} samples/s",
        enabled=enabled,
    )


def _stop_on_bad_loss(
    value: float, where: str, run_dir: Path, lr: float, info: DistInfo, meta: dict[str, Any]
) -> None:
    if math.isfinite(value):
        return
    last = run_dir / LAST
    kept = (
        f"the last good checkpoint {last} (epoch {meta.get('epochs_completed', 0)}) is kept"
        if last.is_file()
        else "no checkpoint had been written yet"
    )
    if info.is_main:
        meta["status"] = f"stopped: {value} loss at {where}"
        meta["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
        _write_meta(run_dir / "meta.json", meta)
    raise SeacastError(
        f"the {where} loss became {value}; training stopped and {kept}",
        f"lower trainer.optimizer.lr (now {lr:g}) or check the store for NaN at sea points, "
        "then resume with --resume or start again",
    )


def run_tides(
    cfg: ExperimentConfig,
    sets: SampleSets,
    run_dir: Path,
    *,
    reuse: bool,
    save: bool,
    store_path: Path | None = None,
) -> Any:
    """The run's tidal constants, fitted on its training period only and saved as ``tides.nc``.

    A resumed run reuses the file it wrote, so its samples do not change mid-run.
    ``store_path`` fits on another store than the config's (``evaluate --store``).
    """
    from seacast.store import open_store
    from seacast.tides import TIDES_FILE, fit_tides, load_tides, train_periods

    path = run_dir / TIDES_FILE
    if reuse and path.is_file():
        return load_tides(path)
    store = open_store(store_path or cfg.store)
    try:
        tides = fit_tides(
            store,
            cfg.samples.variables,
            train_periods(sets.plan),
            constituents=cfg.tides.constituents,
            rayleigh=cfg.tides.rayleigh,
            long_period=cfg.tides.long_period,
            lead_times=cfg.samples.lead_times,
        )
    finally:
        store.close()
    if save:
        tides.save(path)
    return tides


def start_at_tide_reference(
    model: nn.Module, tides: Any, cfg: ExperimentConfig, sets: SampleSets | None = None
) -> None:
    """Set a tide-aware model's base to the fitted damping: untrained, it is tide(t0+L) + alpha a(t0);
    with ``model.anomaly_base: regressed``, to the regressed anomaly fitted on ``sets``' training split.
    """
    damping = tides.select(cfg.samples.variables).damping_for(cfg.samples.lead_times)
    with torch.no_grad():
        model.base_weight.copy_(torch.from_numpy(damping))
    if getattr(model, "regressed", False):
        if sets is None:
            raise ValueError("the regressed anomaly base needs the run's samples to fit on")
        from seacast.anomaly_regression import fit_for_run

        logging.getLogger("seacast.training").info(
            "fitting the regressed anomaly the model starts from"
        )
        regression = fit_for_run(cfg, tides, sets.plan, forcing=sets.train.forcing)
        logging.getLogger("seacast.training").info("the start uses: %s", regression.describe())
        coefficients = np.nan_to_num(regression.coefficients).astype(np.float32)
        if regression.n_forcing:
            from seacast.encoding import anomaly_normaliser

            # lags map anomaly to anomaly (scale-free); the forecast's weights give physical units
            scale = anomaly_normaliser(tides, cfg.samples.variables).scale.astype(np.float32)
            coefficients[:, :, 2 * cfg.samples.lags :] /= scale[None, :, None, None, None]
        with torch.no_grad():
            model.base_regression.copy_(torch.from_numpy(coefficients))
            model.base_sea_points.fill_(float(np.asarray(sets.sea_mask).sum()))
        if regression.spatial is not None:
            _install_spatial_map(model, regression.spatial, tides, cfg.samples.variables)


def start_from_run(model: nn.Module, cfg: ExperimentConfig, sets: SampleSets) -> dict[str, Any]:
    """Load the weights of ``trainer.init_from`` (a run folder's best checkpoint, or a file).

    The checkpoint must come from the same model, samples and store, so that its weights mean
    the same here; returns what meta.json records of it.
    """
    source = Path(cfg.trainer.init_from)
    path = source / BEST if source.is_dir() else source
    if not path.is_file():
        raise ConfigError(
            f"trainer.init_from: {source} is neither a run folder with {BEST} nor a checkpoint file",
            "point it at a trained run, e.g. --set trainer.init_from=runs/<name>",
        )
    saved = load_checkpoint(path)
    # the store by its contents: a copy of it elsewhere is the same store
    differs = _sections_that_differ(saved["config"], cfg, ("model", "samples"))
    if saved.get("store_fingerprint") != sets.fingerprint:
        differs.append("store")
    if differs:
        raise ConfigError(
            f"trainer.init_from: {path} was trained with another {', '.join(differs)} than this run",
            "start from a run of the same model, samples and store (its config.yaml), "
            "or leave trainer.init_from empty",
        )
    model.load_state_dict(saved["model"])
    return {
        "checkpoint": str(path),
        "run": saved["config"].get("name"),
        "trainer": saved["config"]["trainer"]["name"],
        "step": int(saved["step"]),
        "forwards": int(saved.get("forwards", 0)),
        "best_val": float(saved["best_val"]),
    }


def _install_spatial_map(model: nn.Module, spatial: Any, tides: Any, variables: list[str]) -> None:
    """The regression's spatial map on all of the model's channels (0 where it maps none)."""
    from seacast.encoding import anomaly_normaliser

    n_lead, n_var = spatial.use.shape
    channels = spatial.channels
    eofs = np.zeros((len(spatial.eofs), n_var, *spatial.eofs.shape[2:]), dtype=np.float32)
    eofs[:, channels] = spatial.eofs
    residual = np.zeros((n_lead, n_var, *spatial.eofs.shape[2:]), dtype=np.float32)
    residual[:, channels] = spatial.residual
    scale = np.ones(n_var, dtype=np.float32)
    # the model's inputs are the anomaly over its normaliser's std, the map's over its own
    scale[channels] = spatial.scale / anomaly_normaliser(tides, variables).scale[channels]
    model.set_spatial_base(
        *(torch.from_numpy(a) for a in (eofs, spatial.weights, residual, scale, spatial.use))
    )


def train(
    cfg: ExperimentConfig,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> RunResult:
    """Train ``cfg`` into ``runs_dir/name``; see the module docstring for what happens when."""
    info = init_distributed(cfg.device)
    # the determinism switches are process-wide: put them back for whoever runs next
    deterministic = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    cudnn_benchmark = torch.backends.cudnn.benchmark
    try:
        return _train(cfg, info, resume=resume, progress=progress, overwrite=overwrite)
    except KeyboardInterrupt:
        if info.is_main:
            _mark_interrupted(Path(cfg.runs_dir) / cfg.name)
        raise
    finally:
        torch.use_deterministic_algorithms(deterministic, warn_only=warn_only)
        torch.backends.cudnn.benchmark = cudnn_benchmark
        cleanup(info)


@dataclass
class TrainState:
    """The counters a run carries from epoch to epoch; saved in, and restored from, checkpoints."""

    epoch: int = 0
    step: int = 0
    forwards: float = 0.0
    samples: int = 0
    best_val: float = float("inf")
    best_epoch: int = 0
    bad_epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)

    def to_checkpoint(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "step": self.step,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "forwards": self.forwards,
            "samples": self.samples,
            "history": self.history,
        }

    @classmethod
    def from_checkpoint(cls, saved: dict[str, Any]) -> TrainState:
        return cls(
            epoch=int(saved["epoch"]),
            step=int(saved["step"]),
            forwards=float(saved["forwards"]),
            samples=int(saved["samples"]),
            best_val=float(saved["best_val"]),
            best_epoch=int(saved["best_epoch"]),
            bad_epochs=int(saved["bad_epochs"]),
            history=[dict(row) for row in saved["history"]],
        )

    @property
    def wall_seconds(self) -> float:
        """Training time of the epochs done (before a resume, too)."""
        return float(self.history[-1]["wall_seconds"]) if self.history else 0.0

    def record_validation(self, val: float) -> bool:
        """Count an epoch's validation loss; whether it is the best yet."""
        self.epoch += 1
        improved = val < self.best_val
        if improved:
            self.best_val, self.best_epoch, self.bad_epochs = val, self.epoch, 0
        else:
            self.bad_epochs += 1
        return improved


class Schedule:
    """The learning-rate schedule: per step (warm-up, cosine) or per validation (plateau)."""

    def __init__(self, optimizer: torch.optim.Optimizer, cfg: ExperimentConfig, total_steps: int):
        self.optimizer = optimizer
        self.per_validation = cfg.trainer.optimizer.schedule == "plateau"
        self.scheduler = _scheduler(optimizer, cfg, total_steps)

    @property
    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def after_step(self) -> None:
        if self.scheduler is not None and not self.per_validation:
            self.scheduler.step()

    def after_validation(self, val: float) -> None:
        if self.scheduler is not None and self.per_validation:
            self.scheduler.step(val)

    def state_dict(self) -> dict[str, Any] | None:
        return self.scheduler.state_dict() if self.scheduler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scheduler is not None and state is not None:
            self.scheduler.load_state_dict(state)


@dataclass
class RunFolder:
    """What a run writes: config.yaml, meta.json, metrics.csv and the checkpoints (rank 0 only)."""

    path: Path
    writes: bool
    meta: dict[str, Any]

    def write_meta(self, **updates: Any) -> None:
        self.meta.update(updates)
        if self.writes:
            _write_meta(self.path / "meta.json", self.meta)

    def write_config(self, cfg: ExperimentConfig) -> None:
        if self.writes:
            atomic_write_text(self.path / "config.yaml", to_yaml(cfg))

    def save(self, checkpoint: dict[str, Any], *, last: bool, best: bool) -> None:
        if not self.writes:
            return
        if last:
            save_checkpoint(checkpoint, self.path / LAST)
        if best:
            save_checkpoint(checkpoint, self.path / BEST)

    def write_metrics(self, history: list[dict[str, float]]) -> None:
        if self.writes:
            _write_metrics(self.path / "metrics.csv", history)


@dataclass
class Session:
    """Everything a run trains with, built once by :func:`setup`."""

    cfg: ExperimentConfig
    info: DistInfo
    sets: SampleSets
    model: nn.Module
    step_model: nn.Module  # the model, or its DistributedDataParallel wrapper
    rule: UpdateRule
    optimizer: torch.optim.Optimizer
    schedule: Schedule
    loss_fn: LossFn
    sampler: DistributedSampler
    train_loader: Any
    val_loader: Any
    steps_per_epoch: int
    total_steps: int
    model_args: dict[str, Any]
    folder: RunFolder

    def checkpoint(self, state: TrainState) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "rule": self.rule.state_dict(),
            **state.to_checkpoint(),
            "rng": rng_state(),
            "config": to_dict(self.cfg),
            "model_args": self.model_args,
            "normaliser": self.sets.normaliser.to_dict(),
            # the weather-forecast inputs' scaling, so a forecast from another store scales them alike
            "forcing": self.sets.train.forcing.to_dict() if self.sets.train.forcing else None,
            "store_fingerprint": self.sets.fingerprint,
        }

    def restore(self) -> TrainState:
        """The state of ``checkpoint_last.pt``, loaded into the model, optimiser, schedule and rule."""
        path = self.folder.path / LAST
        saved = load_checkpoint(path, map_location=self.info.device)
        _check_resumable(saved["config"], self.cfg, path)
        self.model.load_state_dict(saved["model"])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.schedule.load_state_dict(saved.get("scheduler"))
        self.rule.load_state_dict(saved.get("rule", {}))
        set_rng_state(saved["rng"])
        return TrainState.from_checkpoint(saved)

    def stop_reason(self, state: TrainState) -> str | None:
        """Why training ends after this point, or None while it goes on."""
        tcfg = self.cfg.trainer
        if state.bad_epochs >= tcfg.patience:
            return "early_stopping"
        if tcfg.max_steps is not None and state.step >= tcfg.max_steps:
            return "max_steps"
        if state.epoch >= tcfg.epochs or state.step >= self.total_steps:
            return "epochs"
        return None

    def check_loss(self, value: float, where: str) -> None:
        _stop_on_bad_loss(
            value, where, self.folder.path, self.schedule.lr, self.info, self.folder.meta
        )


def _check_nonempty(sets: SampleSets, cfg: ExperimentConfig) -> None:
    for name, dataset in (("training", sets.train), ("validation", sets.validation)):
        if len(dataset) == 0:
            raise DataError(
                f"the {name} split of {cfg.store} holds no sample (preset {sets.plan.preset}, "
                f"lags {cfg.samples.lags}, lead times {cfg.samples.lead_times} h)",
                "use a longer store, shorter lags or lead times, or other split ranges",
            )


def _model_args(cfg: ExperimentConfig, sets: SampleSets) -> dict[str, Any]:
    """The arguments of ``build_model`` besides the config, as checkpoints record them."""
    n_vars = len(cfg.samples.variables)
    return {
        "in_channels": n_vars + len(cfg.samples.forcing),  # the forcing channels follow the sea
        "out_channels": n_vars,
        "lags": cfg.samples.lags,
        "lead_times": list(cfg.samples.lead_times),
        "shape": list(sets.shape),
    }


def _loaders(cfg: ExperimentConfig, sets: SampleSets, info: DistInfo) -> tuple[Any, Any, Any]:
    """The sampler, training loader and validation loader, with private generators."""
    tcfg = cfg.trainer
    sampler = DistributedSampler(
        sets.train, num_replicas=info.world_size, rank=info.rank, shuffle=True, seed=cfg.seed
    )
    train_loader = make_loader(
        sets.train,
        tcfg.batch_size,
        sampler=sampler,
        num_workers=tcfg.num_workers,
        device=str(info.device),
    )
    # private generators: creating loader iterators must not draw from the global RNG
    train_loader.generator = torch.Generator().manual_seed(cfg.seed)
    val_loader = make_loader(
        _val_subset(sets.validation, cfg, info),
        tcfg.batch_size,
        num_workers=tcfg.num_workers,
        device=str(info.device),
    )
    val_loader.generator = torch.Generator().manual_seed(cfg.seed + 1)
    return sampler, train_loader, val_loader


def _step_budget(cfg: ExperimentConfig, sampler: DistributedSampler) -> tuple[int, int]:
    """Steps per epoch and steps in all."""
    tcfg = cfg.trainer
    steps_per_epoch = math.ceil(len(sampler) / tcfg.batch_size)
    if tcfg.steps_per_epoch is not None:
        steps_per_epoch = min(steps_per_epoch, tcfg.steps_per_epoch)
    total_steps = tcfg.epochs * steps_per_epoch
    if tcfg.max_steps is not None:
        total_steps = min(total_steps, tcfg.max_steps)
    return steps_per_epoch, total_steps


def _run_meta(
    cfg: ExperimentConfig,
    sets: SampleSets,
    model: nn.Module,
    info: DistInfo,
    tides: Any,
    steps_per_epoch: int,
) -> dict[str, Any]:
    """What meta.json says of a run when it starts: data, code, model and budget."""
    return {
        "name": cfg.name,
        "store": str(cfg.store),
        "store_fingerprint": sets.fingerprint,
        "config_fingerprint": fingerprint(cfg),
        "code_version": code_version(),
        "torch": torch.__version__,
        "trainer": cfg.trainer.name,
        "model": cfg.model.name,
        "parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        "world_size": info.world_size,
        "device": str(info.device),
        "samples": sets.summary(),
        "tides": tides.provenance() if tides is not None else None,
        "steps_per_epoch": steps_per_epoch,
        "status": "running",
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def setup(
    cfg: ExperimentConfig, info: DistInfo, *, resume: bool, overwrite: bool
) -> tuple[Session, Any]:
    """The session a run trains with: data, tides, model, rule, optimiser, schedule, run folder.

    Returns it with the run's tidal constants (None without a tide base).
    """
    from seacast.models import build_model

    run_dir = _prepare_run_dir(cfg, resume, overwrite, info)
    sets: SampleSets = open_samples(cfg.store, cfg.samples)
    _check_nonempty(sets, cfg)
    tides = None
    if cfg.model.base == "tide":
        tides = run_tides(cfg, sets, run_dir, reuse=resume, save=info.is_main)
        sets = sets.with_tides(tides)
    for dataset in (sets.train, sets.validation):
        # a store this size fits in memory: read and encode each frame once, not once per sample
        dataset.preload(cfg.trainer.preload_gb)

    model_args = _model_args(cfg, sets)
    model = build_model(
        cfg.model,
        model_args["in_channels"],
        model_args["out_channels"],
        cfg.samples.lags,
        cfg.samples.lead_times,
        sets.shape,
        seed=cfg.seed,
    )
    if tides is not None:
        start_at_tide_reference(model, tides, cfg, sets)
    started_from = None
    if cfg.trainer.init_from is not None and not resume:  # a resumed run restores its own weights
        started_from = start_from_run(model, cfg, sets)
    model.to(info.device)
    rule: UpdateRule = make_rule(cfg.trainer.name, model, cfg.trainer)
    if info.distributed and rule.applies_update:
        raise ConfigError(
            f"trainer '{cfg.trainer.name}' updates the weights in place, which cannot be kept in step across ranks",
            "run it in a single process, or turn its in-place option off (e.g. trainer.spsa.inplace_sgd=false)",
        )
    step_model: nn.Module = model
    if info.distributed and rule.uses_autograd:
        step_model = DistributedDataParallel(
            model, device_ids=[info.device.index] if info.device.type == "cuda" else None
        )
    optimizer = _optimizer(model, cfg)
    sampler, train_loader, val_loader = _loaders(cfg, sets, info)
    steps_per_epoch, total_steps = _step_budget(cfg, sampler)
    meta = _run_meta(cfg, sets, model, info, tides, steps_per_epoch)
    if started_from is not None:
        meta["init_from"] = started_from
    session = Session(
        cfg=cfg,
        info=info,
        sets=sets,
        model=model,
        step_model=step_model,
        rule=rule,
        optimizer=optimizer,
        schedule=Schedule(optimizer, cfg, total_steps),
        loss_fn=make_loss(
            sets.normaliser, sets.sea_mask, cfg.trainer.land_in_loss, cfg.trainer.loss_units
        ),
        sampler=sampler,
        train_loader=train_loader,
        val_loader=val_loader,
        steps_per_epoch=steps_per_epoch,
        total_steps=total_steps,
        model_args=model_args,
        folder=RunFolder(run_dir, info.is_main, meta),
    )
    return session, tides


def train_step(session: Session, state: TrainState, batch: dict[str, torch.Tensor]) -> float:
    """One update from one batch: the rule's estimate, then the optimiser and the schedule."""
    info = session.info
    x = batch["x"].to(info.device, non_blocking=True)
    y = batch["y"].to(info.device, non_blocking=True)
    session.optimizer.zero_grad(set_to_none=True)
    session.rule.set_lr(session.schedule.lr)
    stats = session.rule.step(session.step_model, x, y, session.loss_fn)
    loss = stats.loss
    if info.distributed:
        if not session.rule.uses_autograd:  # DDP averages backprop's gradients itself
            average_gradients(session.model, info)
        summed = all_reduce_sum(torch.tensor([loss], dtype=torch.float64, device=info.device), info)
        loss = float(summed[0]) / info.world_size
    session.check_loss(loss, f"training (epoch {state.epoch + 1}, step {state.step + 1})")
    if not session.rule.applies_update:
        session.optimizer.step()
    session.schedule.after_step()
    batch_samples = int(x.shape[0]) * info.world_size
    state.step += 1
    state.samples += batch_samples
    state.forwards += stats.forwards
    return loss


@dataclass
class EpochStats:
    """What one pass over the training loader did."""

    mean_loss: float
    steps: int
    samples: int
    seconds: float


def train_epoch(
    session: Session, state: TrainState, on_step: Callable[[float, float], None] | None = None
) -> EpochStats:
    """Up to ``steps_per_epoch`` updates (fewer when the step budget ends first).

    ``on_step(loss, samples_per_s)`` is called after each (the progress bar).
    """
    session.sampler.set_epoch(state.epoch)
    session.model.train()
    started = time.perf_counter()
    total_loss, steps, samples_before = 0.0, 0, state.samples
    for batch in session.train_loader:
        if steps >= session.steps_per_epoch or state.step >= session.total_steps:
            break
        step_started = time.perf_counter()
        before = state.samples
        loss = train_step(session, state, batch)
        total_loss += loss
        steps += 1
        if on_step is not None:
            rate = (state.samples - before) / max(time.perf_counter() - step_started, 1e-9)
            on_step(loss, rate)
    return EpochStats(
        mean_loss=total_loss / max(steps, 1),
        steps=steps,
        samples=state.samples - samples_before,
        seconds=time.perf_counter() - started,
    )


def validate(session: Session) -> float:
    """The model's mean validation loss (every rank's samples)."""
    return validation_loss(session.model, session.val_loader, session.loss_fn, session.info)


def _end_epoch(
    session: Session, state: TrainState, epoch: EpochStats, val: float, wall_seconds: float
) -> bool:
    """Count the validation, append the history row, save the checkpoints; whether it improved."""
    session.schedule.after_validation(val)
    improved = state.record_validation(val)
    state.history.append(
        {
            "epoch": state.epoch,
            "step": state.step,
            "train_loss": epoch.mean_loss,
            "val_loss": val,
            "best_val": state.best_val,
            "lr": session.schedule.lr,
            "forwards": state.forwards,
            "samples": state.samples,
            "epoch_seconds": epoch.seconds,
            "samples_per_s": epoch.samples / max(epoch.seconds, 1e-9),
            "wall_seconds": wall_seconds,
        }
    )
    folder = session.folder
    folder.meta["epochs_completed"] = state.epoch
    if folder.writes:
        with safe_points():  # a Ctrl-C lands after the epoch's files agree with each other
            folder.save(session.checkpoint(state), last=True, best=improved)
            folder.write_metrics(state.history)
            folder.write_meta(
                steps=state.step,
                best_epoch=state.best_epoch,
                best_val=state.best_val,
                forwards=state.forwards,
            )
    return improved


def _start_from_reference(session: Session, state: TrainState) -> None:
    """An untrained model with a base *is* its reference: score it and keep it as the best checkpoint.

    Training can then only improve on it.
    """
    reference_val = validate(session)
    session.check_loss(reference_val, "validation (untrained)")
    state.best_val, state.best_epoch = reference_val, 0
    session.folder.meta.update(reference_val=reference_val, best_epoch=0, best_val=reference_val)
    session.folder.save(session.checkpoint(state), last=False, best=True)
    session.folder.write_meta()


def _train(
    cfg: ExperimentConfig, info: DistInfo, *, resume: bool, progress: bool, overwrite: bool
) -> RunResult:
    started = time.perf_counter()
    _set_determinism(cfg)
    session, _ = setup(cfg, info, resume=resume, overwrite=overwrite)
    folder, tcfg = session.folder, cfg.trainer
    state = TrainState()
    if resume:
        state = session.restore()
        old_meta = folder.path / "meta.json"
        if old_meta.is_file():
            before = json.loads(old_meta.read_text())
            folder.meta["started"] = before.get("started", folder.meta["started"])
            # the untrained reference was scored once, before the first epoch: keep its score
            if "reference_val" in before:
                folder.meta["reference_val"] = before["reference_val"]
        folder.meta["resumed_at_epoch"] = state.epoch
    folder.meta["epochs_completed"] = state.epoch
    folder.write_config(cfg)
    folder.write_meta()
    if not resume and cfg.model.residual:
        _start_from_reference(session, state)

    wall_before = state.wall_seconds
    run_started, first_step = time.perf_counter(), state.step
    stopped = session.stop_reason(state)
    with _progress(progress and info.is_main) as bar:
        task = bar.add_task(
            f"{tcfg.name} epoch {state.epoch + 1}",
            total=session.total_steps,
            completed=state.step,
            loss="-",
            rate="-",
        )

        def on_step(loss: float, rate: float) -> None:
            bar.update(task, advance=1, loss=f"{loss:.4g}", rate=f"{rate:.1f}")

        while stopped is None:
            bar.update(task, description=f"{tcfg.name} epoch {state.epoch + 1}/{tcfg.epochs}")
            epoch = train_epoch(session, state, on_step)
            val = validate(session)
            session.check_loss(val, f"validation (epoch {state.epoch + 1})")
            wall = wall_before + time.perf_counter() - run_started
            improved = _end_epoch(session, state, epoch, val, wall)
            if progress and info.is_main:
                note = (
                    "(best)"
                    if improved
                    else f"({state.bad_epochs}/{tcfg.patience} without improvement)"
                )
                bar.console.log(
                    f"epoch {state.epoch}: train {epoch.mean_loss:.5g}  val {val:.5g}  {note}"
                )
            stopped = session.stop_reason(state)

    folder.write_meta(
        status=f"finished ({stopped})",
        finished=datetime.now(UTC).isoformat(timespec="seconds"),
        steps=state.step,
        best_epoch=state.best_epoch,
        best_val=state.best_val,
        forwards=state.forwards,
        timings={
            "train_seconds": wall_before + time.perf_counter() - run_started,
            "setup_seconds": run_started - started,
            "seconds_per_step": (time.perf_counter() - run_started)
            / max(state.step - first_step, 1),
        },
    )
    return RunResult(
        run_dir=folder.path,
        best_val=state.best_val,
        best_epoch=state.best_epoch,
        epochs=state.epoch,
        steps=state.step,
        stopped=stopped,
        history=state.history,
        meta=folder.meta,
    )
