"""The pipeline runner: order, up-to-date skipping, failures, plans, validation, foreach, reports.

Tiny pipelines of ``kind: command`` stages (``python -c ...``) in temporary folders.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from seacast.errors import ConfigError
from seacast.pipeline import (
    StageFailed,
    find_pipeline,
    load_pipeline,
    plan_pipeline,
    run_pipeline,
    select_stages,
    show_plan,
)
from seacast.reporting import write_report

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


def _append(name: str, out: str | None = None, source: str | None = None) -> list[str]:
    """A python command that appends NAME to log.txt (and copies source to out, or writes out)."""
    code = f"open('log.txt', 'a').write('{name}\\n')"
    if out and source:
        code += f"; open('{out}', 'w').write(open('{source}').read() + '{name}')"
    elif out:
        code += f"; open('{out}', 'w').write('{name}')"
    return ["python", "-c", code]


def _chain(tmp_path: Path) -> Path:
    """a -> a.txt; b: a.txt + b.cfg -> b.txt; c: b.txt -> c.txt."""
    _write(tmp_path / "b.cfg", "setting: 1\n")
    pipeline = {
        "name": "chain",
        "description": "three stages in a row",
        "stages": [
            {"name": "a", "kind": "command", "run": [_append("a", "a.txt")], "outputs": ["a.txt"]},
            {
                "name": "b",
                "kind": "command",
                "run": [_append("b", "b.txt", "a.txt")],
                "inputs": ["a.txt"],
                "config": ["b.cfg"],
                "outputs": ["b.txt"],
            },
            {
                "name": "c",
                "kind": "command",
                "run": [_append("c", "c.txt", "b.txt")],
                "inputs": "b.txt",
                "outputs": "c.txt",
            },
        ],
    }
    return _write(tmp_path / "pipelines" / "chain.yaml", yaml.safe_dump(pipeline, sort_keys=False))


def _run(tmp_path: Path, path: Path, sets: list[str] | None = None, **kwargs):
    return run_pipeline(load_pipeline(path, sets), path, tmp_path, **kwargs)


def _log(tmp_path: Path) -> list[str]:
    log = tmp_path / "log.txt"
    return log.read_text().split() if log.exists() else []


def _age_everything(tmp_path: Path, seconds: float = 100) -> None:
    """Move every file's mtime into the past so a later touch is unambiguously newer."""
    for path in tmp_path.rglob("*"):
        stat = path.stat()
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns - int(seconds * 1e9)))


def _touch_future(path: Path, seconds: float = 50) -> None:
    """Set the mtime after everything written so far (and after every recorded stage start)."""
    stamp = time.time_ns() + int(seconds * 1e9)
    os.utime(path, ns=(stamp, stamp))


def test_stages_run_in_order_and_record_timings(tmp_path):
    path = _chain(tmp_path)
    result = _run(tmp_path, path)
    assert result.error is None
    assert _log(tmp_path) == ["a", "b", "c"]
    assert (tmp_path / "c.txt").read_text() == "abc"
    assert [(s.name, s.status) for s in result.stages] == [("a", "ran"), ("b", "ran"), ("c", "ran")]
    assert all(s.seconds > 0 for s in result.stages)


def test_up_to_date_stages_are_skipped(tmp_path):
    path = _chain(tmp_path)
    _run(tmp_path, path)
    result = _run(tmp_path, path)
    assert [s.status for s in result.stages] == ["skipped"] * 3
    assert _log(tmp_path) == ["a", "b", "c"]
    plan = show_plan(load_pipeline(path), path, tmp_path)
    assert all(status.up_to_date for _, status in plan)


def test_touched_input_reruns_the_stage_and_what_follows(tmp_path):
    path = _chain(tmp_path)
    _run(tmp_path, path)
    _age_everything(tmp_path)
    _touch_future(tmp_path / "a.txt")
    plan = show_plan(load_pipeline(path), path, tmp_path)
    assert [status.up_to_date for _, status in plan] == [True, False, False]
    assert "a.txt is newer" in plan[1][1].reason
    assert "remade by stage 'b'" in plan[2][1].reason
    result = _run(tmp_path, path)
    assert [s.status for s in result.stages] == ["skipped", "ran", "ran"]
    assert _log(tmp_path) == ["a", "b", "c", "b", "c"]


def test_touched_config_reruns_the_stage(tmp_path):
    path = _chain(tmp_path)
    _run(tmp_path, path)
    _age_everything(tmp_path)
    _touch_future(tmp_path / "b.cfg")
    result = _run(tmp_path, path)
    assert [s.status for s in result.stages] == ["skipped", "ran", "ran"]


