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

The modules, in the order a run goes through them: :mod:`~seacast.pipeline.schema` (the YAML
schema), :mod:`~seacast.pipeline.loading` (files, vars), :mod:`~seacast.pipeline.plan` (stages
expanded), :mod:`~seacast.pipeline.freshness` (up to date or not) and
:mod:`~seacast.pipeline.runner` (running them). The names below are re-exported here so
``from seacast.pipeline import ...`` keeps working.
"""

from __future__ import annotations

from seacast.pipeline.freshness import StageStatus, show_plan, stage_status
from seacast.pipeline.loading import (
    find_pipeline,
    load_pipeline,
    resolve_vars,
    substitute,
)
from seacast.pipeline.plan import PlannedStage, plan_pipeline, select_stages
from seacast.pipeline.runner import (
    PipelineResult,
    StageFailed,
    StageResult,
    display_command,
    run_pipeline,
)
from seacast.pipeline.schema import STAGE_KINDS, Pipeline, ReportSpec, Stage
from seacast.reporting import write_report

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
