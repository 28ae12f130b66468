"""``source: copernicus``: monthly NetCDF downloads through the Copernicus Marine toolbox.

Offers:

* :func:`fetch_copernicus`: every (dataset, month) of the config, written through
  :func:`seacast.raw.write_month_atomic`; complete months are skipped.
* :func:`plan_copernicus`: what a fetch would write, with size estimates, offline.
* :data:`RAW_SOURCE`: both as the :class:`~seacast.sources.base.RawSource` of ``copernicus``.
* :func:`resolve_credentials` / :func:`require_credentials`: the toolbox's own
  order (environment, credentials file, ``~/.netrc``), read by seacast so the
  toolbox is never left to prompt.
* :func:`login`: ``seacast login``, a wrapper of ``copernicusmarine.login``.
* :class:`ToolboxClient`: the real :class:`~seacast.sources.base.MarineClient`.
* :func:`subset_request`: the exact keywords passed to ``copernicusmarine.subset``.
* :func:`served_version`: the dataset version a download came from (recorded in the manifest).

The toolbox is imported only when a download or a login really happens, so
planning, ``--dry-run`` and the tests never need it or the network. Its own HTTP
retries are capped (:data:`TOOLBOX_NETWORK_DEFAULTS`) so that seacast's
``retries``/``backoff_seconds`` decide how long a failing service is tried.
"""

from __future__ import annotations

import base64
import configparser
import contextlib
import hashlib
import json
import logging
import math
import netrc
import os
import re
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import xarray as xr

from seacast.config import DataConfig, DatasetSpec
from seacast.errors import CredentialsError, DataError, SeacastError
from seacast.interrupts import check_interrupt
from seacast.raw import (
    Manifest,
    MonthFile,
    expected_times,
    in_progress,
    utc_now,
    write_month_atomic,
)
from seacast.sources.base import MarineClient, PlannedFile, ProgressCallback, no_progress

logger = logging.getLogger("seacast")

SOURCE = "copernicus"
ENV_USERNAME = "COPERNICUSMARINE_SERVICE_USERNAME"
ENV_PASSWORD = "COPERNICUSMARINE_SERVICE_PASSWORD"
ENV_CREDENTIALS_DIRECTORY = "COPERNICUSMARINE_CREDENTIALS_DIRECTORY"
# older names the toolbox still honours
_ENV_USERNAME_OLD = "COPERNICUS_MARINE_SERVICE_USERNAME"
_ENV_PASSWORD_OLD = "COPERNICUS_MARINE_SERVICE_PASSWORD"
CREDENTIALS_FILENAME = ".copernicusmarine-credentials"
NETRC_HOSTS = ("auth.marine.copernicus.eu", "my.cmems-du.eu", "nrt.cmems-du.eu")
REGISTER_URL = "https://data.marine.copernicus.eu/register"
HOW_TO_LOG_IN = (
    f"run `seacast login` once (it stores the toolbox's credentials file), or set {ENV_USERNAME} "
    f"and {ENV_PASSWORD}; no account yet? register for free at {REGISTER_URL}"
)

