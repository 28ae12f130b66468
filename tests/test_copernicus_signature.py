"""Every keyword seacast passes to the Copernicus Marine toolbox, checked against the installed toolbox.

A renamed or removed argument (or exception class) then fails here, in CI, not
at a user's first download. Nothing here touches the network: the toolbox
functions are replaced by recorders that bind to the real signatures.
"""

from __future__ import annotations

import inspect
import logging
import sys
import typing
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

copernicusmarine = pytest.importorskip("copernicusmarine")

from helpers_fetch import FakeMarineClient, med_config  # noqa: E402

from seacast.config import DataConfig, load_config  # noqa: E402
from seacast.errors import CredentialsError, DataError  # noqa: E402
from seacast.sources import copernicus  # noqa: E402
from seacast.sources.copernicus import (  # noqa: E402
    CREDENTIALS_ERRORS,
    PERMANENT_ERRORS,
    Credentials,
    ToolboxClient,
    classify_error,
    fetch_copernicus,
    subset_request,
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
    for name in (*CREDENTIALS_ERRORS, *PERMANENT_ERRORS, "ServiceNotAvailable", "DatasetUpdating"):
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
    auth = translate_error(copernicusmarine.CouldNotConnectToAuthenticationSystem(), "x")
    assert isinstance(auth, CredentialsError) and "auth.marine.copernicus.eu" in str(auth)
