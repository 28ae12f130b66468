"""Pipelines: YAML recipes (``pipelines/*.yaml``) that run the seacast stages in order.

A pipeline is a list of stages. Each stage runs one or more seacast CLI
invocations in a subprocess of the same interpreter (``python -m seacast ...``),
so a stage that crashes cannot take the runner down with it, and it is
skipped when its outputs are up to date (make-style: every output exists and is
newer than the stage's inputs and config files).

This module offers:

* :class:`Pipeline`, :class:`Stage`, :class:`ReportSpec`: the YAML schema (pydantic, extra keys
  rejected with the nearest valid key suggested).
* :func:`find_pipeline` (NAME -> file), :func:`load_pipeline` (file + ``--set`` vars -> :class:`Pipeline`).
* :func:`plan_pipeline`: expand vars and ``foreach`` matrices into :class:`PlannedStage` objects.
* :func:`stage_status`: is a stage up to date, and why (used by ``show`` and ``run``).
* :func:`run_pipeline`: run the plan, returning a :class:`PipelineResult` with per-stage timings.
* :func:`write_report`: the Markdown page (re-exported from :mod:`seacast.reporting`); the ``report``
  stage writes it and the HTML page beside it with :func:`seacast.html_report.write_report_pages`.

Variables are written ``${NAME}`` anywhere in ``run``, ``config``, ``inputs``, ``outputs`` and
``report``. They come from ``vars`` (overridable with ``--set NAME=VALUE``), from ``choices``
(one var selecting a group of others, e.g. ``DATA: twin`` -> ``DATA_CONFIG``, ``STORE``),
from the stage's ``foreach`` matrix, and the built-in ``PIPELINE`` (the pipeline's name).

Each finished stage is recorded in ``.seacast/pipelines/<name>.json`` with a fingerprint of its
resolved commands and files. A recorded stage reruns when that fingerprint changes (an edited
command or a different ``--set``); a stage with no record falls back to comparing its outputs
with the pipeline file's modification time.
"""

from __future__ import annotations

import difflib
import fnmatch
import hashlib
import itertools
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator
from rich.markup import escape

from seacast.atomic import atomic_write_text
from seacast.config import StrictModel, apply_overrides, read_yaml, validate
from seacast.errors import ConfigError, SeacastError
from seacast.html_report import write_report_pages
from seacast.reporting import expand_globs, write_report

STAGE_KINDS = ("fetch", "regrid", "train", "evaluate", "forecast", "report", "command")
PIPELINES_DIR = Path("pipelines")
STATE_DIR = Path(".seacast") / "pipelines"

Scalar = str | int | float | bool
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_NAME = r"^[A-Za-z0-9_.-]+$"


def _as_list(value: Any) -> Any:
    """Let a single path be written without the list brackets."""
    return [value] if isinstance(value, str) else value


# --------------------------------------------------------------------------- schema


class ReportSpec(StrictModel):
    """What a ``kind: report`` stage combines into one page, Markdown at ``path`` and HTML beside it.

    Example: ``{path: reports/demo/index.md, runs: ["runs/demo-*"], evaluations: [reports/demo/evaluation],
    forecasts: ["forecasts/demo/*.png"]}``. Missing parts get a note in the report, not an error.
    """

    path: str = Field(
        description="The report page to write, e.g. reports/demo/index.md (added to the stage's outputs)."
    )
    title: str | None = Field(None, description="Page title; the pipeline's description if empty.")
    runs: list[str] = Field(
        default_factory=list, description="Globs of run folders (runs/<name>/) to summarise."
    )
    evaluations: list[str] = Field(
        default_factory=list,
        description="Evaluation outputs (folders or globs) whose tables and figures are included.",
    )
    forecasts: list[str] = Field(
        default_factory=list, description="Globs of forecast plots (PNG) to show."
    )

    _lists = field_validator("runs", "evaluations", "forecasts", mode="before")(_as_list)