# The toolbox reads these once, when it is imported: set before that (unless the user
# has), they cap its own HTTP retries (5 by default, with backoff, and three rounds of
# them for the login check) so seacast's retries/backoff_seconds decide the total time.
TOOLBOX_NETWORK_DEFAULTS = {
    "COPERNICUSMARINE_HTTPS_RETRIES": "1",
    "COPERNICUSMARINE_HTTPS_TIMEOUT": "30",
}
AUTH_UNREACHABLE = "CouldNotConnectToAuthenticationSystem"
# Toolbox exceptions share no base class, so they are recognised by class name
# (tests check every name below still exists in the installed toolbox).
CREDENTIALS_ERRORS = (
    "CredentialsCannotBeNone",
    "InvalidUsernameOrPassword",
)
PERMANENT_ERRORS: dict[str, str] = {
    "DatasetNotFound": "check copernicus.datasets[].id against the product page on data.marine.copernicus.eu",
    "DatasetVersionNotFound": "change copernicus.datasets[].version, or leave it empty for the latest version",
    "DatasetVersionPartNotFound": "change copernicus.datasets[].version, or leave it empty for the latest version",
    "ProductNotFound": "check copernicus.product and the dataset ids",
    "VariableDoesNotExistInTheDataset": "check copernicus.datasets[].variables (CMEMS short names such as zos, uo, vo, so, thetao)",
    "CoordinatesOutOfDatasetBounds": (
        "check bbox, months and depths against the dataset's extent: the NWS analysis-forecast product keeps "
        "only about two years (older months: configs/data/nws_multiyear.yaml), the multi-year one ends a few "
        "months before present"
    ),
    "WrongDatetimeFormat": "write months as YYYY-MM, e.g. months=2024-01:2024-03",
    "NoServiceAvailable": "this dataset has no subset service; pick another dataset id",
    "ServiceNotSupported": "this dataset has no subset service; pick another dataset id",
    "FormatNotSupported": "report this: seacast asks for NetCDF, which the toolbox should support",
}
TRANSIENT_ERRORS = (
    AUTH_UNREACHABLE,  # the login service is down or unreachable: not the credentials' fault
    "ServiceNotAvailable",
    "DatasetUpdating",
    "ConnectionError",
    "TimeoutError",
    "Timeout",
    "ChunkedEncodingError",
    "ContentDecodingError",
    "EndpointConnectionError",
    "ConnectTimeoutError",
    "ReadTimeoutError",
    "ClientConnectionError",
    "ServerDisconnectedError",
    "IncompleteRead",
    "ProtocolError",
)
ErrorKind = Literal["credentials", "permanent", "transient", "prompt", "unknown"]


# --------------------------------------------------------------------------- credentials


@dataclass(frozen=True)
class Credentials:
    """A Copernicus Marine username and password, and where seacast found them."""

    username: str
    password: str = field(repr=False)
    origin: str = "arguments"


def credentials_directory(env: Mapping[str, str] | None = None, home: Path | None = None) -> Path:
    """The folder of the toolbox's credentials file (``$COPERNICUSMARINE_CREDENTIALS_DIRECTORY`` or ``~/.copernicusmarine``)."""
    env = os.environ if env is None else env
    if env.get(ENV_CREDENTIALS_DIRECTORY):
        return Path(env[ENV_CREDENTIALS_DIRECTORY])
    return (home or Path.home()) / ".copernicusmarine"


def _read_credentials_file(path: Path) -> tuple[str | None, str | None]:
    """The toolbox's file: base64 of an INI text with a ``[credentials]`` section."""
    try:
        text = base64.standard_b64decode(path.read_text().strip()).decode("utf8")
        parser = configparser.RawConfigParser()
        parser.read_string(text)
        return parser.get("credentials", "username", fallback=None), parser.get(
            "credentials", "password", fallback=None
        )
    except (ValueError, configparser.Error, UnicodeDecodeError) as exc:
        raise CredentialsError(
            f"the Copernicus Marine credentials file {path} cannot be read ({exc})",
            f"delete it and {HOW_TO_LOG_IN}",
        ) from None


def _read_netrc(path: Path) -> tuple[str | None, str | None]:
    try:
        parsed = netrc.netrc(str(path))
    except (netrc.NetrcParseError, OSError) as exc:
        raise CredentialsError(
            f"{path} cannot be read ({exc})", "fix it (chmod 600 ~/.netrc) or " + HOW_TO_LOG_IN
        ) from None
    for host in NETRC_HOSTS:
        entry = parsed.authenticators(host)
        if entry:
            return entry[0], entry[2]
    return None, None


def resolve_credentials(
    env: Mapping[str, str] | None = None, home: Path | None = None
) -> Credentials | None:
    """Credentials in the toolbox's order: environment, credentials file, ``~/.netrc``; None if none.

    Read here, at call time, because the toolbox reads its environment
    variables once at import; seacast then passes them explicitly.
    """
    env = os.environ if env is None else env
    home = home or Path.home()
    username = env.get(ENV_USERNAME) or env.get(_ENV_USERNAME_OLD)
    password = env.get(ENV_PASSWORD) or env.get(_ENV_PASSWORD_OLD)
    if username and password:
        return Credentials(username, password, f"environment ({ENV_USERNAME}/{ENV_PASSWORD})")
    credentials_file = credentials_directory(env, home) / CREDENTIALS_FILENAME
    if credentials_file.is_file():
        username, password = _read_credentials_file(credentials_file)
        if username and password:
            return Credentials(username, password, str(credentials_file))
    netrc_file = home / ".netrc"
    if netrc_file.is_file():
        username, password = _read_netrc(netrc_file)
        if username and password:
            return Credentials(username, password, str(netrc_file))
    return None


