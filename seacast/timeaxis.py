"""The time axis: times <-> int64 hours since 1970-01-01, the one conversion every module uses.

Offers:

* :func:`times_to_hours` - times (anything :class:`pandas.DatetimeIndex` takes) as int64 hours
  since 1970, floored to the hour.
* :func:`hours_to_times` - its inverse, hours since 1970 as ``datetime64[ns]``.
* :func:`stamp_to_hour` and :func:`hour_to_stamp` - the same for one time.

:func:`seacast.store.time_hours` is :func:`times_to_hours` under its older name.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

EPOCH = np.datetime64("1970-01-01", "ns")
HOUR = np.timedelta64(1, "h")


def times_to_hours(times: Iterable[Any] | Any) -> np.ndarray:
    """Times as int64 hours since 1970-01-01 (floored to the hour); a scalar gives a length-1 array."""
    values = pd.DatetimeIndex(np.atleast_1d(np.asarray(times))).values.astype("datetime64[ns]")
    return ((values - EPOCH) // HOUR).astype(np.int64)


def hours_to_times(hours: Iterable[Any] | Any) -> np.ndarray:
    """Hours since 1970-01-01 as ``datetime64[ns]`` times; a scalar gives a length-1 array."""
    return (
        np.atleast_1d(np.asarray(hours, dtype=np.int64))
        .astype("datetime64[h]")
        .astype("datetime64[ns]")
    )


def stamp_to_hour(stamp: Any) -> int:
    """One time (a Timestamp, ISO string, ``datetime64`` ...) as hours since 1970-01-01."""
    return int(times_to_hours([pd.Timestamp(stamp)])[0])


def hour_to_stamp(hour: Any) -> pd.Timestamp:
    """Hours since 1970-01-01 as one :class:`pandas.Timestamp`."""
    return pd.Timestamp(hours_to_times(int(hour))[0])
