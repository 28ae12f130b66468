"""Units regridded in parallel with dask (threads or a distributed scheduler), yielded in order."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from typing import Any

import dask

from seacast.errors import DataError
from seacast.regrid.numerics import UnitResult


def _map_ordered(
    func: Callable[[Any], UnitResult],
    items: list[Any],
    dask_address: str | None,
    workers: int | None,
) -> Iterator[UnitResult]:
    """Run ``func`` over ``items`` with dask, a window of a few at a time, yielding in order.

    The window bounds memory: only that many regridded units are held at once.
    """
    if not items:
        return
    if dask_address:
        try:
            from dask.distributed import Client
        except ImportError:  # pragma: no cover - distributed is a dependency
            raise DataError(
                "dask.distributed is not installed", "pip install 'dask[distributed]'"
            ) from None
        try:
            client = Client(dask_address, timeout="10s")
        except (OSError, TimeoutError) as exc:
            raise DataError(
                f"cannot reach the dask scheduler at {dask_address} ({exc})",
                "start it (dask scheduler / dask worker) or drop --dask-address to use local threads",
            ) from None
        try:
            window = max(1, min(8, sum(client.nthreads().values()) or 1))
            for start in range(0, len(items), window):
                futures = client.map(func, items[start : start + window], pure=False)
                yield from client.gather(futures)
        finally:
            client.close()
        return
    window = workers or max(1, min(4, os.cpu_count() or 1))
    for start in range(0, len(items), window):
        batch = [dask.delayed(func)(item) for item in items[start : start + window]]
        yield from dask.compute(*batch, scheduler="threads", num_workers=window)
