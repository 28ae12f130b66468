"""Running a plan: each stage's commands in a subprocess, ``foreach`` copies side by side, outcomes
recorded so a failed run resumes at the failed stage.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.markup import escape

from seacast.errors import SeacastError
from seacast.html_report import write_report_pages
from seacast.pipeline.freshness import StageStatus, _write_state, read_state, stage_status
from seacast.pipeline.plan import PlannedStage, plan_pipeline, select_stages
from seacast.pipeline.schema import Pipeline
from seacast.reporting import expand_globs


class StageFailed(SeacastError):
    """A stage's command exited non-zero (or did not write its outputs)."""

    def __init__(self, problem: str, fix: str, stage: str) -> None:
        super().__init__(problem, fix)
        self.stage = stage


@dataclass
class StageResult:
    name: str
    kind: str
    status: Literal["ran", "skipped", "failed", "not run"]
    seconds: float = 0.0
    reason: str = ""
    report: Path | None = None


@dataclass
class PipelineResult:
    """Per-stage outcome and timing; ``error`` is set when a stage failed (later stages were not run)."""

    pipeline: str
    stages: list[StageResult] = field(default_factory=list)
    error: SeacastError | None = None
    seconds: float = 0.0

    @property
    def reports(self) -> list[Path]:
        return [s.report for s in self.stages if s.report is not None]


def display_command(command: list[str]) -> str:
    """The command as one shell line, quoted for reading (double quotes where that is enough)."""

    def quote(token: str) -> str:
        if token and re.fullmatch(r"[A-Za-z0-9_@%+=:,./\[\]*-]+", token):
            return token
        if not re.search(r'["$`\\!]', token):
            return f'"{token}"'
        return shlex.quote(token)

    return " ".join(quote(token) for token in command)


def _execute(
    stage: PlannedStage, workdir: Path, rerun_hint: str, threads: int | None = None
) -> None:
    """Run the stage's commands in order (output streamed to our terminal), then its report.

    ``threads`` caps the intra-op threads of the commands (OMP_NUM_THREADS), for stages run side by side.
    """
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    for command in stage.commands:
        argv = stage.executable(command)
        if shutil.which(argv[0]) is None and not Path(argv[0]).exists():
            raise StageFailed(
                f"stage '{stage.name}': program '{argv[0]}' of command `{display_command(command)}` was not found",
                "install it or fix the command in the pipeline's run: list",
                stage.name,
            )
        code = subprocess.run(argv, cwd=workdir, env=env, check=False).returncode
        if code != 0:
            raise StageFailed(
                f"stage '{stage.name}' failed: `{display_command(command)}` exited with status {code} (its output is above)",
                f"fix the problem it reports, then rerun with {rerun_hint} (finished stages are kept and skipped)",
                stage.name,
            )
    if stage.report is not None:
        spec = stage.report
        # the same pages as `seacast report`: index.md at spec.path, index.html beside it
        write_report_pages(
            workdir / spec.path,
            title=spec.title or stage.name,
            runs=spec.runs,
            evaluations=spec.evaluations,
            forecasts=spec.forecasts,
            workdir=workdir,
        )
    missing = [pattern for pattern in stage.outputs if not expand_globs(pattern, workdir)]
    if missing:
        raise StageFailed(
            f"stage '{stage.name}' finished but did not write {', '.join(missing)}",
            "make the stage's outputs: list name the files its commands really write",
            stage.name,
        )


def _batches(plan: list[PlannedStage]) -> list[list[PlannedStage]]:
    """Consecutive copies of one ``foreach`` stage form a batch; every other stage is its own."""
    batches: list[list[PlannedStage]] = []
    for stage in plan:
        if batches and batches[-1][0].base == stage.base:
            batches[-1].append(stage)
        else:
            batches.append([stage])
    return batches


_Outcome = tuple["PlannedStage", float, SeacastError | None, int]


