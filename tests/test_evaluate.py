"""seacast evaluate: scores against baselines, the comparison table, streaming, report files."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from helpers_forecast import tiny_run
from torch import nn
from typer.testing import CliRunner

from seacast.cli import app
from seacast.errors import ConfigError
from seacast.evaluation.evaluate import evaluate_runs, score_model
from seacast.evaluation.metrics import error_compute, skill_score
from seacast.evaluation.report import comparison_table, markdown_fragment
from seacast.training.checkpoint import load_run
from seacast.windows import open_samples


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[Path]:
    run = tiny_run(tmp_path_factory.mktemp("tiny"))
    twin = tmp_path_factory.mktemp("copy") / "tiny-b"
    shutil.copytree(run, twin)
    return [run, twin]


@pytest.fixture(scope="module")
def results(runs, tmp_path_factory):
    return evaluate_runs(
        runs, split="test", by="season", out_dir=tmp_path_factory.mktemp("report") / "cmp"
    )


class Persistence(nn.Module):
    """A 'model' that repeats the last input frame for every lead time."""

    def __init__(self, n_lead: int) -> None:
        super().__init__()
        self.n_lead = n_lead

    def forward(
        self, x: torch.Tensor
    ) -> torch.Tensor:  # [B, C, lags, H, W] -> [B, n_lead, C, H, W]
        return x[:, :, -1].unsqueeze(1).expand(-1, self.n_lead, -1, -1, -1)


def test_persistence_model_has_zero_skill_against_persistence(runs):
    run = load_run(runs[0])
    sets = open_samples(run.config.store, run.config.samples)
    lead_hours = list(run.config.samples.lead_times)
    accs, _ = score_model(
        Persistence(len(lead_hours)),
        run.normaliser,
        sets.test,
        lead_hours=lead_hours,
        groups=("all",),
        labels="all",
        climatology=None,
        batch_size=16,
    )
    model, reference = error_compute(accs["model"]), error_compute(accs["persistence"])
    assert float(model["mse"].min()) > 0
    np.testing.assert_allclose(skill_score(model["mse"], reference["mse"]).values, 0.0, atol=1e-12)


def test_scores_tables_and_files(results, runs):
    run = results.runs[0]
    model, pers = run.metrics["model"], run.metrics["persistence"]
    # test period of the tiny store is in March: only MAM has samples
    assert (
        float(model["count"].sel(group="MAM").sum()) > 0
        and float(model["count"].sel(group="DJF").sum()) == 0
    )
    np.testing.assert_allclose(run.skill["skill_persistence"], 1 - model["mse"] / pers["mse"])
    np.testing.assert_allclose(model["rmse"] ** 2, model["mse"])
    # climatology from the training period only (before the test period)
    assert pd.Timestamp(run.climatology_period[1]) < pd.Timestamp(run.sample.init_time)

    table = comparison_table(results, "rmse", lead_time=1)
    assert list(table.index) == [
        "3ddr_unet × backprop (tiny)",
        "3ddr_unet × backprop (tiny-b)",
        "persistence",
        "climatology",
        "tide",
        "tide + persisted anomaly",
        "tide + damped anomaly",
        "tide + regressed anomaly",
    ]
    assert list(table.columns) == [("zos", "MAM"), ("uo", "MAM")]
    assert table.iloc[0, 0] == pytest.approx(
        float(model["rmse"].sel(group="MAM", lead_time=1, variable="zos"))
    )
    assert table.iloc[0, 0] == pytest.approx(table.iloc[1, 0])  # same weights, same scores

    long = results.table()
    assert set(long["reference"]) == {
        "model",
        "persistence",
        "climatology",
        "tide",
        "tide_persisted",
        "tide_damped",
        "tide_regressed",
    }
    names = {p.name for p in results.files}
    for expected in (
        "metrics.csv",
        "comparison_rmse.csv",
        "comparison_skill_persistence.csv",
        "comparison_skill_tide_damped.csv",
        "skill_vs_best.csv",
        "rmse_vs_lead.png",
        "mean_error_tiny.png",
        "sample_tiny.png",
        "index.md",
    ):
        assert expected in names, expected
    index = (results.out_dir / "index.md").read_text()
    assert (
        "| 3ddr_unet × backprop (tiny) |" in index and "![rmse_vs_lead](rmse_vs_lead.png)" in index
    )
    # the first table a forecaster reads is the one against the strongest reference
    assert index.index("Skill vs the best reference") < index.index("Lead time +1 h")
    # and the report says what the regressed anomaly is made of, lead time by lead time
    assert run.regressed_uses and f"regressed anomaly uses: {run.regressed_uses}." in index
    fragment = markdown_fragment(results, base=results.out_dir.parent, heading_level=3)
    assert "(cmp/rmse_vs_lead.png)" in fragment and fragment.startswith("### ")


def test_batch_size_does_not_change_scores(results, runs, tmp_path):
    """The driver streams: per-batch accumulation equals one big batch."""
    again = evaluate_runs(
        runs[:1], by="season", out_dir=tmp_path / "r", batch_size=3, figures=False
    )
    a, b = again.runs[0].metrics["model"], results.runs[0].metrics["model"]
    np.testing.assert_allclose(a["mse"].values, b["mse"].values, rtol=1e-5)
    np.testing.assert_array_equal(a["count"].values, b["count"].values)


def test_cli_and_bad_options(runs, tmp_path):
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            str(runs[0]),
            "--by",
            "all",
            "--reports",
            str(tmp_path),
            "--name",
            "x",
            "--no-figures",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "persistence" in result.output and (tmp_path / "x" / "index.md").exists()
    with pytest.raises(ConfigError, match="unknown split"):
        evaluate_runs(runs[:1], split="train", out_dir=tmp_path / "y")


def test_runs_on_the_same_samples_share_reference_scores_equal_to_scoring_alone(
    results, runs, tmp_path
):
    alone = evaluate_runs(runs[1:], by="season", out_dir=tmp_path / "alone", figures=False)
    for reference in ("persistence", "climatology", "tide", "tide_damped"):
        shared = results.runs[1].metrics[reference]["mse"].values
        np.testing.assert_allclose(shared, results.runs[0].metrics[reference]["mse"].values)
        np.testing.assert_allclose(
            shared, alone.runs[0].metrics[reference]["mse"].values, rtol=1e-6
        )


def test_a_held_out_store_is_scored_whole_with_references_from_the_runs_training(runs, tmp_path):
    from helpers_forecast import TINY

    from seacast.synthetic import synthetic_store

    held_out = synthetic_store(
        tmp_path / "later.zarr",
        shape=TINY["shape"],
        hours=24 * 6,
        variables=TINY["variables"],
        start="2024-06-01",
    )
    results = evaluate_runs(runs[:1], split="all", by="all", store_path=held_out, out_dir=False)
    scored = results.runs[0]
    lags, reach = TINY["lags"], max(TINY["lead_times"])
    assert scored.samples == 24 * 6 - (lags - 1) - reach
    own = open_samples(load_run(runs[0]).config.store, load_run(runs[0]).config.samples)
    train_start = pd.Timestamp(own.timeline.hours[0], unit="h")
    assert pd.Timestamp(scored.climatology_period[0]) == train_start
    assert pd.Timestamp(scored.climatology_period[1]) < pd.Timestamp("2024-06-01")


def test_scoring_every_time_of_the_training_store_is_refused(runs):
    with pytest.raises(ConfigError, match="trained on"):
        evaluate_runs(runs[:1], split="all", by="all", out_dir=False)
