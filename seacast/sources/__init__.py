"""Fetch sources: Copernicus Marine, local files and the built-in North Sea twin.

Each writes the raw layout of :mod:`seacast.raw` and offers the
:class:`~seacast.sources.base.RawSource` protocol; :func:`raw_source` finds one by the
config's ``source`` name, so :mod:`seacast.fetch` and :mod:`seacast.regrid` dispatch once.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from seacast.errors import ConfigError

if TYPE_CHECKING:
    from seacast.sources.base import RawSource

# name -> module defining RAW_SOURCE; imported on first use, so a dry run of one source
# never loads another (the twin's simulator, say)
SOURCE_MODULES = {
    "copernicus": "seacast.sources.copernicus",
    "files": "seacast.sources.files",
    "twin": "seacast.sources.twin",
}


def raw_source(name: str) -> RawSource:
    """The source called ``name`` (a DataConfig's ``source``)."""
    if name not in SOURCE_MODULES:
        raise ConfigError(f"unknown source '{name}'", f"use one of: {', '.join(SOURCE_MODULES)}")
    return importlib.import_module(SOURCE_MODULES[name]).RAW_SOURCE
