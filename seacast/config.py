"""Configs are data: pydantic models that validate the YAML files in `configs/`.

Every section is a small model whose field descriptions are the reference for
the YAML keys (docs/config.md is generated from them). Unknown
keys are rejected with the nearest valid key suggested, and any field can be
overridden from the command line with `--set section.field=value`.

Two top-level documents exist:

* :class:`DataConfig` (`configs/data/*.yaml`): where the raw data come from
  (`fetch`) and the grid and store they are put on (`regrid`).
* :class:`ExperimentConfig` (`configs/experiments/*.yaml`): samples, model
  and trainer for `train`; the run folder records it for `forecast` and
  `evaluate`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

import pandas as pd
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    NonNegativeInt,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic.fields import FieldInfo

from seacast.errors import ConfigError

VARIABLES_DEFAULT = ["uo", "vo", "so", "zos"]
MODEL_NAMES = (
    "3ddr_unet",
    "res_3ddr_unet",
    "inception_res_3ddr_unet",
    "asymm_inception_res_3ddr_unet",
)
TRAINER_NAMES = ("backprop", "spsa", "node-perturbation", "forward-gradient")
# the U-Nets pool space four times by 2 (seacast.models.unet3ddr.LEVELS): H and W are multiples of 16
GRID_MULTIPLE = 16
TWIN_MIN_CELLS = 8  # the twin's grid builder refuses fewer cells a side (seacast.twin.grid)
MAX_SEED = 2**63 - 1  # torch.manual_seed takes at most a signed 64-bit integer
_DEVICE = re.compile(r"^(cpu|mps|meta|(cuda|xpu|hip)(:\d+)?)$")


class StrictModel(BaseModel):
    """Base for every config section: unknown keys are errors, assignment is validated."""

    # no NaN or infinity anywhere (an `lr: .inf` would pass `gt=0`); `--set name=2024` is the text '2024'
    model_config = ConfigDict(
        extra="forbid",
        validate_assignment=True,
        protected_namespaces=(),
        allow_inf_nan=False,
        coerce_numbers_to_str=True,
    )


def _name_in_paths(value: str) -> str:
    if not value.strip() or "/" in value or "\\" in value or value in (".", ".."):
        raise ValueError(f"'{value}' cannot be a folder name: use letters, digits, - and _")
    return value


# --------------------------------------------------------------------------- data


class BBox(StrictModel):
    """A latitude/longitude box in degrees north and east.

    Example: `{lat_min: 51.0, lat_max: 55.0, lon_min: 2.5, lon_max: 7.5}`.
    """

    lat_min: float = Field(51.0, ge=-90, le=90, description="Southern edge, degrees north.")
    lat_max: float = Field(55.0, ge=-90, le=90, description="Northern edge, degrees north.")
    lon_min: float = Field(2.5, ge=-180, le=360, description="Western edge, degrees east.")
    lon_max: float = Field(7.5, ge=-180, le=360, description="Eastern edge, degrees east.")

    @model_validator(mode="after")
    def _ordered(self) -> BBox:
        if self.lat_min >= self.lat_max or self.lon_min >= self.lon_max:
            raise ValueError(
                f"bbox edges are out of order ({self.lat_min}, {self.lat_max}, {self.lon_min}, "
                f"{self.lon_max}): need lat_min < lat_max and lon_min < lon_max"
            )
        return self


class MonthRange(StrictModel):
    """An inclusive range of calendar months, written `"2024-01:2024-03"` in YAML or `--set`."""

    start: str = Field(description="First month, YYYY-MM.")
    end: str = Field(description="Last month, YYYY-MM (inclusive).")

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        if isinstance(value, str):
            if not re.fullmatch(r"\s*\d{4}-\d{2}\s*(:\s*\d{4}-\d{2}\s*)?", value):
                raise ValueError(
                    f"'{value}' is not a month range: write START:END as YYYY-MM:YYYY-MM, "
                    "e.g. 2024-01:2024-03, or one month, e.g. 2024-01"
                )
            start, _, end = value.partition(":")
            return {"start": start.strip(), "end": (end or start).strip()}
        return value

    @field_validator("start", "end")
    @classmethod
    def _month(cls, value: str) -> str:
        try:
            datetime.strptime(value, "%Y-%m")
        except ValueError as exc:
            raise ValueError(f"'{value}' is not a month: write YYYY-MM, e.g. 2024-01") from exc
        return value

    @model_validator(mode="after")
    def _ordered(self) -> MonthRange:
        if self.start > self.end:
            raise ValueError(f"months run backwards: {self.start} is after {self.end}")
        return self

    def months(self) -> list[str]:
        """Every month in the range as `YYYY-MM`."""
        return [p.strftime("%Y-%m") for p in pd.period_range(self.start, self.end, freq="M")]

    def __str__(self) -> str:
        return f"{self.start}:{self.end}"


class DatasetSpec(StrictModel):
    """One Copernicus Marine dataset to download.

    Example: `{id: cmems_mod_nws_phy-ssh_anfc_1.5km-2D_PT1H-i, variables: [zos]}`.
    """

    id: str = Field(min_length=1, description="Copernicus Marine dataset ID.")
    version: str | None = Field(
        None, description="Pinned dataset version, e.g. '202411'; latest if empty."
    )
    variables: list[str] = Field(min_length=1, description="CMEMS variable names to take from it.")
    step_hours: float = Field(
        1.0, gt=0, description="Time step of the dataset in hours (24 for daily)."
    )


class CopernicusSource(StrictModel):
    """Settings for `source: copernicus`."""

    product: str = Field(
        "NWSHELF_ANALYSISFORECAST_PHY_004_013",
        description="Copernicus product ID (for docs and checks).",
    )
    datasets: list[DatasetSpec] = Field(default_factory=list, description="Datasets to download.")
    min_depth: float | None = Field(
        None, ge=0, description="Shallowest depth to request (m); surface by default."
    )
    max_depth: float | None = Field(None, ge=0, description="Deepest depth to request (m).")
    retries: int = Field(
        4, ge=0, description="Retries of a transient failure, with exponential backoff."
    )
    backoff_seconds: float = Field(
        5.0, ge=0, description="First backoff delay; doubles on each retry."
    )
    coordinates_selection_method: Literal["inside", "strict-inside", "nearest", "outside"] = Field(
        "outside",
        description="How the toolbox matches the bbox to grid points; 'outside' adds the ring of points around it, which regridding needs.",
    )
    netcdf_compression_level: int = Field(
        1, ge=0, le=9, description="zlib level of the downloaded NetCDF files (0: none)."
    )
    grid_km: float = Field(
        1.5,
        gt=0,
        description="Approximate grid spacing of the datasets in km; only for --dry-run size estimates.",
    )

    @model_validator(mode="after")
    def _depths_ordered(self) -> CopernicusSource:
        if (
            self.min_depth is not None
            and self.max_depth is not None
            and self.min_depth > self.max_depth
        ):
            raise ValueError(
                f"min_depth {self.min_depth} is greater than max_depth {self.max_depth}: "
                "need min_depth <= max_depth (metres, positive down)"
            )
        return self


class FilesSource(StrictModel):
    """Settings for `source: files`: local NetCDF files by glob, with name mapping.

    Example: `{glob: "incoming/*.nc", rename: {lat: latitude, lon: longitude, swh: VHM0}}`.
    """

    glob: str = Field(
        min_length=1, description="Glob of NetCDF files, relative to the working directory."
    )
    dataset: str = Field("local", description="Name of the dataset folder under data/raw/files/.")
    rename: dict[str, str] = Field(
        default_factory=dict, description="Variable and coordinate renames, source -> CMEMS name."
    )
    variables: list[str] = Field(
        default_factory=list, description="CMEMS variables to keep (after renaming); all if empty."
    )
    step_hours: float = Field(
        1.0, gt=0, description="Time step of the files in hours; each month must hold every step."
    )
    partial_months: bool = Field(
        False,
        description="Accept months the files cover only in part (regrid then records the gaps); else such a month is an error.",
    )

    @field_validator("dataset")
    @classmethod
    def _dataset(cls, value: str) -> str:
        return _name_in_paths(value)


class TwinSource(StrictModel):
    """Settings for `source: twin`: the built-in North Sea simulator."""

    shape: tuple[int, int] = Field(
        (64, 64), description=f"Grid size (ny, nx), at least {TWIN_MIN_CELLS} a side."
    )
    seed: int = Field(
        0, ge=0, le=MAX_SEED, description="Seed of the weather generator; same seed, same files."
    )
    spinup_days: float = Field(
        5.0, ge=0, description="Days simulated before the first written hour."
    )
    tides: bool = Field(True, description="Force the tidal constituents at the open boundaries.")
    weather: bool = Field(True, description="Run the storm generator (wind stress and pressure).")
    river: bool = Field(True, description="Rhine/Meuse discharge (salinity plume).")
    closed_basin: bool = Field(False, description="Close all boundaries (used by the volume test).")
    cfl: float = Field(
        0.8,
        gt=0,
        le=1,
        description="Internal time step as a fraction of the gravity-wave CFL limit.",
    )
    tide_scale: float = Field(
        1.0, ge=0, description="Multiplier on the tidal amplitudes forced at the open boundaries."
    )

    @field_validator("shape")
    @classmethod
    def _shape(cls, value: tuple[int, int]) -> tuple[int, int]:
        if any(n < TWIN_MIN_CELLS for n in value):
            fixed = [max(n, TWIN_MIN_CELLS) for n in value]
            raise ValueError(
                f"each size must be at least {TWIN_MIN_CELLS}, e.g. [{fixed[0]}, {fixed[1]}]"
            )
        return value


class GridConfig(StrictModel):
    """The regular target grid of the store."""

    shape: tuple[int, int] = Field(
        (64, 64),
        description="Grid size (ny, nx), at least 2 a side; the U-Nets train only on multiples of 16.",
    )
    method: Literal["conservative", "bilinear", "nearest"] = Field(
        "conservative",
        description="Regridding method (xarray-regrid); conservative is right when coarsening.",
    )
    min_sea_fraction: float = Field(
        0.25,
        gt=0,
        le=1,
        description="A target cell is sea when at least this fraction of it (area or interpolation weight) is sea in the source.",
    )

    @field_validator("shape")
    @classmethod
    def _shape(cls, value: tuple[int, int]) -> tuple[int, int]:
        # a store needs two cell centres a side for its spacing (regrid fails on one); the
        # U-Nets' multiples of 16 are checked where they train, so any store can be made and fitted
        if any(n < 2 for n in value):
            raise ValueError(
                f"each size must be at least 2, and a multiple of {GRID_MULTIPLE} for training, "
                f"e.g. [{GRID_MULTIPLE}, {GRID_MULTIPLE}]"
            )
        return value


class StoreConfig(StrictModel):
    """The Zarr store written by `regrid`."""

    path: Path = Field(Path("data/store.zarr"), description="Where the Zarr store goes.")
    chunk_hours: int = Field(
        24, ge=1, description="Time steps per chunk; one chunk spans all of space."
    )
    stats_period: tuple[str, str] | None = Field(
        None,
        examples=["[2024-01-01, 2024-06-30]"],
        description="Inclusive [start, end] dates for normalisation statistics; all times if empty.",
    )

    @field_validator("stats_period", mode="before")
    @classmethod
    def _period(cls, value: Any) -> Any:
        if not isinstance(value, list | tuple):
            return value
        texts = [v.isoformat() if isinstance(v, date | datetime) else str(v) for v in value]
        if len(texts) != 2:
            return texts  # the tuple check names the count
        try:
            start, end = (pd.Timestamp(t) for t in texts)
        except ValueError:
            raise ValueError(
                f"{texts} is not two dates: write e.g. [2024-01-01, 2024-06-30]"
            ) from None
        if start > end:
            raise ValueError(f"{texts} ends before it starts: write [start, end]")
        return tuple(texts)


class DataConfig(StrictModel):
    """A data document (`configs/data/*.yaml`): `fetch` reads the source, `regrid` the grid and store."""

    name: str = Field(description="Short name, used in paths and reports.")
    source: Literal["copernicus", "files", "twin"] = Field(
        "twin", description="Where the raw data come from."
    )
    bbox: BBox = Field(default_factory=BBox, description="Region to fetch and to grid.")
    months: MonthRange = Field(
        description="Months to fetch, e.g. 2024-01:2024-12.", examples=["2024-01:2024-12"]
    )
    variables: list[str] = Field(
        default_factory=lambda: list(VARIABLES_DEFAULT),
        min_length=1,
        description="Variables in the store.",
    )
    raw_dir: Path = Field(Path("data/raw"), description="Root of the raw NetCDF layout.")
    copernicus: CopernicusSource = Field(default_factory=CopernicusSource)
    files: FilesSource | None = None
    twin: TwinSource = Field(default_factory=TwinSource)
    grid: GridConfig = Field(default_factory=GridConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _name_in_paths(value)

    @model_validator(mode="after")
    def _source_settings(self) -> DataConfig:
        if self.source == "files" and self.files is None:
            raise ValueError("source is 'files' but there is no 'files:' section (add files.glob)")
        if self.source == "copernicus" and not self.copernicus.datasets:
            raise ValueError("source is 'copernicus' but copernicus.datasets is empty")
        return self


# --------------------------------------------------------------------------- samples and models


class TimeRange(StrictModel):
    """An inclusive time range, e.g. `{start: 2024-01-01, end: 2024-06-30T23}`."""

    start: str = Field(description="First time (ISO date or datetime).")
    end: str = Field(description="Last time (ISO date or datetime), inclusive.")

    @field_validator("start", "end", mode="before")
    @classmethod
    def _iso(cls, value: Any) -> str:
        if isinstance(value, date | datetime):
            value = value.isoformat()
        try:
            pd.Timestamp(str(value))
        except ValueError as exc:
            raise ValueError(
                f"'{value}' is not a date or datetime (use ISO, e.g. 2024-05-01T06)"
            ) from exc
        return str(value)

    @model_validator(mode="after")
    def _ordered(self) -> TimeRange:
        if pd.Timestamp(self.start) > pd.Timestamp(self.end):
            raise ValueError(f"the range runs backwards: {self.start} is after {self.end}")
        return self


class SplitConfig(StrictModel):
    """How init times are split into train, validation and test.

    `preset: paper` is the reference's split (one year, then four seasonal
    validation/test windows); `preset: seasons` trains and validates by date
    and tests on `test` split by meteorological season; `preset: ranges`
    uses the three ranges as given; `preset: blocks` cuts the timeline into
    blocks of `block_days` and deals them out by `block_cycle`, so every
    season lands in train, validation and test. With `paper` the ranges are ignored.
    """

    preset: Literal["paper", "seasons", "ranges", "fractions", "blocks"] = Field(
        "fractions",
        description="Split scheme: paper, seasons, ranges, fractions (of the timeline) or blocks "
        "(interleaved blocks of days).",
    )
    train: TimeRange | None = None
    validation: TimeRange | None = None
    test: TimeRange | None = None
    fractions: tuple[float, float, float] = Field(
        (0.7, 0.15, 0.15),
        description="Train/validation/test fractions of the timeline for preset 'fractions' "
        "(non-negative, scaled to sum 1; train above 0).",
    )

    block_days: int = Field(
        7, ge=1, description="Length in days of one block, for preset 'blocks'."
    )
    block_cycle: list[Literal["train", "validation", "test"]] = Field(
        default_factory=lambda: ["train"] * 5 + ["validation", "test"],
        min_length=1,
        description="Which split each block goes to, repeated over the timeline from its first "
        "time, for preset 'blocks' (needs at least one 'train').",
    )

    @field_validator("block_cycle")
    @classmethod
    def _block_cycle(cls, value: list[str]) -> list[str]:
        if "train" not in value:
            raise ValueError(
                f"block_cycle {value} has no 'train' block, "
                "e.g. [train, train, train, train, train, validation, test]"
            )
        return value

    @field_validator("fractions")
    @classmethod
    def _fractions(cls, value: tuple[float, float, float]) -> tuple[float, float, float]:
        if any(f < 0 for f in value) or value[0] <= 0:
            raise ValueError(
                f"fractions {list(value)} must be non-negative with a positive train fraction, "
                "e.g. [0.7, 0.15, 0.15]"
            )
        return value


class SamplesConfig(StrictModel):
    """What one sample is: lags in, lead times out, normalised."""

    variables: list[str] = Field(
        default_factory=lambda: list(VARIABLES_DEFAULT),
        min_length=1,
        description="Input and output variables.",
    )
    lags: int = Field(10, ge=1, description="Hourly input frames ending at the init time.")
    forcing: list[str] = Field(
        default_factory=list,
        description="Weather-forecast variables given to the model as inputs only (e.g. the twin's "
        "msl, iews, inss): read from t0 + 1 h to the longest lead time, averaged into `lags` "
        "blocks. Their store series must be forecasts issued by t0 (docs/weather-forcing.md).",
    )
    lead_times: list[int] = Field(
        default_factory=lambda: [6, 12, 24], min_length=1, description="Lead times in hours."
    )
    normalisation: Literal["minmax", "zscore"] = Field(
        "minmax", description="minmax: the reference's [0.1, 1]; zscore: (x - mean) / std."
    )
    split: SplitConfig = Field(default_factory=SplitConfig)

    @field_validator("lead_times")
    @classmethod
    def _positive_sorted(cls, value: list[int]) -> list[int]:
        if any(h <= 0 for h in value):
            raise ValueError(f"lead_times must be positive hours, got {value}")
        return sorted(set(value))

    @model_validator(mode="after")
    def _forcing_is_input_only(self) -> SamplesConfig:
        both = [v for v in self.forcing if v in self.variables]
        if both:
            raise ValueError(
                f"{both} are in both samples.variables and samples.forcing: a forcing variable is an "
                "input only, never predicted; keep each in one list"
            )
        if len(set(self.forcing)) != len(self.forcing):
            raise ValueError(f"samples.forcing {self.forcing} names a variable twice")
        return self


class ModelConfig(StrictModel):
    """One of the four 3DDR U-Nets and its options."""

    name: Literal[MODEL_NAMES] = Field(
        "asymm_inception_res_3ddr_unet", description="Architecture: " + ", ".join(MODEL_NAMES) + "."
    )
    filters: int = Field(
        16, ge=1, description="Base filter count F (levels use F, 2F, 4F, 8F, 16F)."
    )
    dropout: float = Field(
        0.5, ge=0, lt=1, description="Dropout after level 4 and at the bottleneck."
    )
    final_activation: Literal["relu", "none"] = Field(
        "none", description="relu as in the reference, or none."
    )
    attention: Literal["none", "self", "global", "both"] = Field(
        "none", description="Optional attention modules."
    )
    faithful: bool = Field(
        False, description="Conv3d everywhere as the reference (exact parameter counts)."
    )
    base: Literal["none", "persistence", "tide"] = Field(
        "persistence",
        description="The reference the network corrects, its last layer at zero so an untrained model "
        "equals it: none (the paper's plain output), persistence (the last input frame) or tide (the "
        "harmonic tide at the valid time plus the damped anomaly of the init time; the inputs are the "
        "anomaly lags, obs - tide). Old configs' `residual: true/false` means persistence/none.",
    )

    anomaly_base: Literal["damped", "regressed"] = Field(
        "damped",
        description="With base tide, the anomaly the model starts from: damped (alpha a(t0), per "
        "lead time and variable) or regressed (the anomaly at t0+L regressed on its lags at each "
        "point and over the basin, evaluate's tide + regressed anomaly; fitted on the training "
        "split at setup). Ignored for other bases.",
    )

    @model_validator(mode="before")
    @classmethod
    def _residual_is_base(cls, data: Any) -> Any:
        # runs and configs written before model.base said `residual: true/false`
        if isinstance(data, dict) and "residual" in data:
            data = dict(data)
            residual = data.pop("residual")
            data.setdefault("base", "persistence" if residual else "none")
        return data

    @property
    def residual(self) -> bool:
        """True when the network corrects a reference (any base but none)."""
        return self.base != "none"


class OptimizerConfig(StrictModel):
    """The torch optimiser that applies an update written to `param.grad`."""

    name: Literal["adam", "sgd"] = Field("adam", description="adam or sgd.")
    lr: float = Field(1e-3, gt=0, description="Learning rate.")
    momentum: float = Field(0.0, ge=0, lt=1, description="SGD momentum.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    schedule: Literal["none", "cosine", "plateau"] = Field(
        "cosine", description="Learning-rate schedule."
    )
    warmup_fraction: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="Linear warm-up of the lr over this fraction of the steps, then the schedule "
        "(cosine or none). Zeroth-order rules gain most: their first estimates are mostly noise.",
    )

    @model_validator(mode="after")
    def _warmup_needs_a_step_schedule(self) -> OptimizerConfig:
        if self.warmup_fraction and self.schedule == "plateau":
            raise ValueError(
                "warmup_fraction works with schedule cosine or none (plateau steps once per epoch): "
                "set schedule: cosine, or warmup_fraction: 0"
            )
        return self


class SpsaConfig(StrictModel):
    """Options of the `spsa` rule (MeZO-style weight perturbation)."""

    probes: int = Field(4, ge=1, description="Antithetic probes per step.")
    epsilon: float = Field(1e-3, gt=0, description="Perturbation size.")
    noise: Literal["gaussian", "rademacher"] = Field("gaussian", description="Distribution of z.")
    blockwise: bool = Field(False, description="Perturb one parameter block per step, cycling.")
    inplace_sgd: bool = Field(
        False, description="Apply SGD in place from the seed (no .grad tensors)."
    )
    only: list[str] = Field(
        default_factory=list,
        description="Perturb and train only the Conv/Linear layers whose module name starts with one "
        "of these (as node_perturbation.only), or with a wildcard the parameters whose name matches "
        "('decoder.3*.bias'); every other parameter keeps its initial value, and "
        "each pass after a step's first reuses what those layers cannot change. Empty: every parameter.",
    )


# keys of node_perturbation that became one enumerated option each: old key -> the new one
_NODE_PERTURBATION_RENAMED = {
    "antithetic": "delta: antithetic (the default), clean or baseline",
    "baseline": "delta: baseline (was baseline: true with antithetic: false)",
    "layerwise": "layers: cycle (was layerwise: true)",
    "split": "layers: samples (was split: samples)",
}


def _upgraded_node_perturbation(data: dict[str, Any]) -> dict[str, Any]:
    """A saved node_perturbation section with its old keys turned into ``delta`` and ``layers``."""
    data = dict(data)
    antithetic, baseline = data.pop("antithetic"), data.pop("baseline")
    layerwise, split = data.pop("layerwise"), data.pop("split")
    # as the rule read them then: antithetic won over baseline, layerwise over split
    data.setdefault("delta", "antithetic" if antithetic else "baseline" if baseline else "clean")
    data.setdefault("layers", "cycle" if layerwise else "samples" if split == "samples" else "all")
    return data


class BackpropConfig(StrictModel):
    """Options of the `backprop` rule."""

    only: list[str] = Field(
        default_factory=list,
        description="Train only the Conv/Linear layers whose module name starts with one of these, as "
        "node_perturbation.only does, or with a wildcard the parameters whose name matches "
        "('decoder.3*.bias'); every other parameter keeps its initial value. Measures what a "
        "zeroth-order rule's frozen layers cost. Empty: train everything.",
    )


class NodePerturbationConfig(StrictModel):
    """Options of the `node-perturbation` rule (noisy pre-activations, local Hebbian update)."""

    sigma: float = Field(1e-2, gt=0, description="Std of the noise on pre-activations.")
    probes: int = Field(1, ge=1, description="Noisy passes (antithetic pairs) per step.")
    delta: Literal["antithetic", "clean", "baseline"] = Field(
        "antithetic",
        description="The loss difference: antithetic: between +psi and -psi passes; clean: noisy minus a "
        "clean pass; baseline: noisy minus a running mean of the batch loss (one pass less, noisier).",
    )
    layers: Literal["all", "cycle", "samples"] = Field(
        "all",
        description="The layers a step noises: all: every one, for every sample; cycle: one layer per step, "
        "in turn; samples: each sample of the batch noises one layer (cycling), so its loss difference is "
        "that layer's alone.",
    )
    credit: Literal["global", "local"] = Field(
        "local",
        description="global: each node is credited with its sample's whole loss difference; local: with the "
        "loss difference summed over the output cells near it (pooled to the layer's grid), far less noisy.",
    )
    credit_radius: int = Field(
        1,
        ge=0,
        description="local credit: half-width, in the layer's own grid cells, of the window summed.",
    )
    credit_radius_by_layer: dict[str, NonNegativeInt] = Field(
        default_factory=dict,
        description="local credit: the half-width for the layers whose module name starts with a key (the longest "
        "key wins), e.g. {encoder.0: 4}; it should cover the layer's influence on the output along its shortest "
        "path (a U-Net's first encoder level reaches the output through the skip connection and about four 3x3 "
        "convs). Other layers use credit_radius.",
    )
    only: list[str] = Field(
        default_factory=list,
        description="Perturb and update only the layers whose module name starts with one of these "
        "(e.g. [head]); empty: every Conv/Linear layer.",
    )
    output_layer: str | None = Field(
        "head.out",
        description="local credit: the layer whose output channel k at a cell is the model's output "
        "channel k at that cell (the U-Nets' last 1x1 conv): each of its nodes is credited with its "
        "own cell's and channel's loss difference, which is exact, instead of the sum over every "
        "channel (the other channels' noise). Ignored where the model has no such layer; null: "
        "credit it like the others.",
    )
    samples_per_slice: NonNegativeInt = Field(
        4,
        description="Samples per noise draw and per weight-gradient call: what a step holds beyond "
        "inference is about one such slice of a layer's output and noise (0: the whole batch at once).",
    )

    @model_validator(mode="before")
    @classmethod
    def _renamed_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            old = [key for key in _NODE_PERTURBATION_RENAMED if key in data]
            if len(old) == len(_NODE_PERTURBATION_RENAMED):
                # every old key: a config a run saved before the rename (checkpoint, config.yaml)
                return _upgraded_node_perturbation(data)
            if old:
                raise ValueError(
                    "trainer.node_perturbation."
                    + ", ".join(old)
                    + " became one option: use "
                    + "; ".join(_NODE_PERTURBATION_RENAMED[key] for key in old)
                )
        return data


class ForwardGradientConfig(StrictModel):
    """Options of the `forward-gradient` rule (forward-mode AD)."""

    probes: int = Field(1, ge=1, description="Tangent directions per step.")
    only: list[str] = Field(
        default_factory=list,
        description="Draw tangents on and train only the Conv/Linear layers whose module name starts "
        "with one of these, or with a wildcard the parameters whose name matches (as spsa.only); "
        "every other parameter keeps its initial value. Empty: every parameter.",
    )
    output_layer: str | None = Field(
        None,
        description="Train this layer, the model's last (head.out in the U-Nets), by its exact gradient "
        "instead of tangents: a delta rule, its input (from the first probe's pass) times the loss's "
        "derivative by its output, in closed form; no backward pass and no extra forward. The "
        "tangents then cover the other trained layers only. null: tangents on every trained layer.",
    )


class TrainerConfig(StrictModel):
    """The update rule and the budget of the shared training loop."""

    name: Literal[TRAINER_NAMES] = Field(
        "backprop", description="Update rule: " + ", ".join(TRAINER_NAMES) + "."
    )
    batch_size: int = Field(16, ge=1, description="Samples per step.")
    epochs: int = Field(10, ge=1, description="Maximum epochs.")
    max_steps: int | None = Field(None, ge=1, description="Step budget; stops early when reached.")
    steps_per_epoch: int | None = Field(
        None, ge=1, description="Cap steps per epoch (sampled), all if empty."
    )
    patience: int = Field(
        5, ge=1, description="Early stopping: epochs without validation improvement."
    )
    land_in_loss: bool = Field(
        False, description="Include land (as 0) in the loss, as the reference did."
    )
    loss_units: Literal["physical", "normalised"] = Field(
        "physical",
        description="physical: MSE in the variables' units, so a variable with larger errors weighs more; "
        "normalised: MSE of the model's values (z-scores, or anomalies over their std for model.base tide), "
        "every variable weighted alike.",
    )
    num_workers: int = Field(0, ge=0, description="DataLoader workers.")
    max_val_samples: int | None = Field(
        None,
        ge=1,
        description="Validate on at most this many samples, evenly spaced over the validation set; all if empty.",
    )
    preload_gb: float = Field(
        4.0,
        ge=0,
        description="Load each split's frames into memory once (encoded, as the model sees them) when they "
        "take at most this many GB; larger splits, or 0, read each sample's frames from the store.",
    )
    deterministic: bool = Field(
        True,
        description="Deterministic torch algorithms, so a resumed run gives the same weights as an uninterrupted one.",
    )
    init_from: Path | None = Field(
        None,
        description="Start from the weights of another run: its folder (its best checkpoint) or a checkpoint "
        "file. Its model, samples and store must be this run's; the rule, its layers, lr and budget may differ "
        "(a staged run: train one set of layers, then another). Empty: the seeded initialisation.",
    )
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    backprop: BackpropConfig = Field(default_factory=BackpropConfig)
    spsa: SpsaConfig = Field(default_factory=SpsaConfig)
    node_perturbation: NodePerturbationConfig = Field(default_factory=NodePerturbationConfig)
    forward_gradient: ForwardGradientConfig = Field(default_factory=ForwardGradientConfig)


class TidesConfig(StrictModel):
    """The harmonic tide fit: tide-aware models (`model.base: tide`) and the tide references of `evaluate`."""

    constituents: Literal["auto"] | list[str] = Field(
        "auto",
        min_length=1,
        description="auto: every utide constituent the training period resolves (Rayleigh criterion); "
        "or a list of names, e.g. [M2, S2, N2, K2, K1, O1, P1, Q1, M4, MS4, M6].",
    )
    rayleigh: float = Field(
        1.0,
        gt=0,
        description="Rayleigh factor: constituents closer than this / record length are not fitted.",
    )
    long_period: bool = Field(
        False,
        description="Also fit the long-period constituents (SA, SSA, MSM, MM, MSF, MF: periods of two weeks "
        "and more) that the Rayleigh criterion admits. On a shelf they are mostly weather, so a record "
        "under a few years fits storms into them; measured on the demo store, leaving them out lowers the "
        "tide-only test RMSE by 4-18 %.",
    )
    anomaly_modes: int = Field(
        32,
        ge=0,
        description="EOFs of the spatial map, a candidate of the tide + regressed anomaly (evaluate's "
        "strongest reference and `model.anomaly_base: regressed`): the anomaly at t0+L from the lags of "
        "the whole field's leading EOFs. 0: per-point regression only. Measured on a held-out twin year: "
        "at +6 h it halves the per-point regression's MSE (32 EOFs, 99.5 % of the anomaly's variance).",
    )
    anomaly_modes_max_lead: int = Field(
        12,
        ge=0,
        description="Longest lead time (hours) at which the spatial map may be chosen. Beyond 12 h it "
        "learns the training year's weather: maps fitted on 2024 reached 0.65-0.68 of the tide's MSE at "
        "+24 h there and 1.2-4.2x on a held-out twin year.",
    )


class ExperimentConfig(StrictModel):
    """An experiment document (`configs/experiments/*.yaml`) for `seacast train`."""

    name: str = Field(description="Run name; the run folder is runs_dir/name.")
    store: Path = Field(description="Zarr store made by `seacast regrid`.")
    runs_dir: Path = Field(Path("runs"), description="Where run folders go.")
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Seed for weights, sampling and noise.")
    samples: SamplesConfig = Field(default_factory=SamplesConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    tides: TidesConfig = Field(default_factory=TidesConfig)
    device: str = Field("cpu", description="torch device: cpu, cuda, cuda:1, ...")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        return _name_in_paths(value)

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError(f"'{value}' is not a torch device: write cpu, cuda, cuda:1 or mps")
        return value


# --------------------------------------------------------------------------- loading

T = TypeVar("T", bound=BaseModel)


def _suggest(model: type[BaseModel], loc: tuple[Any, ...]) -> tuple[str, list[str]]:
    """The valid keys at `loc` (the parent of the bad key) and close matches."""
    current: Any = model
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        field = getattr(current, "model_fields", {}).get(part)
        if field is None:
            return "", []
        annotation = field.annotation
        for candidate in (annotation, *getattr(annotation, "__args__", ())):
            if isinstance(candidate, type) and issubclass(candidate, BaseModel):
                current = candidate
                break
            for inner in getattr(candidate, "__args__", ()):
                if isinstance(inner, type) and issubclass(inner, BaseModel):
                    current = inner
                    break
    valid = sorted(getattr(current, "model_fields", {}))
    close = difflib.get_close_matches(str(loc[-1]), valid, n=1, cutoff=0.5)
    return ", ".join(valid), close


def _field_at(model: type[BaseModel], path: Sequence[Any]) -> FieldInfo | None:
    """The field at a dotted key path (list indices skipped), or None when there is none."""
    current: type[BaseModel] | None = model
    field: FieldInfo | None = None
    for part in path:
        if isinstance(part, int):
            continue
        if current is None or (field := current.model_fields.get(str(part))) is None:
            return None
        current = _section_model(field.annotation)
    return field


def _tuple_length(field: FieldInfo | None) -> int | None:
    """How many values a fixed-length tuple field holds (None for other fields)."""
    if field is None:
        return None
    for candidate in (field.annotation, *get_args(field.annotation)):
        args = get_args(candidate)
        if getattr(candidate, "__origin__", None) is tuple and args and args[-1] is not Ellipsis:
            return len(args)
    return None


def _example(field: FieldInfo | None) -> str:
    """A valid value of ``field`` as --set text: its first example, else its default."""
    from pydantic_core import PydanticUndefined

    if field is None:
        return "..."
    if field.examples:
        return str(field.examples[0])
    value = field.default
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    if isinstance(value, BaseModel) or value is None or value is PydanticUndefined:
        return "..."
    if isinstance(value, str | Path):
        return str(value)
    return json.dumps(list(value) if isinstance(value, tuple) else value)


def format_validation_error(model: type[BaseModel], error: ValidationError, source: str) -> str:
    """One readable line per problem, naming the key, the value given and a valid fix."""
    lines = [f"{source} is not a valid {model.__name__}:"]
    seen: set[str] = set()
    for item in error.errors():
        loc = tuple(item["loc"])
        field = _field_at(model, loc)
        length = _tuple_length(field)
        if length is not None and (
            item["type"] in ("too_long", "too_short", "tuple_type")
            or (item["type"] == "missing" and loc and isinstance(loc[-1], int))
        ):
            # a tuple with too few or too many values: one line for the field, with a valid fix
            parent = ".".join(str(p) for p in loc if not isinstance(p, int))
            if parent in seen:
                continue
            seen.add(parent)
            example = _example(field)
            lines.append(
                f"  - {parent}: needs {length} values, got {item.get('input')!r}; "
                f"write e.g. {parent}: {example} in the YAML, or --set '{parent}={example}'"
            )
            continue
        key = ".".join(str(p) for p in loc) or "(top level)"
        if item["type"] == "extra_forbidden":
            valid, close = _suggest(model, loc)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            lines.append(f"  - unknown key '{key}'.{hint} Valid keys here: {valid}.")
        elif item["type"] == "missing":
            lines.append(f"  - missing key '{key}': add it to the YAML or pass --set {key}=...")
        else:
            msg = item["msg"].removeprefix("Value error, ")
            lines.append(f"  - {key}: {msg} (got {item.get('input')!r})")
    return "\n".join(lines)


class OverrideError(ConfigError):
    """A ``--set`` that is not ``KEY=VALUE`` or whose value is not YAML."""

    def __init__(self, problem: str, fix: str, key: list[str] | None = None) -> None:
        super().__init__(problem, fix)
        self.key = key


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into a key path and a YAML-parsed value."""
    key, sep, raw = text.partition("=")
    path = key.strip().split(".")
    if not sep or not key.strip() or not all(part.strip() for part in path):
        raise OverrideError(
            f"override '{text}' is not KEY=VALUE", "write it as --set section.field=value"
        )
    path = [part.strip() for part in path]
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except (yaml.YAMLError, ValueError, TypeError, OverflowError) as exc:
        # the value goes through YAML (lists, numbers, null); say which part of it broke
        reason = getattr(exc, "problem", None) or str(exc).strip().split("\n")[0]
        reason = reason or type(exc).__name__
        raise OverrideError(
            f"--set '{key.strip()}={raw}': the value is not valid YAML ({reason.rstrip(':')})",
            f"write lists as [32, 32] and quote text with YAML's special characters, "
            f"e.g. --set '{key.strip()}=\"text\"'",
            path,
        ) from None
    # a month range like 2024-01:2024-03 is YAML's sexagesimal-looking string; keep it as text
    if isinstance(value, int | float) and ":" in raw:
        value = raw
    # likewise `2024-01:` (YAML: a mapping); a real mapping is written {a: 1} or `a: 1`
    if isinstance(value, dict) and not raw.strip().startswith("{") and ": " not in raw:
        value = raw.strip()
    return path, value


