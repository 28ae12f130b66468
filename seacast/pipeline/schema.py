"""The pipeline YAML schema: :class:`Pipeline`, :class:`Stage` and :class:`ReportSpec` (pydantic,
extra keys rejected with the nearest valid key suggested).
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, PrivateAttr, field_validator, model_validator

from seacast.config import StrictModel

STAGE_KINDS = ("fetch", "regrid", "train", "evaluate", "forecast", "report", "command")


Scalar = str | int | float | bool


_NAME = r"^[A-Za-z0-9_.-]+$"


def _as_list(value: Any) -> Any:
    """Let a single path be written without the list brackets."""
    return [value] if isinstance(value, str) else value


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
