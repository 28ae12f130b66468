"""Every keyword seacast passes to the Copernicus Marine toolbox, checked against the installed toolbox.

A renamed or removed argument (or exception class) then fails here, in CI, not
at a user's first download. Nothing here touches the network: the toolbox
functions are replaced by recorders that bind to the real signatures.
"""

from __future__ import annotations

import inspect
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

copernicusmarine = pytest.importorskip("copernicusmarine")

from helpers_fetch import FakeMarineClient, med_config  # noqa: E402

from seacast.config import DataConfig, load_config  # noqa: E402
from seacast.errors import CredentialsError, DataError  # noqa: E402
from seacast.interrupts import safe_points  # noqa: E402
from seacast.sources import copernicus  # noqa: E402
from seacast.sources.copernicus import (  # noqa: E402
    CREDENTIALS_ERRORS,
    PERMANENT_ERRORS,
    TOOLBOX_NETWORK_DEFAULTS,
    TRANSIENT_ERRORS,
    Credentials,
    ToolboxClient,
    classify_error,
    fetch_copernicus,
    subset_request,
    toolbox_environment,
    translate_error,
)

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures"


def _check_against(function: Any, kwargs: dict[str, Any]) -> None:
    """Bind ``kwargs`` to ``function``'s signature and check Literal-typed values are allowed ones."""
    signature = inspect.signature(function)
    unknown = sorted(set(kwargs) - set(signature.parameters))
    assert not unknown, f"{function.__name__} has no parameter(s) {unknown}"
    signature.bind(**kwargs)
    hints = typing.get_type_hints(function)
    for name, value in kwargs.items():
        allowed = _literal_values(hints.get(name))
        if allowed:
            assert value in allowed, f"{function.__name__}({name}={value!r}): allowed {allowed}"


def _literal_values(annotation: Any) -> set[Any]:
    if annotation is None:
        return set()
    if typing.get_origin(annotation) is typing.Literal:
        return set(typing.get_args(annotation))
    values: set[Any] = set()
    for arg in typing.get_args(annotation):
        values |= _literal_values(arg)
    return values


def _full_config(tmp_path: Path) -> DataConfig:
    """The shipped config with every optional keyword switched on (version, depths)."""
    cfg = load_config(
        DataConfig,
        PROJECT_ROOT / "configs/data/nws_dutch_coast.yaml",
        [f"raw_dir={tmp_path}", "copernicus.min_depth=0", "copernicus.max_depth=1"],
    )
    cfg.copernicus.datasets[0] = cfg.copernicus.datasets[0].model_copy(update={"version": "202511"})
    return cfg


def test_subset_request_matches_the_toolbox_signature(tmp_path: Path) -> None:
    cfg = _full_config(tmp_path)
    request = subset_request(
        cfg,
        cfg.copernicus.datasets[0],
        "2026-01",
        tmp_path / ".2026-01.partial.nc",
        Credentials("u", "p"),
    )
    assert {"dataset_version", "minimum_depth", "maximum_depth", "username", "password"} <= set(
        request
    )
    _check_against(copernicusmarine.subset, request)
    # the temp name keeps .nc, or the toolbox would append one and write elsewhere
    assert request["output_filename"].endswith(".nc")


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"real CMEMS fixtures not found at {FIXTURES}")
def test_keywords_of_a_real_fetch_and_login_match_the_toolbox(tmp_path: Path) -> None:
    client = FakeMarineClient(FIXTURES)
    fetch_copernicus(
        med_config(tmp_path / "raw", months="2024-01"),
        client=client,
        credentials=Credentials("u", "p"),
    )
    assert client.calls
    for call in client.calls:
        _check_against(copernicusmarine.subset, call)
    copernicus.login("u", "p", client=client, directory=tmp_path)
    for call in client.login_calls:
        _check_against(copernicusmarine.login, call)


