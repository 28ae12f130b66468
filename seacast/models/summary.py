"""Parameter counts of the four variants for given options, for ``seacast models``.

Offers :class:`ModelSummary` and :func:`summarise_models`. Models are built on the
``meta`` device: counting needs no memory and no initialisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from seacast.config import MODEL_NAMES, ModelConfig
from seacast.models.blocks import BLOCKS
from seacast.models.unet3ddr import build_model, count_parameters


@dataclass(frozen=True)
class ModelSummary:
    """One variant's size: ``trainable`` and ``total`` (with BatchNorm statistics) in the chosen
    mode, and ``other_trainable`` in the other mode (faithful <-> efficient)."""

    name: str
    title: str
    faithful: bool
    trainable: int
    total: int
    other_trainable: int


def summarise_models(
    *,
    filters: int = 16,
    lags: int = 10,
    shape: Sequence[int] = (128, 128),
    in_channels: int = 4,
    out_channels: int | None = None,
    lead_times: Sequence[int] | int = 1,
    attention: str = "none",
    faithful: bool = False,
    names: Sequence[str] = MODEL_NAMES,
) -> list[ModelSummary]:
    """Parameter counts of each variant in ``names`` with these options."""
    out_channels = in_channels if out_channels is None else out_channels
    rows = []
    for name in names:
        counts = {}
        for mode in (faithful, not faithful):
            # residual/final activation do not change the counts; residual needs C_in == C_out
            cfg = ModelConfig(
                name=name, filters=filters, attention=attention, faithful=mode, base="none"
            )
            model = build_model(
                cfg, in_channels, out_channels, lags, lead_times, shape, device="meta"
            )
            counts[mode] = count_parameters(model)
        rows.append(
            ModelSummary(
                name=name,
                title=BLOCKS[name].title,
                faithful=faithful,
                trainable=counts[faithful][0],
                total=counts[faithful][1],
                other_trainable=counts[not faithful][0],
            )
        )
    return rows
