"""The writer process creates exactly the files it is given, reports what went wrong, and is
replaced by the threads where it cannot start."""

from __future__ import annotations

import errno
import os
import signal
import sys
from pathlib import Path

import pytest

from tests.transfer.test_filewriters import assert_numbered, job, submit_numbered
from wrapresolver.errors import TransferError
from wrapresolver.transfer import snapshot
from wrapresolver.transfer.filewriters import BATCH_FILES
from wrapresolver.transfer.writerprocess import ProcessFileWriters


def test_files_made_by_the_process_get_their_data_mode_and_time_and_are_recorded_as_a_walk_sees_them(
    tmp_path: Path,
) -> None:
    writers = ProcessFileWriters()
    submit_numbered(writers, tmp_path, 3 * BATCH_FILES)
    assert writers._process is not None  # full batches went to the second process
    writers.drain()
    writers.close()
    assert_numbered(tmp_path, writers.entries)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving files another owner needs root")
def test_the_process_gives_files_their_recorded_owner(tmp_path: Path) -> None:
    writers = ProcessFileWriters()
    for i in range(BATCH_FILES):
        writers.submit(job(tmp_path, f"f{i}", owner=(1234, 5678)))
    writers.drain()
    writers.close()
    assert (os.stat(tmp_path / "f0").st_uid, os.stat(tmp_path / "f0").st_gid) == (1234, 5678)
    assert writers.entries["f0"].uid == 1234 and writers.owners


def test_a_few_files_are_written_at_drain_without_starting_a_process(tmp_path: Path) -> None:
    writers = ProcessFileWriters()
    for i in range(3):
        writers.submit(job(tmp_path, f"f{i}"))
    writers.drain()
    assert writers._process is None
    writers.close()
    assert sorted(writers.entries) == ["f0", "f1", "f2"]
    assert (tmp_path / "f2").read_bytes() == b"data"


def test_a_file_that_appeared_at_the_path_is_not_written_through_and_the_error_surfaces(tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("keep")
    (tmp_path / "planted").symlink_to(tmp_path / "outside")
    writers = ProcessFileWriters()
    writers.submit(job(tmp_path, "planted", b"overwrite?"))
    for i in range(BATCH_FILES):
        writers.submit(job(tmp_path, f"after{i}"))
    with pytest.raises(FileExistsError) as raised:
        writers.drain()
    assert raised.value.errno == errno.EEXIST and raised.value.filename == str(tmp_path / "planted")
    with pytest.raises(FileExistsError):
        writers.drain()  # and again: nothing after the error was created
    writers.close()
    assert (tmp_path / "outside").read_text() == "keep"
    assert not list(tmp_path.glob("after*"))


def test_an_error_in_the_process_surfaces_at_the_next_submit(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("keep")
    writers = ProcessFileWriters()
    writers.submit(job(tmp_path, "taken"))
    for i in range(BATCH_FILES - 1):
        writers.submit(job(tmp_path, f"a{i}"))  # the batch goes out
    assert writers._answers is not None and writers._answers.poll(30)  # the process reported it
    with pytest.raises(FileExistsError):
        for i in range(BATCH_FILES):
            writers.submit(job(tmp_path, f"b{i}"))
    writers.close()
    assert (tmp_path / "taken").read_text() == "keep"


def test_a_process_that_died_is_an_error_naming_it_not_a_silent_half_workspace(tmp_path: Path) -> None:
    writers = ProcessFileWriters()
    for i in range(BATCH_FILES):
        writers.submit(job(tmp_path, f"f{i}"))
    assert writers._process is not None
    os.kill(writers._process.pid, signal.SIGKILL)
    writers._process.wait()
    with pytest.raises(TransferError, match=r"ended unexpectedly \(exit status -9\); the workspace is incomplete"):
        for i in range(BATCH_FILES):
            writers.submit(job(tmp_path, f"g{i}"))
        writers.drain()
    writers.close()


def test_without_an_interpreter_to_start_the_threads_create_the_files(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "executable", "")
    writers = ProcessFileWriters()
    for i in range(2 * BATCH_FILES):
        writers.submit(job(tmp_path, f"f{i}"))
    writers.drain()
    assert writers._process is None and writers._inline is not None
    writers.close()
    assert writers.entries == snapshot.take(tmp_path)
