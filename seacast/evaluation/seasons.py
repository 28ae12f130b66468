"""Seasons and other groupings of init times for evaluation.

Offers:

* :data:`SEASONS` - the meteorological seasons in calendar order (DJF, MAM, JJA, SON).
* :func:`season_of` - the meteorological season of each time (by month).
* :func:`group_labels` - the label of each init time for a grouping (``season`` or ``all``).
* :func:`group_names` - the labels a grouping can produce, in display order.

A sample belongs to the season of its *init time*, as the architecture notes say:
a 72 h forecast issued on 30 November counts for SON even though it verifies in December.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd

from seacast.errors import ConfigError

SEASONS: tuple[str, ...] = ("DJF", "MAM", "JJA", "SON")
GROUPINGS = ("season", "all")
Grouping = Literal["season", "all"]

# month number (1..12) -> season label
_MONTH_TO_SEASON = {12: "DJF", 1: "DJF", 2: "DJF", 3: "MAM", 4: "MAM", 5: "MAM"}
_MONTH_TO_SEASON |= {6: "JJA", 7: "JJA", 8: "JJA", 9: "SON", 10: "SON", 11: "SON"}


def season_of(times: Sequence | np.ndarray | pd.DatetimeIndex) -> np.ndarray:
    """Meteorological season label (``DJF``, ``MAM``, ``JJA``, ``SON``) of each time."""
    months = pd.DatetimeIndex(np.atleast_1d(np.asarray(times, dtype="datetime64[ns]"))).month
    return np.array([_MONTH_TO_SEASON[int(m)] for m in months], dtype=object)


def group_names(by: str) -> tuple[str, ...]:
    """Every label grouping ``by`` can produce, in display order."""
    check_grouping(by)
    return SEASONS if by == "season" else ("all",)


def group_labels(times: Sequence | np.ndarray | pd.DatetimeIndex, by: str) -> np.ndarray:
    """The group label of each init time for grouping ``by``."""
    check_grouping(by)
    if by == "season":
        return season_of(times)
    return np.array(["all"] * len(np.atleast_1d(np.asarray(times))), dtype=object)


def check_grouping(by: str) -> None:
    """Raise a clear error for an unknown grouping."""
    if by not in GROUPINGS:
        raise ConfigError(
            f"unknown grouping '{by}'", f"use --by with one of: {', '.join(GROUPINGS)}"
        )
