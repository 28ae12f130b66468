"""North Sea twin benchmark: simulated hours per second, a year's runtime, forecastability.

Prints, measured in one run:
  1. simulated hours per second on 64x64 and 128x128 (median of repeats of short runs),
     wall-clock and CPU time, and the implied time for one simulated year;
  2. with --year: one full year on 64x64 through `simulate` (as `seacast fetch` runs it),
     timed and checked to stay finite and bounded;
  3. forecastability of zos over whole months: RMSE of persistence against a tide-only
     harmonic prediction (M2, S2, N2, K1, O1 fitted per point on the month) at 6/12/24 h;
  4. with --years N: an N-year stability run on a coarse grid (max |zos|, |u|, salinity range).

    .venv/bin/python benchmarks/twin.py                 # 1 and 3 (about a minute)
    .venv/bin/python benchmarks/twin.py --year          # also 2
    .venv/bin/python benchmarks/twin.py --years 3       # also 4
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import pandas as pd

from seacast.config import DataConfig
from seacast.twin import TwinModel, simulate
from seacast.twin.tides import CONSTITUENTS


def config(months: str, shape: int, **twin) -> DataConfig:
    return DataConfig(name="bench", months=months, twin={"shape": [shape, shape], **twin})


def hours_per_second(shape: int, days: float, repeats: int) -> tuple[float, float, int, float]:
    """Median simulated hours per second (wall, CPU), sub-steps per hour and dt."""
    walls, cpus = [], []
    hours = int(days * 24)
    for _ in range(repeats):
        model = TwinModel(config("2024-01", shape), pd.Timestamp("2024-01-05"))
        wall, cpu = time.perf_counter(), time.process_time()
        for _ in range(hours):
            model.advance_hour()
        walls.append(hours / (time.perf_counter() - wall))
        cpus.append(hours / (time.process_time() - cpu))
    return statistics.median(walls), statistics.median(cpus), model.substeps, model.dt


def harmonic_residual(series: np.ndarray) -> np.ndarray:
    hours = np.arange(series.shape[0], dtype=float)
    columns = [np.ones_like(hours)]
    for constituent in CONSTITUENTS:
        omega = 2 * np.pi / constituent.period_hours
        columns += [np.cos(omega * hours), np.sin(omega * hours)]
    design = np.stack(columns, axis=1)
    coef, *_ = np.linalg.lstsq(design, series, rcond=None)
    return series - design @ coef


def forecastability(month: str, shape: int) -> dict[int, tuple[float, float]]:
    ((_, ds),) = list(simulate(config(month, shape)))
    zos = ds["zos"].values.astype(float)
    series = zos[:, np.isfinite(zos[0])]
    residual = harmonic_residual(series)
    out = {}
    for lead in (6, 12, 24):
        persistence = float(np.sqrt(np.mean((series[lead:] - series[:-lead]) ** 2)))
        harmonic = float(np.sqrt(np.mean(residual[lead:] ** 2)))
        out[lead] = (persistence, harmonic)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--days",
        type=float,
        default=10.0,
        help="simulated days per speed repeat (64x64; 128x128 runs a quarter)",
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--year", action="store_true", help="time one full simulated year on 64x64")
    parser.add_argument("--years", type=int, default=0, help="multi-year stability run on 32x32")
    parser.add_argument(
        "--months", default="2024-01,2024-04,2024-07", help="months for the forecastability table"
    )
    args = parser.parse_args()

    print(f"== speed (median of {args.repeats} repeats)")
    print(
        f"{'grid':>9} {'substeps/h':>10} {'dt [s]':>7} {'sim h/s wall':>13} {'sim h/s CPU':>12} {'year wall [s]':>14} {'year CPU [s]':>13}"
    )
    speeds = {}
    for shape, days in ((64, args.days), (128, args.days / 4)):
        wall, cpu, substeps, dt = hours_per_second(shape, days, args.repeats)
        speeds[shape] = wall
        print(
            f"{shape:>4}x{shape:<4} {substeps:>10} {dt:>7.1f} {wall:>13.0f} {cpu:>12.0f} {8760 / wall:>14.1f} {8760 / cpu:>13.1f}"
        )
    print(f"128x128 costs {speeds[64] / speeds[128]:.1f}x the time of 64x64 per simulated hour")

    if args.year:
        print("\n== one simulated year, 64x64, through simulate() (as `seacast fetch` runs it)")
        wall, cpu = time.perf_counter(), time.process_time()
        peak = {"zos": 0.0, "uo": 0.0, "vo": 0.0}
        for _, ds in simulate(config("2024-01:2024-12", 64)):
            for name in peak:
                peak[name] = max(peak[name], float(np.nanmax(np.abs(ds[name].values))))
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(
            f"year 2024 (+5 days spin-up): {wall:.1f} s wall, {cpu:.1f} s CPU; max |zos| {peak['zos']:.2f} m, max |u| {max(peak['uo'], peak['vo']):.2f} m/s"
        )

    print("\n== forecastability of zos over a month (64x64, all sea points): RMSE in m")
    print(f"{'month':>8} {'lead':>5} {'persistence':>12} {'tide-only':>10} {'ratio':>6}")
    for month in args.months.split(","):
        for lead, (persistence, harmonic) in forecastability(month, 64).items():
            print(
                f"{month:>8} {lead:>4}h {persistence:>12.3f} {harmonic:>10.3f} {harmonic / persistence:>6.2f}"
            )

    if args.years:
        print(f"\n== {args.years}-year stability run, 32x32")
        end = f"{2024 + args.years - 1}-12"
        wall = time.perf_counter()
        worst = {"zos": 0.0, "uo": 0.0, "so_min": 99.0, "so_max": 0.0}
        for _, ds in simulate(config(f"2024-01:{end}", 32)):
            worst["zos"] = max(worst["zos"], float(np.nanmax(np.abs(ds["zos"].values))))
            worst["uo"] = max(
                worst["uo"],
                float(np.nanmax(np.abs(ds["uo"].values))),
                float(np.nanmax(np.abs(ds["vo"].values))),
            )
            worst["so_min"] = min(worst["so_min"], float(np.nanmin(ds["so"].values)))
            worst["so_max"] = max(worst["so_max"], float(np.nanmax(ds["so"].values)))
        print(
            f"{args.years} years in {time.perf_counter() - wall:.0f} s: max |zos| {worst['zos']:.2f} m, max |u| {worst['uo']:.2f} m/s, "
            f"salinity {worst['so_min']:.1f}..{worst['so_max']:.1f}"
        )


if __name__ == "__main__":
    main()
