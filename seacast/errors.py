"""One exception type for every user-facing problem.

Each message names the problem and the fix, so the CLI can print it as it is
and exit non-zero without a traceback.
"""

from __future__ import annotations


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
