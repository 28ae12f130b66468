"""The one file lock every writer takes: a fetch folder, a store, a forecast folder.

Built on ``filelock`` (an ``flock`` on Unix): the kernel drops the lock when its holder
dies, so a killed run never leaves a stale lock. The lock file itself stays in place
(deleting it would race with a process about to take it); the holder's pid is written
into a sibling ``.pid`` file so the refusal can name it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import filelock

from seacast.errors import SeacastError


class LockHeld(SeacastError):
    """Another process holds the lock (the forecast CLI maps this to exit code 11)."""


def _holder(lock_path: Path) -> str:
    try:
        return lock_path.with_name(lock_path.name + ".pid").read_text().strip() or "?"
    except OSError:
        return "?"


@contextlib.contextmanager
def exclusive_lock(
    lock_path: Path | str,
    what: str,
    fix: str = "wait for it to finish; the lock is released automatically when it exits",
    *,
    timeout: float = 0,
) -> Iterator[Path]:
    """Hold ``lock_path`` for the block; LockHeld (naming ``what`` and the holder's pid) if busy.

    ``what`` completes "another seacast ... " in the message, e.g. "regrid is writing data/x.zarr".
    ``timeout`` seconds are waited for the lock before giving up (0: refuse at once).
    """
    lock_path = Path(lock_path)
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    lock = filelock.FileLock(str(lock_path), timeout=timeout, mode=0o644)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise LockHeld(
            f"another seacast {what} (lock {lock_path} held by pid {_holder(lock_path)})", fix
        ) from None
    pid_file = lock_path.with_name(lock_path.name + ".pid")
    with contextlib.suppress(OSError):
        pid_file.write_text(f"{os.getpid()}\n")
    try:
        yield lock_path
    finally:
        with contextlib.suppress(OSError):
            pid_file.unlink()
        lock.release()
