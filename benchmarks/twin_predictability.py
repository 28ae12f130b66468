"""How much of the anomaly at each lead time a forecast from the sea alone could predict, on the twin.

The twin's weather is seeded storms born at random (Poisson) times inside the box, over a
slowly varying westerly flow (:mod:`seacast.twin.weather`). A storm born after the init time
cannot be known from the sea at the init time, by any model. This measures how much of the
anomaly (obs - tide) at each lead time such storms carry.

At init times every ``--every`` hours of a twin year the run is branched. Each branch starts
from the exact state at the init time:

* **truth**: the run itself, with the full weather;
* **known storms** (an oracle): the storms born after the init time removed, everything else
  kept (the large-scale wind ahead and every storm alive at t0, with its whole future track).
  What it misses is what no forecast from the sea can know. Its error, less its mean at each
  point and lead time, is a floor under the MSE of any such forecast (``floor``);
* **persisted forcing**: the wind stress and pressure frozen at their init-time values. A perfect
  sea model with a persisted-wind forecast: attainable in principle from the full state;
* **no storms ahead**: every storm removed from the init time on, the large-scale flow kept: the
  sea's own memory (surge relaxing, waves crossing the basin) under a storm-free weather forecast.
  It still knows the large-scale flow ahead (a sum of slow oscillations);
* **no storms, flow persisted**: the same with the large-scale flow frozen at its init-time value.
  A perfect sea model whose weather forecast is "no storms, the flow as now": what the sea
  state alone could give, with perfect physics;
* **tide**: a second run of the same twin without weather, from the same start: the twin's own
  tide and river, a perfect tide table.

Prints per variable and lead time the MSE of each branch over the tide's (over sea points and
init times), the floor over the tide's by season, and the number of init times. A ratio of 0.97
at +24 h says that no forecast from the sea fields can beat a perfect tide there by more than 3 %.
``so`` is left out by default: without weather the plume differs, so its tide run is no tide table.

    .venv/bin/python benchmarks/twin_predictability.py [--seed 1 --months 2025-01:2025-12 --every 12]
"""

from __future__ import annotations

import argparse
import copy
import time

import numpy as np
import pandas as pd
from rich.progress import Progress

from seacast.config import DataConfig
from seacast.seasons import SEASONS, season_of
from seacast.twin import TwinModel, run_span

LEAD_TIMES = (6, 12, 24)


def twin_config(seed: int, months: str, shape: int, weather: bool = True) -> DataConfig:
    return DataConfig(
        name="predictability",
        months=months,
        twin={"shape": [shape, shape], "seed": seed, "weather": weather},
    )


def fields(model: TwinModel, variables: list[str]) -> np.ndarray:
    """``[C, n_sea]`` float64 of the model's current state."""
    snap = model.snapshot()
    sea = model.grid.sea
    return np.stack([getattr(snap, v)[sea] for v in variables])


def without_unborn_storms(model: TwinModel) -> TwinModel:
    branch = copy.deepcopy(model)
    branch.weather.storms = [s for s in branch.weather.storms if s.start_hours <= model.hours]
    return branch


def without_storms(model: TwinModel) -> TwinModel:
    branch = copy.deepcopy(model)
    branch.weather.storms = []
    return branch


def without_storms_persisted_flow(model: TwinModel) -> TwinModel:
    branch = without_storms(model)
    frozen = branch.weather.background_wind(model.hours)
    branch.weather.background_wind = lambda hours: frozen  # type: ignore[method-assign]
    return branch


def with_persisted_forcing(model: TwinModel) -> TwinModel:
    branch = copy.deepcopy(model)
    frozen = branch.weather.fields(model.hours)
    branch.weather.fields = lambda hours: frozen  # type: ignore[method-assign]
    return branch


def run_branch(branch: TwinModel, variables: list[str]) -> np.ndarray:
    """``[n_lead, C, n_sea]``: the branch at each lead time."""
    out = []
    for hour in range(1, max(LEAD_TIMES) + 1):
        branch.advance_hour()
        if hour in LEAD_TIMES:
            out.append(fields(branch, variables))
    return np.stack(out)


