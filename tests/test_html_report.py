"""The HTML report page: built from a tiny real run, evaluation and forecast, checked in Chromium.

The browser test drives Debian's Chromium (/usr/bin/chromium) with playwright and skips, saying
why, where either is missing; `.ci/run` installs Chromium so it runs in CI.
"""

from __future__ import annotations

import logging
import re
import shutil
import sys
import threading
from pathlib import Path

import matplotlib
import numpy as np
import pandas as pd
import pytest
from helpers_forecast import tiny_run
from typer.testing import CliRunner

from seacast.cli import app
from seacast.evaluation.evaluate import evaluate_runs
from seacast.forecast import forecast
from seacast.html_report import headline_from, write_html_report, write_report_pages

matplotlib.use("Agg")

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def demo_inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A demo-sized project: one tiny trained run, its evaluation and a forecast with plots."""
    root = tmp_path_factory.mktemp("html-report")
    run = tiny_run(tmp_path_factory.mktemp("tiny"))
    evaluation = root / "reports" / "demo" / "evaluation"
    evaluate_runs([run], split="test", by="season", out_dir=evaluation, every_hours=3)
    forecasts = root / "forecasts" / "demo"
    forecast(run, out_dir=forecasts, init_time="2024-03-05T06", plots=True)
    return {"root": root, "run": run, "evaluation": evaluation, "forecasts": forecasts}


@pytest.fixture(scope="module")
def pages(demo_inputs: dict[str, Path]):
    return write_report_pages(
        demo_inputs["root"] / "reports" / "demo" / "index.md",
        title="seacast demo <tiny>",
        runs=[str(demo_inputs["run"])],
        evaluations=["reports/demo/evaluation"],
        forecasts=["forecasts/demo/*.png"],
        workdir=demo_inputs["root"],
    )


# --------------------------------------------------------------------------- the page's content


def test_report_pages_are_markdown_and_html_side_by_side(pages) -> None:
    assert pages.markdown.name == "index.md" and pages.html == pages.markdown.with_suffix(".html")
    assert pages.markdown.read_text().startswith("# seacast demo <tiny>")


def test_html_page_is_self_contained(pages) -> None:
    html = pages.html.read_text()
    sources = re.findall(r'<img[^>]*\ssrc="([^"]+)"', html)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)
    assert not re.search(r'(src|href)="(https?:)?//', html)  # nothing fetched from a network
    assert "<link" not in html and "<script src" not in html


def test_html_page_has_headline_maps_curves_tables_and_runs(pages, demo_inputs) -> None:
    html = pages.html.read_text()
    order = [html.index(f'id="{part}"') for part in ("summary", "maps", "training", "tables")]
    assert order == sorted(order)  # the headline first, the long tables below
    assert 'class="headline"' in html and re.search(r'class="skill (beats|loses)"', html)
    assert (
        html.count("<figure data-lead-group=") == 2
    )  # the tiny run's two lead times, +1 h and +3 h
    assert 'data-lead="1"' in html and 'data-lead="3"' in html
    # a forecast from the past: its store holds the truth, so the maps show the error too
    assert "the forecast − the truth from its store" in html
    assert 'alt="validation loss per run"' in html
    assert "<details" in html and "comparison rmse" in html
    run = demo_inputs["run"].name
    assert f'id="run-{run}"' in html and "config.yaml" in html
    assert "store fingerprint" in html and "config fingerprint" in html and ">seacast<" in html


def test_html_page_escapes_what_it_shows(pages) -> None:
    html = pages.html.read_text()
    assert "seacast demo &lt;tiny&gt;" in html and "<tiny>" not in html


def test_missing_parts_become_notes_not_errors(tmp_path: Path) -> None:
    page = write_html_report(
        tmp_path / "out" / "index.html",
        title="Empty",
        runs=["runs/*"],
        evaluations=["nowhere"],
        forecasts=["f/*.png"],
        workdir=tmp_path,
    )
    html = page.read_text()
    assert "No training runs found (looked in runs/*)." in html
    assert "No evaluation found (looked in nowhere)." in html
    assert "No forecast maps found (looked in f/*.png)." in html


def test_headline_colours_a_win_green_and_a_loss_red() -> None:
    rows = []
    for run, mse_ratio in (("good", 0.8), ("bad", 1.25)):
        for group in ("DJF", "all"):
            rows.append(
                {
                    "run": run,
                    "variable": "zos",
                    "lead_time": 6,
                    "group": group,
                    "best_reference": "tide",
                    "reference_rmse": 0.1,
                    "model_rmse": 0.1 * np.sqrt(mse_ratio),
                    "skill": 1 - mse_ratio,
                    "beats": mse_ratio < 1,
                }
            )
    headline = headline_from(pd.DataFrame(rows), "ev", {"good": "3ddr_unet × backprop"})
    assert headline is not None and headline.runs == [("good", "3ddr_unet × backprop"), ("bad", "")]
    (row,) = headline.rows
    assert row["reference"] == "tide" and row["reference_rmse"] == "0.1 m"
    good, bad = row["cells"]
    assert (good.css_class, bad.css_class) == ("beats", "loses")
    rgb = [tuple(int(v) for v in re.findall(r"\d+", c.colour)) for c in (good, bad)]
    assert rgb[0][1] > rgb[0][0] and rgb[1][0] > rgb[1][1]  # green wins, red losses
    assert good.text == "✓ +20.0%" and good.detail == "RMSE 0.0894 · won 1/1"
    assert "beats the best reference in 1 of 1 seasons" in good.title


# --------------------------------------------------------------------------- the command and the pipeline


def test_report_command_writes_both_pages(demo_inputs, monkeypatch, tmp_path) -> None:
    monkeypatch.chdir(demo_inputs["root"])
    out = tmp_path / "page"
    argv = [str(demo_inputs["run"]), "-e", "reports/demo/evaluation", "-f", "forecasts/demo"]
    result = CliRunner().invoke(app, ["report", *argv, "--out", str(out), "--title", "Tiny"])
    assert result.exit_code == 0, result.output
    assert (out / "index.html").is_file() and (out / "index.md").is_file()
    html = (out / "index.html").read_text()
    assert "<title>Tiny</title>" in html and 'data-lead="3"' in html


def test_report_command_without_inputs_names_the_fix(tmp_path) -> None:
    result = CliRunner().invoke(app, ["report", "--out", str(tmp_path / "x")])
    assert result.exit_code == 1
    assert "nothing to report" in result.output and "Fix:" in result.output


def test_report_command_ctrl_c_prints_one_line_and_exits_130(monkeypatch, tmp_path) -> None:
    import seacast.html_report

    # Ctrl-C silences shutdown noise process-wide: put the hooks back after the test
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    for name in ("asyncio", "distributed", "copernicusmarine"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logger.level)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(seacast.html_report, "write_report_pages", interrupted)
    result = CliRunner().invoke(app, ["report", "runs/x", "--out", str(tmp_path / "x")])
    assert result.exit_code == 130
    assert result.output.strip().splitlines() == [
        "interrupted: the report pages are written whole or not at all; rerun the same command"
    ]


def test_report_command_into_a_file_names_the_problem(tmp_path) -> None:
    (tmp_path / "taken").write_text("a file, not a folder")
    result = CliRunner().invoke(app, ["report", "runs/x", "--out", str(tmp_path / "taken")])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "error:" in result.output and "--out DIR" in result.output


def test_pipeline_report_stage_writes_the_html_page_too(demo_inputs, tmp_path) -> None:
    from seacast.pipeline import load_pipeline, run_pipeline

    shutil.copytree(demo_inputs["evaluation"], tmp_path / "evaluation")
    path = tmp_path / "p.yaml"
    path.write_text(
        "name: p\nstages:\n  - name: report\n    kind: report\n    report:\n"
        "      path: reports/p/index.md\n      title: P\n      evaluations: [evaluation]\n"
    )
    result = run_pipeline(load_pipeline(path), path, tmp_path)
    assert result.error is None
    html = (tmp_path / "reports" / "p" / "index.html").read_text()
    assert "<title>P</title>" in html and 'class="headline"' in html


# --------------------------------------------------------------------------- in a real browser


def test_page_renders_in_headless_chromium(pages, tmp_path: Path) -> None:
    if not CHROMIUM.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium; .ci/run does)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')"
    )
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            errors: list[str] = []
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(pages.html.as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.naturalWidth)")
            cells = page.eval_on_selector_all(
                "table.headline td.skill",
                "tds => tds.map(td => [td.className, getComputedStyle(td).backgroundColor])",
            )
            # the lead-time selector shows one lead's maps at a time
            shown_first = page.is_visible('figure[data-lead="1"]')
            hidden_later = not page.is_visible('figure[data-lead="3"]')
            page.click('form[data-lead-selector] label:has(input[value="3"])')
            switched = page.is_visible('figure[data-lead="3"]') and not page.is_visible(
                'figure[data-lead="1"]'
            )
            page.click('form[data-lead-selector] label:has(input[value="1"])')
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
        finally:
            browser.close()
    assert errors == []
    assert widths and all(width > 0 for width in widths), widths
    assert cells, "the headline table has no skill cells"
    for css_class, colour in cells:
        red, green, _blue = (int(v) for v in re.findall(r"\d+", colour)[:3])
        assert ("beats" in css_class and green > red) or ("loses" in css_class and red > green)
    assert shown_first and hidden_later and switched
    assert (tmp_path / "report.png").stat().st_size > 10_000


def test_the_report_says_when_a_zeroth_order_run_trained_longer_than_backprop() -> None:
    from seacast.reporting import budget_note

    equal = [
        {"run": "a", "trainer": "backprop", "steps": 120},
        {"run": "b", "trainer": "node-perturbation", "steps": 120},
    ]
    assert budget_note(equal).startswith("Every run trained for the same budget: 120 steps.")
    longer = [
        {"run": "a", "trainer": "backprop", "steps": 75},
        {"run": "b", "trainer": "node-perturbation", "steps": 225},
    ]
    note = budget_note(longer)
    assert note is not None and "b trained longer than every backprop run" in note


def test_the_report_says_when_runs_were_cut_at_their_budget_not_converged() -> None:
    from seacast.reporting import budget_note

    capped = [
        {"run": "a", "trainer": "backprop", "steps": 120, "status": "finished (epochs)"},
        {"run": "b", "trainer": "node-perturbation", "steps": 120, "status": "finished (epochs)"},
    ]
    assert "None of the runs stopped by early stopping" in budget_note(capped)
    converged = [
        {"run": "a", "trainer": "backprop", "steps": 900, "status": "finished (early_stopping)"},
        {
            "run": "b",
            "trainer": "node-perturbation",
            "steps": 900,
            "status": "finished (early_stopping)",
        },
    ]
    assert "early stopping" not in budget_note(converged)
    mixed = [converged[0], capped[1]]
    assert "b did not stop by early stopping: it was cut" in budget_note(mixed)
