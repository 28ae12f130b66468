"""Seasons and other groupings of init times for evaluation: :mod:`seacast.seasons`, re-exported.

The one definition lives in :mod:`seacast.seasons` (the splits use it too); this module keeps
the ``seacast.evaluation.seasons`` name working.
"""

from __future__ import annotations

from seacast.seasons import (
    GROUPINGS,
    SEASONS,
    Grouping,
    check_grouping,
    group_labels,
    group_names,
    season_of,
    season_of_hours,
)

__all__ = [
    "GROUPINGS",
    "SEASONS",
    "Grouping",
    "check_grouping",
    "group_labels",
    "group_names",
    "season_of",
    "season_of_hours",
]
