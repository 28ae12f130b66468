"""Raw NetCDF files -> the seacast Zarr store, on a regular latitude/longitude grid.

The work is split into *units*, one per calendar month (the raw layout's
``<raw_dir>/<source>/<dataset>/<YYYY-MM>.nc``; the files of all datasets of a month
are merged). Units are regridded in parallel with dask (threads, or a
``dask.distributed`` scheduler) and written in time order, so memory holds only a few
months of *target-grid* frames; source files are read a block of time steps at a time.

Rules (the store contract is in :mod:`seacast.store`):

* Regridding uses xarray-regrid, NaN-aware: conservative keeps a target cell when at
  least ``grid.min_sea_fraction`` of its area is sea; bilinear normalises by the sea
  weight; nearest takes the nearest source cell.
* Variables with a depth axis take the shallowest level.
* ``sea_mask`` comes from the regridded data (sea where every variable is finite).
* The store keeps the source's regular step; mixing steps is an error.
* Time steps already in the store are skipped (regridding twice changes nothing);
  later steps are appended; earlier ones rebuild the store in a temporary directory.
* Duplicated or unsorted times are sorted and de-duplicated (first occurrence wins)
  and reported; frames that are all NaN are dropped and reported; missing steps are
  recorded as gaps, never filled.
* The store records the DataConfig; a store made with a different grid, box or
  variables is refused unless ``overwrite``.

Public functions: :func:`regrid_config` (the ``--config`` form), :func:`regrid_files`
(the direct form), :func:`target_grid`, :func:`regrid_frames`, :func:`raw_units`,
and the :class:`RegridReport` they return.

The modules, in the order data flows through them: :mod:`~seacast.regrid.scan` (open and scan raw
files), :mod:`~seacast.regrid.numerics` (regrid a unit), :mod:`~seacast.regrid.parallel` (units
side by side), :mod:`~seacast.regrid.orchestrate` (the store side and the entry points), with
:mod:`~seacast.regrid.report` and :mod:`~seacast.regrid.memory` beside them. The names below are
re-exported here so ``from seacast.regrid import ...`` keeps working.
"""

from __future__ import annotations

from seacast.regrid.numerics import (
    BLOCK_BYTES,
    UnitResult,
    process_unit,
    regrid_frames,
    target_grid,
)
from seacast.regrid.orchestrate import (
    STORE_DEFINING_KEYS,
    ProgressFn,
    raw_units,
    regrid_config,
    regrid_files,
    regrid_units,
)
from seacast.regrid.report import RegridReport
from seacast.regrid.scan import COORD_ALIASES, NETCDF_LOCK, SourceFile, Unit, scan_file

__all__ = [
    "BLOCK_BYTES",
    "COORD_ALIASES",
    "NETCDF_LOCK",
    "STORE_DEFINING_KEYS",
    "ProgressFn",
    "RegridReport",
    "SourceFile",
    "Unit",
    "UnitResult",
    "process_unit",
    "raw_units",
    "regrid_config",
    "regrid_files",
    "regrid_frames",
    "regrid_units",
    "scan_file",
    "target_grid",
]