def require_credentials(
    env: Mapping[str, str] | None = None, home: Path | None = None
) -> Credentials:
    """:func:`resolve_credentials`, or a CredentialsError that says how to log in."""
    found = resolve_credentials(env, home)
    if found is None:
        env = os.environ if env is None else env
        where = credentials_directory(env, home) / CREDENTIALS_FILENAME
        raise CredentialsError(
            f"no Copernicus Marine credentials found (looked at {ENV_USERNAME}/{ENV_PASSWORD}, {where} and ~/.netrc)",
            HOW_TO_LOG_IN,
        )
    return found


# --------------------------------------------------------------------------- the toolbox


@contextlib.contextmanager
def _stdin_closed() -> Iterator[None]:
    """Give the toolbox an empty stdin: a prompt it might reach then fails at once instead of hanging."""
    saved = sys.stdin
    with open(os.devnull) as empty:
        sys.stdin = empty
        try:
            yield
        finally:
            sys.stdin = saved


def toolbox_environment(env: MutableMapping[str, str] | None = None) -> dict[str, str]:
    """Set the toolbox's network variables the user has not set (:data:`TOOLBOX_NETWORK_DEFAULTS`).

    Returns those it set. It must run before ``copernicusmarine`` is first imported.
    """
    env = os.environ if env is None else env
    added = {name: value for name, value in TOOLBOX_NETWORK_DEFAULTS.items() if not env.get(name)}
    env.update(added)
    return added


def _in_worker_thread(call: Callable[[], Any], name: str) -> Any:
    """``call()`` in a daemon thread while this thread waits, watching for Ctrl-C.

    The toolbox writes its NetCDF through xarray and dask: a KeyboardInterrupt raised
    inside that write leaves xarray's file lock held and the close after it hangs. Here
    Ctrl-C lands in this wait instead; the worker is left to end with the process and
    the caller removes the temporary files (:func:`seacast.raw.write_month_atomic`).
    """
    outcome: dict[str, Any] = {}
    done = threading.Event()

    def work() -> None:
        try:
            outcome["value"] = call()
        except BaseException as exc:  # handed to the waiting thread
            outcome["error"] = exc
        finally:
            done.set()

    threading.Thread(target=work, name=name, daemon=True).start()
    while not done.wait(0.1):
        check_interrupt()  # a Ctrl-C held by seacast.interrupts.safe_points
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]


_SELECTED_VERSION = re.compile(r'Selected dataset version: "([^"]+)"')


