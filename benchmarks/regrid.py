"""Regrid throughput and peak memory for 1.5 km-like hourly input cut to 128 x 128.

Synthesises CMEMS-shaped month files (4 variables, hourly, a 4 deg x 5 deg box at
about 1.5 km: 300 x 330 cells per frame, with land) in a temporary raw layout, then
runs ``seacast regrid --config`` in a subprocess and reports frames/s and the
subprocess's peak resident memory (``ru_maxrss``). A full year is 12 months; with
``--months N`` it measures N months and extrapolates the time to a year (memory does
not grow with months: the store is written month by month).

Usage: .venv/bin/python benchmarks/regrid.py --months 1 [--repeats 1] [--workers 2]
"""

from __future__ import annotations

import argparse
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import netCDF4
import numpy as np
import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
SHAPE_IN = (300, 330)
SHAPE_OUT = (128, 128)
BBOX = {"lat_min": 52.0, "lat_max": 56.0, "lon_min": 1.0, "lon_max": 6.0}
VARIABLES = ("uo", "vo", "so", "zos")


def write_month(path: Path, month: str, lat: np.ndarray, lon: np.ndarray, land: np.ndarray) -> int:
    """One month file, written block by block so the benchmark itself stays small in memory."""
    start = pd.Timestamp(f"{month}-01")
    times = pd.date_range(start, start + pd.offsets.MonthBegin(1), freq="h", inclusive="left")
    path.parent.mkdir(parents=True, exist_ok=True)
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    with netCDF4.Dataset(path, "w") as nc:
        nc.createDimension("time", None)
        nc.createDimension("depth", 1)
        nc.createDimension("latitude", len(lat))
        nc.createDimension("longitude", len(lon))
        t = nc.createVariable("time", "f8", ("time",))
        t.units = "hours since 1950-01-01"
        nc.createVariable("depth", "f4", ("depth",))[:] = [0.5]
        nc.createVariable("latitude", "f4", ("latitude",))[:] = lat
        nc.createVariable("longitude", "f4", ("longitude",))[:] = lon
        out = {}
        for var in VARIABLES:
            dims = (
                ("time", "latitude", "longitude")
                if var == "zos"
                else ("time", "depth", "latitude", "longitude")
            )
            out[var] = nc.createVariable(var, "f4", dims, fill_value=np.float32(9.96921e36))
        hours = ((times - pd.Timestamp("1950-01-01")) / pd.Timedelta(hours=1)).to_numpy()
        t[:] = hours
        for begin in range(0, len(times), 48):
            h = hours[begin : begin + 48][:, None, None]
            for k, var in enumerate(VARIABLES):
                field = np.cos(2 * np.pi * (h / 12.42 - 0.5 * la - 0.3 * lo) + k) + 0.1 * k
                field = np.where(land, np.float32(9.96921e36), field).astype(np.float32)
                out[var][begin : begin + len(h)] = field if var == "zos" else field[:, None]
    return len(times)


def make_raw(root: Path, months: list[str]) -> int:
    lat = np.linspace(BBOX["lat_min"] - 0.05, BBOX["lat_max"] + 0.05, SHAPE_IN[0])
    lon = np.linspace(BBOX["lon_min"] - 0.05, BBOX["lon_max"] + 0.05, SHAPE_IN[1])
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    land = lo > 5.0 + 0.4 * np.sin(3 * la)
    return sum(
        write_month(root / "raw" / "twin" / "nws" / f"{m}.nc", m, lat, lon, land) for m in months
    )


CHILD = """
import resource, sys, time
from seacast.config import DataConfig, load_config
from seacast.regrid import regrid_config
config = load_config(DataConfig, sys.argv[1])
start = time.perf_counter()
report = regrid_config(config, overwrite=True, workers=int(sys.argv[2]))
elapsed = time.perf_counter() - start
print(report.frames_written, elapsed, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
"""


def run_once(work: Path, months: list[str], workers: int) -> tuple[int, float, float]:
    config = {
        "name": "bench",
        "source": "twin",
        "months": f"{months[0]}:{months[-1]}",
        "raw_dir": str(work / "raw"),
        "bbox": BBOX,
        "grid": {"shape": list(SHAPE_OUT), "method": "conservative"},
        "store": {"path": str(work / "bench.zarr"), "chunk_hours": 24},
    }
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(config))
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(workers)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        check=True,
    )
    frames, elapsed, maxrss_kib = result.stdout.split()[-3:]
    return int(frames), float(elapsed), float(maxrss_kib) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--months", type=int, default=12, help="months of hourly input to regrid (12 = a year)"
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed repeats (median reported)")
    parser.add_argument(
        "--workers", type=int, default=2, help="months regridded at once (dask threads)"
    )
    args = parser.parse_args()
    months = [
        p.strftime("%Y-%m") for p in pd.period_range("2024-01", periods=args.months, freq="M")
    ]
    work = Path(tempfile.mkdtemp(prefix="seacast-bench-"))
    try:
        start = time.perf_counter()
        frames_in = make_raw(work, months)
        size = sum(p.stat().st_size for p in (work / "raw").rglob("*.nc")) / 2**30
        print(
            f"input: {len(months)} month(s), {frames_in} hourly frames, {len(VARIABLES)} variables, "
            f"{SHAPE_IN[0]}x{SHAPE_IN[1]} -> {SHAPE_OUT[0]}x{SHAPE_OUT[1]}, {size:.2f} GiB of NetCDF "
            f"(written in {time.perf_counter() - start:.0f} s)"
        )
        runs = [run_once(work, months, args.workers) for _ in range(args.repeats)]
        elapsed = statistics.median(r[1] for r in runs)
        peak = max(r[2] for r in runs)
        frames = runs[0][0]
        print(
            f"regrid: {frames} frames in {elapsed:.1f} s (median of {len(runs)}) = {frames / elapsed:.0f} frames/s, "
            f"peak RSS {peak:.0f} MiB, workers={args.workers}"
        )
        if args.months < 12:
            year = 8784 * elapsed / frames
            print(
                f"extrapolated to a year (8784 frames, linear in frames; memory is per month): "
                f"~{year / 60:.1f} min, peak RSS ~{peak:.0f} MiB (measured on {args.months} month(s), not a full year)"
            )
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
