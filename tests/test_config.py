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


def test_readme_config_reference_matches_the_config_models() -> None:
    from seacast.config import with_reference

    readme = (CONFIGS.parent / "README.md").read_text()
    assert with_reference(readme) == readme, (
        "README's config reference is stale: run python -m seacast.config README.md"
    )
