"""Reference forecasts that every model must beat: persistence, climatology and the tide.

Offers:

* :func:`persistence` - the init-time frame repeated for every lead time.
* :class:`Climatology` - hour-of-day by calendar-month means, built from the training
  period only (:meth:`Climatology.from_store`), and its forecast for any valid time
  (:meth:`Climatology.predict`).
* :class:`TideReferences` - the harmonic tide at the valid time, plus the anomaly of the init
  time persisted or damped (``shared/design/tides.md``), or regressed on the anomaly lags at
  each point and over the basin (:mod:`seacast.anomaly_regression`), the strongest.

Climatology choice (documented, as the issue asks): the mean of each variable at
each grid point over all training times with the same calendar month and hour of
day (12 x 24 bins), so it carries the mean diurnal and tidal-average cycle of each
month. A training period shorter than a year leaves some months empty; a valid time
in an empty bin falls back to the hour-of-day mean over all training months, and
a still-empty bin to the overall training mean. The store is read in time chunks,
so building it never loads the whole period.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
import xarray as xr

from seacast.anomaly_regression import AnomalyRegression
from seacast.errors import DataError
from seacast.tides import TidalConstants

READ_CHUNK_HOURS = 24 * 31


def persistence(last_frame: np.ndarray, n_lead: int) -> np.ndarray:
    """``[batch, variable, lat, lon]`` init-time frames -> ``[batch, n_lead, variable, lat, lon]``."""
    last_frame = np.asarray(last_frame)
    return np.repeat(last_frame[:, None], n_lead, axis=1)


@dataclass
class Climatology:
    """Means per (month, hour of day): ``mean[month-1, hour, variable, lat, lon]`` (NaN where unseen)."""

    variables: tuple[str, ...]
    mean: np.ndarray
    hour_mean: np.ndarray
    overall_mean: np.ndarray
    period: tuple[str, str]

    @classmethod
    def from_store(
        cls,
        store: xr.Dataset,
        variables: Sequence[str],
        periods: Sequence[tuple[str | pd.Timestamp, str | pd.Timestamp]],
    ) -> Climatology:
        """Build from the store's times inside any of the inclusive ``periods`` (the training period).

        The store is read chunk by chunk, so memory does not depend on the period's length.
        """
        times = pd.DatetimeIndex(store["time"].values)
        inside = np.zeros(len(times), dtype=bool)
        for start, end in periods:
            inside |= (times >= pd.Timestamp(start)) & (times <= pd.Timestamp(end))
        selected = np.flatnonzero(inside)
        if selected.size == 0:
            described = ", ".join(f"{a} .. {b}" for a, b in periods) or "(none)"
            raise DataError(
                f"the store has no times in the training period {described}",
                "check the run's split against the store's time range (seacast store info)",
            )
        shape = (len(variables), store.sizes["latitude"], store.sizes["longitude"])
        sums = np.zeros((12, 24, *shape))
        counts = np.zeros((12, 24, *shape))
        for lo in range(0, selected.size, READ_CHUNK_HOURS):
            index = selected[lo : lo + READ_CHUNK_HOURS]
            block = np.stack([store[v].isel(time=index).values for v in variables], axis=1).astype(
                np.float64
            )
            stamp = times[index]
            finite = np.isfinite(block)
            block = np.where(finite, block, 0.0)
            # one sum per (month, hour) bin in the chunk: np.add.at over every hour is ~20x slower
            bins = (stamp.month.to_numpy() - 1) * 24 + stamp.hour.to_numpy()
            for b in np.unique(bins):
                here = bins == b
                sums[b // 24, b % 24] += block[here].sum(0)
                counts[b // 24, b % 24] += finite[here].sum(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = sums / np.where(counts > 0, counts, np.nan)
            hour_mean = sums.sum(0) / np.where(counts.sum(0) > 0, counts.sum(0), np.nan)
            overall = sums.sum((0, 1)) / np.where(
                counts.sum((0, 1)) > 0, counts.sum((0, 1)), np.nan
            )
        first, last = times[selected[0]], times[selected[-1]]
        return cls(
            variables=tuple(variables),
            mean=mean.astype(np.float32),
            hour_mean=hour_mean.astype(np.float32),
            overall_mean=overall.astype(np.float32),
            period=(first.isoformat(), last.isoformat()),
        )

    def predict(self, valid_times: Sequence | np.ndarray) -> np.ndarray:
        """Climatological fields ``[n, variable, lat, lon]`` for each valid time (with the fallbacks)."""
        stamp = pd.DatetimeIndex(np.atleast_1d(np.asarray(valid_times, dtype="datetime64[ns]")))
        fields = self.mean[stamp.month - 1, stamp.hour]
        fields = np.where(np.isfinite(fields), fields, self.hour_mean[stamp.hour])
        return np.where(np.isfinite(fields), fields, self.overall_mean[None])

    def months_covered(self) -> list[int]:
        """Calendar months (1..12) that had training data."""
        return [m + 1 for m in range(12) if np.isfinite(self.mean[m]).any()]


REFERENCE_TITLES = {
    "persistence": "persistence",
    "climatology": "climatology",
    "tide": "tide",
    "tide_persisted": "tide + persisted anomaly",
    "tide_damped": "tide + damped anomaly",
    "tide_regressed": "tide + regressed anomaly",
}
TIDE_REFERENCES = ("tide", "tide_persisted", "tide_damped", "tide_regressed")


@dataclass
class TideReferences:
    """The harmonic references: ``tide(t0+L)``, ``+ a(t0)`` and ``+ alpha a(t0)``, with ``a = obs - tide``.

    ``damping [n_lead, C]`` is alpha per lead time and variable, fitted on the training period
    with the tide (:func:`seacast.tides.fit_tides`); ``source`` says where the constants came from.
    """

    tides: TidalConstants
    damping: np.ndarray
    source: str
    regression: AnomalyRegression | None = None
    sea_mask: np.ndarray | None = None

    def names(self) -> tuple[str, ...]:
        """The references :meth:`forecasts` returns."""
        return TIDE_REFERENCES if self.regression is not None else TIDE_REFERENCES[:3]

    def forecasts(
        self, inputs: np.ndarray, input_hours: np.ndarray, valid_hours: np.ndarray
    ) -> dict[str, np.ndarray]:
        """Physical input windows ``[B, lags, C, H, W]`` at ``input_hours [B, lags]`` (the last is
        the init time), or init-time frames ``[B, C, H, W]`` at ``[B]`` (no regressed anomaly
        then: it needs the lags) -> each reference ``[B, n_lead, C, H, W]``."""
        inputs, input_hours = np.asarray(inputs), np.asarray(input_hours)
        if inputs.ndim == 4:
            inputs, input_hours = inputs[:, None], input_hours[:, None]
        tide_valid = self.tides.predict(np.asarray(valid_hours).reshape(-1))
        tide_valid = tide_valid.reshape(*np.shape(valid_hours), *tide_valid.shape[1:])
        tide_inputs = self.tides.predict(input_hours.reshape(-1))
        anomalies = np.asarray(inputs) - tide_inputs.reshape(
            *input_hours.shape, *tide_inputs.shape[1:]
        )
        anomaly = anomalies[:, -1:]
        alpha = self.damping.astype(np.float32)[None, :, :, None, None]
        out = {
            "tide": tide_valid,
            "tide_persisted": tide_valid + anomaly,
            "tide_damped": tide_valid + alpha * anomaly,
        }
        if (
            self.regression is not None
            and self.sea_mask is not None
            and anomalies.shape[1] >= self.regression.lags
        ):
            out["tide_regressed"] = tide_valid + self.regression.predict(anomalies, self.sea_mask)
        return out
