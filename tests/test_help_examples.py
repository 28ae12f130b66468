"""Every ``Example:`` of every ``--help`` runs as written, on the demo's outputs made tiny.

The examples are read from the commands' help and epilog texts (so a new one is covered
without touching this file): a line ``Example: seacast ...`` or ``Example (note): seacast ...``,
and each line of an ``Examples:`` block. A line ending in ``# needs-network`` or ``# slow`` is
not run. The others run in README-like order in one temporary copy of the project whose
configs are shrunk (one month of a 16x16 twin, two training steps), after the demo's own
fetch, regrid and train commands (read from ``pipelines/demo.yaml``) have made what the
examples name: ``data/raw/twin/``, ``data/twin_dutch_coast.zarr`` and ``runs/demo-<model>-<trainer>``.
They run in this process (``CliRunner``): a subprocess each would spend seconds importing.
"""

from __future__ import annotations

import re
import shlex
import shutil
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import typer.main
import yaml
from typer.testing import CliRunner

from seacast.cli import app

REPO = Path(__file__).resolve().parents[1]
SKIP_MARKERS = ("needs-network", "slow")
# the order a user follows; commands not listed run last, in name order
ORDER = (
    "fetch",
    "regrid",
    "info",
    "tides",
    "models",
    "train",
    "gradcheck",
    "forecast",
    "cron",
    "evaluate",
    "pipeline",
)
# documented exit statuses other than 0 (forecast --help: 10 when the forecast exists already)
ALSO_OK = {"--latest": {10}, "--update": {10}}

_EXAMPLE = re.compile(r"^Examples?(?: \([^)]*\))?:\s*(?P<rest>.*)$")


@dataclass(frozen=True)
class Example:
    command: str  # e.g. "seacast fetch --config ..."
    where: str  # the command whose help shows it
    skip: str | None = None

    @property
    def argv(self) -> list[str]:
        words = shlex.split(self.command)
        return words[words.index("seacast") + 1 :]


def _help_texts(command: click.Command, path: tuple[str, ...] = ()) -> list[tuple[str, str]]:
    texts = [(" ".join(("seacast", *path)), f"{command.help or ''}\n{command.epilog or ''}")]
    for name, sub in sorted(getattr(command, "commands", {}).items()):
        texts.extend(_help_texts(sub, (*path, name)))
    return texts


def extract_examples(where: str, text: str) -> list[Example]:
    """The ``seacast`` commands of one help text: ``Example:`` lines and ``Examples:`` blocks."""
    found: list[Example] = []
    in_block = False
    for raw in text.splitlines():
        line = raw.strip()
        match = _EXAMPLE.match(line)
        if match:
            line, in_block = match.group("rest"), not match.group("rest")
        elif not in_block or not line:
            continue
        if "seacast " not in f"{line} ":
            continue
        code, _, comment = line.partition(" #")
        marker = next((m for m in SKIP_MARKERS if re.search(rf"\b{m}\b", comment)), None)
        found.append(Example(code.strip(), where, f"marked # {marker}" if marker else None))
    return found


def found_examples() -> list[Example]:
    return [
        example
        for where, text in _help_texts(typer.main.get_command(app))
        for example in extract_examples(where, text)
    ]


def all_examples() -> list[Example]:
    found = found_examples()
    # the same line in a help and an epilog, or in a group's and a command's help, runs once
    unique = list({example.command: example for example in reversed(found)}.values())[::-1]

    def rank(example: Example) -> tuple[int, str]:
        head = example.argv[0] if example.argv else ""
        return (ORDER.index(head) if head in ORDER else len(ORDER), head)

    return sorted(unique, key=rank)  # stable: a command's examples keep their order


EXAMPLES = all_examples()


# --------------------------------------------------------------------------- the tiny demo


def _shrink(path: Path, change) -> None:
    raw = yaml.safe_load(path.read_text())
    change(raw)
    path.write_text(yaml.safe_dump(raw, sort_keys=False))


def _tiny_data(raw: dict) -> None:
    raw["months"] = "2024-01:2024-01"
    raw["twin"].update(shape=[16, 16], spinup_days=0.5)
    raw["grid"]["shape"] = [16, 16]  # the U-Nets' smallest grid