class _VersionNote(logging.Filter):
    """Notes the version in the toolbox's "Selected dataset version" line; passes only records at ``level`` or above."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level
        self.version: str | None = None

    def filter(self, record: logging.LogRecord) -> bool:
        match = _SELECTED_VERSION.search(str(record.msg))
        if match:
            self.version = match.group(1)
        return record.levelno >= self.level


@dataclass(frozen=True)
class ServedSubset:
    """The toolbox's answer to ``subset`` plus the dataset version it served.

    ``ResponseSubset`` has no version field; the toolbox only logs the one it selected.
    Other attributes are the response's.
    """

    response: Any
    dataset_version: str | None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.response, name)


class ToolboxClient:
    """The real :class:`MarineClient`: ``copernicusmarine`` imported on first use, never prompting."""

    def __init__(self, log_level: int = logging.WARNING) -> None:
        self.log_level = log_level

    def _toolbox(self) -> Any:
        toolbox_environment()  # before the import: the toolbox reads them once
        try:
            import copernicusmarine
        except ImportError as exc:  # pragma: no cover - it is a dependency
            raise DataError(
                f"the Copernicus Marine toolbox cannot be imported ({exc})",
                "pip install copernicusmarine",
            ) from None
        # its INFO lines would break the progress bar; warnings still show
        logging.getLogger("copernicusmarine").setLevel(self.log_level)
        return copernicusmarine

    def subset(self, **kwargs: Any) -> ServedSubset:
        toolbox = self._toolbox()
        # the INFO line naming the selected version is noted, not shown
        toolbox_logger = logging.getLogger("copernicusmarine")
        note = _VersionNote(self.log_level)
        toolbox_logger.setLevel(min(self.log_level, logging.INFO))
        toolbox_logger.addFilter(note)
        try:
            with _stdin_closed():
                response = _in_worker_thread(
                    lambda: toolbox.subset(**kwargs), "copernicusmarine subset"
                )
        finally:
            toolbox_logger.removeFilter(note)
            toolbox_logger.setLevel(self.log_level)
        return ServedSubset(response, note.version or kwargs.get("dataset_version"))

    def login(self, username: str, password: str, **kwargs: Any) -> bool:
        toolbox = self._toolbox()
        with _stdin_closed():
            return bool(toolbox.login(username=username, password=password, **kwargs))


def classify_error(exc: BaseException) -> ErrorKind:
    """What a toolbox (or network) exception means for seacast."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    if names & set(CREDENTIALS_ERRORS):
        return "credentials"
    if names & set(PERMANENT_ERRORS):
        return "permanent"
    if "Abort" in names:  # click's answer to a prompt on an empty stdin
        return "prompt"
    if names & set(TRANSIENT_ERRORS):
        return "transient"
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(status, int):
        return "transient" if status >= 500 or status == 429 else "permanent"
    return "unknown"


def _reason(exc: BaseException) -> str:
    text = str(exc).strip()
    if not text or text == "None":
        text = (type(exc).__doc__ or "").strip().split("\n")[0]
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _auth_unreachable(exc: BaseException) -> bool:
    return AUTH_UNREACHABLE in {c.__name__ for c in type(exc).__mro__}


def translate_error(exc: BaseException, what: str) -> Exception:
    """The seacast error for a toolbox exception raised while doing ``what``."""
    kind = classify_error(exc)
    name = next((c.__name__ for c in type(exc).__mro__ if c.__name__ in PERMANENT_ERRORS), "")
    if _auth_unreachable(exc):
        return DataError(
            f"{what}: could not reach the Copernicus Marine login service (auth.marine.copernicus.eu)",
            "check the network (and that auth.marine.copernicus.eu is not blocked), then run again; "
            "if the service is down, later",
        )
    if kind == "credentials":
        return CredentialsError(
            f"{what}: Copernicus Marine rejected the credentials ({_reason(exc)})",
            "check the username and password; " + HOW_TO_LOG_IN,
        )
    if kind == "prompt":
        return CredentialsError(f"{what}: the Copernicus toolbox asked for input", HOW_TO_LOG_IN)
    if kind == "permanent":
        return DataError(
            f"{what} was refused by Copernicus Marine: {_reason(exc)}", PERMANENT_ERRORS[name]
        )
    if kind == "transient":
        return DataError(
            f"{what} failed: the Copernicus Marine service is unavailable ({_reason(exc)})",
            "run the same command again later; complete months are kept and skipped",
        )
    return DataError(
        f"{what} failed: {_reason(exc)}",
        "run again; if it persists, run with the toolbox directly to see more",
    )


def interruptible_sleep(seconds: float) -> None:
    """``time.sleep`` that a Ctrl-C held by :func:`seacast.interrupts.safe_points` cuts short.

    A plain sleep resumes after the deferring SIGINT handler returns, so a backoff of
    minutes would outlast the Ctrl-C.
    """
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        check_interrupt()
        time.sleep(min(left, 0.1))
    check_interrupt()


