"""The shell examples of the README and of docs/ run, on tiny data.

Every ``seacast ...`` line of a fenced ```bash (or sh/shell/console) block in README.md, then in
each page of docs/ (in the order README.md first links them, then any other page by name), is run
in that order in one temporary folder holding a copy of ``configs/`` and ``pipelines/`` whose
configs are shrunk to tiny sizes (one month, a 32x32 grid, a couple of training steps), so the
examples run verbatim but quickly. A line is not run when it ends with a comment
``# needs-network``, ``# slow`` or ``# no-test``, or holds a ``<placeholder>``.

While none of those pages has such examples the test skips, saying so.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
README = REPO / "README.md"
DOCS = REPO / "docs"
SKIP_MARKERS = ("needs-network", "slow", "no-test")
SHELLS = ("bash", "sh", "shell", "console")
TIMEOUT_S = 300
TINY_SHAPE = [32, 32]  # the U-Nets need multiples of 16

_FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
_PLACEHOLDER = re.compile(r"<[A-Za-z][\w .-]*>")


@dataclass(frozen=True)
class Example:
    """One documented command: its text, where it is, and why it is not run (if it is not)."""

    command: str
    line: int
    skip: str | None = None
    page: str = "README.md"

    @property
    def id(self) -> str:
        words = self.command.split()
        return f"{self.page}:L{self.line}-" + "-".join(words[1:3])

    @property
    def where(self) -> str:
        return f"{self.page} line {self.line}"


def documentation_pages() -> list[Path]:
    """README.md, then the docs/ pages in the order README.md first links them, then the rest by name."""
    pages = [README] if README.is_file() else []
    docs = sorted(DOCS.glob("*.md")) if DOCS.is_dir() else []
    linked = re.findall(r"\(docs/([\w.-]+\.md)", README.read_text()) if README.is_file() else []
    for name in [*linked, *(page.name for page in docs)]:
        page = DOCS / name
        if page in docs and page not in pages:
            pages.append(page)
    return pages


def extract_examples(markdown: str, page: str = "README.md") -> list[Example]:
    """The ``seacast`` commands of the shell code blocks, joined over ``\\`` continuations."""
    examples: list[Example] = []
    fence: str | None = None
    runnable = False
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(markdown.splitlines(), start=1):
        match = _FENCE.match(raw)
        if fence is None:
            if match:
                fence, runnable = match.group("fence"), match.group("lang").lower() in SHELLS
            continue
        if match and raw.strip().startswith(fence) and not match.group("lang"):
            fence, pending = None, []
            continue
        if not runnable:
            continue
        line = raw.strip()
        if not pending:
            line = line.removeprefix("$ ")
            if not line.startswith("seacast "):
                continue
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1].strip())
            continue
        command = " ".join([*pending, line])
        pending = []
        examples.append(_classify(command, start, page))
    return examples


def _classify(command: str, line: int, page: str = "README.md") -> Example:
    code, _, comment = command.partition(" #")
    code = code.strip()
    marker = next((m for m in SKIP_MARKERS if re.search(rf"\b{m}\b", comment)), None)
    if marker:
        return Example(code, line, f"marked # {marker}", page)
    if _PLACEHOLDER.search(code):
        return Example(code, line, f"has a placeholder {_PLACEHOLDER.search(code).group(0)}", page)
    return Example(code, line, page=page)


# --------------------------------------------------------------------------- tiny data


def _shrink_data(raw: dict) -> dict:
    months = str(raw.get("months", ""))
    if months:
        first = months.split(":")[0].strip()
        raw["months"] = f"{first}:{first}"
    for section in ("twin", "grid"):
        if section == "grid" or raw.get("source", "twin") == "twin":
            raw.setdefault(section, {})["shape"] = list(TINY_SHAPE)
    return raw


def _shrink_experiment(raw: dict) -> dict:
    trainer = raw.setdefault("trainer", {})
    trainer.update({"epochs": 1, "max_steps": 2, "steps_per_epoch": 2, "batch_size": 2})
    raw.setdefault("model", {})["filters"] = 4
    split = raw.setdefault("samples", {}).setdefault("split", {})
    if split.get("preset", "fractions") == "paper":  # the paper split needs a year of data
        raw["samples"]["split"] = {"preset": "fractions"}
    return raw


def shrink_configs(root: Path) -> list[Path]:
    """Rewrite the data and experiment configs under ``root/configs`` to tiny sizes; returns those changed.

    A config that no longer validates after shrinking is left as it was.
    """
    from seacast.config import DataConfig, ExperimentConfig

    changed = []
    for kind, model, shrink in (
        ("data", DataConfig, _shrink_data),
        ("experiments", ExperimentConfig, _shrink_experiment),
    ):
        for path in sorted((root / "configs" / kind).rglob("*.y*ml")):
            try:
                raw = yaml.safe_load(path.read_text())
                if not isinstance(raw, dict):
                    continue
                small = shrink(raw)
                model.model_validate(small)
            except (
                Exception
            ):  # a partial or odd config stays as written; the example shows the problem
                continue
            path.write_text(yaml.safe_dump(small, sort_keys=False))
            changed.append(path)
    return changed


@pytest.fixture(scope="module")
def readme_workdir(tmp_path_factory) -> Path:
    """A temporary project folder: configs/ (shrunk) and pipelines/ copied from the repo."""
    root = tmp_path_factory.mktemp("readme")
    for folder in ("configs", "pipelines"):
        if (REPO / folder).is_dir():
            shutil.copytree(REPO / folder, root / folder)
    shrink_configs(root)
    return root


# --------------------------------------------------------------------------- the tests


def test_extract_examples_parses_blocks_markers_and_continuations():
    text = (
        "Intro `seacast no` inline.\n\n"
        "```bash\n"
        "seacast fetch --config a.yaml\n"
        "make demo\n"
        "$ seacast train \\\n"
        "    --config b.yaml   # trains\n"
        "seacast fetch --config c.yaml  # needs-network\n"
        "seacast pipeline run paper  # slow: hours\n"
        "seacast forecast --run runs/<name>\n"
        "```\n\n"
        "```yaml\nseacast: not a command\n```\n"
        "```python\nseacast run\n```\n"
        "~~~sh\nseacast --version\n~~~\n"
    )
    examples = extract_examples(text)
    assert [(e.command, e.line, e.skip) for e in examples] == [
        ("seacast fetch --config a.yaml", 4, None),
        ("seacast train --config b.yaml", 6, None),
        ("seacast fetch --config c.yaml", 8, "marked # needs-network"),
        ("seacast pipeline run paper", 9, "marked # slow"),
        ("seacast forecast --run runs/<name>", 10, "has a placeholder <name>"),
        ("seacast --version", 20, None),
    ]


def test_shrink_configs_makes_tiny_valid_configs(tmp_path):
    data = tmp_path / "configs" / "data" / "twin.yaml"
    data.parent.mkdir(parents=True)
    data.write_text(
        "name: twin\nsource: twin\nmonths: 2024-01:2024-12\ngrid: {shape: [128, 128]}\n"
    )
    experiment = tmp_path / "configs" / "experiments" / "x.yaml"
    experiment.parent.mkdir(parents=True)
    experiment.write_text(
        "name: x\nstore: data/x.zarr\nsamples: {split: {preset: paper}}\ntrainer: {epochs: 50}\n"
    )
    broken = tmp_path / "configs" / "experiments" / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert shrink_configs(tmp_path) == [data, experiment]
    small = yaml.safe_load(data.read_text())
    assert small["months"] == "2024-01:2024-01" and small["grid"]["shape"] == TINY_SHAPE
    small = yaml.safe_load(experiment.read_text())
    assert small["trainer"]["epochs"] == 1 and small["samples"]["split"]["preset"] == "fractions"
    assert broken.read_text() == "name: [unclosed\n"


def test_documentation_pages_are_readme_then_docs_in_link_order():
    pages = documentation_pages()
    assert pages[0] == README
    assert sorted(pages[1:]) == sorted(DOCS.glob("*.md"))
    linked = re.findall(r"\(docs/([\w.-]+\.md)", README.read_text())
    first = list(dict.fromkeys(name for name in linked if (DOCS / name).is_file()))
    assert [page.name for page in pages[1 : 1 + len(first)]] == first


PAGES = documentation_pages()
EXAMPLES = [
    example
    for page in PAGES
    for example in extract_examples(page.read_text(), page.relative_to(REPO).as_posix())
]
RUNNABLE = [e for e in EXAMPLES if e.skip is None]


def _params() -> list:
    if not RUNNABLE:
        reason = (
            "README.md is missing"
            if not README.is_file()
            else "README.md and docs/ have no runnable seacast examples yet"
        )
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="no-examples")]
    params = []
    for example in EXAMPLES:
        marks = [pytest.mark.slow] + (
            [pytest.mark.skip(reason=example.skip)] if example.skip else []
        )
        params.append(pytest.param(example, marks=marks, id=example.id))
    return params


@pytest.mark.parametrize("example", _params())
def test_readme_example_runs(example: Example, readme_workdir: Path):
    """Run one documented line in the shared tiny project folder (examples run in page order)."""
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    env.update({"MPLBACKEND": "Agg", "PYTHONUNBUFFERED": "1"})
    # never reach the Copernicus service or a credentials prompt from a test
    for key in ("COPERNICUSMARINE_SERVICE_USERNAME", "COPERNICUSMARINE_SERVICE_PASSWORD"):
        env.pop(key, None)
    try:
        done = subprocess.run(
            ["bash", "-c", example.command],
            cwd=readme_workdir,
            env=env,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{example.where}: `{example.command}` took over {TIMEOUT_S} s; mark it # slow")
    assert done.returncode == 0, (
        f"{example.where}: `{example.command}` exited with {done.returncode}\n"
        f"--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )
