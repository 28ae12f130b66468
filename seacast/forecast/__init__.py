"""Forecasts from a trained run: the lags frames up to an init time in, a forecast file out.

Offers:

* :func:`forecast` - load a run, pick the init time, optionally adapt the model by
  forward passes on the latest hours, predict every lead time and write the file
  atomically (idempotent: an existing forecast for the init time is kept unless ``force``).
* :class:`ForecastResult` - where it went, for which init time, and whether it was skipped.
* :func:`forecast_dataset` - the forecast file schema (WeatherBench 2 layout): dims
  ``init_time, lead_time, latitude, longitude``, coord ``valid_time``, physical values,
  NaN on land, CF attrs and provenance. Tests build valid examples with it too.
* :func:`valid_init_times`, :func:`resolve_init_time` - which init times have a whole
  history of ``lags`` frames, with clear errors naming the earliest/latest valid one.
* :func:`adapt_gain` - recalibrate a tide-aware model's base-anomaly gain (one per lead time
  and variable) on the latest weeks, two forward passes a sample (``--adapt-target gain``).
* :func:`fit_gain` - that fit on any batches: each field's loss is a parabola in its gain.
* :func:`adapt_zo` - fine-tune the loaded model (a copy of the run; the run's checkpoint is
  never written) on the latest hours with the ``spsa`` rule and in-place SGD, which needs
  no ``.grad`` tensors and no activations kept: the memory of inference.
* :func:`check_grid` - refuse a store on a different grid than the run's.
* :func:`resolve_store_path` - the store a run forecasts from (its config's, or given).

The modules: :mod:`~seacast.forecast.schema` (the file layout), :mod:`~seacast.forecast.inputs`
(init times, grid check, model input), :mod:`~seacast.forecast.adaptation` (``--adapt zo``),
:mod:`~seacast.forecast.writing` (files on disk) and :mod:`~seacast.forecast.driver`
(:func:`forecast`). The names below are re-exported here so ``from seacast.forecast import ...``
keeps working.
"""

from __future__ import annotations

from seacast.forecast.adaptation import (
    DEFAULT_ADAPT_LR,
    adapt_gain,
    adapt_zo,
    fit_gain,
    peak_rss_mb,
)
from seacast.forecast.driver import FORMATS, ForecastResult, forecast
from seacast.forecast.inputs import (
    check_grid,
    model_input,
    resolve_init_time,
    resolve_store_path,
    valid_init_times,
)
from seacast.forecast.schema import forecast_dataset
from seacast.forecast.writing import forecast_name, write_dataset

__all__ = [
    "DEFAULT_ADAPT_LR",
    "FORMATS",
    "ForecastResult",
    "adapt_gain",
    "adapt_zo",
    "fit_gain",
    "check_grid",
    "forecast",
    "forecast_dataset",
    "forecast_name",
    "model_input",
    "peak_rss_mb",
    "resolve_init_time",
    "resolve_store_path",
    "valid_init_times",
    "write_dataset",
]
