"""A store survives a killed append and refuses a second writer: always the state before or after."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import xarray as xr
from helpers_regrid import data_config, write_raw_month

from seacast.errors import DataError
from seacast.locks import LockHeld
from seacast.regrid import regrid_config
from seacast.store import (
    ATTR_CONFIG,
    ATTR_FINGERPRINT,
    open_store,
    recover_store,
    replace_store,
    staged_copy,
    store_lock_path,
    temporary_store_path,
)

TESTS = Path(__file__).resolve().parent

# Runs the append of February to a January store, and SIGKILLs itself at one moment.
KILLED_APPEND = r"""
import os, signal, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from helpers_regrid import data_config
import seacast.regrid.orchestrate as regrid  # patched where the store writes are called
import seacast.store as store
from zarr.storage import LocalStore

moment, case = sys.argv[2], Path(sys.argv[3])

def die():
    os.kill(os.getpid(), signal.SIGKILL)

def kill_after(module, name):
    original = getattr(module, name)
    def wrapped(*args, **kwargs):
        result = original(*args, **kwargs)
        die()
        return result
    setattr(module, name, wrapped)

def kill_before(module, name):
    setattr(module, name, lambda *args, **kwargs: die())

if moment == "after-staging":
    kill_after(regrid, "staged_copy")
elif moment.startswith("write-"):  # before the n-th file zarr writes (chunks, metadata, attrs)
    n, seen, original_set = int(moment.split("-")[1]), [0], LocalStore.set
    async def counted(self, key, value):
        seen[0] += 1
        if seen[0] >= n:
            die()
        await original_set(self, key, value)
    LocalStore.set = counted
elif moment == "before-statistics":
    kill_before(regrid, "finalise_store")
elif moment == "before-swap":
    kill_before(regrid, "replace_store")
elif moment == "after-swap":
    kill_after(store, "_exchange")
elif moment == "slow":  # holds the store lock for a while, for the concurrency test
    original_finalise = regrid.finalise_store
    def slow(*args, **kwargs):
        print("writing", flush=True)
        time.sleep(4)
        return original_finalise(*args, **kwargs)
    regrid.finalise_store = slow
