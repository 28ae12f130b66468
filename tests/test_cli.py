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
