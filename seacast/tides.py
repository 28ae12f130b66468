"""Harmonic tides: one least-squares fit for every sea point and variable, and its predictions.

On this coast the tide dominates sea level and currents, so the harmonic prediction is the
first reference a forecast must beat (``shared/design/tides.md``). The model at each point is

    h(t) = mean + sum_k f_k(t) [a_k cos(V_k(t) + u_k(t)) + b_k sin(V_k(t) + u_k(t))]

with amplitude ``A_k = hypot(a_k, b_k)`` and Greenwich phase ``g_k = atan2(b_k, a_k)``.
``utide`` supplies the constituent table, the Rayleigh-criterion selection, the astronomical
arguments ``V`` and the nodal corrections ``f, u`` (:func:`utide.harmonics.ut_E`, exact at every
time: no linearisation, so a prediction years ahead keeps its nodal phase).

Offered:

* :func:`fit_tides` - stream the store's training period once into normal equations shared by
  all points (points with missing hours get their own), solve them all at once, then a second
  pass for the anomaly statistics and the damping of the persisted anomaly per lead time.
* :class:`TidalConstants` - the constants with their provenance; :meth:`~TidalConstants.predict`
  at any hours, :meth:`~TidalConstants.save` / :func:`load_tides` as NetCDF (``tides.nc``).
* :func:`select_constituents` - the utide constituents a record of a given length resolves.
* :func:`train_periods` - the training ranges of a split plan, the only times a fit may see.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from seacast.atomic import atomic_path
from seacast.errors import ConfigError, DataError

UTIDE_EPOCH_DAYS = 719163  # utide's day numbers count from 0000-12-31; 1970-01-01 is this one
READ_CHUNK_HOURS = 24 * 14
BASIS_BLOCK_HOURS = 24 * 31
LONG_PERIOD_CPH = 1 / (24 * 2)  # below: SA, SSA, MSM, MM, MSF, MF (weather on a shelf, not tide)
TIDES_FILE = "tides.nc"
METHOD = "ordinary least squares on utide's basis (exact nodal corrections, no trend)"
MAIN_CONSTITUENTS = ("M2", "S2", "N2", "K2", "K1", "O1", "P1", "Q1", "M4", "MS4", "M6")


def utide_days(hours: np.ndarray | Sequence[int]) -> np.ndarray:
    """Hours since 1970 -> utide's day numbers."""
    return np.asarray(hours, dtype=np.float64) / 24.0 + UTIDE_EPOCH_DAYS


