"""Configs: YAML files validate, typos are named with a suggestion, --set overrides any field."""

from __future__ import annotations

from pathlib import Path

import pytest

from seacast.config import (
    DataConfig,
    ExperimentConfig,
    MonthRange,
    apply_overrides,
    fingerprint,
    load_config,
)
from seacast.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text)
    return path


def test_every_shipped_data_config_validates() -> None:
    files = sorted((CONFIGS / "data").glob("*.yaml"))
    assert files, "configs/data has no YAML files"
    for path in files:
        load_config(DataConfig, path)


def test_every_shipped_experiment_config_validates() -> None:
    files = sorted((CONFIGS / "experiments").glob("*.yaml"))
    assert files, "configs/experiments has no YAML files"
    for path in files:
        load_config(ExperimentConfig, path)


def test_misspelled_key_is_named_with_the_nearest_valid_key(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmonths: 2024-01:2024-02\ngrid:\n  shpae: [32, 32]\n")
    with pytest.raises(ConfigError) as info:
        load_config(DataConfig, path)
    message = str(info.value)
    assert "grid.shpae" in message
    assert "Did you mean 'shape'" in message


def test_misspelled_top_level_key_is_suggested(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmonths: 2024-01:2024-02\nsorce: twin\n")
    with pytest.raises(ConfigError, match="Did you mean 'source'"):
        load_config(DataConfig, path)


def test_set_override_replaces_a_nested_field(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmonths: 2024-01:2024-02\n")
    cfg = load_config(
        DataConfig, path, ["months=2024-01:2024-03", "grid.shape=[16, 32]", "twin.seed=7"]
    )
    assert cfg.months.months() == ["2024-01", "2024-02", "2024-03"]
    assert cfg.grid.shape == (16, 32)
    assert cfg.twin.seed == 7


def test_override_with_a_typo_is_rejected_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmonths: 2024-01:2024-02\n")
    with pytest.raises(ConfigError, match="Did you mean 'seed'"):
        load_config(DataConfig, path, ["twin.sed=3"])


def test_month_range_rejects_backwards_and_malformed_months() -> None:
    with pytest.raises(ValueError, match="backwards"):
        MonthRange.model_validate("2024-05:2024-01")
    with pytest.raises(ValueError, match="YYYY-MM"):
        MonthRange.model_validate("2024-13")


def test_wrong_type_names_the_key_and_the_value(tmp_path: Path) -> None:
    path = write(tmp_path, "name: x\nmonths: 2024-01\ngrid:\n  shape: big\n")
    with pytest.raises(ConfigError, match="grid.shape"):
        load_config(DataConfig, path)


def test_missing_file_and_bad_yaml_are_clear(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(DataConfig, tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(DataConfig, write(tmp_path, "name: [unclosed\n"))


def test_override_without_equals_sign_is_an_error() -> None:
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides({}, ["months"])


def test_fingerprint_changes_with_the_config() -> None:
    a = DataConfig(name="a", months="2024-01")
    b = DataConfig(name="a", months="2024-02")
    assert fingerprint(a) == fingerprint(DataConfig(name="a", months="2024-01"))
    assert fingerprint(a) != fingerprint(b)


def test_config_reference_matches_the_config_models() -> None:
    from seacast.config import with_reference

    reference = (CONFIGS.parent / "docs" / "config.md").read_text()
    assert with_reference(reference) == reference, (
        "docs/config.md is stale: run python -m seacast.config docs/config.md"
    )


# --------------------------------------------------------------------------- bounds and --set values

DATA = CONFIGS / "data" / "twin_dutch_coast.yaml"
EXPERIMENT = CONFIGS / "experiments" / "twin_demo.yaml"


@pytest.mark.parametrize(
    ("override", "key", "shown"),
    [
        ("twin.shape=[32,32", "twin.shape", "[32,32"),  # unclosed list
        ("months=:", "months", ":"),
        ("twin.seed=!!int x", "twin.seed", "!!int x"),  # PyYAML raises ValueError here
    ],
)
def test_set_value_that_is_not_yaml_names_the_key_and_the_value(
    override: str, key: str, shown: str
) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DataConfig, DATA, [override])
    message = str(info.value)
    assert f"--set '{key}={shown}'" in message and "not valid YAML" in message
    assert f"--set '{key}=" in info.value.fix  # a valid value of that field to copy


@pytest.mark.parametrize(
    "override",
    [
        "twin.seed=-1",
        "twin.shape=[4,4]",  # the twin's grid builder needs 8 cells a side
        "twin.shape=[0,64]",
        "grid.shape=[0,0]",
        "grid.shape=[1,1]",
        "grid.shape=[-16,16]",
        "twin.cfl=.nan",
        "twin.cfl=2",
        "months=2024-01:",
        "months=2024-05:2024-01",
        "variables=[]",
        "name=a/b",
        "store.stats_period=[2024-02-01, 2024-01-01]",
        "copernicus.min_depth=-1",
        "copernicus.grid_km=.inf",
        "files={glob: '*.nc', dataset: ../elsewhere}",  # a folder name under data/raw/files/
    ],
)
def test_data_config_bounds(override: str) -> None:
    key = override.split("=")[0]
    with pytest.raises(ConfigError, match=key.split(".")[0]):
        load_config(DataConfig, DATA, [override])


@pytest.mark.parametrize(
    "override",
    [
        "seed=-1",
        "seed=99999999999999999999",  # over torch.manual_seed's 64 bits
        "trainer.optimizer.lr=0",
        "trainer.optimizer.lr=.inf",
        "trainer.batch_size=0",
        "trainer.epochs=0",
        "trainer.max_steps=0",
        "samples.lags=0",
        "samples.lead_times=[0]",
        "samples.variables=[]",
        "samples.split.fractions=[0,0.5,0.5]",
        "samples.split.fractions=[-1,1,1]",
        "model.filters=0",
        "model.dropout=1",
        "tides.constituents=[]",
        "tides.rayleigh=0",
        "device=gpu",
        "name=",
        "samples.split.train={start: 2024-05-01, end: 2024-01-01}",
    ],
)
def test_experiment_config_bounds(override: str) -> None:
    with pytest.raises(ConfigError, match=override.split("=")[0]):
        load_config(ExperimentConfig, EXPERIMENT, [override])


def test_the_configs_at_their_bounds_still_validate() -> None:
    cfg = load_config(
        DataConfig,
        DATA,
        ["twin.seed=0", "twin.shape=[8,8]", "grid.shape=[2,2]", "months=2024-01", "name=2024"],
    )
    assert cfg.twin.shape == (8, 8) and cfg.grid.shape == (2, 2) and cfg.name == "2024"
    cfg = load_config(DataConfig, DATA, ["store.stats_period=[2024-01-01, 2024-01-31]"])
    assert cfg.store.stats_period == ("2024-01-01", "2024-01-31")  # YAML dates kept as text
    run = load_config(ExperimentConfig, EXPERIMENT, ["device=cuda:1", "seed=0"])
    assert run.device == "cuda:1"


def test_a_tuple_with_too_few_values_suggests_a_valid_fix() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DataConfig, DATA, ["twin.shape=[32]"])
    message = str(info.value)
    assert "twin.shape.1" not in message  # used to suggest `--set twin.shape.1=...`
    assert "needs 2 values" in message
    fix = message.split("--set '")[1].split("'")[0]
    load_config(DataConfig, DATA, [fix])  # the suggestion validates as written


def test_a_month_range_with_an_open_end_is_named_whole() -> None:
    with pytest.raises(ConfigError, match=r"'2024-01:' is not a month range"):
        load_config(DataConfig, DATA, ["months=2024-01:"])


def test_bad_yaml_file_is_one_line_with_its_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(DataConfig, write(tmp_path, "name: x\nmonths: [unclosed\n"))
    assert "line " in info.value.problem and "\n" not in info.value.problem
    with pytest.raises(ConfigError, match="is a folder"):
        load_config(DataConfig, tmp_path)
