"""What the crash-safe append costs: the old in-place append against the staged copy and swap.

On a copy of a real store (the demo's ``data/twin_dutch_coast.zarr`` by default), append
``--hours`` new frames (the store's last frames, shifted past its end) in two ways, in one run:

* **in place** (the old way): ``to_zarr(mode="a", append_dim="time")`` on the store, then
  statistics and attrs (``finalise_store``). A kill part-way leaves a broken store.
* **staged** (now): a hard-linked copy of the store, the same append and finalise on it,
  then one atomic swap (``replace_store``). A kill leaves the store as it was.

Each way runs ``--repeats`` times on a fresh copy (the copy is not timed); medians are printed,
with the staging and swap alone.

Run: .venv/bin/python benchmarks/store_append.py [--store data/twin_dutch_coast.zarr] [--hours 24]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import xarray as xr

from seacast.store import (
    append_to_store,
    finalise_store,
    open_store,
    replace_store,
    staged_copy,
    store_variables,
)


def new_frames(store: Path, hours: int) -> xr.Dataset:
    ds = open_store(store)
    tail = ds[store_variables(ds)].isel(time=slice(-hours, None)).load()
    ds.close()
    return tail.assign_coords(time=tail["time"] + np.timedelta64(hours, "h"))


def in_place(path: Path, frames: xr.Dataset) -> dict[str, float]:
    start = time.perf_counter()
    frames.to_zarr(path, mode="a", append_dim="time", zarr_format=3, consolidated=False)
    finalise_store(path)
    return {"total": time.perf_counter() - start}


def staged(path: Path, frames: xr.Dataset) -> dict[str, float]:
    start = time.perf_counter()
    stage = staged_copy(path)
    copied = time.perf_counter()
    append_to_store(stage, frames)
    finalise_store(stage)
    swapping = time.perf_counter()
    replace_store(stage, path)
    done = time.perf_counter()
    return {"total": done - start, "stage": copied - start, "swap": done - swapping}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", type=Path, default=Path("data/twin_dutch_coast.zarr"))
    parser.add_argument("--hours", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not args.store.exists():
        raise SystemExit(f"{args.store} does not exist: run `make demo` first, or pass --store")
    frames = new_frames(args.store, args.hours)
    files = sum(1 for p in args.store.rglob("*") if p.is_file())
    size = sum(p.stat().st_size for p in args.store.rglob("*") if p.is_file()) / 2**20
    print(f"store {args.store}: {files} files, {size:.0f} MiB; appending {args.hours} h")
    results: dict[str, list[dict[str, float]]] = {"in place": [], "staged": []}
    with tempfile.TemporaryDirectory(dir=args.store.parent) as tmp:
        for repeat in range(args.repeats):
            for name, way in (("in place", in_place), ("staged", staged)):
                copy = Path(tmp) / f"{repeat}-{name.replace(' ', '_')}.zarr"
                shutil.copytree(args.store, copy)
                results[name].append(way(copy, frames))
                shutil.rmtree(copy)
    median = {name: statistics.median(r["total"] for r in runs) for name, runs in results.items()}
    for name, runs in results.items():
        line = f"{name:>9}: median {median[name]:.3f} s over {len(runs)}"
        if name == "staged":
            line += (
                f"  (staging {statistics.median(r['stage'] for r in runs) * 1e3:.0f} ms,"
                f" swap {statistics.median(r['swap'] for r in runs) * 1e3:.1f} ms)"
            )
        print(line)
    print(f"staged / in place: {median['staged'] / median['in place']:.2f}x")


if __name__ == "__main__":
    main()
