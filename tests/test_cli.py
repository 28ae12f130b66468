"""The command line: version, help with examples on every subcommand, clean errors."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from seacast import __version__
from seacast.cli import app

runner = CliRunner()


def subcommands() -> list[str]:
    import typer.main

    group = typer.main.get_command(app)
    return sorted(group.commands)  # type: ignore[attr-defined]


def test_version_prints_the_package_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert __version__ in result.stdout


def test_help_lists_the_pipeline_stages() -> None:
    result = runner.invoke(app, ["--help"])
    assert result.exit_code == 0
    for name in ("fetch", "regrid", "train", "forecast", "evaluate"):
        assert name in result.stdout


@pytest.mark.parametrize("command", subcommands())
def test_every_subcommand_has_help_with_an_example(command: str) -> None:
    result = runner.invoke(app, [command, "--help"], terminal_width=200)
    assert result.exit_code == 0, result.output
    assert "Example" in result.output, f"`seacast {command} --help` shows no example"


# --------------------------------------------------------------------------- bad input: no traceback

import errno  # noqa: E402
import logging  # noqa: E402
import os  # noqa: E402
import re  # noqa: E402
import signal  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import typer  # noqa: E402

from seacast.cli.common import EXIT_INTERRUPTED, handle_errors  # noqa: E402
from seacast.config import MODEL_NAMES, DataConfig, ExperimentConfig, load_config  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = str(ROOT / "configs" / "data" / "twin_dutch_coast.yaml")
EXPERIMENT = str(ROOT / "configs" / "experiments" / "twin_demo.yaml")


def invoke(args: list[str], **kwargs) -> object:
    result = runner.invoke(app, args, **kwargs)
    assert result.exception is None or isinstance(result.exception, SystemExit), (
        f"`seacast {' '.join(args)}` raised {result.exception!r}:\n{result.output}"
    )
    return result


@pytest.fixture
def quiet_hooks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Ctrl-C silences shutdown noise process-wide; put the hooks back after the test."""
    monkeypatch.setattr(sys, "unraisablehook", sys.unraisablehook)
    monkeypatch.setattr(threading, "excepthook", threading.excepthook)
    for name in ("asyncio", "distributed", "copernicusmarine"):
        logger = logging.getLogger(name)
        monkeypatch.setattr(logger, "level", logger.level)


@pytest.mark.parametrize(
    "override",
    ["twin.shape=[32,32", "months=:", "twin.seed=-1", "twin.shape=[32]", "twin.shape=[4,4]"]
    + [f"grid.shape={shape}" for shape in ("[0,0]", "[1,1]", "[-16,16]", "[0,64]")],
)
def test_dry_run_refuses_what_the_run_would_refuse(override: str) -> None:
    result = invoke(["fetch", "--config", DATA, "--dry-run", "--set", override])
    assert result.exit_code == 1, result.output
    key, _, value = override.partition("=")
    assert result.output.startswith("error:") and key in result.output
    assert "Fix:" in result.output and "Traceback" not in result.output


def test_set_value_that_is_not_yaml_is_named_with_key_and_value() -> None:
    result = invoke(["fetch", "--config", DATA, "--dry-run", "--set", "twin.shape=[32,32"])
    assert result.exit_code == 1
    assert "--set 'twin.shape=[32,32'" in result.output and "not valid YAML" in result.output


def test_set_twin_shape_with_one_value_suggests_a_valid_set() -> None:
    result = invoke(["fetch", "--config", DATA, "--dry-run", "--set", "twin.shape=[32]"])
    assert result.exit_code == 1
    suggested = re.search(r"--set '([^']+)'", result.output)
    assert suggested, result.output
    again = invoke(["fetch", "--config", DATA, "--dry-run", "--set", suggested.group(1)])
    assert again.exit_code == 0, again.output


@pytest.mark.parametrize("shape", [("0", "0"), ("1", "1"), ("-4", "4"), ("0", "16")])
def test_regrid_shape_below_two_is_refused_before_reading(shape: tuple[str, str]) -> None:
    args = ["regrid", "any.nc", "--out", "x.zarr", "--bbox", "51", "55", "2.5", "7.5"]
    result = invoke([*args, "--shape", *shape])
    assert result.exit_code == 1 and "--shape" in result.output, result.output


