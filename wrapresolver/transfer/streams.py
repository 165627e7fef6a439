"""Small stream adapters so every backend can take a plain readable file object."""

from __future__ import annotations

import hashlib
import io
import queue
import threading
from collections.abc import Iterator


class IteratorReader(io.RawIOBase):
    """A readable binary file over an iterator of byte chunks (no full buffering)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = memoryview(b"")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        # A memoryview, so that handing out a chunk in pieces does not copy what is left
        # of it at every read (the decompressor reads 128 KiB at a time from 1 MiB chunks).
        while not self._pending:
            try:
                self._pending = memoryview(next(self._chunks))
            except StopIteration:
                return 0
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n


class HashingReader(io.RawIOBase):
    """Wraps a reader; computes sha256 and size of everything read through it."""

    def __init__(self, inner) -> None:
        self._inner = inner
        self._hash = hashlib.sha256()
        self.size = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        readinto = getattr(self._inner, "readinto", None)
        if readinto is None:
            data = self._inner.read(len(buffer))
            n = len(data)
            buffer[:n] = data
        else:
            n = readinto(buffer) or 0  # straight into the caller's buffer: one copy less
        if not n:
            return 0
        self._hash.update(memoryview(buffer)[:n])
        self.size += n
        return n

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()

    def chunks(self, size: int = 1 << 20) -> Iterator[bytes]:
        while True:
            data = self.read(size)
            if not data:
                return
            yield data


PIPE_DEPTH = 8
"""Chunks in flight between a producing thread and its reader: a few MiB at most."""


class PipeClosed(Exception):
    """The reading side gave up; the tar thread stops writing."""


class BoundedPipe:
    """A one-writer one-reader byte pipe with a bounded buffer and error propagation."""

    def __init__(self, depth: int = PIPE_DEPTH) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._closed = threading.Event()
        self.reader = _PipeReader(self)

    def write(self, data: bytes) -> int:
        if data:
            self._put(bytes(data))
        return len(data)

    def _put(self, item: object) -> None:
        while True:
            if self._closed.is_set():
                raise PipeClosed()
            try:
                self._queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue

    def finish(self, error: BaseException | None = None) -> None:
        """Writer side: end of data, or the error the reader should raise."""
        try:
            self._put(error if error is not None else b"")
        except PipeClosed:
            pass

    def close_reader(self) -> None:
        self._closed.set()

    def flush(self) -> None:
        pass


class _PipeReader(io.RawIOBase):
    def __init__(self, pipe: BoundedPipe) -> None:
        self._pipe = pipe
        self._pending = memoryview(b"")
        self._eof = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            if self._eof:
                return 0
            item = self._pipe._queue.get()
            if isinstance(item, BaseException):
                self._eof = True
                raise item
            if item == b"":
                self._eof = True
                return 0
            self._pending = memoryview(item)
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n
