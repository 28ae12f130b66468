"""Evaluation: streaming metrics (:mod:`.metrics`), seasons (:mod:`.seasons`), baselines
(:mod:`.baselines`), the driver (:mod:`.evaluate`, :func:`evaluate_runs`) and the report (:mod:`.report`)."""

from seacast.evaluation.evaluate import EvaluationResults, evaluate_runs

__all__ = ["EvaluationResults", "evaluate_runs"]
