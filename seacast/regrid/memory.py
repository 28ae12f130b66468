"""Handing freed source blocks back to the OS (glibc's allocator), so regridding months stays bounded."""

from __future__ import annotations

import gc
from typing import Any


def _libc() -> Any:
    try:
        import ctypes

        return ctypes.CDLL("libc.so.6")
    except OSError:  # not glibc (macOS, musl): the allocator returns memory on its own terms
        return None


_LIBC = _libc()


def _large_arrays_from_mmap() -> None:
    """Make glibc serve arrays >= 1 MiB from mmap, so freed blocks go back to the OS.

    glibc otherwise raises that threshold after the first frees and serves later
    blocks from the heap, where freed source blocks fragment: a month of 300 x 330
    frames then left ~1.5 GB resident instead of ~0.5 GB.
    """
    if _LIBC is not None:
        _LIBC.mallopt(-3, 1 << 20)  # M_MMAP_THRESHOLD


def _release_memory() -> None:
    """Free loaded source blocks now and hand the pages back to the OS.

    xarray objects sit in reference cycles, so a block is freed only at the next
    full garbage collection: without ``gc.collect()`` a month of 300 x 330 frames
    piled up ~0.8 GB of blocks already regridded.
    """
    gc.collect()
    if _LIBC is not None:
        _LIBC.malloc_trim(0)
