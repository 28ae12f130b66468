"""What the fetch sources share: the source protocol, the progress callback, the Copernicus client.

Offers:

* :class:`RawSource`: what every source offers the fetch driver and regrid (its plan,
  the notes of a dry run, the fetch itself and the dataset folders it writes); the
  registry :func:`seacast.sources.raw_source` finds one by name.
* :data:`ProgressCallback`: ``progress(label)`` is called once per month file
  finished (written or found complete), so the driver can advance its bar. It is the
  one progress type of the sources.
* :class:`PlannedFile`: one month file a fetch would write, with its estimated size.
* :func:`format_bytes`: a size for people (``12.3 MB``).
* :class:`MarineClient`: the two calls seacast makes to the Copernicus Marine
  toolbox. The real one is :class:`seacast.sources.copernicus.ToolboxClient`;
  tests inject a fake that serves local files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from seacast.config import DataConfig

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


class RawSource(Protocol):
    """A source of raw month files (``<raw_dir>/<name>/<dataset>/<YYYY-MM>.nc``).

    :meth:`plan` and :meth:`fetch` decide completeness the same way, so a dry run lists
    exactly what the fetch writes.
    """

    name: str

    def plan(self, cfg: DataConfig, force: bool = False) -> list[PlannedFile]:
        """Every month file of ``cfg`` and whether each is complete; never touches the network."""
        ...

    def notes(self, cfg: DataConfig) -> list[str]:
        """Lines printed under the dry run's table (what the sizes assume, what was matched)."""
        ...

    def fetch(
        self,
        cfg: DataConfig,
        *,
        force: bool = False,
        progress: ProgressCallback = no_progress,
        client: MarineClient | None = None,
        log: Callable[[str], None] | None = None,
    ) -> list[Path]:
        """Write every month file that is not complete (all with ``force``); return them all.

        ``client`` replaces the Copernicus toolbox and ``log`` prints a line above the
        progress bar; sources with no use for them ignore them.
        """
        ...

    def datasets(self, cfg: DataConfig) -> list[str]:
        """The dataset folders under ``<raw_dir>/<name>`` that regrid reads."""
        ...


def format_bytes(n: float) -> str:
    """``n`` bytes for people: ``512 B``, ``12.3 MB`` (powers of 1000)."""
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")  # pragma: no cover
