"""What the fetch sources share: the progress callback and the Copernicus client interface.

Offers:

* :data:`ProgressCallback`: ``progress(label)`` is called once per month file
  finished (written or found complete), so the driver can advance its bar.
* :class:`PlannedFile`: one month file a fetch would write, with its estimated size.
* :class:`MarineClient`: the two calls seacast makes to the Copernicus Marine
  toolbox. The real one is :class:`seacast.sources.copernicus.ToolboxClient`;
  tests inject a fake that serves local files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

ProgressCallback = Callable[[str], None]
"""Called with a short label (e.g. ``"zos 2024-01"``) each time one month file is done."""


def no_progress(label: str) -> None:
    """The progress callback used when nobody is watching."""


class MarineClient(Protocol):
    """The Copernicus Marine calls seacast uses, with the toolbox's own keyword names."""

    def subset(self, **kwargs: Any) -> Any:
        """Download a subset to ``output_directory/output_filename`` (kwargs of ``copernicusmarine.subset``)."""
        ...

    def login(self, username: str, password: str, **kwargs: Any) -> bool:
        """Check the credentials and write the toolbox's credentials file (``copernicusmarine.login``)."""
        ...


@dataclass(frozen=True)
class PlannedFile:
    """One month file a fetch would write (for ``--dry-run`` and progress totals)."""

    source: str
    dataset: str
    month: str
    variables: tuple[str, ...]
    path: Path | None
    estimated_bytes: int | None
    complete: bool

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.month}"