def call_with_retries(
    call: Callable[[], Any],
    what: str,
    retries: int,
    backoff_seconds: float,
    sleep: Callable[[float], None] = interruptible_sleep,
    on_retry: Callable[[str], None] | None = None,
) -> Any:
    """``call()``, retrying transient failures ``retries`` times with doubling backoff; others raise at once."""
    for attempt in range(retries + 1):
        try:
            return call()
        except (KeyboardInterrupt, SystemExit, SeacastError):
            raise
        except Exception as exc:
            kind = classify_error(exc)
            if kind != "transient" or attempt == retries:
                error = translate_error(exc, what)
                if kind == "transient" and _auth_unreachable(exc):
                    error = DataError(
                        f"{what}: could not reach the Copernicus Marine login service "
                        f"(auth.marine.copernicus.eu) in {retries + 1} tries",
                        "check the network (and that auth.marine.copernicus.eu is not blocked); if the "
                        "service is down, run the same command again later (complete months are kept "
                        "and skipped), or raise copernicus.retries / backoff_seconds",
                    )
                elif kind == "transient":
                    error = DataError(
                        f"{what} failed after {retries + 1} tries: {_reason(exc)}",
                        "the Copernicus Marine service seems down; run the same command again later "
                        "(complete months are kept and skipped)",
                    )
                raise error from exc
            delay = backoff_seconds * 2**attempt
            if on_retry is not None:
                on_retry(f"{what}: {_reason(exc)}; retry {attempt + 1}/{retries} in {delay:g} s")
            sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- requests and plan


def month_bounds(month: str, step_hours: float, now: pd.Timestamp | None = None) -> tuple[str, str]:
    """First and last time step of a month, as the ISO strings the toolbox takes.

    With ``now`` inside the month, the last step is the latest one not after
    ``now``: later hours of an analysis-forecast dataset are forecasts, not data.
    """
    times = expected_times(month, step_hours)
    last = pd.Timestamp(times[-1])
    if now is not None and pd.Timestamp(times[0]) <= now < last:
        last = pd.Timestamp(times[times <= now.to_datetime64()][-1])
    return pd.Timestamp(times[0]).strftime("%Y-%m-%dT%H:%M:%S"), last.strftime("%Y-%m-%dT%H:%M:%S")


def subset_request(
    cfg: DataConfig,
    spec: DatasetSpec,
    month: str,
    output: Path,
    credentials: Credentials | None = None,
    now: pd.Timestamp | None = None,
) -> dict[str, Any]:
    """The keywords seacast passes to ``copernicusmarine.subset`` for one dataset and month.

    ``now`` caps the current month at the present hour (see :func:`month_bounds`).
    """
    source = cfg.copernicus
    start, end = month_bounds(month, spec.step_hours, now)
    request: dict[str, Any] = {
        "dataset_id": spec.id,
        "variables": list(spec.variables),
        "minimum_longitude": cfg.bbox.lon_min,
        "maximum_longitude": cfg.bbox.lon_max,
        "minimum_latitude": cfg.bbox.lat_min,
        "maximum_latitude": cfg.bbox.lat_max,
        "start_datetime": start,
        "end_datetime": end,
        "coordinates_selection_method": source.coordinates_selection_method,
        "file_format": "netcdf",
        "output_directory": str(output.parent),
        "output_filename": output.name,
        "overwrite": True,
        "disable_progress_bar": True,
        "netcdf_compression_level": source.netcdf_compression_level,
        # a month that overlaps an update in progress would mix old and new data
        "raise_if_updating": True,
    }
    if spec.version:
        request["dataset_version"] = spec.version
    if source.min_depth is not None:
        request["minimum_depth"] = source.min_depth
    if source.max_depth is not None:
        request["maximum_depth"] = source.max_depth
    if credentials is not None:
        request["username"] = credentials.username
        request["password"] = credentials.password
    return request


def request_fingerprint(cfg: DataConfig, spec: DatasetSpec, month: str) -> str:
    """A hash of what decides a month file's contents (not where it is written or who asks)."""
    request = subset_request(cfg, spec, month, Path("x.nc"))
    for key in ("output_directory", "output_filename", "overwrite", "disable_progress_bar"):
        request.pop(key)
    return hashlib.sha256(json.dumps(request, sort_keys=True).encode()).hexdigest()[:16]


