"""Kept for old imports: the CF attributes now live in :mod:`seacast.cf`, the example data in :mod:`seacast.synthetic`."""

from __future__ import annotations

from seacast.cf import CF_ATTRS
from seacast.synthetic import (
    M2_HOURS,
    S2_HOURS,
    cmems_like_file,
    smooth_field,
    synthetic_dataset,
    synthetic_store,
)

__all__ = [
    "CF_ATTRS",
    "M2_HOURS",
    "S2_HOURS",
    "cmems_like_file",
    "smooth_field",
    "synthetic_dataset",
    "synthetic_store",
]
