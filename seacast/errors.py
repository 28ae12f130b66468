"""One exception type for every user-facing problem.

Each message names the problem and the fix, so the CLI can print it as it is
and exit non-zero without a traceback. :func:`os_error` turns an ``OSError``
(permission, full disk, missing folder, read-only file system, ...) into one,
and :func:`check_writable` finds such a problem before any work is done.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path


class SeacastError(Exception):
    """A problem the user can fix: bad input, bad config, missing credentials, ..."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        self.problem = problem
        self.fix = fix
        super().__init__(problem if fix is None else f"{problem}\n  Fix: {fix}")


class ConfigError(SeacastError):
    """A config file or override that does not validate."""


class DataError(SeacastError):
    """Raw files or a store that cannot be used as they are."""


class CredentialsError(SeacastError):
    """No usable Copernicus Marine credentials."""


def _file_in_the_way(path: Path) -> Path | None:
    """The first part of ``path`` that exists and is a file, not a folder (ENOTDIR's cause)."""
    for part in reversed((path, *path.parents)):
        if part.exists() and not part.is_dir():
            return part
    return None


def os_error(exc: OSError, elsewhere: str | None = None) -> SeacastError:
    """A one-line problem and fix for an ``OSError``: the path, what the errno means, what to do.

    ``elsewhere`` says how the command writes to another place (e.g. ``--out DIR``).
    """
    code = exc.errno
    name = errno.errorcode.get(code, "") if code is not None else ""
    path = exc.filename if exc.filename is not None else None
    other = f", or write elsewhere with {elsewhere}" if elsewhere else ""
    if path is None:  # sockets, pipes, timeouts: no file to name
        reason = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, ConnectionError | TimeoutError) or code in (
            errno.ENETUNREACH,
            errno.EHOSTUNREACH,
            errno.ETIMEDOUT,
        ):
            return SeacastError(
                f"network error: {reason}{f' ({name})' if name else ''}",
                "check the network connection, then rerun the same command (finished work is kept)",
            )
        return SeacastError(
            f"system error: {reason}{f' ({name})' if name else ''}",
            "check the message, then rerun the same command",
        )
    where = Path(os.fsdecode(path))
    folder = where if where.is_dir() else where.parent
    if isinstance(exc, PermissionError):  # EACCES, EPERM
        return SeacastError(
            f"permission denied on {where} ({name}: this user may not write or read there)",
            f"make {folder} writable (ls -ld {folder}; chmod u+w, or run as its owner){other}",
        )
    if code == errno.EROFS:
        return SeacastError(
            f"{where} is on a read-only file system (EROFS)",
            f"write to a folder on a writable disk{other}",
        )
    if code in (errno.ENOSPC, errno.EDQUOT):
        return SeacastError(
            f"no space left for {where} ({name}: the disk or your quota is full)",
            f"free space there (df -h {folder}){other}; then rerun the same command",
        )
    if code == errno.ENOTDIR or (code == errno.EEXIST and not where.is_dir() and where.exists()):
        blocker = _file_in_the_way(where) or where
        return SeacastError(
            f"cannot use {where}: {blocker} is a file, not a folder ({name})",
            f"move or delete the file {blocker}{other}",
        )
    if code == errno.ENOENT:
        return SeacastError(
            f"{where} does not exist (ENOENT)",
            f"check the path (ls {folder}); create the folder first if it is where output goes{other}",
        )
    if code == errno.EISDIR:
        return SeacastError(
            f"{where} is a folder where a file was expected (EISDIR)",
            "give the path of a file, not of a folder",
        )
    if code == errno.EMFILE:
        return SeacastError(
            f"too many open files while opening {where} (EMFILE)",
            "raise the limit (ulimit -n 4096) and rerun the same command",
        )
    reason = exc.strerror or str(exc)
    return SeacastError(
        f"cannot use {where}: {reason}{f' ({name})' if name else ''}",
        f"check the path and its disk{other}, then rerun the same command",
    )


def check_writable(folder: Path | str, elsewhere: str | None = None) -> None:
    """Raise a :class:`SeacastError` unless files can be created in ``folder``.

    Called before long work, so a read-only or full output place fails at once and not
    after the computing. A missing ``folder`` is not made: the probe goes to its nearest
    existing parent, and nothing is left behind.
    """
    folder = Path(folder)
    existing = folder
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    try:
        if not existing.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(folder))
        handle, probe = tempfile.mkstemp(prefix=".seacast-write-check-", dir=existing)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        if exc.filename is None or exc.errno != errno.ENOTDIR:
            exc.filename = str(folder)
        raise os_error(exc, elsewhere) from None