def test_every_set_example_in_help_is_valid_for_its_command() -> None:
    for command, model, path in (
        ("fetch", DataConfig, DATA),
        ("regrid", DataConfig, DATA),
        ("train", ExperimentConfig, EXPERIMENT),
        ("gradcheck", ExperimentConfig, EXPERIMENT),
    ):
        text = invoke([command, "--help"], env={"COLUMNS": "200"}).output
        example = re.search(r"e\.g\. --set (\S+)", text)
        assert example, f"`seacast {command} --help` has no --set example"
        load_config(model, path, [example.group(1)])  # raises if the example is invalid


# --------------------------------------------------------------------------- OSError


@pytest.fixture
def a_file(tmp_path: Path) -> Path:
    path = tmp_path / "afile"
    path.write_text("a file where a folder is wanted")
    return path


def _one_problem(output: str, *words: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert lines[-2].startswith("error:") and lines[-1].lstrip().startswith("Fix:"), output
    for word in words:
        assert word in output, (word, output)


def test_outputs_under_a_file_are_one_problem_and_fix(
    a_file: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    blocked = f"{a_file}/sub"
    cases = [
        (["fetch", "--config", DATA, "--set", f"raw_dir={blocked}"], "--set raw_dir"),
        (["regrid", "--config", DATA, "--set", f"store.path={blocked}/s.zarr"], "store.path"),
        (["train", "--config", EXPERIMENT, "--set", f"runs_dir={a_file}"], "runs_dir"),
        (["forecast", "--run", "runs/none", "--out", blocked], "--out"),
        (["evaluate", "runs/none", "--out", blocked], "--out"),
        (["tides", "none.zarr", "--out", blocked], "--out"),
    ]
    for args, option in cases:
        if args[0] == "tides":  # tides opens its store first
            continue
        result = invoke(args)
        assert result.exit_code == 1, (args, result.output)
        _one_problem(result.output, str(a_file), "ENOTDIR", "not a folder", option)


def test_permission_denied_names_the_path_errno_and_fix(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import seacast.errors

    def denied(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's own name
        raise PermissionError(errno.EACCES, "Permission denied", str(Path(dir) / "probe"))

    monkeypatch.setattr(seacast.errors.tempfile, "mkstemp", denied)
    monkeypatch.chdir(tmp_path)
    for args in (
        ["fetch", "--config", DATA, "--set", "raw_dir=ro/raw"],
        ["regrid", "--config", DATA, "--set", "store.path=ro/s.zarr"],
        ["forecast", "--run", "runs/none", "--out", "ro/forecasts"],
        ["evaluate", "runs/none", "--out", "ro/report"],
    ):
        result = invoke(args)
        assert result.exit_code == 1, (args, result.output)
        _one_problem(result.output, "permission denied", "EACCES", "chmod", "write elsewhere")


def test_evaluate_checks_its_output_folder_before_scoring(
    monkeypatch: pytest.MonkeyPatch, a_file: Path
) -> None:
    import seacast.evaluation.evaluate as evaluate

    def scored(*args, **kwargs):
        raise AssertionError("scored before checking the output folder")

    monkeypatch.setattr(evaluate, "evaluate_run", scored)
    result = invoke(["evaluate", "runs/any", "--out", f"{a_file}/report"])
    assert result.exit_code == 1 and "ENOTDIR" in result.output, result.output


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_folder_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    read_only = tmp_path / "ro"
    read_only.mkdir()
    read_only.chmod(0o555)
    monkeypatch.chdir(tmp_path)
    try:
        for args in (
            ["fetch", "--config", DATA, "--set", "raw_dir=ro/raw"],
            ["regrid", "--config", DATA, "--set", "store.path=ro/s.zarr"],
            ["train", "--config", EXPERIMENT, "--set", "runs_dir=ro"],
            ["evaluate", "runs/none", "--out", "ro/report"],
            ["forecast", "--run", "runs/none", "--out", "ro/forecasts"],
        ):
            result = invoke(args)
            assert result.exit_code == 1, (args, result.output)
            _one_problem(result.output, "permission denied")
    finally:
        read_only.chmod(0o755)


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (OSError(errno.ENOSPC, "No space left on device", "data/s.zarr/zos/c/0"), ["df -h"]),
        (OSError(errno.EROFS, "Read-only file system", "/mnt/ro/x"), ["read-only"]),
        (FileNotFoundError(errno.ENOENT, "No such file or directory", "nope/x"), ["ENOENT"]),
        (PermissionError(errno.EPERM, "Operation not permitted", "runs/x"), ["EPERM"]),
        (ConnectionResetError(errno.ECONNRESET, "Connection reset by peer"), ["network"]),
    ],
)
def test_handle_errors_turns_os_errors_into_a_problem_and_fix(
    exc: OSError, words: list[str]
) -> None:
    small = typer.Typer()

    @small.command()
    @handle_errors(elsewhere="--out DIR")
    def boom() -> None:
        raise exc

    result = CliRunner().invoke(small, [])
    assert result.exit_code == 1 and not isinstance(result.exception, OSError), result.output
    _one_problem(result.output, *words)
    if exc.filename:
        assert exc.filename in result.output


# --------------------------------------------------------------------------- Ctrl-C

INTERRUPT_POINTS = {
    "fetch": ("seacast.fetch", "fetch", ["fetch", "--config", DATA], "rerun the same command"),
    "regrid": (
        "seacast.regrid",
        "regrid_config",
        ["regrid", "--config", DATA],
        "the store is as it was",
    ),
    "train": (
        "seacast.training.loop",
        "train",
        ["train", "--config", EXPERIMENT],
        "rerun the same command",
    ),
    "evaluate": (
        "seacast.evaluation.evaluate",
        "evaluate_runs",
        ["evaluate", "runs/x"],
        "no report was written",
    ),
    "forecast": (
        "seacast.cron",
        "scheduled_forecast",
        ["forecast", "--run", "runs/x"],
        "no partial forecast",
    ),
    "gradcheck": (
        "seacast.training.gradcheck",
        "batch_from_experiment",
        ["gradcheck", "--config", EXPERIMENT],
        "rerun the same command",
    ),
    "pipeline": (
        "seacast.cli.pipeline",
        "run_pipeline",
        ["pipeline", "run", str(ROOT / "pipelines" / "demo.yaml")],
        "finished stages are kept",
    ),
}


@pytest.mark.parametrize("command", sorted(INTERRUPT_POINTS))
def test_ctrl_c_prints_one_line_and_exits_130(
    command: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_hooks: None
) -> None:
    import importlib

    module, name, args, words = INTERRUPT_POINTS[command]

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(importlib.import_module(module), name, interrupted)
    monkeypatch.chdir(tmp_path)
    result = invoke(args)
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == EXIT_INTERRUPTED, result.output
    interrupted = [line for line in lines if "interrupted" in line]
    # one line, the last (the pipeline prints its header first)
    assert interrupted == lines[-1:] and lines[-1].startswith("interrupted: "), result.output
    assert words in lines[-1]
    assert "Traceback" not in result.output


def test_ctrl_c_in_train_names_the_checkpoint_to_resume(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, quiet_hooks: None
) -> None:
    import seacast.training.loop as loop

    def interrupted_after_an_epoch(cfg, **kwargs):
        run_dir = Path(cfg.runs_dir) / cfg.name
        run_dir.mkdir(parents=True)
        (run_dir / "checkpoint_last.pt").write_bytes(b"")
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "train", interrupted_after_an_epoch)
    monkeypatch.chdir(tmp_path)
    result = invoke(["train", "--config", EXPERIMENT, "--name", "x"])
    assert result.exit_code == EXIT_INTERRUPTED
    assert "checkpoint_last.pt" in result.output and "--resume" in result.output


def test_ctrl_c_of_a_real_fetch_is_one_line(tmp_path: Path) -> None:
    """SIGINT to a running `seacast fetch` (the twin simulating): one line, exit 130, no traceback."""
    config = tmp_path / "twin.yaml"
    config.write_text(
        f"name: t\nsource: twin\nmonths: 2024-01:2024-12\nraw_dir: {tmp_path / 'raw'}\n"
        "twin: {shape: [48, 48], spinup_days: 0.5}\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "seacast", "fetch", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        lock = tmp_path / "raw" / "twin"
        deadline = time.monotonic() + 60
        while not lock.exists() and time.monotonic() < deadline and process.poll() is None:
            time.sleep(0.2)  # the source folder appears once the command runs
        time.sleep(1.0)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == EXIT_INTERRUPTED, stderr
    assert "Traceback" not in stderr and "Exception" not in stderr, stderr
    interrupted = [line for line in stderr.splitlines() if "interrupted:" in line]
    assert len(interrupted) == 1 and "rerun the same command" in interrupted[0], stderr


# --------------------------------------------------------------------------- messages


def test_init_time_off_the_hour_is_refused_with_both_whole_hours() -> None:
    result = invoke(["forecast", "--run", "runs/none", "--init-time", "2024-02-10T06:30"])
    assert result.exit_code == 1
    assert "'2024-02-10T06:30' is not on the hour" in result.output
    assert "2024-02-10T06 " in result.output and "2024-02-10T07" in result.output


def test_resolve_init_time_never_echoes_an_off_hour_time_as_its_hour() -> None:
    import numpy as np

    from seacast.errors import ConfigError
    from seacast.forecast import resolve_init_time

    hours = np.arange(473_000, 473_100)
    with pytest.raises(ConfigError, match="06:30' is not on the hour"):
        resolve_init_time(hours, np.arange(10, 100), "2023-12-16T06:30", lags=3)


def test_usage_errors_exit_2_as_documented() -> None:
    result = invoke(["train", "--config", EXPERIMENT, "--model", "unet9000"])
    assert result.exit_code == 2
    assert "asymm_inception_res_3ddr_unet" in result.output  # the choices, in full
    readme = (ROOT / "README.md").read_text()
    assert "| `2` | the command line does not parse" in readme
    assert "2 a wrong command line" in invoke(["--help"], env={"COLUMNS": "200"}).output


def test_help_is_readable_at_80_columns() -> None:
    """Rich cuts a word longer than its column with "…" when output is not a terminal."""
    import typer.main

    group = typer.main.get_command(app)
    commands = [[name] for name in group.commands]  # type: ignore[attr-defined]
    commands += [["pipeline", name] for name in ("run", "show", "list")]
    for command in [[], *commands]:
        text = invoke([*command, "--help"], env={"COLUMNS": "80"}).output
        assert "…" not in text, f"`seacast {' '.join(command)} --help` at 80 columns:\n{text}"
    train_help = invoke(["train", "--help"], env={"COLUMNS": "80"}).output
    for command in [[], *commands]:
        text = invoke([*command, "--help"], env={"COLUMNS": "80"}).output
        description = [line.strip() for line in text.split("╭")[0].splitlines()]
        # a docstring's own line breaks, wrapped again by rich, leave one-word lines mid-paragraph
        orphans = [
            word
            for word, after in zip(description, description[1:], strict=False)
            if len(word.split()) == 1 and after and not word.endswith((".", ":"))
        ]
        assert not orphans, f"`seacast {' '.join(command)} --help` at 80 columns: {orphans}"
    for name in MODEL_NAMES:
        assert re.search(rf"\b{name}\b", train_help), name


def test_sigterm_inside_safe_points_waits_for_the_next_check_as_ctrl_c_does() -> None:
    from seacast.interrupts import check_interrupt, safe_points, terminate_as_interrupt

    with terminate_as_interrupt(), pytest.raises(KeyboardInterrupt), safe_points():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.05)  # the signal is held: no KeyboardInterrupt here
        reached = True
        check_interrupt()
    assert reached


def test_sigterm_outside_safe_points_interrupts_at_once() -> None:
    from seacast.interrupts import terminate_as_interrupt

    previous = signal.getsignal(signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt), terminate_as_interrupt():
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert signal.getsignal(signal.SIGTERM) is previous  # put back for whoever runs next