def estimate_grid(cfg: DataConfig) -> tuple[int, int]:
    """Approximate (ny, nx) of the bbox at ``copernicus.grid_km`` spacing."""
    km_per_degree = 111.2
    mid_lat = math.radians((cfg.bbox.lat_min + cfg.bbox.lat_max) / 2)
    ny = (
        math.ceil((cfg.bbox.lat_max - cfg.bbox.lat_min) * km_per_degree / cfg.copernicus.grid_km)
        + 1
    )
    nx = (
        math.ceil(
            (cfg.bbox.lon_max - cfg.bbox.lon_min)
            * km_per_degree
            * math.cos(mid_lat)
            / cfg.copernicus.grid_km
        )
        + 1
    )
    return ny, nx


def plan_copernicus(cfg: DataConfig, force: bool = False) -> list[PlannedFile]:
    """Every (dataset, month) file of the config, whether it is complete, and its estimated size (offline)."""
    manifest = Manifest(cfg.raw_dir, SOURCE)
    ny, nx = estimate_grid(cfg)
    planned = []
    for spec in cfg.copernicus.datasets:
        for month in cfg.months.months():
            item = MonthFile(SOURCE, spec.id, month)
            hours = len(expected_times(month, spec.step_hours))
            planned.append(
                PlannedFile(
                    source=SOURCE,
                    dataset=spec.id,
                    month=month,
                    variables=tuple(spec.variables),
                    path=item.path(cfg.raw_dir),
                    estimated_bytes=ny * nx * hours * len(spec.variables) * 4,
                    complete=not force
                    and manifest.is_complete(
                        item, cfg.raw_dir, request_fingerprint(cfg, spec, month)
                    ),
                )
            )
    return planned


# --------------------------------------------------------------------------- fetch


def _download(client: MarineClient, request: dict[str, Any], tmp: Path, what: str) -> Any:
    response = client.subset(**request)
    status = getattr(response, "status", None)
    if str(getattr(status, "value", status)) == "003":  # StatusCode.NO_DATA_TO_DOWNLOAD
        raise DataError(
            f"{what}: Copernicus Marine has no data for this request ({getattr(response, 'message', '')})",
            "check that the dataset covers this month and region; if the month is recent, fetch it again later",
        )
    written = getattr(response, "file_path", None)
    if not tmp.exists() and written and Path(written).exists() and Path(written) != tmp:
        os.replace(written, tmp)  # the toolbox chose another name; bring it back to ours
    return response


def served_version(response: Any, path: Path, spec: DatasetSpec) -> str | None:
    """The version of ``spec``'s dataset that a download came from; None if nothing tells.

    In order: the response (:class:`ToolboxClient` notes the version the toolbox
    selected), the file's ``subset:datasetId`` attribute (``<id>_<version>``, written by
    older toolboxes), the version pinned in the config.
    """
    version = getattr(response, "dataset_version", None)
    if version:
        return str(version)
    with contextlib.suppress(Exception), xr.open_dataset(path) as ds:  # a bad file fails its check
        served = str(ds.attrs.get("subset:datasetId", ""))
        match = re.fullmatch(re.escape(spec.id) + r"_(\d{6})", served)
        if match:
            return match.group(1)
    return spec.version


def _stale_months(
    manifest: Manifest, planned: list[PlannedFile], spec: DatasetSpec, version: str
) -> list[str]:
    """Complete months of ``spec`` recorded with another served version than ``version``.

    Months with no recorded version (fetched by an older seacast) are left alone, as are
    those a refetch from ``version`` could not replace (``kept_for_version``).
    """
    stale = []
    for p in planned:
        entry = manifest.entries.get(MonthFile(SOURCE, spec.id, p.month).key, {})
        recorded = entry.get("dataset_version")
        if (
            p.complete
            and p.dataset == spec.id
            and recorded not in (None, version)
            and entry.get("kept_for_version") != version
        ):
            stale.append(p.month)
    return stale


