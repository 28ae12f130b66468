"""Shared test setup: the real CMEMS fixtures folder and a quiet, single-threaded torch."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
FIXTURES = PROJECT_ROOT.parent / "shared" / "fixtures"
CONFIGS = PROJECT_ROOT / "configs"

os.environ.setdefault("MPLBACKEND", "Agg")
# fits cached by seacast.anomaly_regression go to a folder of this session, not the project's
os.environ.setdefault("SEACAST_CACHE", tempfile.mkdtemp(prefix="seacast-test-cache-"))


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    """The real Copernicus sample files (../shared/fixtures); tests skip where it is absent."""
    if not FIXTURES.is_dir():
        pytest.skip(f"real CMEMS fixtures not found at {FIXTURES} (a clone outside the workspace)")
    return FIXTURES


# Two cores shared by a test process and its DataLoader workers: one torch thread is
# several times faster here than two competing ones.
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover
    pass


@pytest.fixture
def one_thread():
    """One torch thread: the test models are tiny, and test processes share the CPUs (one thread
    each is far faster than oversubscription). Files opt in with ``pytestmark``."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
