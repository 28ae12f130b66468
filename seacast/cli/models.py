"""``seacast models``: the four 3DDR U-Net variants and their parameter counts."""

from __future__ import annotations

from typing import Annotated, Literal

import typer
from rich.table import Table

from seacast.cli.common import app, handle_errors, out
from seacast.config import GRID_MULTIPLE
from seacast.errors import ConfigError


def _lead_times(text: str) -> list[int]:
    try:
        hours = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        hours = []
    if not hours or any(h <= 0 for h in hours):
        raise ConfigError(
            f"--lead-times '{text}' is not a list of positive hours",
            "write e.g. --lead-times 6,12,24",
        )
    return hours


@app.command("models")
@handle_errors
def models_command(
    filters: Annotated[int, typer.Option(min=1, help="Base filter count F.")] = 16,
    lags: Annotated[int, typer.Option(min=1, help="Input frames.")] = 10,
    size: Annotated[tuple[int, int], typer.Option(help="Grid H W (multiples of 16).")] = (128, 128),
    channels: Annotated[int, typer.Option(min=1, help="Input variables.")] = 4,
    out_channels: Annotated[
        int | None, typer.Option(min=1, help="Output variables (default: as --channels).")
    ] = None,
    lead_times: Annotated[
        str, typer.Option(help="Lead times in hours, comma-separated; the head predicts all.")
    ] = "1",
    attention: Annotated[
        Literal["none", "self", "global", "both"], typer.Option(help="Attention modules.")
    ] = "none",
    faithful: Annotated[
        bool,
        typer.Option(
            "--faithful/--efficient",
            help="Conv3d everywhere as the reference, or the efficient mode.",
        ),
    ] = False,
) -> None:
    """List the four 3DDR U-Nets with their parameter counts for the given options.

    Example: seacast models --filters 15 --lags 10 --size 128 128 --channels 4 --faithful
    """
    from seacast.models.summary import summarise_models

    if any(n < GRID_MULTIPLE or n % GRID_MULTIPLE for n in size):
        nearest = [max(GRID_MULTIPLE, round(n / GRID_MULTIPLE) * GRID_MULTIPLE) for n in size]
        raise ConfigError(
            f"--size {size[0]} {size[1]} does not fit the 3DDR U-Nets: H and W must be positive "
            f"multiples of {GRID_MULTIPLE} (four 2x poolings)",
            f"give e.g. --size {nearest[0]} {nearest[1]}",
        )
    rows = summarise_models(
        filters=filters,
        lags=lags,
        shape=size,
        in_channels=channels,
        out_channels=out_channels,
        lead_times=_lead_times(lead_times),
        attention=attention,
        faithful=faithful,
    )
    mode, other = ("faithful", "efficient") if faithful else ("efficient", "faithful")
    table = Table(
        title=f"3DDR U-Nets ({mode}): F={filters}, lags={lags}, {size[0]}x{size[1]}, "
        f"{channels} in, {out_channels or channels} out, lead times {lead_times}, attention {attention}",
        caption=f"trainable: {mode} mode; +BN stats: also BatchNorm running statistics "
        f"(Keras' total); {other}: trainable in {other} mode",
    )
    digits = max(len(str(row.total)) for row in rows)
    table.add_column("model", no_wrap=True, min_width=max(len(row.name) for row in rows))
    for header in ("trainable", "+BN stats", other):
        table.add_column(header, justify="right", no_wrap=True, min_width=max(digits, len(header)))
    for row in rows:
        table.add_row(row.name, str(row.trainable), str(row.total), str(row.other_trainable))
    out.print(table)