def fetch_copernicus(
    cfg: DataConfig,
    client: MarineClient | None = None,
    force: bool = False,
    progress: ProgressCallback = no_progress,
    credentials: Credentials | None = None,
    sleep: Callable[[float], None] = interruptible_sleep,
    log: Callable[[str], None] | None = None,
    now: pd.Timestamp | None = None,
) -> list[Path]:
    """Download every (dataset, month) of ``cfg`` that is not complete yet; return all month files.

    Credentials are resolved before anything else touches the network, and a
    missing one fails at once. Transient service failures (the login service
    unreachable included) are retried with backoff; a month that comes back empty
    or incomplete is reported at the end (the other months are still written);
    any other refusal stops the fetch. The current month (``now``, UTC by default)
    is fetched up to the present hour and recorded as in progress, so each run
    refreshes it until it is over.

    The manifest records the dataset version each month was served from. When a
    download shows that a dataset is now served in another version, its complete
    months of the older version are fetched again in the same run, so a store never
    mixes versions; one that cannot be (say, it left the rolling archive) is kept,
    with a warning, and not tried again for that version.
    """
    now = now or utc_now()
    planned = plan_copernicus(cfg, force=force)
    specs = {spec.id: spec for spec in cfg.copernicus.datasets}
    manifest = Manifest(cfg.raw_dir, SOURCE)
    todo = [p for p in planned if not p.complete]
    for done in planned:
        if done.complete:
            progress(done.label)
    if todo:
        credentials = credentials or require_credentials()
        client = client or ToolboxClient()
    run = _FetchRun(cfg, client, credentials, sleep, log, now, manifest)
    # (dataset, month, the version now served when it is a complete month of an older one)
    queue: list[tuple[DatasetSpec, str, str | None]] = [
        (specs[p.dataset], p.month, None) for p in todo
    ]
    versions_checked: set[str] = set()
    failures: list[str] = []
    while queue:
        spec, month, newer = queue.pop(0)
        version = run.fetch_month(spec, month, newer, failures)
        if newer is not None:
            continue
        progress(f"{spec.id} {month}")
        if version and spec.id not in versions_checked:
            versions_checked.add(spec.id)
            queue.extend(run.months_to_refetch(planned, spec, version))
    if failures:
        raise DataError(
            f"{len(failures)} of {len(planned)} month file(s) could not be completed:\n    - "
            + "\n    - ".join(failures),
            "the other months are saved; run the same command again later to fetch the missing ones",
        )
    return [p.path for p in planned if p.path is not None]


@dataclass
class _FetchRun:
    """What every month of one :func:`fetch_copernicus` shares: the service, the manifest, the clock."""

    cfg: DataConfig
    client: MarineClient | None
    credentials: Credentials | None
    sleep: Callable[[float], None]
    log: Callable[[str], None] | None  # retries and warnings; the module's logger if None
    now: pd.Timestamp
    manifest: Manifest

    def say(self, message: str) -> None:
        (self.log or logger.warning)(message)

    def fetch_month(
        self, spec: DatasetSpec, month: str, newer: str | None, failures: list[str]
    ) -> str | None:
        """Write one month file; returns the dataset version it was served in.

        ``newer``: the month is complete in an older version and fetched again from this one; if
        that fails the month is kept. A month that comes back empty or incomplete is added to
        ``failures``; a refusal by the service is raised.
        """
        cfg, manifest = self.cfg, self.manifest
        item = MonthFile(SOURCE, spec.id, month)
        running = in_progress(month, self.now)
        old_version = manifest.entries.get(item.key, {}).get("dataset_version")
        info: dict[str, Any] = {
            "request": request_fingerprint(cfg, spec, month),
            "dataset_version": spec.version,
            "variables": list(spec.variables),
            "in_progress": running,
        }
        try:
            write_month_atomic(
                item,
                cfg.raw_dir,
                self._writer(spec, month, info),
                spec.variables,
                manifest,
                step_hours=spec.step_hours,
                check_times=not running,
                info=info,
            )
        except DataError as exc:
            if newer is not None:
                self._keep_older_version(exc, item, old_version, newer)
                return None
            if exc.__cause__ is not None:
                raise  # a refusal by the service: every other month would fail alike
            failures.append(str(exc.problem))
        return info["dataset_version"]

    def _writer(
        self, spec: DatasetSpec, month: str, info: dict[str, Any]
    ) -> Callable[[Path], None]:
        """What :func:`write_month_atomic` calls to fill the temporary file: one subset download, retried.

        It records the dataset version the service answered with in ``info``.
        """
        what = f"the download of {spec.id} for {month}"

        def write(tmp: Path) -> None:
            request = subset_request(self.cfg, spec, month, tmp, self.credentials, now=self.now)
            response = call_with_retries(
                lambda: _download(self.client, request, tmp, what),
                what,
                self.cfg.copernicus.retries,
                self.cfg.copernicus.backoff_seconds,
                sleep=self.sleep,
                on_retry=self.log,
            )
            check_interrupt()  # a Ctrl-C during the download: stop before checking the file
            info["dataset_version"] = served_version(response, tmp, spec)

        return write

    def _keep_older_version(
        self, exc: DataError, item: MonthFile, old_version: str | None, newer: str
    ) -> None:
        """A complete month could not be fetched again in the newer version: keep it, with a warning."""
        self.say(
            f"kept {item.dataset} {item.month} as served in version {old_version}: "
            f"fetching it from version {newer} failed ({exc.problem})"
        )
        transient = exc.__cause__ is not None and classify_error(exc.__cause__) == "transient"
        if not transient and item.key in self.manifest.entries:
            # not asked for again until the version changes once more
            self.manifest.entries[item.key]["kept_for_version"] = newer
            self.manifest.save()

    def months_to_refetch(
        self, planned: list[PlannedFile], spec: DatasetSpec, version: str
    ) -> list[tuple[DatasetSpec, str, str | None]]:
        """The complete months of ``spec`` served in an older version than ``version``, to fetch again."""
        stale = _stale_months(self.manifest, planned, spec, version)
        if stale:
            self.say(
                f"{spec.id} is now served in version {version}: fetching {len(stale)} complete "
                f"month(s) of an older version again ({', '.join(stale)})"
            )
        return [(spec, m, version) for m in stale]


