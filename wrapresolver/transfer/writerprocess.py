"""Creating the small files of a layer in a second process, beside the extracting one.

Writer threads (filewriters.py) overlap the syscalls of file creation with parsing, but each
of a file's six syscalls gives the GIL up and has to take it back, and the extracting thread
holds it nearly all the time: the writers advance mostly while it waits. Measured on
100,000 small files, parsing and deciding alone took 1.6-1.9 s and the whole fetch with
threads 3.7-4.1 s (docs/performance.md). A process has its own interpreter, so its file
creation runs on the other core while this one parses.

What stays the same as with the threads: the extracting thread makes every decision (names,
parents, links, replacing what is there), and a job is a new file at a path it already
checked and cleared, created with O_EXCL and O_NOFOLLOW (`filewriters.create_file`, shared by
both). The process runs this interpreter (`sys.executable`) as the same user, with the same
umask and capabilities. Jobs travel as pickled batches through a pipe, whose capacity
bounds what is queued, and both ends of the pipe are this program.

It starts at the first full batch, so a layer of a few files never pays for it (about
30 ms); a machine where it cannot start (no `sys.executable`) gets the threads.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
from array import array
from multiprocessing.connection import Connection
from typing import Any

from wrapresolver.errors import TransferError, UnsafeArchiveError
from wrapresolver.transfer.filewriters import (
    BATCH_BYTES,
    BATCH_FILES,
    FileJob,
    FileWriters,
    create_file,
    current_umask,
)
from wrapresolver.transfer.snapshot import FILE, Entry

_JOBS, _DRAIN, _STOP = "jobs", "drain", "stop"
_new = tuple.__new__
_STAT_FIELDS = 7
"""What the process answers per file, as int64s: an entry's mode, size, mtime, ctime, inode, uid
and gid. The paths stay on this side: with whole entries the process of a fetch of 100,000
files grew to 78 MB, with these numbers it holds 56 bytes a file."""


class ProcessFileWriters:
    """`FileWriters`' interface over a writer process: errors surface at `submit` or `drain`."""

    def __init__(self) -> None:
        self.entries: dict[str, Entry] = {}
        self.owners = True
        self._batch: list[FileJob] = []
        self._batch_bytes = 0
        self._sent: list[str] = []
        """The `local` of every file sent since the last drain, in order: the process's answer
        lists their metadata in the same order."""
        self._process: subprocess.Popen[bytes] | None = None
        self._jobs: Connection | None = None
        self._answers: Connection | None = None
        self._inline: FileWriters | None = None
        """The threads, when the process could not start."""

    # ---- the extracting thread's side ----
    def submit(self, job: FileJob) -> None:
        self._batch.append(job)
        self._batch_bytes += len(job.data)
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self._flush()

    def drain(self) -> None:
        """Wait until every submitted file exists; raise the first error a job met."""
        if self._jobs is None and self._inline is None:
            self._write_here()  # never started: a few files are cheaper written here
            return
        self._flush()
        if self._inline is not None:
            self._inline.drain()
            return
        self._send((_DRAIN,))
        answer = self._receive()
        self._merge(answer)

    def close(self) -> None:
        """Stop the process after what it was sent (a batch not flushed is dropped)."""
        if self._inline is not None:
            self._inline.close()
            self.entries.update(self._inline.entries)
            self.owners = self.owners and self._inline.owners
        if self._process is None:
            return
        try:
            self._send((_STOP,))
        except TransferError:
            pass  # it is gone already
        assert self._jobs is not None and self._answers is not None
        self._jobs.close()
        self._answers.close()
        self._process.wait()
        self._process = None

    def _flush(self) -> None:
        if not self._batch:
            return
        if self._jobs is None and self._inline is None:
            self._start()
        batch = self._batch
        self._batch, self._batch_bytes = [], 0
        if self._inline is not None:
            for job in batch:
                self._inline.submit(job)
            return
        assert self._answers is not None
        if self._answers.poll():  # the process only speaks first to report an error
            self._merge(self._receive())
        # Plain tuples: a named tuple pickles through a Python method, once per file.
        self._send((_JOBS, self.owners, [tuple(job) for job in batch]))
        self._sent += [job.local for job in batch]

    def _write_here(self) -> None:
        umask = current_umask()
        for job in self._batch:
            entry, self.owners = create_file(job, umask, self.owners)
            self.entries[job.local] = entry
        self._batch, self._batch_bytes = [], 0

    def _start(self) -> None:
        jobs_read, jobs_write = os.pipe()
        answers_read, answers_write = os.pipe()
        try:
            if not sys.executable:
                raise OSError("no interpreter to start")
            # Our own import path, in its order: the process imports the very modules this one
            # did, whatever put them on the path (an install, PYTHONPATH, a checkout).
            path = os.pathsep.join(entry for entry in sys.path if entry)
            self._process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(jobs_read), str(answers_write)],
                pass_fds=(jobs_read, answers_write), stdin=subprocess.DEVNULL,
                env=dict(os.environ, PYTHONPATH=path),
            )
        except OSError:
            for fd in (jobs_read, jobs_write, answers_read, answers_write):
                os.close(fd)
            self._inline = FileWriters()
            self._inline.owners = self.owners
            return
        os.close(jobs_read)
        os.close(answers_write)
        self._jobs = Connection(jobs_write, readable=False)
        self._answers = Connection(answers_read, writable=False)

    def _send(self, message: tuple[Any, ...]) -> None:
        assert self._jobs is not None
        try:
            self._jobs.send_bytes(pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError as exc:  # BrokenPipeError: it died
            raise self._died() from exc

    def _receive(self) -> tuple[Any, ...]:
        assert self._answers is not None
        try:
            return pickle.loads(self._answers.recv_bytes())
        except (EOFError, OSError) as exc:
            raise self._died() from exc

    def _died(self) -> TransferError:
        code = self._process.poll() if self._process is not None else None
        return TransferError(
            f"the process that creates the layer's files ended unexpectedly (exit status {code}); "
            f"the workspace is incomplete"
        )

    def _merge(self, answer: tuple[Any, ...]) -> None:
        kind, raw, owners, error = answer
        self.owners = self.owners and owners
        if kind == "drained":
            numbers = array("q")
            numbers.frombytes(raw)
            entries, width = self.entries, _STAT_FIELDS
            for index, local in enumerate(self._sent[:len(numbers) // width]):
                at = index * width
                entries[local] = _new(Entry, (local, FILE, *numbers[at:at + width], ""))
            self._sent = []
        if error is not None:
            raise _rebuilt(error)


def _rebuilt(error: tuple[Any, ...]) -> BaseException:
    """The exception the process met, as the extracting thread raises it."""
    what = error[0]
    if what == "os":
        number, message, filename = error[1:]
        return OSError(number, message, filename)
    if what == "unsafe":
        return UnsafeArchiveError(error[1])
    return TransferError(f"creating the layer's files failed: {error[1]}")


def _failure(exc: BaseException) -> tuple[Any, ...]:
    if isinstance(exc, UnsafeArchiveError):
        return ("unsafe", str(exc))
    if isinstance(exc, OSError) and exc.errno is not None:
        return ("os", exc.errno, exc.strerror, exc.filename)
    return ("other", f"{type(exc).__name__}: {exc}")


# ---- the writer process ----
def serve(jobs: Connection, answers: Connection) -> None:
    """Create the files of each batch until told to stop; answer each drain.

    After an error the process creates nothing more but keeps reading, so the other side
    never blocks on a full pipe; it reports the error at once (the only message it sends
    unasked) and again with the next drain's answer, which the other side then raises.
    """
    umask = current_umask()
    rows = array("q")
    owners = True
    error: tuple[Any, ...] | None = None
    told = False
    while True:
        try:
            message = pickle.loads(jobs.recv_bytes())
        except EOFError:
            return  # the extracting side is gone
        if message[0] == _JOBS:
            owners = owners and message[1]
            if error is not None:
                continue
            for fields in message[2]:
                job = _new(FileJob, fields)
                try:
                    entry, owners = create_file(job, umask, owners)
                except BaseException as exc:  # reported to the extracting side
                    error = _failure(exc)
                    break
                rows.extend(entry[2:9])  # mode to gid: _STAT_FIELDS
            if error is not None and not told:
                # Small, so it fits in the pipe however long the other side takes to read:
                # the files' rows wait for the drain's answer.
                answers.send_bytes(pickle.dumps(("error", b"", owners, error)))
                told = True
        elif message[0] == _DRAIN:
            answers.send_bytes(pickle.dumps(("drained", rows.tobytes(), owners, error)))
            rows = array("q")
        else:
            return


def main(argv: list[str]) -> None:
    jobs = Connection(int(argv[0]), writable=False)
    answers = Connection(int(argv[1]), readable=False)
    serve(jobs, answers)


if __name__ == "__main__":
    main(sys.argv[1:])
