"""Tiny trained runs for the forecast, evaluate and cron tests (real store writer, real training loop).

``tiny_run`` trains once per test session and caches the folder, so the three test files
share one run. ``shifted_store`` writes a synthetic store whose later part is in another
regime (a sea-level set-up and stronger currents, as in a storm surge), for the ZO test.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import torch

from seacast.config import DataConfig, ExperimentConfig, GridConfig, StoreConfig, to_dict
from seacast.store import finalise_store, write_new_store
from seacast.synthetic import synthetic_dataset, synthetic_store

_CACHE: dict[str, Path] = {}

TINY = {
    "shape": (32, 32),
    "hours": 24 * 20,
    "start": "2024-02-20",
    "variables": ("zos", "uo"),
    "lags": 3,
    "lead_times": [1, 3],
}


def experiment(
    name: str,
    store: Path,
    runs_dir: Path,
    *,
    lags: int,
    lead_times: list[int],
    variables,
    steps: int,
    base: str = "persistence",
    lr: float = 3e-3,
    split: dict | None = None,
    seed: int = 0,
) -> ExperimentConfig:
    samples = {
        "variables": list(variables),
        "lags": lags,
        "lead_times": lead_times,
        "normalisation": "minmax",
    }
    if split:
        samples["split"] = split
    return ExperimentConfig.model_validate(
        {
            "name": name,
            "store": str(store),
            "runs_dir": str(runs_dir),
            "seed": seed,
            "samples": samples,
            "model": {"name": "3ddr_unet", "filters": 2, "dropout": 0.0, "base": base},
            "trainer": {
                "name": "backprop",
                "batch_size": 4,
                "epochs": 1,
                "max_steps": steps,
                "steps_per_epoch": steps,
                "optimizer": {"lr": lr, "schedule": "none"},
            },
        }
    )


def tiny_run(root: Path) -> Path:
    """A run trained for a few steps on a 32x32 synthetic store (cached for the session)."""
    if "tiny" in _CACHE and _CACHE["tiny"].exists():
        return _CACHE["tiny"]
    from seacast.training.loop import train

    torch.set_num_threads(1)  # 2-core CI shared with other tests: threads only add contention
    root.mkdir(parents=True, exist_ok=True)
    store = synthetic_store(
        root / "store.zarr",
        shape=TINY["shape"],
        hours=TINY["hours"],
        variables=TINY["variables"],
        start=TINY["start"],
    )
    cfg = experiment(
        "tiny",
        store,
        root / "runs",
        lags=TINY["lags"],
        lead_times=TINY["lead_times"],
        variables=TINY["variables"],
        steps=6,
        split={"preset": "fractions", "fractions": [0.6, 0.1, 0.3]},
    )
    result = train(cfg, progress=False, overwrite=True)
    _CACHE["tiny"] = result.run_dir
    return result.run_dir


def shifted_store(
    path: Path,
    *,
    shape=(16, 16),
    hours: int = 24 * 24,
    start: str = "2024-03-01",
    shift_from: str = "2024-03-17",
    offset: float = 0.6,
    seed: int = 3,
) -> Path:
    """A zos-only store whose times from ``shift_from`` on sit ``offset`` m higher (a surge set-up).

    Statistics come from the period before the shift, as a trained model would have seen.
    """
    ds = synthetic_dataset(shape=shape, hours=hours, variables=("zos",), start=start, seed=seed)
    later = ds["time"] >= np.datetime64(pd.Timestamp(shift_from))
    ds["zos"] = ds["zos"] + (offset * later).astype(np.float32)
    ds["zos"] = ds["zos"].where(ds["sea_mask"]).astype(np.float32)
    stats_period = (start, str((pd.Timestamp(shift_from) - pd.Timedelta(hours=1)).isoformat()))
    config = DataConfig(
        name=path.stem,
        source="twin",
        months=f"{pd.Timestamp(start):%Y-%m}:{pd.Timestamp(ds['time'].values[-1]):%Y-%m}",
        variables=["zos"],
        grid=GridConfig(shape=shape),
        store=StoreConfig(path=path, chunk_hours=24, stats_period=stats_period),
    )
    write_new_store(path, ds, chunk_hours=24, overwrite=True)
    finalise_store(path, config=to_dict(config), stats_period=stats_period, step_hours=1.0)
    return path
