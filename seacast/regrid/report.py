"""What a regrid did and found: :class:`RegridReport` and the lines the CLI prints."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class RegridReport:
    """What a regrid did and found; the CLI prints :meth:`messages`."""

    store: Path
    created: bool = False
    rebuilt: bool = False
    units: list[str] = field(default_factory=list)
    frames_written: int = 0
    frames_already_present: int = 0
    step_hours: float = 1.0
    duplicates: dict[str, int] = field(default_factory=dict)
    unsorted: list[str] = field(default_factory=list)
    all_nan_frames: list[str] = field(default_factory=list)
    grids: dict[str, list[str]] = field(default_factory=dict)
    gaps: list[list[str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def messages(self) -> list[str]:
        """Human-readable lines, most important first."""
        lines = []
        if self.frames_written == 0:
            lines.append(
                f"{self.store}: nothing new ({self.frames_already_present} time steps already in the store)"
            )
        else:
            verb = "created" if self.created else "rebuilt" if self.rebuilt else "appended to"
            lines.append(
                f"{verb} {self.store}: {self.frames_written} time steps every {self.step_hours:g} h "
                f"from {len(self.units)} unit(s) ({', '.join(self.units)})"
            )
            if self.frames_already_present:
                lines.append(
                    f"skipped {self.frames_already_present} time steps already in the store"
                )
        for name, count in self.duplicates.items():
            lines.append(f"{name}: dropped {count} duplicated time step(s) (kept the first)")
        for name in self.unsorted:
            lines.append(f"{name}: times were not in order; sorted them")
        if self.all_nan_frames:
            shown = ", ".join(self.all_nan_frames[:5]) + (
                " ..." if len(self.all_nan_frames) > 5 else ""
            )
            lines.append(
                f"dropped {len(self.all_nan_frames)} all-NaN frame(s), recorded as gaps: {shown}"
            )
        if len(self.grids) > 1:
            lines.append(
                f"the inputs use {len(self.grids)} different source grids; all were regridded to the same target grid:"
            )
            lines.extend(f"  {grid}: {', '.join(files)}" for grid, files in self.grids.items())
        if self.gaps:
            shown = ", ".join(f"{a} .. {b}" for a, b in self.gaps[:5]) + (
                " ..." if len(self.gaps) > 5 else ""
            )
            lines.append(f"{len(self.gaps)} gap(s) in the store (recorded, not filled): {shown}")
        lines.extend(self.warnings)
        return lines
