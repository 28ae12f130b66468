"""A fake Copernicus Marine client for the fetch tests, serving real CMEMS sample files.

The fake answers ``subset`` like the toolbox: it writes a NetCDF file to a
temporary ``<output_filename>.<random>`` made by ``mkstemp`` (so mode 0600), renames
it to ``output_directory/output_filename`` and returns a response with ``status`` and
``file_path``. Its data are the real hourly Mediterranean salinity sample
(2024-01-01..2024-01-10): to fill any requested hours it keeps the sample's
structure (attributes, encodings, depth axis, NaN land) and tiles its 216
hourly frames over the requested times. It raises the toolbox's own exception
classes, so the tests exercise seacast's real error mapping.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from seacast.config import DataConfig

MED_DATASET = "cmems_mod_med_phy-sal_anfc_4.2km-3D_PT1H-m"
MED_FILE = "cmems_mod_med_phy-sal_anfc_4.2km-3D_PT1H-m_sample.nc"
MED_FRAMES = 216  # the sample's distinct hours before it repeats 00:00 of the 10th


def med_config(raw_dir: Path, months: str = "2024-01:2024-02", **copernicus: Any) -> DataConfig:
    """A copernicus config asking for the Mediterranean sample's dataset, box and variable."""
    settings = {"retries": 3, "backoff_seconds": 0.0, "grid_km": 4.2, **copernicus}
    return DataConfig.model_validate(
        {
            "name": "med_test",
            "source": "copernicus",
            "bbox": {"lat_min": 35.0, "lat_max": 35.7, "lon_min": 26.2, "lon_max": 27.1},
            "months": months,
            "variables": ["so"],
            "raw_dir": str(raw_dir),
            "copernicus": {
                "product": "MEDSEA_ANALYSISFORECAST_PHY_006_013",
                "datasets": [{"id": MED_DATASET, "variables": ["so"]}],
                **settings,
            },
        }
    )


def tiled_sample(fixture: Path, times: pd.DatetimeIndex) -> xr.Dataset:
    """The sample's frames tiled over ``times``, with the sample's attrs and encodings."""
    with xr.open_dataset(fixture) as sample:
        sample = sample.load()
    frames = sample.isel(time=np.arange(len(times)) % MED_FRAMES)
    frames = frames.assign_coords(time=times.values.astype("datetime64[ns]"))
    frames["time"].attrs = sample["time"].attrs
    frames["time"].encoding = {"units": "seconds since 1970-01-01 00:00:00", "dtype": "float64"}
    for name in frames.data_vars:
        frames[name].encoding = {"dtype": "float32", "_FillValue": np.float32(np.nan)}
    frames.attrs = dict(sample.attrs)
    return frames


@dataclass
class FakeMarineClient:
    """Records every call; fails on demand like the real service.

    * ``transient_failures``: that many ``transient_error`` (ServiceNotAvailable by
      default) before serving;
    * ``error``: raised on every subset call (a credentials or permanent error);
    * ``empty_months``: answered with the toolbox's "no data" status and no file;
    * ``short_months``: served without their last day (an incomplete month);
    * ``kill_months``: half of the toolbox's temporary file is written, then
      KeyboardInterrupt (a killed run: that file is left behind);
    * ``interrupt_months``: a SIGINT to this process while the file is being written
      (Ctrl-C in a terminal); the fake then goes on, as the toolbox's own threads do;
    * ``served_version``: the version written into the files' ``subset:datasetId``
      (the sample's own, 202311, if None).
    """

    fixtures: Path
    transient_failures: int = 0
    transient_error: BaseException | None = None
    error: BaseException | None = None
    empty_months: set[str] = field(default_factory=set)
    short_months: set[str] = field(default_factory=set)
    kill_months: set[str] = field(default_factory=set)
    interrupt_months: set[str] = field(default_factory=set)
    served_version: str | None = None
    login_result: bool = True
    calls: list[dict[str, Any]] = field(default_factory=list)
    login_calls: list[dict[str, Any]] = field(default_factory=list)

    def subset(self, **kwargs: Any) -> Any:
        import copernicusmarine

        self.calls.append(dict(kwargs))
        if self.transient_failures > 0:
            self.transient_failures -= 1
            raise self.transient_error or copernicusmarine.ServiceNotAvailable(
                "the ARCO service answered 503"
            )
        if self.error is not None:
            raise self.error
        if kwargs["dataset_id"] != MED_DATASET:
            raise copernicusmarine.DatasetNotFound(kwargs["dataset_id"])
        for name in kwargs["variables"]:
            if name != "so":
                raise copernicusmarine.VariableDoesNotExistInTheDataset(name)
        out = Path(kwargs["output_directory"]) / kwargs["output_filename"]
        start = pd.Timestamp(kwargs["start_datetime"])
        end = pd.Timestamp(kwargs["end_datetime"])
        month = start.strftime("%Y-%m")
        if month in self.empty_months:
            return SimpleNamespace(
                status=copernicusmarine.StatusCode.NO_DATA_TO_DOWNLOAD,
                message="No data",
                file_path=out,
            )
        if month in self.short_months:
            end = end - pd.Timedelta(days=1)
        ds = tiled_sample(self.fixtures / MED_FILE, pd.date_range(start, end, freq="h"))
        ds = ds.sel(
            latitude=slice(kwargs["minimum_latitude"], kwargs["maximum_latitude"]),
            longitude=slice(kwargs["minimum_longitude"], kwargs["maximum_longitude"]),
        )
        if self.served_version is not None:
            ds.attrs["subset:datasetId"] = f"{MED_DATASET}_{self.served_version}"
        # like the toolbox's TemporaryPathSaver: mkstemp next to the target, then a move
        fd, name = tempfile.mkstemp(prefix=f"{out.name}.", dir=out.parent)
        os.close(fd)
        partial = Path(name)
        ds.to_netcdf(partial)
        if month in self.kill_months:
            data = partial.read_bytes()
            partial.write_bytes(data[: len(data) // 2])
            raise KeyboardInterrupt
        if month in self.interrupt_months:
            os.kill(os.getpid(), signal.SIGINT)
        shutil.move(partial, out)
        return SimpleNamespace(status="000", message="The request was successful.", file_path=out)

    def login(self, username: str, password: str, **kwargs: Any) -> bool:
        self.login_calls.append({"username": username, "password": password, **kwargs})
        if self.error is not None:
            raise self.error
        return self.login_result

    def months_requested(self) -> list[str]:
        return [pd.Timestamp(c["start_datetime"]).strftime("%Y-%m") for c in self.calls]