def login(
    username: str,
    password: str,
    client: MarineClient | None = None,
    directory: Path | None = None,
) -> Path:
    """Check the credentials with Copernicus Marine and store them in the toolbox's credentials file."""
    if not username or not password:
        raise CredentialsError("both a username and a password are needed to log in", HOW_TO_LOG_IN)
    client = client or ToolboxClient()
    directory = directory or credentials_directory()
    what = "the Copernicus Marine login"
    try:
        ok = client.login(
            username=username,
            password=password,
            configuration_file_directory=directory,
            # the toolbox would otherwise ask before replacing an existing file
            force_overwrite=True,
        )
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:
        raise translate_error(exc, what) from exc
    if not ok:
        raise CredentialsError(
            f"Copernicus Marine rejected the username '{username}' or its password",
            f"check them (recover them at https://help.marine.copernicus.eu); register at {REGISTER_URL}",
        )
    return directory / CREDENTIALS_FILENAME


# --------------------------------------------------------------------------- the source


class CopernicusRaw:
    """``source: copernicus`` as a :class:`~seacast.sources.base.RawSource`."""

    name = SOURCE

    def plan(self, cfg: DataConfig, force: bool = False) -> list[PlannedFile]:
        return plan_copernicus(cfg, force)

    def notes(self, cfg: DataConfig) -> list[str]:
        ny, nx = estimate_grid(cfg)
        return [
            f"product {cfg.copernicus.product}; bbox {cfg.bbox.lat_min}..{cfg.bbox.lat_max} N, "
            f"{cfg.bbox.lon_min}..{cfg.bbox.lon_max} E; about {ny} x {nx} points at {cfg.copernicus.grid_km:g} km",
            "sizes assume float32, one depth level, no compression",
        ]

    def fetch(
        self,
        cfg: DataConfig,
        *,
        force: bool = False,
        progress: ProgressCallback = no_progress,
        client: MarineClient | None = None,
        log: Callable[[str], None] | None = None,
    ) -> list[Path]:
        return fetch_copernicus(cfg, client=client, force=force, progress=progress, log=log)

    def datasets(self, cfg: DataConfig) -> list[str]:
        return [spec.id for spec in cfg.copernicus.datasets]


RAW_SOURCE = CopernicusRaw()