def test_toolbox_client_forwards_without_a_usable_stdin(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    seen: dict[str, Any] = {}
    real_subset, real_login = copernicusmarine.subset, copernicusmarine.login

    def fake_subset(**kwargs: Any) -> Any:
        _check_against(real_subset, kwargs)
        seen["subset_stdin"] = sys.stdin.read()  # a prompt would read this: it must be empty
        return SimpleNamespace(
            status="000", file_path=Path(kwargs["output_directory"]) / kwargs["output_filename"]
        )

    def fake_login(**kwargs: Any) -> bool:
        _check_against(real_login, kwargs)
        seen["login"] = kwargs
        return True

    monkeypatch.setattr(copernicusmarine, "subset", fake_subset)
    monkeypatch.setattr(copernicusmarine, "login", fake_login)
    cfg = _full_config(tmp_path)
    client = ToolboxClient()
    client.subset(
        **subset_request(
            cfg, cfg.copernicus.datasets[1], "2026-02", tmp_path / "x.nc", Credentials("u", "p")
        )
    )
    assert seen["subset_stdin"] == ""
    assert logging.getLogger("copernicusmarine").level == logging.WARNING
    assert (
        copernicus.login("u", "p", client=client, directory=tmp_path)
        == tmp_path / ".copernicusmarine-credentials"
    )
    assert seen["login"]["force_overwrite"] is True  # no "overwrite?" prompt


def test_every_error_name_seacast_maps_exists_in_the_toolbox() -> None:
    toolbox_names = [n for n in TRANSIENT_ERRORS if n in {"ServiceNotAvailable", "DatasetUpdating"}]
    toolbox_names.append("CouldNotConnectToAuthenticationSystem")
    for name in (*CREDENTIALS_ERRORS, *PERMANENT_ERRORS, *toolbox_names):
        cls = getattr(copernicusmarine, name, None)
        assert isinstance(cls, type) and issubclass(cls, Exception), (
            f"copernicusmarine.{name} is gone"
        )


def test_toolbox_errors_are_classified_and_reworded() -> None:
    import requests

    assert classify_error(copernicusmarine.InvalidUsernameOrPassword("x")) == "credentials"
    assert classify_error(copernicusmarine.CredentialsCannotBeNone("username")) == "credentials"
    assert classify_error(copernicusmarine.ServiceNotAvailable()) == "transient"
    assert classify_error(copernicusmarine.DatasetUpdating("updating")) == "transient"
    assert classify_error(requests.exceptions.ConnectionError("reset")) == "transient"
    assert classify_error(requests.exceptions.ReadTimeout("slow")) == "transient"
    assert classify_error(copernicusmarine.WrongDatetimeFormat("2024-13")) == "permanent"
    assert classify_error(ValueError("something else")) == "unknown"
    bounds = translate_error(
        copernicusmarine.CoordinatesOutOfDatasetBounds("time exceeds [2024-11-01, 2026-11-29]"), "x"
    )
    assert (
        isinstance(bounds, DataError)
        and "exceeds [2024-11-01" in str(bounds)
        and "nws_multiyear" in str(bounds)
    )
    # an unreachable login service is the network's fault, not the credentials'
    unreachable = copernicusmarine.CouldNotConnectToAuthenticationSystem()
    assert classify_error(unreachable) == "transient"
    auth = translate_error(unreachable, "x")
    assert not isinstance(auth, CredentialsError) and "auth.marine.copernicus.eu" in str(auth)
    assert isinstance(
        translate_error(copernicusmarine.InvalidUsernameOrPassword("x"), "x"), CredentialsError
    )


@pytest.mark.skipif(not FIXTURES.is_dir(), reason=f"real CMEMS fixtures not found at {FIXTURES}")
def test_unreachable_login_service_is_retried_with_seacasts_backoff(tmp_path: Path) -> None:
    creds = Credentials("u", "p")
    down = copernicusmarine.CouldNotConnectToAuthenticationSystem
    cfg = med_config(tmp_path / "raw", months="2024-01", retries=3, backoff_seconds=2.0)
    client = FakeMarineClient(FIXTURES, transient_failures=2, transient_error=down())
    sleeps: list[float] = []
    [path] = fetch_copernicus(cfg, client=client, credentials=creds, sleep=sleeps.append)
    assert path.exists() and len(client.calls) == 3 and sleeps == [2.0, 4.0]
    # down for longer than seacast's retries: a network error naming the service, not a login one
    client = FakeMarineClient(FIXTURES, transient_failures=10, transient_error=down())
    sleeps.clear()
    cfg = med_config(tmp_path / "raw2", months="2024-01", retries=2, backoff_seconds=1.0)
    with pytest.raises(DataError, match="login service") as info:
        fetch_copernicus(cfg, client=client, credentials=creds, sleep=sleeps.append)
    assert not isinstance(info.value, CredentialsError)
    assert "auth.marine.copernicus.eu" in str(info.value) and "in 3 tries" in str(info.value)
    assert sleeps == [1.0, 2.0] and len(client.calls) == 3


def test_toolbox_network_retries_are_capped_before_it_is_imported(tmp_path: Path) -> None:
    """In a fresh interpreter: the toolbox, imported by seacast, reads seacast's caps; a user's own value wins."""
    code = """
import sys
from seacast.sources.copernicus import ToolboxClient
assert "copernicusmarine" not in sys.modules
ToolboxClient()._toolbox()
from copernicusmarine.core_functions import sessions
print(sessions.HTTPS_RETRIES, sessions.HTTPS_TIMEOUT)
"""
    env = {k: v for k, v in os.environ.items() if not k.startswith("COPERNICUSMARINE_HTTPS")}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env | {"HOME": str(tmp_path)},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    retries, timeout = done.stdout.split()
    assert int(retries) == int(TOOLBOX_NETWORK_DEFAULTS["COPERNICUSMARINE_HTTPS_RETRIES"]) < 5
    assert float(timeout) == float(TOOLBOX_NETWORK_DEFAULTS["COPERNICUSMARINE_HTTPS_TIMEOUT"])
    user = {"COPERNICUSMARINE_HTTPS_RETRIES": "7"}
    assert toolbox_environment(user) == {
        "COPERNICUSMARINE_HTTPS_TIMEOUT": TOOLBOX_NETWORK_DEFAULTS["COPERNICUSMARINE_HTTPS_TIMEOUT"]
    }
    assert user["COPERNICUSMARINE_HTTPS_RETRIES"] == "7"


def test_toolbox_client_notes_the_served_version_without_showing_info_lines(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    toolbox_logger = logging.getLogger("copernicusmarine")
    shown: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = shown.append  # type: ignore[method-assign]

    def fake_subset(**kwargs: Any) -> Any:
        # what the toolbox logs when it picks the version (it does not return it)
        toolbox_logger.info('Selected dataset version: "202411"')
        toolbox_logger.warning("the dataset will be retired")
        return SimpleNamespace(status="000", file_path=tmp_path / "x.nc")

    monkeypatch.setattr(copernicusmarine, "subset", fake_subset)
    toolbox_logger.addHandler(handler)
    try:
        response = ToolboxClient().subset(dataset_id="d", output_directory=str(tmp_path))
    finally:
        toolbox_logger.removeHandler(handler)
    assert response.dataset_version == "202411"
    assert response.status == "000" and response.file_path == tmp_path / "x.nc"
    assert [r.getMessage() for r in shown] == ["the dataset will be retired"]
    assert toolbox_logger.level == logging.WARNING and not toolbox_logger.filters


def test_ctrl_c_during_a_toolbox_download_stops_at_once(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The toolbox runs in a worker thread: Ctrl-C (held by safe_points, as seacast fetch does) ends the wait."""
    release = threading.Event()

    def stuck_subset(**kwargs: Any) -> Any:
        release.wait(10)  # a long download (or the hang in xarray's close)
        return SimpleNamespace(status="000", file_path=tmp_path / "x.nc")

    monkeypatch.setattr(copernicusmarine, "subset", stuck_subset)
    timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
    start = time.monotonic()
    try:
        with pytest.raises(KeyboardInterrupt), safe_points():
            timer.start()
            ToolboxClient().subset(dataset_id="d", output_directory=str(tmp_path))
    finally:
        release.set()
        timer.cancel()
    assert time.monotonic() - start < 2.0
