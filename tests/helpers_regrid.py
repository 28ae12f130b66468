"""Raw CMEMS-like months in the raw layout, and the data config that regrids them (8x8 grid)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from seacast.config import BBox, DataConfig
from seacast.synthetic import cmems_like_file

BOX = BBox(lat_min=51.0, lat_max=55.0, lon_min=2.5, lon_max=7.5)
SRC_LAT = np.arange(50.8, 55.21, 0.2)
SRC_LON = np.arange(2.3, 7.71, 0.25)


def coast(lat: np.ndarray, lon: np.ndarray) -> np.ndarray:
    """Land east of a wiggly line near 6.6 E."""
    la, lo = np.meshgrid(lat, lon, indexing="ij")
    return lo > 6.6 + 0.3 * np.sin(2 * la)


def month_times(month: str, step_hours: float = 1.0) -> pd.DatetimeIndex:
    start = pd.Timestamp(f"{month}-01")
    return pd.date_range(
        start,
        start + pd.offsets.MonthBegin(1),
        freq=pd.Timedelta(hours=step_hours),
        inclusive="left",
    )


def write_raw_month(raw_dir: Path, month: str, lat=SRC_LAT, lon=SRC_LON) -> None:
    """Two CMEMS-like datasets for one month in the raw layout: currents, and salinity plus sea level."""
    land = coast(lat, lon)
    times = month_times(month)
    for dataset, variables in (("cur", ("uo", "vo")), ("phy", ("so", "zos"))):
        cmems_like_file(
            raw_dir / "copernicus" / dataset / f"{month}.nc",
            times=times,
            latitude=lat,
            longitude=lon,
            variables=variables,
            land=land,
        )


def data_config(tmp_path: Path, months: str, **extra) -> DataConfig:
    raw = {
        "name": "test",
        "source": "copernicus",
        "months": months,
        "raw_dir": str(tmp_path / "raw"),
        "bbox": BOX.model_dump(),
        "copernicus": {
            "datasets": [
                {"id": "cur", "variables": ["uo", "vo"]},
                {"id": "phy", "variables": ["so", "zos"]},
            ]
        },
        "grid": {"shape": [8, 8]},
        "store": {"path": str(tmp_path / "store.zarr"), "chunk_hours": 24},
        **extra,
    }
    return DataConfig.model_validate(raw)
