"""Atomic file writes: a unique temporary sibling, then one rename onto the final name.

A reader (or a killed writer) sees either the old file or the new one, never half of
one, and no temporary file is left behind after a failure or a Ctrl-C.

Offers:

* :func:`atomic_path` - a context manager yielding a fresh temporary sibling of ``final``
  (``mkstemp``-style, never a fixed name) that is renamed onto ``final`` when the block
  ends normally and removed when it raises (KeyboardInterrupt included).
* :func:`atomic_write_text` / :func:`atomic_write_bytes` - write a whole file that way.
* :func:`give_plain_mode` - the permissions a plain ``open(path, "w")`` gives (0666 less
  the umask), which the finished file gets (``mkstemp`` makes its files 0600).

Directories (Zarr stores) are swapped by :func:`seacast.store.replace_store` instead.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


def give_plain_mode(path: Path | str) -> None:
    """Give ``path`` the permissions a plain ``open(path, "w")`` would (0666 less the umask).

    Files made through ``mkstemp`` are private (0600); what we publish is shared data, which
    other writers (netCDF, matplotlib) create 0666 less the umask.
    """
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def publish(tmp: Path | str, final: Path | str) -> Path:
    """Rename a finished ``tmp`` onto ``final`` in one step, with the plain file mode.

    For writers that pick their own temporary name (raw months use a fixed one, so the next
    run can clear a killed run's leftover); :func:`atomic_path` uses this too.
    """
    give_plain_mode(tmp)
    os.replace(tmp, final)
    return Path(final)


@contextlib.contextmanager
def atomic_path(final: Path | str, suffix: str = ".tmp") -> Iterator[Path]:
    """Yield a new empty temporary file next to ``final``; rename it onto ``final`` on success.

    The name is ``.<final name>.<random><suffix>`` in the same folder (so the rename stays on
    one file system); pass a ``suffix`` ending in the final suffix (``".tmp.png"``) for a
    writer that picks its format from the name. The body may write the file or replace it.
    On any exception, KeyboardInterrupt included, the temporary file is removed and
    ``final`` is left as it was. The parent folder is created if missing.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        publish(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_bytes(path: Path | str, data: bytes) -> Path:
    """Write ``data`` to ``path`` through a temporary file and a rename; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path


def atomic_write_text(path: Path | str, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary file and a rename; returns ``path``."""
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w") as handle:
        handle.write(text)
    return path
