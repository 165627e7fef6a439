"""The writer threads create exactly the files they are given, and report what went wrong."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from wrapresolver.transfer import snapshot
from wrapresolver.transfer.filewriters import FileJob, FileWriters


def job(root: Path, name: str, data: bytes = b"data", mode: int = 0o640,
        owner: tuple[int, int] | None = None) -> FileJob:
    return FileJob(str(root / name), name, name, data, mode, 1_600_000_000_123_456_789, owner)


def submit_numbered(writers: Any, root: Path, count: int) -> None:
    """Files f0.. with different sizes and modes: what `assert_numbered` checks."""
    for i in range(count):
        writers.submit(job(root, f"f{i}", bytes([i]) * (i * 37), 0o600 if i % 2 else 0o664))


def assert_numbered(root: Path, entries: dict[str, snapshot.Entry]) -> None:
    assert (root / "f7").read_bytes() == bytes([7]) * 259
    assert (root / "f7").stat().st_mode & 0o777 == 0o600
    assert (root / "f8").stat().st_mode & 0o777 == 0o664  # more than the umask lets open() give
    assert os.stat(root / "f8").st_mtime_ns == 1_600_000_000_123_456_789
    assert entries == snapshot.take(root)


def test_files_get_their_data_mode_and_time_and_are_recorded_as_a_walk_sees_them(tmp_path: Path) -> None:
    writers = FileWriters(threads=3, max_pending=1 << 10)  # a small bound: submit must wait, not fail
    submit_numbered(writers, tmp_path, 200)
    writers.drain()
    writers.close()
    assert_numbered(tmp_path, writers.entries)


def test_a_file_that_appeared_at_the_path_is_not_written_through_and_the_error_surfaces(tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("keep")
    (tmp_path / "planted").symlink_to(tmp_path / "outside")
    writers = FileWriters(threads=2)
    writers.submit(job(tmp_path, "planted", b"overwrite?"))
    with pytest.raises(FileExistsError):
        writers.drain()
    with pytest.raises(FileExistsError):
        writers.submit(job(tmp_path, "later"))
        writers.drain()
    writers.close()
    assert (tmp_path / "outside").read_text() == "keep"
