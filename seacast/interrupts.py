"""Ctrl-C at safe points: long writes stop between two pieces of work, never inside one.

A KeyboardInterrupt raised at an arbitrary bytecode can land inside zarr's event loop
or a NetCDF write, which then hangs or prints asyncio noise. Inside :func:`safe_points`
the first Ctrl-C only sets a flag; the work calls :func:`check_interrupt` between pieces
(a month, a block of frames) and stops there. A second Ctrl-C raises at once.

A SIGTERM (``kill``, ``systemctl stop``, a scheduler's timeout) is handled as a Ctrl-C
inside :func:`terminate_as_interrupt`, which every command runs in: a stopped training
run is marked interrupted and a write stops at its next safe point, instead of the process
dying with its run marked "running".
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator
from types import FrameType

_requested = threading.Event()
_depth = 0


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if Ctrl-C was pressed inside :func:`safe_points` (any thread)."""
    if _requested.is_set():
        raise KeyboardInterrupt


def _on_sigint(signum: int, frame: FrameType | None) -> None:
    if _requested.is_set():
        raise KeyboardInterrupt  # a second Ctrl-C: the user does not want to wait
    _requested.set()


@contextlib.contextmanager
def safe_points() -> Iterator[None]:
    """Defer Ctrl-C to the next :func:`check_interrupt` for the block (main thread only).

    A Ctrl-C that came after the last check still raises when the block ends, so the
    command stops instead of going on to its next stage.
    """
    global _depth
    if threading.current_thread() is not threading.main_thread() or _depth:
        yield
        return
    previous = signal.signal(signal.SIGINT, _on_sigint)
    _depth += 1
    try:
        yield
    finally:
        _depth -= 1
        signal.signal(signal.SIGINT, previous)
        pending = _requested.is_set()
        _requested.clear()
    if pending:
        raise KeyboardInterrupt


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):  # safe_points' flag, or Python's KeyboardInterrupt
        handler(signal.SIGINT, frame)
    else:  # SIGINT ignored or default: still stop, as SIGTERM asks
        raise KeyboardInterrupt


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """Handle SIGTERM as Ctrl-C for the block (main thread only): whatever SIGINT does then,
    safe points included."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
