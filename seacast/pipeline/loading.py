"""Pipeline files and their variables: :func:`find_pipeline`, :func:`load_pipeline` (``--set``),
:func:`resolve_vars` and ``${NAME}`` substitution.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from seacast.config import apply_overrides, read_yaml, validate
from seacast.errors import ConfigError
from seacast.pipeline.schema import Pipeline, Scalar

PIPELINES_DIR = Path("pipelines")


_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


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
