"""The ``seacast`` command line: a thin typer layer over the library.

Each stage has its own module here that registers its commands on :data:`app`;
the logic lives in the library modules they call.
"""

from __future__ import annotations

import importlib

from seacast.cli.common import app

# Modules that register commands on `app`. A stage whose module is missing is skipped,
# so a partial checkout still gives a working CLI for what it has.
_COMMAND_MODULES = (
    "data",
    "store",
    "models",
    "train",
    "forecast",
    "evaluate",
    "tides",
    "pipeline",
    "gradcheck",
    "report",
)

for _name in _COMMAND_MODULES:
    try:
        importlib.import_module(f"seacast.cli.{_name}")
    except ModuleNotFoundError as exc:  # pragma: no cover - only while a stage is unbuilt
        if exc.name != f"seacast.cli.{_name}":
            raise

__all__ = ["app"]