def apply_overrides(
    raw: dict[str, Any], overrides: list[str] | None, model: type[BaseModel] | None = None
) -> dict[str, Any]:
    """Set each `a.b=value` into the nested dict `raw` (in place) and return it.

    With ``model``, a value that is not YAML gets a fix naming what the field expects.
    """
    for text in overrides or []:
        try:
            path, value = parse_override(text)
        except OverrideError as exc:
            field = _field_at(model, exc.key) if model is not None and exc.key else None
            if field is None or exc.key is None:
                raise
            key = ".".join(exc.key)
            what = f" ({field.description.rstrip('.')})" if field.description else ""
            raise ConfigError(
                exc.problem, f"give {key} a valid value, e.g. --set '{key}={_example(field)}'{what}"
            ) from None
        node = raw
        for part in path[:-1]:
            nxt = node.get(part)
            if not isinstance(nxt, dict):
                nxt = {}
                node[part] = nxt
            node = nxt
        node[path[-1]] = value
    return raw


def validate(model: type[T], raw: dict[str, Any], source: str = "config") -> T:
    """Validate a dict into `model`, raising :class:`ConfigError` with suggestions."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(
            format_validation_error(model, exc, source),
            "correct the keys above in the YAML file or in the --set override",
        ) from None


def read_yaml(path: Path | str) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing or malformed file."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(
            f"config path {path} is a folder, not a YAML file",
            f"name a file in it, e.g. {next(iter(sorted(path.glob('*.yaml'))), path / 'name.yaml')}",
        )
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist", "check the path (configs/ holds the shipped ones)"
        )
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except (
        yaml.YAMLError,
        ValueError,
        TypeError,
        OverflowError,
    ) as exc:  # `!!int x` is a ValueError
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc).strip().splitlines()[0]
        raise ConfigError(
            f"config file {path} is not valid YAML: {reason}{where}",
            "fix the YAML syntax there (lists [a, b], mappings key: value, quotes closed)",
        ) from None
    if not isinstance(raw, dict):
        raise ConfigError(
            f"config file {path} holds a {type(raw).__name__}, not a mapping",
            "write key: value pairs",
        )
    return raw


def load_config(
    model: type[T], path: Path | str | None, overrides: list[str] | None = None, **base: Any
) -> T:
    """Load `path` (YAML) into `model`, after applying `--set` overrides.

    `base` gives starting values used when no file is given.
    """
    raw = read_yaml(path) if path is not None else dict(base)
    apply_overrides(raw, overrides, model)
    return validate(model, raw, str(path) if path is not None else "command-line config")


def to_dict(config: BaseModel) -> dict[str, Any]:
    """A JSON-ready dict of a config (paths as strings)."""
    return json.loads(config.model_dump_json())


def to_yaml(config: BaseModel) -> str:
    return yaml.safe_dump(to_dict(config), sort_keys=False)


def fingerprint(config: BaseModel | dict[str, Any]) -> str:
    """A short stable hash of a config, for provenance and up-to-date checks."""
    data = to_dict(config) if isinstance(config, BaseModel) else config
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------- reference


def _default_text(field: Any) -> str:
    from pydantic_core import PydanticUndefined

    if field.default is PydanticUndefined and field.default_factory is None:
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if isinstance(value, BaseModel):
        return ""
    if isinstance(value, Path):
        value = str(value)
    if isinstance(value, tuple):
        value = list(value)
    return f"`{json.dumps(value)}`" if value is not None else "`null`"


def _section_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *getattr(annotation, "__args__", ())):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def reference_rows(model: type[BaseModel], prefix: str = "") -> list[tuple[str, str, str]]:
    """`(key, default, description)` for every field of `model`, sections flattened with dots."""
    rows: list[tuple[str, str, str]] = []
    for name, field in model.model_fields.items():
        key = f"{prefix}{name}"
        section = _section_model(field.annotation)
        if section is not None and section not in (MonthRange, TimeRange):
            doc = (field.description or (section.__doc__ or "").strip().splitlines()[0]).strip()
            rows.append((key, "", doc))
            rows.extend(reference_rows(section, prefix=f"{key}."))
        else:
            rows.append((key, _default_text(field), (field.description or "").replace("|", "/")))
    return rows


def reference_markdown() -> str:
    """The config reference (docs/config.md), generated from the models above."""
    parts = []
    for title, model in (
        ("Data config (`configs/data/*.yaml`)", DataConfig),
        ("Experiment config (`configs/experiments/*.yaml`)", ExperimentConfig),
    ):
        parts.append(f"## {title}\n\n| key | default | meaning |\n|---|---|---|")
        parts.extend(
            f"| `{key}` | {default} | {doc} |" for key, default, doc in reference_rows(model)
        )
        parts.append("")
    return "\n".join(parts)


REFERENCE_START = "<!-- config-reference:start -->"
REFERENCE_END = "<!-- config-reference:end -->"


def with_reference(document: str) -> str:
    """``document`` with the text between the config-reference markers replaced by :func:`reference_markdown`."""
    head, start, rest = document.partition(REFERENCE_START)
    _, end, tail = rest.partition(REFERENCE_END)
    if not start or not end:
        raise ValueError(f"the document has no {REFERENCE_START} ... {REFERENCE_END} markers")
    return f"{head}{start}\n{reference_markdown()}{end}{tail}"


if (
    __name__ == "__main__"
):  # python -m seacast.config [docs/config.md]: print, or rewrite the reference in that file
    import sys

    if len(sys.argv) > 1:
        target = Path(sys.argv[1])
        target.write_text(with_reference(target.read_text()))
    else:
        print(reference_markdown())