def test_missing_output_reruns_only_that_stage_and_dependents(tmp_path):
    path = _chain(tmp_path)
    _run(tmp_path, path)
    (tmp_path / "c.txt").unlink()
    result = _run(tmp_path, path)
    assert [s.status for s in result.stages] == ["skipped", "skipped", "ran"]


def test_changed_command_reruns_recorded_stage_and_unrecorded_uses_pipeline_age(tmp_path):
    path = _chain(tmp_path)
    _run(tmp_path, path)
    raw = yaml.safe_load(path.read_text())
    raw["stages"][2]["run"] = [_append("C", "c.txt", "b.txt")]
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    plan = show_plan(load_pipeline(path), path, tmp_path)
    # the edited stage reruns; the others are recorded with unchanged commands, so they stay skipped
    assert [status.up_to_date for _, status in plan] == [True, True, False]
    assert "changed" in plan[2][1].reason
    # with no record (outputs made some other way) the pipeline file's age decides
    (tmp_path / ".seacast" / "pipelines" / "chain.json").unlink()
    _age_everything(tmp_path)
    _touch_future(path)
    plan = show_plan(load_pipeline(path), path, tmp_path)
    assert not plan[0][1].up_to_date and "pipeline file" in plan[0][1].reason


def test_recorded_run_counts_from_its_start_and_unfinished_runs_rerun(tmp_path):
    """A command that found nothing to do leaves old outputs; that is still up to date."""
    _write(tmp_path / "c.cfg", "x: 1\n")
    (tmp_path / "out.txt").write_text("old")
    _age_everything(tmp_path)
    pipeline = {
        "name": "lazy",
        "stages": [
            {
                "name": "lazy",
                "kind": "command",
                "run": [_append("lazy")],  # does not touch out.txt
                "config": ["c.cfg"],
                "outputs": ["out.txt"],
            }
        ],
    }
    path = _write(tmp_path / "lazy.yaml", yaml.safe_dump(pipeline))
    _touch_future(tmp_path / "c.cfg", seconds=-1)  # newer than out.txt, older than the run
    assert [s.status for s in _run(tmp_path, path).stages] == ["ran"]
    assert [s.status for s in _run(tmp_path, path).stages] == ["skipped"]
    _touch_future(tmp_path / "c.cfg")
    assert [s.status for s in _run(tmp_path, path).stages] == ["ran"]
    # a run that was killed leaves an unfinished record: its outputs are not trusted
    state_file = tmp_path / ".seacast" / "pipelines" / "lazy.json"
    state = json.loads(state_file.read_text())
    state["lazy"]["unfinished"] = True
    state_file.write_text(json.dumps(state))
    plan = show_plan(load_pipeline(path), path, tmp_path)
    assert plan[0][1].reason == "its last run did not finish"


def test_force_reruns_everything(tmp_path):
    path = _chain(tmp_path)
    _run(tmp_path, path)
    result = _run(tmp_path, path, force=True)
    assert [s.status for s in result.stages] == ["ran"] * 3
    assert _log(tmp_path) == ["a", "b", "c"] * 2


def test_only_and_from_select_stages(tmp_path):
    path = _chain(tmp_path)
    _run(tmp_path, path)
    result = _run(tmp_path, path, only=["b"], force=True)
    assert [s.name for s in result.stages] == ["b"]
    result = _run(tmp_path, path, start="b", force=True)
    assert [s.name for s in result.stages] == ["b", "c"]
    assert _log(tmp_path) == ["a", "b", "c", "b", "b", "c"]
    with pytest.raises(ConfigError, match="Did you mean 'b'"):
        select_stages(plan_pipeline(load_pipeline(path)), only=["bb"])


def test_failed_stage_stops_pipeline_and_keeps_earlier_outputs(tmp_path):
    pipeline = {
        "name": "fails",
        "stages": [
            {
                "name": "first",
                "kind": "command",
                "run": [_append("first", "first.txt")],
                "outputs": ["first.txt"],
            },
            {
                "name": "broken",
                "kind": "command",
                "run": [["python", "-c", "import sys; sys.exit(3)"]],
                "outputs": ["x.txt"],
            },
            {
                "name": "never",
                "kind": "command",
                "run": [_append("never", "never.txt")],
                "outputs": ["never.txt"],
            },
        ],
    }
    path = _write(tmp_path / "fails.yaml", yaml.safe_dump(pipeline))
    result = _run(tmp_path, path)
    assert isinstance(result.error, StageFailed)
    assert result.error.stage == "broken"
    message = str(result.error)
    assert "stage 'broken' failed" in message and "status 3" in message and "sys.exit(3)" in message
    assert "--from broken" in message
    assert [s.status for s in result.stages] == ["ran", "failed", "not run"]
    assert (tmp_path / "first.txt").exists() and not (tmp_path / "never.txt").exists()
    # the next run keeps the finished stage and retries the failed one
    again = _run(tmp_path, path)
    assert [s.status for s in again.stages] == ["skipped", "failed", "not run"]


