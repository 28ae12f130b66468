"""Whether a stage is up to date (make-style, with the recorded fingerprints in
``.seacast/pipelines/<name>.json``), and ``show``'s plan.
"""

from __future__ import annotations

import fnmatch
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seacast.atomic import atomic_write_text
from seacast.pipeline.plan import PlannedStage, plan_pipeline, select_stages
from seacast.pipeline.schema import Pipeline
from seacast.reporting import expand_globs

STATE_DIR = Path(".seacast") / "pipelines"


def _newest_mtime(path: Path) -> int:
    """Modification time in ns; for a folder (a Zarr store, a run) the newest file inside it."""
    newest = path.stat().st_mtime_ns
    if path.is_dir():
        for root, _dirs, files in os.walk(path):
            for file in files:
                try:
                    newest = max(newest, (Path(root) / file).stat().st_mtime_ns)
                except FileNotFoundError:  # removed while we walk
                    continue
    return newest


def _overlaps(output: str, dependency: str) -> bool:
    """Whether a file written as ``output`` can be (inside) the dependency pattern, or the reverse."""
    out, dep = output.rstrip("/"), dependency.rstrip("/")
    return (
        out == dep
        or fnmatch.fnmatch(out, dep)
        or fnmatch.fnmatch(dep, out)
        or out.startswith(dep + "/")
        or dep.startswith(out + "/")
    )


@dataclass
class StageStatus:
    """Whether a stage is up to date, and the reason shown to the user."""

    up_to_date: bool
    reason: str


def read_state(workdir: Path, pipeline_name: str) -> dict[str, Any]:
    path = workdir / STATE_DIR / f"{pipeline_name}.json"
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}


def _write_state(workdir: Path, pipeline_name: str, state: dict[str, Any]) -> None:
    path = workdir / STATE_DIR / f"{pipeline_name}.json"
    atomic_write_text(path, json.dumps(state, indent=2, sort_keys=True))


def stage_status(
    stage: PlannedStage,
    workdir: Path,
    pipeline_file: Path,
    state: dict[str, Any],
    remade: dict[str, str] | None = None,
) -> StageStatus:
    """Is ``stage`` up to date? ``remade`` maps output patterns of earlier stages that will run to their stage."""
    if not stage.outputs:
        return StageStatus(False, "no outputs declared, always runs")
    for dep in stage.config + stage.inputs:
        for output, maker in (remade or {}).items():
            if _overlaps(output, dep):
                return StageStatus(False, f"input {dep} will be remade by stage '{maker}'")
    record = state.get(stage.name)
    if record is not None and record.get("unfinished"):
        return StageStatus(False, "its last run did not finish")
    if record is not None and record.get("fingerprint") != stage.fingerprint():
        return StageStatus(False, "commands or files changed since the last run")
    oldest_output: int | None = None
    for pattern in stage.outputs:
        matches = expand_globs(pattern, workdir)
        if not matches:
            return StageStatus(False, f"output {pattern} is missing")
        for path in matches:
            stamp = _newest_mtime(path)
            oldest_output = stamp if oldest_output is None else min(oldest_output, stamp)
    assert oldest_output is not None
    # A recorded run counts from when it started: a command that found nothing to do (a fetch of
    # complete months) leaves its outputs old, yet it saw every input as it was then.
    reference = max(oldest_output, int(record.get("started_ns", 0))) if record else oldest_output
    for kind, patterns in (("config", stage.config), ("input", stage.inputs)):
        for pattern in patterns:
            matches = expand_globs(pattern, workdir)
            if not matches:
                return StageStatus(False, f"{kind} {pattern} is missing")
            for path in matches:
                if _newest_mtime(path) > reference:
                    return StageStatus(
                        False,
                        f"{kind} {path.relative_to(workdir) if path.is_relative_to(workdir) else path} is newer than the outputs",
                    )
    # without a record we cannot tell whether the commands changed, so the pipeline file's age stands in
    if (
        record is None
        and pipeline_file.exists()
        and pipeline_file.stat().st_mtime_ns > oldest_output
    ):
        return StageStatus(False, f"pipeline file {pipeline_file.name} is newer than the outputs")
    return StageStatus(True, "outputs are newer than inputs and config")


def show_plan(
    pipeline: Pipeline,
    pipeline_file: Path,
    workdir: Path | str = ".",
    only: list[str] | None = None,
    start: str | None = None,
    force: bool = False,
) -> list[tuple[PlannedStage, StageStatus]]:
    """Each selected stage with what ``run`` would do and why (nothing is executed)."""
    workdir = Path(workdir)
    state = read_state(workdir, pipeline.name)
    remade: dict[str, str] = {}
    plan: list[tuple[PlannedStage, StageStatus]] = []
    for stage in select_stages(plan_pipeline(pipeline), only, start):
        status = (
            StageStatus(False, "--force")
            if force
            else stage_status(stage, workdir, pipeline_file, state, remade)
        )
        if not status.up_to_date:
            remade.update(dict.fromkeys(stage.outputs, stage.name))
        plan.append((stage, status))
    return plan