class Stage(StrictModel):
    """One step of a pipeline: seacast commands, the files they read, the files they write.

    Example::

        - name: train
          kind: train
          foreach: {MODEL: [3ddr_unet, res_3ddr_unet], TRAINER: [backprop, spsa]}
          run: [train --config configs/experiments/twin_demo.yaml --model ${MODEL} --trainer ${TRAINER} --name demo-${MODEL}-${TRAINER}]
          config: [configs/experiments/twin_demo.yaml]
          inputs: [data/twin_demo.zarr]
          outputs: [runs/demo-${MODEL}-${TRAINER}/meta.json]
    """

    name: str = Field(
        pattern=_NAME, description="Stage name, used by --only/--from (letters, digits, . _ -)."
    )
    kind: Literal[STAGE_KINDS] = Field(  # type: ignore[valid-type]
        description="What the stage does: "
        + ", ".join(STAGE_KINDS)
        + ". 'command' runs any program (python, seacast, ...)."
    )
    description: str = Field("", description="One line shown by `seacast pipeline show`.")
    run: list[str | list[str]] = Field(
        default_factory=list,
        description=(
            "Commands, run in order. For seacast kinds each is a seacast invocation without 'seacast', as a string "
            "('train --config x.yaml') or an argument list; for kind 'command' any program ('python -c ...')."
        ),
    )
    config: list[str] = Field(
        default_factory=list,
        description="Config files the commands read (a change reruns the stage).",
    )
    inputs: list[str] = Field(
        default_factory=list, description="Files or folders the stage reads; globs allowed."
    )
    outputs: list[str] = Field(
        default_factory=list,
        description="Files or folders the stage writes; globs allowed. With none declared the stage always runs.",
    )
    foreach: dict[str, list[Scalar]] | list[dict[str, Scalar]] | None = Field(
        None,
        description=(
            "Matrix that repeats the stage: a mapping {VAR: [values]} runs every combination, a list of mappings "
            "runs exactly those. Each copy is named stage[value,...] and sees the values as ${VAR}."
        ),
    )
    report: ReportSpec | None = Field(
        None, description="For kind 'report': what to combine into the report page."
    )

    _lists = field_validator("config", "inputs", "outputs", mode="before")(_as_list)

    @field_validator("run", mode="before")
    @classmethod
    def _run_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @model_validator(mode="after")
    def _kind_fits(self) -> Stage:
        if self.kind == "report":
            if self.report is None:
                raise ValueError(
                    "a 'report' stage needs a 'report:' section (at least report.path)"
                )
        elif self.report is not None:
            raise ValueError(
                f"'report:' is only for kind 'report', this stage is kind '{self.kind}'"
            )
        elif not self.run:
            raise ValueError(f"stage '{self.name}' has no 'run:' commands")
        if any(isinstance(cmd, list) and not cmd for cmd in self.run) or any(
            isinstance(cmd, str) and not cmd.strip() for cmd in self.run
        ):
            raise ValueError(f"stage '{self.name}' has an empty command in 'run:'")
        if isinstance(self.foreach, dict) and any(not values for values in self.foreach.values()):
            raise ValueError(
                f"stage '{self.name}': every foreach variable needs at least one value"
            )
        return self


class Pipeline(StrictModel):
    """A pipeline document (``pipelines/*.yaml``) for ``seacast pipeline run``."""

    name: str = Field(pattern=_NAME, description="Pipeline name (the file stem by convention).")
    description: str = Field(
        "", description="What the pipeline makes, shown by `show` and used as report title."
    )
    vars: dict[str, Scalar] = Field(
        default_factory=dict,
        description="Variables with defaults, used as ${NAME}; override with --set NAME=VALUE.",
    )
    choices: dict[str, dict[str, dict[str, Scalar]]] = Field(
        default_factory=dict,
        description=(
            "Var-selected groups: {DATA: {twin: {DATA_CONFIG: ..., STORE: ...}, copernicus: {...}}} sets "
            "DATA_CONFIG and STORE from the value of DATA, which must be one of the listed keys."
        ),
    )
    stages: list[Stage] = Field(min_length=1, description="Stages, run in this order.")
    # --set values for vars that a choice sets; they win over the choice
    _forced: dict[str, Scalar] = PrivateAttr(default_factory=dict)

    @field_validator("vars")
    @classmethod
    def _var_names(cls, value: dict[str, Scalar]) -> dict[str, Scalar]:
        for name in value:
            if not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name):
                raise ValueError(
                    f"var name '{name}' must be letters, digits and _ (used as ${{{name}}})"
                )
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Pipeline:
        names = [stage.name for stage in self.stages]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"stage names must be unique, repeated: {', '.join(dupes)}")
        for var, groups in self.choices.items():
            if var not in self.vars:
                raise ValueError(
                    f"choices.{var}: '{var}' is not in vars (add a default, e.g. vars: {{{var}: ...}})"
                )
            keys = [set(group) for group in groups.values()]
            if keys and any(k != keys[0] for k in keys):
                raise ValueError(
                    f"choices.{var}: every choice must set the same vars, got {[sorted(k) for k in keys]}"
                )
        return self


# --------------------------------------------------------------------------- loading