def select_constituents(
    record_hours: float,
    constituents: str | Sequence[str] = "auto",
    rayleigh: float = 1.0,
    long_period: bool = True,
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Names, frequencies (cycles per hour) and utide indices of the constituents to fit.

    ``auto`` keeps every constituent whose separation from its neighbours is at least
    ``rayleigh`` / record length (the Rayleigh criterion, as ``utide.solve`` does), without
    the long-period ones (below ``LONG_PERIOD_CPH``) unless ``long_period``.
    """
    from utide._ut_constants import constit_index_dict, ut_constants
    from utide.harmonics import linearized_freqs

    const = ut_constants.const
    if record_hours <= 0:
        raise DataError(
            "the tide fit needs a record longer than one time step",
            "give the fit a longer period (the training split)",
        )
    if isinstance(constituents, str):
        if constituents != "auto":
            raise ConfigError(
                f"tides.constituents '{constituents}' is neither 'auto' nor a list of names",
                "use tides.constituents: auto, or a list such as [M2, S2, N2, K1, O1]",
            )
        minres = rayleigh / record_hours
        lowest = 0.0 if long_period else LONG_PERIOD_CPH
        index = np.flatnonzero((const.df >= minres) & (const.freq > lowest))
    else:
        unknown = [c for c in constituents if c.upper() not in constit_index_dict]
        if unknown:
            raise ConfigError(
                f"unknown tidal constituents {unknown}",
                "use utide's names, e.g. M2, S2, N2, K2, K1, O1, P1, Q1, M4, MS4",
            )
        index = np.array([constit_index_dict[c.upper()] for c in constituents], dtype=np.int64)
    if index.size == 0:
        raise DataError(
            f"a record of {record_hours:g} h resolves no tidal constituent",
            "fit on a longer period (at least a few days)",
        )
    names = [str(n) for n in const.name[index]]
    return names, np.asarray(linearized_freqs(0.0)[index], dtype=np.float64), index


def _basis(hours: np.ndarray, lind: np.ndarray, frequencies: np.ndarray, latitude: float):
    """The design matrix ``[T, 1 + 2K]``: a constant, then f cos(V+u) and f sin(V+u) per constituent."""
    from utide.harmonics import ut_E

    days = utide_days(hours)
    if days.size == 0:
        return np.zeros((0, 1 + 2 * len(lind)))
    # tref only matters for linearised arguments, which are off: exact F, U, V at each time
    e = ut_E(days, float(days[0]), frequencies, lind, latitude, [False] * 4, [])
    return np.concatenate([np.ones((len(days), 1)), e.real, e.imag], axis=1)


@dataclass
class TidalConstants:
    """Harmonic constants of every variable at every grid point, and how they were found.

    ``mean [C, H, W]``, ``cos`` and ``sin`` ``[K, C, H, W]`` (``a_k``, ``b_k``), NaN on land.
    ``anomaly_std [C]``: std of obs - tide over the fit period (sea points), the scale of a
    tide-aware model's inputs. ``damping [n_lead, C]``: the least-squares factor alpha of the
    persisted anomaly, ``tide(t0+L) + alpha a(t0)``, at ``damping_lead_times``.
    """

    variables: list[str]
    constituents: list[str]
    frequencies: np.ndarray
    lind: np.ndarray
    mean: np.ndarray
    cos: np.ndarray
    sin: np.ndarray
    latitude: np.ndarray
    longitude: np.ndarray
    nodal_latitude: float
    period: tuple[str, str]
    fit_hours: int
    selection: str
    anomaly_std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    damping: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    damping_lead_times: list[int] = field(default_factory=list)
    store_fingerprint: str = ""
    _basis_blocks: dict[int, np.ndarray] = field(default_factory=dict, repr=False, compare=False)

    # ------------------------------------------------------------------ derived

    @property
    def amplitude(self) -> np.ndarray:
        return np.hypot(self.cos, self.sin)

    @property
    def phase(self) -> np.ndarray:
        """Greenwich phase lag in degrees, 0..360."""
        return np.degrees(np.arctan2(self.sin, self.cos)) % 360.0

    def basis(self, hours: np.ndarray | Sequence[int]) -> np.ndarray:
        """The design matrix at ``hours``; whole hours come from a cache of month-long blocks
        (utide's astronomy costs ~5 ms a call, whatever its length)."""
        hours = np.atleast_1d(np.asarray(hours, dtype=np.float64))
        whole = np.round(hours)
        if hours.size == 0 or not np.array_equal(whole, hours):
            return _basis(hours, self.lind, self.frequencies, self.nodal_latitude)
        whole = whole.astype(np.int64)
        block, offset = np.divmod(whole, BASIS_BLOCK_HOURS)
        out = np.empty((len(whole), 1 + 2 * len(self.lind)))
        for b in np.unique(block):
            rows = self._basis_blocks.get(int(b))
            if rows is None:
                start = int(b) * BASIS_BLOCK_HOURS
                rows = _basis(
                    np.arange(start, start + BASIS_BLOCK_HOURS, dtype=np.float64),
                    self.lind,
                    self.frequencies,
                    self.nodal_latitude,
                )
                self._basis_blocks[int(b)] = rows
            here = block == b
            out[here] = rows[offset[here]]
        return out

    def predict(self, hours: np.ndarray | Sequence[int], basis: np.ndarray | None = None):
        """The tide ``[T, C, H, W]`` (float32, NaN on land) at ``hours`` (hours since 1970)."""
        hours = np.atleast_1d(np.asarray(hours, dtype=np.float64))
        rows = self.basis(hours) if basis is None else basis
        coefs = self.coefficients()
        shape = coefs.shape[1:]
        out = rows @ coefs.reshape(coefs.shape[0], -1)
        return out.reshape(len(hours), *shape).astype(np.float32)

    def coefficients(self) -> np.ndarray:
        """``[1 + 2K, C, H, W]`` in the order of :meth:`basis`."""
        return np.concatenate([self.mean[None], self.cos, self.sin], axis=0)

    def damping_for(self, lead_times: Sequence[int]) -> np.ndarray:
        """``alpha [n_lead, C]`` for ``lead_times`` (DataError if the fit did not compute one)."""
        missing = [h for h in lead_times if h not in self.damping_lead_times]
        if missing:
            raise DataError(
                f"the tidal constants hold no anomaly damping for lead times {missing} h "
                f"(they have {self.damping_lead_times})",
                "refit the tides with those lead times (seacast tides STORE --lead-times ...)",
            )
        rows = [self.damping_lead_times.index(h) for h in lead_times]
        return np.asarray(self.damping[rows], dtype=np.float64)

    def select(self, variables: Sequence[str]) -> TidalConstants:
        """The constants of ``variables`` only, in that order."""
        missing = [v for v in variables if v not in self.variables]
        if missing:
            raise DataError(
                f"the tidal constants have no {missing} (they have {self.variables})",
                "refit the tides for these variables",
            )
        k = [self.variables.index(v) for v in variables]
        return TidalConstants(
            **{
                **self.__dict__,  # the basis cache is shared: same constituents, same basis
                "variables": list(variables),
                "mean": self.mean[k],
                "cos": self.cos[:, k],
                "sin": self.sin[:, k],
                "anomaly_std": self.anomaly_std[k] if self.anomaly_std.size else self.anomaly_std,
                "damping": self.damping[:, k] if self.damping.size else self.damping,
            }
        )

    def provenance(self) -> dict[str, Any]:
        return {
            "period": list(self.period),
            "fit_hours": self.fit_hours,
            "constituents": list(self.constituents),
            "selection": self.selection,
            "method": METHOD,
            "nodal_latitude": self.nodal_latitude,
        }

    # ------------------------------------------------------------------ files

    def to_dataset(self) -> xr.Dataset:
        dims = ("constituent", "variable", "latitude", "longitude")
        ds = xr.Dataset(
            {
                "mean": (dims[1:], self.mean, {"long_name": "mean over the fit period"}),
                "coef_cos": (dims, self.cos, {"long_name": "a_k: coefficient of f cos(V+u)"}),
                "coef_sin": (dims, self.sin, {"long_name": "b_k: coefficient of f sin(V+u)"}),
                "amplitude": (dims, self.amplitude, {"long_name": "amplitude A_k"}),
                "phase": (
                    dims,
                    self.phase,
                    {"long_name": "Greenwich phase lag g_k", "units": "degree"},
                ),
                "anomaly_std": (("variable",), self.anomaly_std),
                "damping": (("lead_time", "variable"), self.damping),
            },
            coords={
                "constituent": self.constituents,
                "variable": self.variables,
                "latitude": self.latitude,
                "longitude": self.longitude,
                "frequency": (
                    "constituent",
                    self.frequencies,
                    {"units": "cycles per hour"},
                ),
                "utide_index": ("constituent", np.asarray(self.lind, dtype=np.int64)),
                "lead_time": (
                    "lead_time",
                    np.asarray(self.damping_lead_times, dtype=np.int64),
                    {"units": "hours"},
                ),
            },
            attrs={
                "title": "seacast harmonic tidal constants",
                "method": METHOD,
                "selection": self.selection,
                "period_start": self.period[0],
                "period_end": self.period[1],
                "fit_hours": int(self.fit_hours),
                "nodal_latitude": float(self.nodal_latitude),
                "store_fingerprint": self.store_fingerprint,
                "damping": "alpha in tide(t0+L) + alpha (obs(t0) - tide(t0)), least squares over the fit period",
            },
        )
        return ds

    @classmethod
    def from_dataset(cls, ds: xr.Dataset) -> TidalConstants:
        return cls(
            variables=[str(v) for v in ds["variable"].values],
            constituents=[str(c) for c in ds["constituent"].values],
            frequencies=np.asarray(ds["frequency"].values, dtype=np.float64),
            lind=np.asarray(ds["utide_index"].values, dtype=np.int64),
            mean=np.asarray(ds["mean"].values, dtype=np.float64),
            cos=np.asarray(ds["coef_cos"].values, dtype=np.float64),
            sin=np.asarray(ds["coef_sin"].values, dtype=np.float64),
            latitude=np.asarray(ds["latitude"].values),
            longitude=np.asarray(ds["longitude"].values),
            nodal_latitude=float(ds.attrs["nodal_latitude"]),
            period=(str(ds.attrs["period_start"]), str(ds.attrs["period_end"])),
            fit_hours=int(ds.attrs["fit_hours"]),
            selection=str(ds.attrs["selection"]),
            anomaly_std=np.asarray(ds["anomaly_std"].values, dtype=np.float64),
            damping=np.asarray(ds["damping"].values, dtype=np.float64),
            damping_lead_times=[int(h) for h in ds["lead_time"].values],
            store_fingerprint=str(ds.attrs.get("store_fingerprint", "")),
        )

    def save(self, path: Path | str) -> Path:
        """Write NetCDF through a temporary name and a rename (a killed write leaves no half file)."""
        path = Path(path)
        with atomic_path(path, suffix=".tmp.nc") as tmp:
            self.to_dataset().to_netcdf(tmp)
        return path


def load_tides(path: Path | str) -> TidalConstants:
    """Read a ``tides.nc`` written by :meth:`TidalConstants.save` (DataError if missing or damaged)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"tidal constants {path} do not exist",
            "fit them with `seacast tides STORE`, or retrain the run (a tide-aware run writes its own)",
        )
    try:
        with xr.open_dataset(path) as ds:
            return TidalConstants.from_dataset(ds.load())
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(
            f"tidal constants {path} cannot be read ({type(exc).__name__}: {exc})",
            "delete the file and fit them again (seacast tides, or retrain the run)",
        ) from None


# --------------------------------------------------------------------------- fitting


def train_periods(plan: Any) -> list[tuple[int, int]]:
    """The inclusive (start, end) hour ranges of a split plan's training selections."""
    return [(int(lo), int(hi)) for selection in plan.train for lo, hi in selection.ranges]


def _selected_indices(hours: np.ndarray, periods: Sequence[tuple[int, int]]) -> np.ndarray:
    inside = np.zeros(len(hours), dtype=bool)
    for lo, hi in periods:
        inside |= (hours >= lo) & (hours <= hi)
    return np.flatnonzero(inside)


def _read(store: xr.Dataset, variables: Sequence[str], index: np.ndarray) -> np.ndarray:
    """Frames ``[len(index), C, H, W]``; contiguous indices are read as one slice."""
    if index.size and index[-1] - index[0] == index.size - 1:
        wanted: slice | np.ndarray = slice(int(index[0]), int(index[-1]) + 1)
    else:
        wanted = index
    return np.stack([np.asarray(store[v].variable[wanted].values) for v in variables], axis=1)


def _plain(store: xr.Dataset) -> xr.Dataset:
    """The store without dask, when it is on disk: whole-chunk reads, no task graph."""
    source = store.encoding.get("source")
    if source and Path(source).exists():
        return xr.open_zarr(source, consolidated=False, zarr_format=3, chunks=None)
    return store


def fit_tides(
    store: xr.Dataset,
    variables: Sequence[str],
    periods: Sequence[tuple[int, int]],
    *,
    constituents: str | Sequence[str] = "auto",
    rayleigh: float = 1.0,
    long_period: bool = False,
    lead_times: Sequence[int] = (),
    nodal_latitude: float | None = None,
    on_chunk: Callable[[int, int], None] | None = None,
) -> TidalConstants:
    """Fit harmonic constants for ``variables`` on the store's times inside ``periods`` only.

    ``periods`` are inclusive hour ranges (hours since 1970), normally :func:`train_periods`
    of the run's split, so no validation or test time reaches the fit. ``lead_times`` adds the
    damping factor of the persisted anomaly for each. ``on_chunk(done, total)`` reports progress
    over the two passes. Memory: the normal equations ``(1+2K)^2`` plus ``(1+2K) x C x H x W``.
    """
    from seacast.store import store_fingerprint, time_hours

    variables = list(variables)
    store = _plain(store)
    hours = np.asarray(time_hours(store["time"].values), dtype=np.int64)
    chosen = _fit_indices(hours, periods)
    fit_hours = hours[chosen]
    record = float(fit_hours[-1] - fit_hours[0])
    names, frequencies, lind = select_constituents(record, constituents, rayleigh, long_period)
    latitude = np.asarray(store["latitude"].values)
    longitude = np.asarray(store["longitude"].values)
    nodal_lat = float(np.mean(latitude)) if nodal_latitude is None else float(nodal_latitude)
    sea = np.asarray(store["sea_mask"].values, dtype=bool)
    n_var, n_sea = len(variables), int(sea.sum())
    n_par = 1 + 2 * len(names)
    if chosen.size < 2 * n_par:
        raise DataError(
            f"{chosen.size} hours cannot determine {n_par} tidal coefficients",
            "fit on a longer period, or name fewer constituents (tides.constituents)",
        )

    chunks = [chosen[i : i + READ_CHUNK_HOURS] for i in range(0, chosen.size, READ_CHUNK_HOURS)]
    total = 2 * len(chunks)
    equations = _NormalEquations(n_par, n_var * n_sea)
    for done, index in enumerate(chunks, 1):
        x = _basis(hours[index].astype(np.float64), lind, frequencies, nodal_lat)
        y = _read(store, variables, index)[..., sea].reshape(len(index), -1).astype(np.float64)
        equations.add(x, y)
        if on_chunk:
            on_chunk(done, total)

    full = np.full((n_par, n_var, *sea.shape), np.nan)
    full[:, :, sea] = equations.solve().reshape(n_par, n_var, n_sea)
    k = len(names)
    constants = TidalConstants(
        variables=variables,
        constituents=names,
        frequencies=frequencies,
        lind=lind,
        mean=full[0],
        cos=full[1 : 1 + k],
        sin=full[1 + k :],
        latitude=latitude,
        longitude=longitude,
        nodal_latitude=nodal_lat,
        period=_period(fit_hours),
        fit_hours=int(chosen.size),
        selection=_selection_text(constituents, rayleigh, record, long_period),
        store_fingerprint=store_fingerprint(store),
    )
    anomaly_statistics(
        constants,
        store,
        chosen,
        hours,
        lead_times,
        on_chunk=(lambda d, _t: on_chunk(len(chunks) + d, total)) if on_chunk else None,
    )
    return constants


def _fit_indices(hours: np.ndarray, periods: Sequence[tuple[int, int]]) -> np.ndarray:
    """The store indices inside ``periods``; a DataError when fewer than two."""
    chosen = _selected_indices(hours, periods)
    if chosen.size < 2:
        described = ", ".join(
            f"{pd.Timestamp(lo, unit='h'):%Y-%m-%d} .. {pd.Timestamp(hi, unit='h'):%Y-%m-%d}"
            for lo, hi in periods
        )
        raise DataError(
            f"the store has {chosen.size} time(s) in the tide-fit period {described or '(none)'}",
            "fit on a period the store covers (seacast store info shows its times)",
        )
    return chosen


class _NormalEquations:
    """The least-squares normal equations of every sea point at once, summed chunk by chunk of hours.

    Points with missing hours keep a correction of the shared matrix, so each is fitted on its own hours.
    """

    def __init__(self, n_par: int, n_points: int) -> None:
        self.n_par = n_par
        self.gram = np.zeros((n_par, n_par))
        self.rhs = np.zeros((n_par, n_points))
        self.missing_gram: dict[int, np.ndarray] = {}
        self.observed = np.zeros(n_points)

    def add(self, x: np.ndarray, y: np.ndarray) -> None:
        """Add the hours of basis ``x [t, n_par]`` and values ``y [t, points]`` (NaN where missing)."""
        finite = np.isfinite(y)
        y = np.where(finite, y, 0.0)
        self.gram += x.T @ x
        self.rhs += x.T @ y
        self.observed += finite.sum(0)
        partial = np.flatnonzero(~finite.all(0))
        if partial.size:
            # a point with missing hours gets its own normal equations: the shared ones minus those hours
            corrections = np.einsum("tj,tp,tq->jpq", (~finite[:, partial]).astype(float), x, x)
            for j, col in enumerate(partial):
                self.missing_gram[int(col)] = self.missing_gram.get(int(col), 0.0) + corrections[j]

    def solve(self) -> np.ndarray:
        """The coefficients ``[n_par, points]``."""
        n_par, observed, rhs = self.n_par, self.observed, self.rhs
        coefs = np.linalg.solve(self.gram, rhs)
        for col, correction in self.missing_gram.items():
            if observed[col] >= 2 * n_par:
                coefs[:, col] = np.linalg.lstsq(self.gram - correction, rhs[:, col], rcond=None)[0]
            else:  # too few hours to fit: the mean of what there is, and no tide
                coefs[:, col] = 0.0
                coefs[0, col] = rhs[0, col] / max(observed[col], 1.0)
        return coefs


def _period(fit_hours: np.ndarray) -> tuple[str, str]:
    """The first and last hour of the fit, as recorded in ``tides.nc``."""
    return (
        f"{pd.Timestamp(int(fit_hours[0]), unit='h'):%Y-%m-%dT%H:%M}",
        f"{pd.Timestamp(int(fit_hours[-1]), unit='h'):%Y-%m-%dT%H:%M}",
    )


def _selection_text(
    constituents: str | Sequence[str], rayleigh: float, record: float, long_period: bool
) -> str:
    """How the constituents were chosen, as recorded in ``tides.nc``."""
    if isinstance(constituents, str):
        return f"Rayleigh criterion {rayleigh:g} over {record / 24:.1f} days" + (
            "" if long_period else ", no long-period constituents"
        )
    return "named in the config"


def anomaly_statistics(
    constants: TidalConstants,
    store: xr.Dataset,
    chosen: np.ndarray,
    hours: np.ndarray,
    lead_times: Sequence[int],
    on_chunk: Callable[[int, int], None] | None = None,
) -> None:
    """Fill ``anomaly_std`` and ``damping`` of ``constants`` from the store's ``chosen`` times.

    ``damping[L, v] = sum a(t) a(t+L) / sum a(t)^2`` over pairs of fit hours ``L`` apart and
    the variable's sea points: the least-squares factor of the persisted anomaly.
    """
    sea = np.asarray(store["sea_mask"].values, dtype=bool)
    lead_times = [int(h) for h in lead_times]
    n_var = len(constants.variables)
    fit_hours = hours[chosen]
    # position in `chosen` of each hour's partner L hours later (or -1)
    partner = {}
    for lead in lead_times:
        pos = np.searchsorted(fit_hours, fit_hours + lead)
        ok = (pos < len(fit_hours)) & (
            fit_hours[np.minimum(pos, len(fit_hours) - 1)] == fit_hours + lead
        )
        partner[lead] = np.where(ok, pos, -1)
    sum_sq = np.zeros(n_var)
    count = np.zeros(n_var)
    cross = np.zeros((len(lead_times), n_var))
    base = np.zeros((len(lead_times), n_var))
    reach = max(lead_times, default=0)
    starts = list(range(0, len(chosen), READ_CHUNK_HOURS))
    for done, start in enumerate(starts, 1):
        stop = min(start + READ_CHUNK_HOURS, len(chosen))
        # the chunk plus the frames its pairs reach, read once
        last = min(len(chosen), stop + reach)
        window = np.arange(start, last)
        frames = _read(store, constants.variables, chosen[window])[..., sea]
        tide = constants.predict(fit_hours[window])[..., sea]
        anomaly = frames - tide  # [t, C, n_sea] float32
        valid = np.isfinite(anomaly)
        anomaly = np.where(valid, anomaly, 0.0).astype(np.float64)
        weight = valid.astype(np.float64)
        own = anomaly[: stop - start]
        sum_sq += np.einsum("tcp,tcp->c", own, own)
        count += weight[: stop - start].sum((0, 2))
        for i, lead in enumerate(lead_times):
            j = partner[lead][start:stop]
            ok = j >= 0
            if not ok.any():
                continue
            a0, a1 = own[ok], anomaly[j[ok] - start]
            # zeros stand in for missing values, so a pair counts only where both exist
            cross[i] += np.einsum("tcp,tcp->c", a0, a1)
            base[i] += np.einsum("tcp,tcp->c", a0 * a0, weight[j[ok] - start])
        if on_chunk:
            on_chunk(done, len(starts))
    with np.errstate(invalid="ignore", divide="ignore"):
        constants.anomaly_std = np.sqrt(sum_sq / np.maximum(count, 1.0))
        constants.damping = np.where(base > 0, cross / np.where(base > 0, base, 1.0), 0.0)
    constants.damping_lead_times = lead_times
