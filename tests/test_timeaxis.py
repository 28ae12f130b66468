"""The one time axis (hours since 1970) and the one definition of seasons and groupings."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from seacast import splits
from seacast.errors import ConfigError
from seacast.evaluation import seasons as evaluation_seasons
from seacast.seasons import (
    GROUPINGS,
    SEASONS,
    check_grouping,
    group_labels,
    group_names,
    season_of,
    season_of_hours,
)
from seacast.store import time_hours
from seacast.timeaxis import hour_to_stamp, hours_to_times, stamp_to_hour, times_to_hours


def test_hours_round_trip_and_match_the_store():
    times = pd.to_datetime(["1969-12-31T23", "1970-01-01T00", "2024-02-29T06", "2024-12-31T23"])
    hours = times_to_hours(times)
    assert hours.dtype == np.int64
    assert list(hours) == [-1, 0, 474774, 482135]
    np.testing.assert_array_equal(hours, time_hours(times))
    np.testing.assert_array_equal(hours_to_times(hours), times.values)
    assert stamp_to_hour("2024-02-29T06") == 474774
    assert stamp_to_hour(pd.Timestamp("2024-02-29T06:59")) == 474774  # floored to the hour
    assert hour_to_stamp(np.int64(474774)) == pd.Timestamp("2024-02-29T06")
    assert hours_to_times(0)[0] == np.datetime64("1970-01-01T00", "ns")


def test_one_definition_of_seasons_and_groupings():
    assert splits.SEASONS is SEASONS and splits.season_of_hours is season_of_hours
    assert evaluation_seasons.season_of is season_of
    assert GROUPINGS == ("season", "all", "split")
    hours = times_to_hours(pd.to_datetime(["2024-11-30T23", "2024-12-01T00", "2024-06-01T00"]))
    assert list(season_of_hours(hours)) == ["SON", "DJF", "JJA"]
    assert group_names("split", ("spring", "summer")) == ("spring", "summer")
    assert list(group_labels(hours[:2], "split", "spring")) == ["spring", "spring"]
    with pytest.raises(ConfigError):
        group_labels(hours, "split")
    with pytest.raises(ConfigError, match="unknown grouping 'month'"):
        check_grouping("month")
