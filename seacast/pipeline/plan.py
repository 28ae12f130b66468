"""The plan: vars substituted and ``foreach`` matrices expanded into :class:`PlannedStage` objects,
and the ``--only`` / ``--from`` selection.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

from seacast.errors import ConfigError
from seacast.pipeline.loading import _text, resolve_vars, substitute
from seacast.pipeline.schema import Pipeline, ReportSpec, Scalar, Stage


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