def _pending_stages(
    batch: list[PlannedStage],
    workdir: Path,
    pipeline_file: Path,
    state: dict[str, Any],
    result: PipelineResult,
    force: bool,
    echo: Callable[[str], None],
) -> list[tuple[PlannedStage, str]]:
    """The stages of ``batch`` to run, with why; the up-to-date ones are recorded as skipped."""
    pending: list[tuple[PlannedStage, str]] = []
    for stage in batch:
        status = (
            StageStatus(False, "--force")
            if force
            else stage_status(stage, workdir, pipeline_file, state)
        )
        if status.up_to_date:
            echo(f"[dim]skip[/] {escape(stage.name)}: {escape(status.reason)}")
            result.stages.append(
                StageResult(stage.name, stage.kind, "skipped", reason=status.reason)
            )
            continue
        echo(f"[bold cyan]run[/]  {escape(stage.name)} ({escape(status.reason)})")
        for command in stage.commands:
            echo(f"     [dim]$ {escape(display_command(command))}[/]")
        # marked unfinished until it succeeds, so partial outputs of a killed run are not trusted
        state[stage.name] = {
            "fingerprint": stage.fingerprint(),
            "started_ns": time.time_ns(),
            "unfinished": True,
        }
        pending.append((stage, status.reason))
    return pending


def _run_stages(
    pending: list[tuple[PlannedStage, str]],
    jobs: int,
    run_one: Callable[[PlannedStage, str], _Outcome],
) -> list[_Outcome]:
    """Run the pending stages, ``jobs`` at a time; one after the other, the first failure stops them."""
    from concurrent.futures import ThreadPoolExecutor

    if jobs > 1 and len(pending) > 1:
        with ThreadPoolExecutor(max_workers=jobs) as pool:
            return list(pool.map(lambda item: run_one(*item), pending))
    outcomes: list[_Outcome] = []
    for item in pending:
        outcomes.append(run_one(*item))
        if outcomes[-1][2] is not None:
            break
    return outcomes


def _record_outcomes(
    outcomes: list[_Outcome],
    reasons: dict[str, str],
    workdir: Path,
    state: dict[str, Any],
    result: PipelineResult,
) -> SeacastError | None:
    """Record each stage that ran (finished or failed) in the state and the result; the first error."""
    failure: SeacastError | None = None
    for stage, seconds, error, started_ns in outcomes:
        if error is not None:
            result.stages.append(
                StageResult(stage.name, stage.kind, "failed", seconds, reason=str(error.problem))
            )
            failure = failure or error
            continue
        state[stage.name] = {
            "fingerprint": stage.fingerprint(),
            "started_ns": started_ns,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        report = workdir / stage.report.path if stage.report else None
        result.stages.append(
            StageResult(stage.name, stage.kind, "ran", seconds, reasons[stage.name], report)
        )
    return failure


def run_pipeline(
    pipeline: Pipeline,
    pipeline_file: Path,
    workdir: Path | str = ".",
    *,
    only: list[str] | None = None,
    start: str | None = None,
    force: bool = False,
    jobs: int = 1,
    echo: Callable[[str], None] = lambda _msg: None,
) -> PipelineResult:
    """Run the selected stages in order, skipping those up to date (unless ``force``).

    With ``jobs`` > 1 the copies of a ``foreach`` stage run up to ``jobs`` at a time, each with
    its share of the CPU cores as threads. A failing stage stops the pipeline: its error is in
    ``result.error`` and the stages that finished keep their outputs and records, so the next
    run resumes at the failed stage.
    """
    workdir = Path(workdir)
    plan = select_stages(plan_pipeline(pipeline), only, start)
    state = read_state(workdir, pipeline.name)
    result = PipelineResult(pipeline.name)
    began = time.perf_counter()
    threads = max(1, (os.cpu_count() or 1) // jobs) if jobs > 1 else None

    def run_one(stage: PlannedStage, _reason: str) -> _Outcome:
        started_ns = time.time_ns()
        started = time.perf_counter()
        try:
            _execute(
                stage,
                workdir,
                rerun_hint=f"`seacast pipeline run {pipeline.name} --from {stage.base}`",
                threads=threads,
            )
        except SeacastError as exc:
            return stage, time.perf_counter() - started, exc, started_ns
        return stage, time.perf_counter() - started, None, started_ns

    for batch in _batches(plan):
        pending = _pending_stages(batch, workdir, pipeline_file, state, result, force, echo)
        if not pending:
            continue
        _write_state(workdir, pipeline.name, state)
        outcomes = _run_stages(pending, jobs, run_one)
        reasons = {stage.name: reason for stage, reason in pending}
        failure = _record_outcomes(outcomes, reasons, workdir, state, result)
        _write_state(workdir, pipeline.name, state)
        if failure is not None:
            done = {s.name for s in result.stages}
            result.stages.extend(
                StageResult(s.name, s.kind, "not run") for s in plan if s.name not in done
            )
            result.error = failure
            break
    result.seconds = time.perf_counter() - began
    return result