def simulate_branches(
    seed: int, months: str, shape: int, every: int, variables: list[str]
) -> tuple[pd.DatetimeIndex, dict[str, np.ndarray]]:
    """Init times and ``[n_init, n_lead, C, n_sea]`` for truth, tide and both branches."""
    cfg = twin_config(seed, months, shape)
    start, first, end = run_span(cfg)
    truth_model = TwinModel(cfg, start, end)
    tide_model = TwinModel(twin_config(seed, months, shape, weather=False), start, end)
    last_init = end - pd.Timedelta(hours=max(LEAD_TIMES) + 1)
    inits = pd.date_range(first, last_init, freq=f"{every}h")
    hours_total = int((end - start) / pd.Timedelta(hours=1))
    keep = {
        str(t) for init in inits for t in (init + pd.Timedelta(hours=lead) for lead in LEAD_TIMES)
    }
    truth_at: dict[str, np.ndarray] = {}
    tide_at: dict[str, np.ndarray] = {}
    known, persisted, calm, calm_persisted = [], [], [], []
    with Progress() as progress:
        task = progress.add_task("twin branches", total=hours_total)
        init_set = set(inits)
        while truth_model.time < end:
            now = truth_model.time
            if now in init_set:
                known.append(run_branch(without_unborn_storms(truth_model), variables))
                persisted.append(run_branch(with_persisted_forcing(truth_model), variables))
                calm.append(run_branch(without_storms(truth_model), variables))
                calm_persisted.append(
                    run_branch(without_storms_persisted_flow(truth_model), variables)
                )
            if str(now) in keep:
                truth_at[str(now)] = fields(truth_model, variables)
                tide_at[str(now)] = fields(tide_model, variables)
            truth_model.advance_hour()
            tide_model.advance_hour()
            progress.advance(task)

    def at_leads(table: dict[str, np.ndarray]) -> np.ndarray:
        return np.stack(
            [
                np.stack([table[str(init + pd.Timedelta(hours=lead))] for lead in LEAD_TIMES])
                for init in inits
            ]
        )

    return inits, {
        "truth": at_leads(truth_at),
        "tide": at_leads(tide_at),
        "known storms": np.stack(known),
        "persisted forcing": np.stack(persisted),
        "no storms": np.stack(calm),
        "no storms, flow persisted": np.stack(calm_persisted),
    }


def mse(error: np.ndarray) -> np.ndarray:
    """``[n_init, n_lead, C, n_sea]`` -> ``[n_lead, C]``."""
    return np.mean(error**2, axis=(0, 3))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seed", type=int, default=1, help="twin seed (1: the held-out year)")
    parser.add_argument("--months", default="2025-01:2025-12")
    parser.add_argument("--shape", type=int, default=64)
    parser.add_argument("--every", type=int, default=12, help="hours between init times")
    parser.add_argument("--variables", nargs="+", default=["uo", "vo", "zos"])
    args = parser.parse_args()

    began = time.perf_counter()
    inits, runs = simulate_branches(args.seed, args.months, args.shape, args.every, args.variables)
    truth = runs["truth"]
    tide_mse = mse(truth - runs["tide"])
    unknown = truth - runs["known storms"]
    centred = unknown - unknown.mean(
        axis=0, keepdims=True
    )  # its mean is knowable: a forecast can add it
    rows = {
        "known storms (oracle)": mse(unknown),
        "floor (oracle, mean removed)": mse(centred),
        "persisted forcing": mse(truth - runs["persisted forcing"]),
        "no storms ahead": mse(truth - runs["no storms"]),
        "no storms, flow persisted": mse(truth - runs["no storms, flow persisted"]),
    }
    print(
        f"twin seed {args.seed}, {args.months}, {args.shape}x{args.shape}: {len(inits)} init times "
        f"every {args.every} h ({time.perf_counter() - began:.0f} s)"
    )
    print("MSE over a perfect tide's (the twin without weather), sea points and init times pooled")
    header = ["branch"] + [f"{v} +{lead} h" for lead in LEAD_TIMES for v in args.variables]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for name, value in rows.items():
        ratios = value / tide_mse
        cells = [
            f"{ratios[i, c]:.4f}"
            for i in range(len(LEAD_TIMES))
            for c in range(len(args.variables))
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    print("\nfloor / tide by season (init times in the season)")
    seasons = season_of(inits)
    print("| season | inits | " + " | ".join(header[1:]) + " |")
    print("|" + "---|" * (len(header) + 1))
    for season in SEASONS:
        chosen = seasons == season
        if not chosen.any():
            continue
        ratios = mse(centred[chosen]) / mse((truth - runs["tide"])[chosen])
        cells = [
            f"{ratios[i, c]:.4f}"
            for i in range(len(LEAD_TIMES))
            for c in range(len(args.variables))
        ]
        print(f"| {season} | {int(chosen.sum())} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
