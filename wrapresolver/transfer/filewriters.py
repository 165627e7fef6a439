"""Creating the regular files of a layer: the steps for one file, and a pool of threads.

A fetch uses a second process (writerprocess.py), which calls `create_file` as these threads
do; the threads are what it falls back to where it cannot start one.

A workspace of 100,000 small files is a fetch of 100,000 file creations, and each costs the
kernel far more than it costs the tar parser: open, write, chown, times, stat, close. One
thread doing both waits on every syscall in turn (a fetch of a `node_modules`-like tree took
ten times as long as `tar -x`). The syscalls release the GIL, so a few threads that only
create files keep the kernel busy while the main thread parses the next headers.

The main thread keeps every decision that makes extraction safe (names, parents, links,
replacing what is there): a job here is a new file at a path the extractor has already
checked and cleared, created with O_EXCL and O_NOFOLLOW so that nothing that appeared at
that path since can be written through. The bytes waiting in jobs are bounded.
"""

from __future__ import annotations

import errno
import os
import queue
import threading
from typing import NamedTuple

from wrapresolver.core.limits import shown
from wrapresolver.errors import UnsafeArchiveError
from wrapresolver.transfer.filemeta import finish_file
from wrapresolver.transfer.snapshot import Entry

THREADS = 2
"""Two overlap the syscalls of small files with parsing as well as four did on a journaled
ext4 (docs/performance.md, "Journaled file system: the previous figures"), for half the kernel time: every extra thread
adds GIL handoffs and context switches, and the Python of a fetch runs on one core anyway."""
MAX_PENDING = 32 << 20
"""Bytes of file data queued and not yet written: what the pool adds to a fetch's memory."""
BATCH_FILES, BATCH_BYTES = 64, 1 << 20
"""Jobs travel in batches: one lock round trip per batch instead of per small file."""
_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


class FileJob(NamedTuple):
    """One new regular file: where, what, and the metadata it must end up with (a tuple:
    one is built per small file, and a frozen dataclass costs several times as much)."""

    target: str
    """Its real path, under a parent the extractor resolved inside the workspace."""
    local: str
    """Its path in the workspace view: the key of the fetch record."""
    name: str
    """The tar entry's name, for messages."""
    data: bytes
    mode: int
    mtime_ns: int
    owner: tuple[int, int] | None
    """(uid, gid) to give it, or None to leave it the extracting user's."""


def current_umask() -> int:
    """The process umask (read by setting it, so read once, before any thread starts)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


class FileWriters:
    """A bounded pool that creates files; errors surface at the next `submit` or `drain`."""

    def __init__(self, threads: int = THREADS, max_pending: int = MAX_PENDING) -> None:
        self.entries: dict[str, Entry] = {}
        """What each created file looked like when its job finished (fstat of its descriptor)."""
        self.owners = True
        """Cleared when the kernel refuses a chown: from then on files stay the extractor's."""
        self._umask = current_umask()
        self._jobs: queue.SimpleQueue[list[FileJob] | None] = queue.SimpleQueue()
        self._batch: list[FileJob] = []
        self._batch_bytes = 0
        self._cond = threading.Condition()
        self._pending_bytes = 0
        self._pending_jobs = 0
        self._max_pending = max_pending
        self._error: BaseException | None = None
        self._threads = [
            threading.Thread(target=self._run, name=f"wrap-file-writer-{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, job: FileJob) -> None:
        """Queue `job`; waits while too many bytes are queued. Raises a job's earlier error."""
        self._batch.append(job)
        self._batch_bytes += len(job.data)
        if len(self._batch) >= BATCH_FILES or self._batch_bytes >= BATCH_BYTES:
            self._flush()

    def _flush(self) -> None:
        if not self._batch:
            return
        batch, size = self._batch, self._batch_bytes
        self._batch, self._batch_bytes = [], 0
        with self._cond:
            while self._error is None and self._pending_jobs and self._pending_bytes + size > self._max_pending:
                self._cond.wait()
            if self._error is not None:
                raise self._error
            self._pending_bytes += size
            self._pending_jobs += 1
        self._jobs.put(batch)

    def drain(self) -> None:
        """Wait until every queued file exists; raise the first error a job met."""
        self._flush()
        with self._cond:
            while self._pending_jobs and self._error is None:
                self._cond.wait()
            if self._error is not None:
                raise self._error

    def close(self) -> None:
        """Stop the threads after the batches already queued (a batch not flushed is dropped)."""
        for _ in self._threads:
            self._jobs.put(None)
        for thread in self._threads:
            thread.join()

    def _run(self) -> None:
        while True:
            batch = self._jobs.get()
            if batch is None:
                return
            error: BaseException | None = None
            try:
                for job in batch:
                    if self._error is not None:
                        break
                    self._write(job)
            except BaseException as exc:  # handed to the extracting thread
                error = exc
            with self._cond:
                if error is not None and self._error is None:
                    self._error = error
                self._pending_bytes -= sum(len(job.data) for job in batch)
                self._pending_jobs -= 1
                self._cond.notify_all()

    def _write(self, job: FileJob) -> None:
        entry, self.owners = create_file(job, self._umask, self.owners)
        self.entries[job.local] = entry


def create_file(job: FileJob, umask: int, owners: bool) -> tuple[Entry, bool]:
    """Create `job`'s file; return how it looks now and whether chown still works.

    `owners` False skips the chown; a kernel that refuses one turns it off for the files after
    (`filemeta.try_chown`). The same steps for the writer threads and the writer process.
    """
    try:
        fd = os.open(job.target, _FLAGS, job.mode & 0o777)
    except OSError as exc:
        if exc.errno != errno.ENAMETOOLONG:
            raise
        raise UnsafeArchiveError(
            f"layer entry {shown(job.name)} makes a path longer than this file system allows "
            f"under the workspace; refusing to extract it"
        ) from None
    try:
        view = memoryview(job.data)
        while view:
            view = view[os.write(fd, view):]
        # open() applied the umask, and chown clears set-id bits: set the mode when it must.
        return finish_file(fd, job.local, job.mode, job.mtime_ns, job.owner, owners,
                           chmod=bool(job.mode & (umask | 0o7000)))
    finally:
        os.close(fd)