def find_pipeline(name: str | Path, workdir: Path | str = ".") -> Path:
    """The pipeline file for NAME: a path to a YAML file, or a file stem under ``pipelines/``."""
    workdir = Path(workdir)
    given = Path(name)
    for candidate in (given, workdir / given):
        if candidate.is_file():
            return candidate
    for suffix in (".yaml", ".yml"):
        candidate = workdir / PIPELINES_DIR / f"{name}{suffix}"
        if candidate.is_file():
            return candidate
    known = sorted(p.stem for p in (workdir / PIPELINES_DIR).glob("*.y*ml"))
    close = difflib.get_close_matches(str(name), known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise ConfigError(
        f"no pipeline '{name}' (looked for {name} and {PIPELINES_DIR / f'{name}.yaml'} in {workdir.resolve()}).{hint}",
        f"give a pipeline file or one of: {', '.join(known) or '(none in pipelines/)'}",
    )


def load_pipeline(path: Path | str, overrides: list[str] | None = None) -> Pipeline:
    """Read and validate a pipeline file; ``overrides`` (``NAME=VALUE``) set its vars."""
    path = Path(path)
    raw = read_yaml(path)
    pipeline = validate(Pipeline, raw, str(path))
    if overrides:
        new_vars: dict[str, Any] = dict(pipeline.vars)
        settable = set(pipeline.vars) | {
            v for groups in pipeline.choices.values() for g in groups.values() for v in g
        }
        for text in overrides:
            key = text.partition("=")[0].strip()
            if key not in settable:
                close = difflib.get_close_matches(key, sorted(settable), n=1, cutoff=0.5)
                close = close or [v for v in sorted(settable) if v.lower() == key.lower()]
                hint = f" Did you mean '{close[0]}'?" if close else ""
                raise ConfigError(
                    f"--set {text}: '{key}' is not a var of pipeline '{pipeline.name}'.{hint}",
                    f"use one of: {', '.join(sorted(settable)) or '(this pipeline has no vars)'}",
                )
            apply_overrides(new_vars, [text])
        # overrides of choice-derived vars are kept aside and win over the choice
        derived = {k: v for k, v in new_vars.items() if k not in pipeline.vars}
        base = {k: v for k, v in new_vars.items() if k in pipeline.vars}
        pipeline = validate(Pipeline, {**raw, "vars": base}, f"{path} with --set")
        pipeline._forced = derived
    return pipeline


def resolve_vars(pipeline: Pipeline) -> dict[str, str]:
    """The pipeline-wide variables as strings: vars, then choices, then forced overrides, plus PIPELINE."""
    values: dict[str, str] = {"PIPELINE": pipeline.name}
    values.update({k: _text(v) for k, v in pipeline.vars.items()})
    for var, groups in pipeline.choices.items():
        chosen = values[var]
        if chosen not in groups:
            raise ConfigError(
                f"pipeline '{pipeline.name}': {var}={chosen} is not one of the choices {', '.join(groups)}",
                f"pass --set {var}=<one of {', '.join(groups)}>",
            )
        values.update({k: _text(v) for k, v in groups[chosen].items()})
    values.update({k: _text(v) for k, v in pipeline._forced.items()})
    return values


def _text(value: Scalar) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def substitute(text: str, values: dict[str, str], where: str) -> str:
    """Replace every ``${NAME}`` in ``text``; an unknown NAME is a ConfigError naming ``where``."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in values:
            close = difflib.get_close_matches(name, sorted(values), n=1)
            hint = f" Did you mean '${{{close[0]}}}'?" if close else ""
            raise ConfigError(
                f"{where}: unknown variable ${{{name}}}.{hint}",
                f"define it under vars: or foreach:, known here: {', '.join(sorted(values))}",
            )
        return values[name]

    return _VAR.sub(replace, text)


# --------------------------------------------------------------------------- planning


@dataclass
class PlannedStage:
    """A stage with its vars substituted and its foreach expanded: what will actually run."""

    name: str  # "train[res_3ddr_unet,backprop]" for a foreach copy
    base: str  # the stage's name in the file
    kind: str
    description: str
    commands: list[
        list[str]
    ]  # argv as the user reads it (starting with 'seacast' for seacast commands)
    config: list[str]
    inputs: list[str]
    outputs: list[str]
    report: ReportSpec | None = None

    def fingerprint(self) -> str:
        """A hash of what the stage does; a change means its outputs are stale."""
        data = {
            "commands": self.commands,
            "config": self.config,
            "inputs": self.inputs,
            "outputs": self.outputs,
            "report": self.report.model_dump() if self.report else None,
        }
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def executable(self, command: list[str]) -> list[str]:
        """The argv to execute: seacast and python through this interpreter, so the venv is used."""
        head, rest = command[0], command[1:]
        if head == "seacast":
            return [sys.executable, "-m", "seacast", *rest]
        if head in ("python", "python3"):
            return [sys.executable, *rest]
        return command


def _matrix(
    foreach: dict[str, list[Scalar]] | list[dict[str, Scalar]] | None,
    values: dict[str, str],
    where: str,
) -> list[dict[str, str]]:
    """The foreach combinations, in order; values may use the pipeline's ${VARS}."""
    if foreach is None:
        return [{}]

    def text(value: Scalar) -> str:
        return substitute(_text(value), values, where)

    if isinstance(foreach, list):
        return [{k: text(v) for k, v in combo.items()} for combo in foreach]
    names = list(foreach)
    return [
        dict(zip(names, map(text, combo), strict=True))
        for combo in itertools.product(*foreach.values())
    ]


def _command_argv(
    stage: Stage, command: str | list[str], values: dict[str, str], where: str
) -> list[str]:
    if isinstance(command, str):
        try:
            argv = shlex.split(substitute(command, values, where))
        except ValueError as exc:
            raise ConfigError(
                f"{where}: cannot split command {command!r}: {exc}", "check the quotes"
            ) from None
    else:
        argv = [substitute(_text(part), values, where) for part in command]
    if stage.kind != "command" and argv[0] != "seacast":
        argv = ["seacast", *argv]
    return argv


def plan_pipeline(pipeline: Pipeline) -> list[PlannedStage]:
    """Expand vars and foreach matrices into the ordered list of stages to consider."""
    base_values = resolve_vars(pipeline)
    planned: list[PlannedStage] = []
    for stage in pipeline.stages:
        combos = _matrix(stage.foreach, base_values, f"stage '{stage.name}' foreach")
        for combo in combos:
            clash = sorted(set(combo) & set(pipeline.vars))
            if clash:
                raise ConfigError(
                    f"stage '{stage.name}': foreach var {', '.join(clash)} is also a pipeline var",
                    "rename the foreach variable (for example MODEL instead of a var called MODEL)",
                )
            values = {**base_values, **combo}
            # labels name a copy; empty values and argument strings (with spaces) do not
            labels = [v for v in combo.values() if v and " " not in v]
            name = f"{stage.name}[{','.join(labels)}]" if stage.foreach is not None else stage.name
            where = f"stage '{name}'"

            def sub(
                items: list[str], values: dict[str, str] = values, where: str = where
            ) -> list[str]:
                return [substitute(item, values, where) for item in items]

            report = None
            if stage.report is not None:
                spec = stage.report
                report = ReportSpec(
                    path=substitute(spec.path, values, where),
                    title=substitute(spec.title, values, where)
                    if spec.title
                    else pipeline.description or pipeline.name,
                    runs=sub(spec.runs),
                    evaluations=sub(spec.evaluations),
                    forecasts=sub(spec.forecasts),
                )
            outputs = sub(stage.outputs)
            if report is not None:
                # both pages: a report folder from before the HTML page gets it on the next run
                html = Path(report.path).with_suffix(".html").as_posix()
                outputs += [page for page in (report.path, html) if page not in outputs]
            planned.append(
                PlannedStage(
                    name=name,
                    base=stage.name,
                    kind=stage.kind,
                    description=substitute(stage.description, values, where),
                    commands=[_command_argv(stage, cmd, values, where) for cmd in stage.run],
                    config=sub(stage.config),
                    inputs=sub(stage.inputs),
                    outputs=outputs,
                    report=report,
                )
            )
    return planned


def select_stages(
    planned: list[PlannedStage], only: list[str] | None = None, start: str | None = None
) -> list[PlannedStage]:
    """The stages chosen by ``--only`` (names, repeatable) and ``--from`` (this stage and all after it).

    A name matches a stage in the file (all its foreach copies) or one expanded copy.
    """
    names = [s.name for s in planned]
    known = sorted({s.base for s in planned} | set(names))

    def matches(stage: PlannedStage, name: str) -> bool:
        return name in (stage.base, stage.name)

    for name in [*(only or []), *([start] if start else [])]:
        if not any(matches(s, name) for s in planned):
            close = difflib.get_close_matches(name, known, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise ConfigError(
                f"no stage '{name}' in this pipeline.{hint}", f"use one of: {', '.join(known)}"
            )
    chosen = planned
    if start:
        first = next(i for i, s in enumerate(planned) if matches(s, start))
        chosen = planned[first:]
    if only:
        chosen = [s for s in chosen if any(matches(s, name) for name in only)]
    return chosen


# --------------------------------------------------------------------------- freshness


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


# --------------------------------------------------------------------------- running


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


__all__ = [
    "STAGE_KINDS",
    "Pipeline",
    "PipelineResult",
    "PlannedStage",
    "ReportSpec",
    "Stage",
    "StageFailed",
    "StageResult",
    "StageStatus",
    "display_command",
    "find_pipeline",
    "load_pipeline",
    "plan_pipeline",
    "resolve_vars",
    "run_pipeline",
    "select_stages",
    "show_plan",
    "stage_status",
    "substitute",
    "write_report",
]
