"""Streaming error metrics on physical values, sea points only (pySTEPS' init/accum/merge/compute).

Offers:

* :class:`ErrorAccumulator` - running sums of the error per group x lead time x variable,
  and optionally per grid point (for maps of the mean error).
* :func:`error_init` - an empty accumulator.
* :func:`error_accum` - add a batch of forecasts and truths (in place).
* :func:`error_merge` - combine two accumulators (e.g. from two workers or two halves of a period).
* :func:`error_compute` - MSE, RMSE, MAE, bias and counts as an :class:`xarray.Dataset`.
* :func:`skill_score` - ``1 - MSE / MSE_reference``.

Only sums are kept, so memory does not grow with the length of the evaluated period
and the same code scores one field, a season streamed batch by batch, or partial
results merged across workers. Points that are NaN in the forecast or the truth, or
outside ``sea_mask``, are ignored (not counted); a cell with no valid points yields NaN.
Error is ``forecast - truth``, so a positive bias means the forecast is too high.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from seacast.errors import DataError


@dataclass
class ErrorAccumulator:
    """Running sums for MSE, MAE and bias. Arrays are ``[group, lead_time, variable]`` float64.

    ``map_sum_error`` / ``map_count`` (``[lead_time, variable, latitude, longitude]``) are
    present when the accumulator was made with a ``shape``; they give maps of the mean error.
    """

    variables: tuple[str, ...]
    lead_times: tuple[int, ...]
    groups: tuple[str, ...]
    count: np.ndarray
    sum_error: np.ndarray
    sum_abs_error: np.ndarray
    sum_squared_error: np.ndarray
    map_sum_error: np.ndarray | None = None
    map_count: np.ndarray | None = None
    samples: dict[str, int] = field(default_factory=dict)


def error_init(
    variables: Sequence[str],
    lead_times: Sequence[int],
    groups: Sequence[str] = ("all",),
    shape: tuple[int, int] | None = None,
) -> ErrorAccumulator:
    """An empty accumulator.

    Parameters
    ----------
    variables : names of the variable axis, e.g. ``["uo", "vo", "so", "zos"]``.
    lead_times : lead times in hours (the lead axis).
    groups : labels samples can be assigned to, e.g. the seasons.
    shape : ``(n_lat, n_lon)`` to also keep per-point sums for mean-error maps.
    """
    dims = (len(groups), len(lead_times), len(variables))
    acc = ErrorAccumulator(
        variables=tuple(variables),
        lead_times=tuple(int(h) for h in lead_times),
        groups=tuple(groups),
        count=np.zeros(dims),
        sum_error=np.zeros(dims),
        sum_abs_error=np.zeros(dims),
        sum_squared_error=np.zeros(dims),
        samples={g: 0 for g in groups},
    )
    if shape is not None:
        map_dims = (len(lead_times), len(variables), *shape)
        acc.map_sum_error = np.zeros(map_dims)
        acc.map_count = np.zeros(map_dims)
    return acc


def error_accum(
    acc: ErrorAccumulator,
    forecast: np.ndarray,
    truth: np.ndarray,
    groups: Sequence[str] | None = None,
    sea_mask: np.ndarray | None = None,
) -> ErrorAccumulator:
    """Add a batch to ``acc`` (in place) and return it.

    Parameters
    ----------
    forecast, truth : ``[batch, lead_time, variable, latitude, longitude]`` physical values.
    groups : the group label of each sample (length ``batch``); all in the first group if None.
    sea_mask : ``[latitude, longitude]`` bool, True on sea; points off it are ignored.
    """
    forecast = np.asarray(forecast, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if forecast.shape != truth.shape or forecast.ndim != 5:
        raise DataError(
            f"forecast {forecast.shape} and truth {truth.shape} must both be [batch, lead, variable, lat, lon]",
            "pass arrays of the same 5-D shape",
        )
    batch, n_lead, n_var = forecast.shape[:3]
    if (n_lead, n_var) != (len(acc.lead_times), len(acc.variables)):
        raise DataError(
            f"batch has {n_lead} lead times x {n_var} variables, the accumulator "
            f"{len(acc.lead_times)} x {len(acc.variables)}",
            "make the accumulator with the same lead times and variables as the forecasts",
        )
    labels = [acc.groups[0]] * batch if groups is None else list(groups)
    error = forecast - truth
    valid = np.isfinite(error)
    if sea_mask is not None:
        valid &= np.asarray(sea_mask, dtype=bool)[None, None, None]
    error = np.where(valid, error, 0.0)
    for label in dict.fromkeys(labels):
        if label not in acc.groups:
            raise DataError(
                f"group '{label}' is not one of {acc.groups}",
                "make the accumulator with every group",
            )
        g = acc.groups.index(label)
        rows = np.array([lab == label for lab in labels])
        e, v = error[rows], valid[rows]
        acc.count[g] += v.sum(axis=(0, 3, 4))
        acc.sum_error[g] += e.sum(axis=(0, 3, 4))
        acc.sum_abs_error[g] += np.abs(e).sum(axis=(0, 3, 4))
        acc.sum_squared_error[g] += (e * e).sum(axis=(0, 3, 4))
        acc.samples[label] = acc.samples.get(label, 0) + int(rows.sum())
    if acc.map_sum_error is not None and acc.map_count is not None:
        acc.map_sum_error += error.sum(axis=0)
        acc.map_count += valid.sum(axis=0)
    return acc


def error_merge(a: ErrorAccumulator, b: ErrorAccumulator) -> ErrorAccumulator:
    """A new accumulator holding the sums of both (they must share variables, lead times, groups)."""
    if (a.variables, a.lead_times, a.groups) != (b.variables, b.lead_times, b.groups):
        raise DataError(
            "cannot merge accumulators with different variables, lead times or groups",
            "accumulate every part with the same error_init arguments",
        )
    merged = ErrorAccumulator(
        variables=a.variables,
        lead_times=a.lead_times,
        groups=a.groups,
        count=a.count + b.count,
        sum_error=a.sum_error + b.sum_error,
        sum_abs_error=a.sum_abs_error + b.sum_abs_error,
        sum_squared_error=a.sum_squared_error + b.sum_squared_error,
        samples={g: a.samples.get(g, 0) + b.samples.get(g, 0) for g in a.groups},
    )
    if a.map_sum_error is not None and b.map_sum_error is not None:
        merged.map_sum_error = a.map_sum_error + b.map_sum_error
        merged.map_count = a.map_count + b.map_count  # type: ignore[operator]
    return merged


def error_compute(acc: ErrorAccumulator) -> xr.Dataset:
    """MSE, RMSE, MAE, bias and point counts with dims ``(group, lead_time, variable)``.

    With maps, also ``mean_error`` with dims ``(lead_time, variable, latitude, longitude)``.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        n = np.where(acc.count > 0, acc.count, np.nan)
        mse = acc.sum_squared_error / n
        data = {
            "mse": mse,
            "rmse": np.sqrt(mse),
            "mae": acc.sum_abs_error / n,
            "bias": acc.sum_error / n,
            "count": acc.count,
        }
    dims = ("group", "lead_time", "variable")
    ds = xr.Dataset(
        {name: (dims, value) for name, value in data.items()},
        coords={
            "group": list(acc.groups),
            "lead_time": ("lead_time", list(acc.lead_times), {"units": "hours"}),
            "variable": list(acc.variables),
            "samples": ("group", [acc.samples.get(g, 0) for g in acc.groups]),
        },
    )
    if acc.map_sum_error is not None and acc.map_count is not None:
        with np.errstate(invalid="ignore", divide="ignore"):
            mean_error = acc.map_sum_error / np.where(acc.map_count > 0, acc.map_count, np.nan)
        ds["mean_error"] = (("lead_time", "variable", "latitude", "longitude"), mean_error)
    return ds


def skill_score(mse: xr.DataArray | np.ndarray, mse_reference: xr.DataArray | np.ndarray):
    """``1 - MSE / MSE_reference``: 1 is perfect, 0 is as good as the reference, < 0 worse."""
    with np.errstate(invalid="ignore", divide="ignore"):
        return 1.0 - mse / mse_reference