def _tiny_experiment(raw: dict) -> None:
    raw["model"]["filters"] = 2
    raw["trainer"].update(epochs=1, steps_per_epoch=2, max_steps=2, batch_size=2, max_val_samples=4)


def demo_commands(root: Path, runs: set[str]) -> list[list[str]]:
    """The demo pipeline's fetch and regrid commands, and its train commands of ``runs``."""
    from seacast.pipeline import load_pipeline, plan_pipeline

    commands = []
    for stage in plan_pipeline(load_pipeline(root / "pipelines" / "demo.yaml")):
        for command in stage.commands:
            wanted = stage.kind in ("fetch", "regrid") or (
                stage.kind == "train"
                and any(f"--name {run} " in f"{' '.join(command)} " for run in runs)
            )
            if wanted:
                commands.append(command[1:])
    return commands


@pytest.fixture(scope="module")
def demo_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of configs/ and pipelines/, shrunk, with the demo's data and the runs the examples name."""
    root = tmp_path_factory.mktemp("help-examples")
    for folder in ("configs", "pipelines"):
        shutil.copytree(REPO / folder, root / folder)
    _shrink(root / "configs" / "data" / "twin_dutch_coast.yaml", _tiny_data)
    _shrink(root / "configs" / "experiments" / "twin_demo.yaml", _tiny_experiment)
    runs = {
        match.group(1)
        for example in EXAMPLES
        for match in re.finditer(r"runs/(demo-\S+)", example.command)
    }
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        for argv in demo_commands(root, runs):
            result = CliRunner().invoke(app, argv)
            assert result.exit_code == 0, (
                f"demo step `seacast {shlex.join(argv)}`:\n{result.output}"
            )
    missing = sorted(
        run for run in runs if not (root / "runs" / run / "checkpoint_best.pt").is_file()
    )
    assert not missing, f"examples name runs the demo does not make: {missing}"
    return root


# --------------------------------------------------------------------------- the tests


def test_extract_examples_reads_lines_blocks_and_markers() -> None:
    text = (
        "Do things.\n\n"
        "Example: seacast fetch --config a.yaml\n\n"
        "Example (cron, hourly): seacast forecast --run runs/x --latest\n"
        "Examples:\n\n"
        "  seacast login   # needs-network: asks\n\n"
        "  X=1 seacast login   # slow\n"
        "  seacast info data/x.zarr\n"
    )
    assert extract_examples("seacast", text) == [
        Example("seacast fetch --config a.yaml", "seacast"),
        Example("seacast forecast --run runs/x --latest", "seacast"),
        Example("seacast login", "seacast", "marked # needs-network"),
        Example("X=1 seacast login", "seacast", "marked # slow"),
        Example("seacast info data/x.zarr", "seacast"),
    ]
    assert Example("X=1 seacast login --username u", "seacast").argv == ["login", "--username", "u"]


def test_every_command_shows_an_example_this_test_reads() -> None:
    group = typer.main.get_command(app)
    commands = [where for where, text in _help_texts(group) if "Example" in text]
    shown = {example.where for example in found_examples()}
    assert [where for where in commands if where not in shown] == []
    assert len([e for e in EXAMPLES if e.skip is None]) >= 10


@pytest.mark.parametrize(
    "example",
    [
        pytest.param(
            e,
            id=f"{e.where.removeprefix('seacast ')}: {' '.join(e.argv[:4])}",
            marks=[pytest.mark.skip(reason=e.skip)] if e.skip else [],
        )
        for e in EXAMPLES
    ],
)
def test_help_example_runs_as_written(
    example: Example, demo_project: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(demo_project)
    argv = example.argv
    result = CliRunner().invoke(app, argv)
    allowed = {0}.union(*(codes for flag, codes in ALSO_OK.items() if flag in argv))
    assert result.exit_code in allowed, (
        f"`{example.command}` (from `{example.where} --help`) exited {result.exit_code}:\n"
        f"{result.output[-3000:]}"
    )