regrid.regrid_config(data_config(case, "2024-01:2024-02"))
"""


def _append(case: Path, moment: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", KILLED_APPEND, str(TESTS), moment, str(case)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _comparable(path: Path) -> tuple[xr.Dataset, dict[str, str]]:
    """The store's data, and its attrs without what names the case's folder."""
    ds = open_store(path).load()
    attrs = {k: v for k, v in ds.attrs.items() if k not in (ATTR_CONFIG, ATTR_FINGERPRINT)}
    ds.attrs = {}
    return ds, attrs


def _same_store(a: Path, b: Path) -> bool:
    (da, aa), (db, ab) = _comparable(a), _comparable(b)
    return da.identical(db) and aa == ab


@pytest.fixture(scope="module")
def january(tmp_path_factory) -> Path:
    """Raw January and February, and a store holding January only."""
    root = tmp_path_factory.mktemp("january")
    for month in ("2024-01", "2024-02"):
        write_raw_month(root / "raw", month)
    regrid_config(data_config(root, "2024-01"))
    return root


@pytest.fixture(scope="module")
def appended(january, tmp_path_factory) -> tuple[Path, int]:
    """The uninterrupted append, and how many files zarr wrote for it."""
    from zarr.storage import LocalStore

    root = tmp_path_factory.mktemp("appended")
    shutil.copytree(january, root, dirs_exist_ok=True)
    writes, original = [0], LocalStore.set

    async def counted(self, key, value):  # noqa: ANN001 - zarr's signature
        writes[0] += 1
        await original(self, key, value)

    LocalStore.set = counted
    try:
        regrid_config(data_config(root, "2024-01:2024-02"))
    finally:
        LocalStore.set = original
    return root / "store.zarr", writes[0]


def _case(january: Path, tmp_path: Path) -> Path:
    shutil.copytree(january, tmp_path, dirs_exist_ok=True)
    return tmp_path


@pytest.mark.parametrize(
    ("moment", "state"),
    [
        ("after-staging", "before"),
        ("write-1", "before"),
        ("write-mid", "before"),
        ("write-last", "before"),
        ("before-statistics", "before"),
        ("before-swap", "before"),
        ("after-swap", "after"),
    ],
)
def test_a_killed_append_leaves_the_store_before_or_after_and_a_rerun_finishes_it(
    moment, state, january, appended, tmp_path
):
    after, writes = appended
    case = _case(january, tmp_path)
    store = case / "store.zarr"
    if moment == "write-mid":
        moment = f"write-{writes // 2}"
    elif moment == "write-last":
        moment = f"write-{writes}"
    killed = _append(case, moment)
    killed.communicate(timeout=120)
    assert killed.returncode == -9, f"the append was not killed at {moment}"

    # right after the kill, readers see one of the two states, never a mix
    assert _same_store(store, january / "store.zarr" if state == "before" else after)

    rerun = regrid_config(data_config(case, "2024-01:2024-02"))
    assert _same_store(store, after)
    assert rerun.frames_already_present + rerun.frames_written == (31 + 29) * 24
    leftovers = [p.name for p in case.iterdir() if p.name.startswith(".store.zarr.")]
    assert leftovers == [store_lock_path(store).name]


def test_a_second_writer_is_refused_and_the_first_append_is_correct(january, appended, tmp_path):
    after, _ = appended
    case = _case(january, tmp_path)
    first = _append(case, "slow")
    try:
        assert first.stdout.readline().strip() == "writing"
        with pytest.raises(LockHeld, match=r"is writing the store .*store\.zarr.*pid"):
            regrid_config(data_config(case, "2024-01:2024-02"))
    finally:
        _, errors = first.communicate(timeout=120)
    assert first.returncode == 0, errors
    assert _same_store(case / "store.zarr", after)


def test_a_staged_append_never_changes_the_files_of_the_store_it_copies(january, tmp_path):
    store = _case(january, tmp_path) / "store.zarr"
    before = {p: (p.stat().st_ino, p.read_bytes()) for p in store.rglob("*") if p.is_file()}
    stage = staged_copy(store)
    from seacast.store import append_to_store

    newer = open_store(store).isel(time=slice(-5, None)).load()
    newer = newer.assign_coords(time=newer["time"] + (newer["time"][-1] - newer["time"][0]) * 2)
    assert append_to_store(stage, newer) == 5
    assert {p: (p.stat().st_ino, p.read_bytes()) for p in store.rglob("*") if p.is_file()} == before
    assert open_store(stage).sizes["time"] == open_store(store).sizes["time"] + 5


def test_a_store_left_aside_by_a_killed_swap_is_put_back_on_open(january, tmp_path):
    store = _case(january, tmp_path) / "store.zarr"
    reference = _comparable(store)
    aside = store.with_name(f".{store.name}.old-0000dead")
    store.rename(aside)
    half_built = temporary_store_path(store)
    shutil.copytree(aside, half_built)
    ds, attrs = _comparable(store)  # open_store puts it back
    assert ds.identical(reference[0]) and attrs == reference[1]
    assert not aside.exists()
    assert not half_built.exists()  # the unfinished new store is cleared too


def test_replace_store_swaps_a_store_for_a_new_one_leaving_nothing_behind(january, tmp_path):
    store = _case(january, tmp_path) / "store.zarr"
    new = staged_copy(store)
    (new / "marker").write_text("new")
    replace_store(new, store)
    assert (store / "marker").read_text() == "new"
    assert not new.exists()
    assert recover_store(store) == []


def test_a_missing_store_still_says_how_to_make_it(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        open_store(tmp_path / "none.zarr")