def test_stage_that_does_not_write_its_outputs_fails(tmp_path):
    pipeline = {
        "name": "liar",
        "stages": [
            {"name": "s", "kind": "command", "run": "python -c pass", "outputs": "made.txt"}
        ],
    }
    path = _write(tmp_path / "liar.yaml", yaml.safe_dump(pipeline))
    result = _run(tmp_path, path)
    assert result.error is not None and "did not write made.txt" in str(result.error)


def test_cli_failure_exits_nonzero_naming_stage_and_show_prints_plan(tmp_path):
    _write(
        tmp_path / "pipelines" / "tiny.yaml",
        """\
        name: tiny
        description: a tiny pipeline
        stages:
          - name: hello
            kind: command
            run: python -c "open('hello.txt', 'w').write('hi')"
            outputs: hello.txt
          - name: version
            kind: command
            run: seacast --version
          - name: boom
            kind: command
            run: python -c "raise SystemExit(2)"
        """,
    )
    cmd = [sys.executable, "-m", "seacast", "pipeline"]
    shown = subprocess.run(
        [*cmd, "show", "tiny"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert shown.returncode == 0, shown.stderr
    assert "hello (command) will run: output hello.txt is missing" in shown.stdout
    assert "$ python -c \"open('hello.txt', 'w').write('hi')\"" in shown.stdout
    assert "3 of 3 stages will run" in shown.stdout
    ran = subprocess.run(
        [*cmd, "run", "tiny"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert ran.returncode == 1
    assert "seacast 0.1.0" in ran.stdout  # the seacast stage ran through python -m seacast
    assert "stage 'boom' failed" in ran.stderr and "SystemExit(2)" in ran.stderr
    assert (tmp_path / "hello.txt").read_text() == "hi"
    shown = subprocess.run(
        [*cmd, "show", "tiny"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert "hello (command) up to date" in shown.stdout


def test_validation_errors_name_the_bad_key(tmp_path):
    path = _write(
        tmp_path / "bad.yaml",
        """\
        name: bad
        stages:
          - name: s
            kind: command
            run: python -c pass
            ouputs: [x.txt]
        """,
    )
    with pytest.raises(ConfigError) as info:
        load_pipeline(path)
    assert "stages.0.ouputs" in str(info.value) and "Did you mean 'outputs'" in str(info.value)

    path.write_text("name: bad\nstages:\n  - {name: s, kind: trian, run: [x]}\n")
    with pytest.raises(ConfigError, match=r"stages\.0\.kind"):
        load_pipeline(path)
    path.write_text("name: bad\nstages:\n  - {name: s, kind: train}\n")
    with pytest.raises(ConfigError, match="no 'run:' commands"):
        load_pipeline(path)
    path.write_text("name: bad\nstages:\n  - {name: r, kind: report}\n")
    with pytest.raises(ConfigError, match="needs a 'report:' section"):
        load_pipeline(path)
    path.write_text(
        "name: bad\nstages:\n  - {name: s, kind: command, run: [x]}\n  - {name: s, kind: command, run: [y]}\n"
    )
    with pytest.raises(ConfigError, match="unique"):
        load_pipeline(path)


def test_vars_set_and_unknown_names(tmp_path):
    path = _write(
        tmp_path / "vars.yaml",
        """\
        name: vars
        vars: {DATA: twin, EPOCHS: 2}
        choices:
          DATA:
            twin: {DATA_CONFIG: configs/data/twin.yaml}
            copernicus: {DATA_CONFIG: configs/data/nws.yaml}
        stages:
          - name: fetch
            kind: fetch
            run: fetch --config ${DATA_CONFIG} --set epochs=${EPOCHS}
            outputs: ["data/${DATA}.zarr"]
        """,
    )
    (stage,) = plan_pipeline(load_pipeline(path))
    assert stage.commands == [
        ["seacast", "fetch", "--config", "configs/data/twin.yaml", "--set", "epochs=2"]
    ]
    assert stage.outputs == ["data/twin.zarr"]
    (stage,) = plan_pipeline(load_pipeline(path, ["DATA=copernicus", "EPOCHS=5"]))
    assert stage.commands[0][3] == "configs/data/nws.yaml" and stage.commands[0][-1] == "epochs=5"
    (stage,) = plan_pipeline(load_pipeline(path, ["DATA_CONFIG=my.yaml"]))
    assert stage.commands[0][3] == "my.yaml"
    with pytest.raises(ConfigError, match="Did you mean 'DATA'"):
        load_pipeline(path, ["data=twin"])
    with pytest.raises(ConfigError, match="not one of the choices"):
        plan_pipeline(load_pipeline(path, ["DATA=nowhere"]))
    path.write_text(path.read_text().replace("${EPOCHS}", "${EPOCH}"))
    with pytest.raises(
        ConfigError,
        match=r"stage 'fetch': unknown variable \$\{EPOCH\}. Did you mean '\$\{EPOCHS\}'",
    ):
        plan_pipeline(load_pipeline(path))


def test_foreach_expands_matrix_and_explicit_list(tmp_path):
    path = _write(
        tmp_path / "matrix.yaml",
        """\
        name: matrix
        vars: {ZO: spsa}
        stages:
          - name: train
            kind: train
            foreach: {MODEL: [3ddr_unet, res_3ddr_unet], TRAINER: [backprop, "${ZO}"]}
            run: [[train, --model, "${MODEL}", --trainer, "${TRAINER}", --name, "m-${MODEL}-${TRAINER}"]]
            outputs: ["runs/m-${MODEL}-${TRAINER}/meta.json"]
          - name: extra
            kind: command
            foreach: [{N: 1}, {N: 5}]
            run: python -c "print(${N})"
        """,
    )
    planned = plan_pipeline(load_pipeline(path))
    assert [s.name for s in planned] == [
        "train[3ddr_unet,backprop]",
        "train[3ddr_unet,spsa]",
        "train[res_3ddr_unet,backprop]",
        "train[res_3ddr_unet,spsa]",
        "extra[1]",
        "extra[5]",
    ]
    assert planned[1].commands == [
        [
            "seacast",
            "train",
            "--model",
            "3ddr_unet",
            "--trainer",
            "spsa",
            "--name",
            "m-3ddr_unet-spsa",
        ]
    ]
    assert planned[3].outputs == ["runs/m-res_3ddr_unet-spsa/meta.json"]
    assert planned[5].commands == [["python", "-c", "print(5)"]]
    assert [s.name for s in select_stages(planned, only=["train"])] == [s.name for s in planned[:4]]
    assert [s.name for s in select_stages(planned, only=["extra[5]"])] == ["extra[5]"]


def test_find_pipeline_by_stem_or_path(tmp_path):
    path = _chain(tmp_path)
    assert find_pipeline("chain", tmp_path) == path
    assert find_pipeline(str(path), tmp_path) == path
    with pytest.raises(ConfigError, match="Did you mean 'chain'"):
        find_pipeline("chian", tmp_path)


def _fake_run(root: Path, name: str, model: str, trainer: str) -> None:
    run = root / "runs" / name
    _write(
        run / "config.yaml",
        yaml.safe_dump({"name": name, "model": {"name": model}, "trainer": {"name": trainer}}),
    )
    _write(
        run / "meta.json",
        json.dumps({"trainer": trainer, "timings": {"total": 12.5}, "status": "finished"}),
    )
    _write(
        run / "metrics.csv",
        "epoch,step,train_loss,val_loss,forwards\n0,10,0.5,0.4,20\n1,20,0.3,0.25,40\n",
    )


def test_report_stage_combines_runs_evaluation_and_forecasts(tmp_path):
    _fake_run(tmp_path, "demo-a", "res_3ddr_unet", "backprop")
    _fake_run(tmp_path, "demo-b", "3ddr_unet", "spsa")
    _write(
        tmp_path / "reports" / "demo" / "evaluation" / "metrics_by_season.csv",
        "season,variable,rmse\nDJF,zos,0.1\n",
    )
    (tmp_path / "reports" / "demo" / "evaluation" / "rmse.png").write_bytes(b"\x89PNG fake")
    (tmp_path / "forecasts" / "demo").mkdir(parents=True)
    (tmp_path / "forecasts" / "demo" / "zos_24h.png").write_bytes(b"\x89PNG fake")
    path = _write(
        tmp_path / "report.yaml",
        """\
        name: demo
        description: Demo report
        stages:
          - name: report
            kind: report
            report:
              path: reports/${PIPELINE}/index.md
              runs: runs/demo-*
              evaluations: [reports/demo/evaluation]
              forecasts: ["forecasts/demo/*.png"]
        """,
    )
    result = _run(tmp_path, path)
    assert result.error is None
    index = tmp_path / "reports" / "demo" / "index.md"
    assert result.reports == [index]
    text = index.read_text()
    assert text.startswith("# Demo report")
    assert (
        "| demo-a | res_3ddr_unet | backprop | 2 | 20 | 0.25 | 0.3 | 40 | 12.5 | finished |" in text
    )
    assert "| DJF | zos | 0.1 |" in text
    assert "![rmse](evaluation/rmse.png)" in text
    assert "![zos_24h](../../forecasts/demo/zos_24h.png)" in text
    assert "![validation loss per run](training_curves.png)" in text
    assert (tmp_path / "reports" / "demo" / "training_curves.png").stat().st_size > 1000


def test_report_tolerates_missing_parts_and_includes_evaluation_pages(tmp_path):
    page = write_report(
        tmp_path / "out" / "index.md",
        title="Empty",
        runs=["runs/*"],
        forecasts=["f/*.png"],
        workdir=tmp_path,
    )
    text = page.read_text()
    assert "_No training runs found (looked in runs/*)._" in text
    assert "_No evaluation found" in text and "_No forecast plots found" in text
    _write(tmp_path / "ev" / "report.md", "# Scores\n\n![fig](figs/a.png)\n")
    page = write_report(
        tmp_path / "out" / "index.md", title="T", evaluations=["ev"], workdir=tmp_path
    )
    assert "### Scores" in page.read_text() and "![fig](../ev/figs/a.png)" in page.read_text()


SHIPPED = sorted((REPO / "pipelines").glob("*.yaml"))


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_pipelines_validate_and_use_real_commands(path):
    """Every shipped pipeline plans, and each seacast command and option it uses exists."""
    import typer

    from seacast.cli import app

    pipeline = load_pipeline(path)
    sets = [
        [f"{var}={choice}"] for var, groups in pipeline.choices.items() for choice in groups
    ] or [[]]
    root = typer.main.get_command(app)
    missing: list[str] = []
    for overrides in sets:
        for stage in plan_pipeline(load_pipeline(path, overrides)):
            missing += [f"config {c}" for c in stage.config if not (REPO / c).is_file()]
            for command in stage.commands:
                if command[0] != "seacast":
                    continue
                node = root  # typer may vendor click, so groups are recognised by their .commands
                args = command[1:]
                while hasattr(node, "commands") and args and args[0] in node.commands:
                    node, args = node.commands[args[0]], args[1:]
                if hasattr(node, "commands"):
                    missing.append(f"`seacast {command[1]}`")
                    continue
                known = {opt for param in node.params for opt in getattr(param, "opts", [])}
                known |= {
                    opt for param in node.params for opt in getattr(param, "secondary_opts", [])
                }
                for token in args:
                    option = token.split("=", 1)[0]
                    assert not option.startswith("--") or option in known, (
                        f"{path.name} stage {stage.name}: `seacast {command[1]}` has no option {option}"
                    )
    if missing:
        pytest.skip(f"{path.name} uses what is not built yet: " + ", ".join(sorted(set(missing))))


def test_jobs_run_foreach_copies_side_by_side_with_a_share_of_the_threads(tmp_path):
    code = (
        "import os, sys, time; t = time.time(); time.sleep(0.6); "
        "open(f'{sys.argv[1]}.txt', 'w').write(f'{t} {time.time()} {os.environ[\"OMP_NUM_THREADS\"]}')"
    )
    pipeline = {
        "name": "par",
        "stages": [
            {
                "name": "work",
                "kind": "command",
                "foreach": {"K": ["a", "b"]},
                "run": [["python", "-c", code, "${K}"]],
                "outputs": ["${K}.txt"],
            }
        ],
    }
    path = _write(tmp_path / "pipelines" / "par.yaml", yaml.safe_dump(pipeline))
    result = _run(tmp_path, path, jobs=2)
    assert result.error is None
    (a0, a1, threads), (b0, b1, _) = (
        (tmp_path / f"{k}.txt").read_text().split() for k in ("a", "b")
    )
    assert float(a0) < float(b1) and float(b0) < float(a1), "the two copies did not overlap"
    assert int(threads) == max(1, (os.cpu_count() or 1) // 2)
