"""seacast.atomic: whole-file replacement, cleanup on failure, plain permissions, concurrency."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from seacast.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_file_is_replaced_whole(tmp_path):
    path = tmp_path / "sub" / "state.json"
    atomic_write_text(path, "old content, rather long\n" * 10)
    assert atomic_write_text(path, "new\n") == path
    assert path.read_text() == "new\n"
    atomic_write_bytes(path, b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in path.parent.iterdir()) == ["state.json"]


def test_the_temporary_name_is_a_fresh_sibling(tmp_path):
    final = tmp_path / "a.png"
    with atomic_path(final, suffix=".tmp.png") as first, atomic_path(final) as second:
        assert first.parent == second.parent == tmp_path
        assert first != second
        assert first.name.startswith(".a.png.") and first.name.endswith(".tmp.png")
        assert second.name.endswith(".tmp")
        first.write_text("1")
        second.write_text("2")
    assert final.read_text() == "1"  # the outer block ends last
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png"]


@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failure_midway_keeps_the_old_content_and_no_temporary(tmp_path, error):
    path = tmp_path / "manifest.json"
    path.write_text("old")
    with pytest.raises(type(error)), atomic_path(path) as tmp:
        tmp.write_text("half a fi")
        raise error
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_a_failed_first_write_leaves_nothing(tmp_path):
    path = tmp_path / "new.txt"
    with pytest.raises(RuntimeError), atomic_path(path):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002])
def test_permissions_follow_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        text = atomic_write_text(tmp_path / "t.txt", "x")
        data = atomic_write_bytes(tmp_path / "b.bin", b"x")
        with atomic_path(tmp_path / "p.png", suffix=".tmp.png") as tmp:
            tmp.write_bytes(b"png")
        with open(tmp_path / "plain.txt", "w") as handle:
            handle.write("x")
    finally:
        os.umask(old)
    expected = 0o666 & ~umask
    assert _mode(tmp_path / "plain.txt") == expected
    assert _mode(text) == _mode(data) == _mode(tmp_path / "p.png") == expected


def test_concurrent_writers_never_leave_a_temporary_name(tmp_path):
    path = tmp_path / "state.json"
    contents = {f"writer {i}\n" * (50 + i) for i in range(8)}
    errors: list[BaseException] = []
    start = threading.Barrier(len(contents))

    def write(text: str) -> None:
        try:
            start.wait()
            for _ in range(25):
                atomic_write_text(path, text)
                assert path.read_text() in contents  # never a mix, never half a file
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(text,)) for text in contents]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    assert path.read_text() in contents
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]
