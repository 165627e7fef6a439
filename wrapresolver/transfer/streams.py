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


CHUNK_HINT = 1 << 20
"""Bytes per read when a chunk reader is read to its end (`read(-1)`)."""


class _ChunkCursor(io.RawIOBase):
    """A readable over whole chunks, one at a time: `_next` gives the next (None at the end).

    `readinto` copies out of the current chunk; the subclasses' `read` hands a chunk out
    as it is when the caller takes all of it, which is what saves the copies.
    """

    def __init__(self) -> None:
        self._pending: bytes = b""
        self._offset = 0

    def readable(self) -> bool:
        return True

    def _next(self) -> bytes | None:
        raise NotImplementedError

    def _more(self) -> bool:
        """A chunk with bytes left is pending; False at the end of the data."""
        while self._offset >= len(self._pending):
            chunk = self._next()
            if chunk is None:
                return False
            self._pending, self._offset = chunk, 0
        return True

    def readinto(self, buffer) -> int:
        if not self._more():
            return 0
        n = min(len(buffer), len(self._pending) - self._offset)
        buffer[:n] = memoryview(self._pending)[self._offset:self._offset + n]
        self._offset += n
        return n

    def _rest(self) -> bytes:
        """Everything left (`read(-1)`), through the subclass's own `read`."""
        return b"".join(iter(lambda: self.read(CHUNK_HINT), b""))


class HashingChunks(_ChunkCursor):
    """A readable over byte chunks (a blob as a backend streams it) with their sha256 and size.

    For a decompressor's input: each chunk is hashed once as it arrives, and `read(n)` with
    `n` at least the rest of a chunk returns the chunk object itself, so a layer's compressed
    bytes are not copied on their way to the decompressor (HashingReader over an
    IteratorReader copied them twice).
    """

    def __init__(self, chunks: Iterator[bytes]) -> None:
        super().__init__()
        self._chunks = iter(chunks)
        self._hash = hashlib.sha256()
        self.size = 0

    def _next(self) -> bytes | None:
        chunk = next(self._chunks, None)
        if chunk is None:
            return None
        self._hash.update(chunk)
        self.size += len(chunk)
        return bytes(chunk)

    def read(self, size: int = -1) -> bytes:
        """Up to `size` bytes of the current chunk; everything left when `size` < 0."""
        if size is None or size < 0:
            return self._rest()
        if not self._more():
            return b""
        pending, offset = self._pending, self._offset
        if size >= len(pending) - offset:
            self._offset = len(pending)
            return pending if offset == 0 else pending[offset:]
        self._offset += size
        return pending[offset:offset + size]

    @property
    def digest(self) -> str:
        return "sha256:" + self._hash.hexdigest()


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


class _PipeReader(_ChunkCursor):
    def __init__(self, pipe: BoundedPipe) -> None:
        super().__init__()
        self._pipe = pipe
        self._eof = False

    def _next(self) -> bytes | None:
        if self._eof:
            return None
        item = self._pipe._queue.get()
        if isinstance(item, BaseException):
            self._eof = True
            raise item
        if item == b"":
            self._eof = True
            return None
        return item

    def read(self, size: int = -1) -> bytes:
        """Exactly `size` bytes, fewer only at the end; a whole chunk is handed out uncopied.

        The tar reader asks for 1 MiB at a time and the decompressor writes 1 MiB chunks:
        most reads return the chunk object itself (a fetch moved each byte through four
        copies before, 9% of its CPU).
        """
        if size is None or size < 0:
            return self._rest()
        parts: list[bytes] = []
        want = size
        while want and self._more():
            pending, offset = self._pending, self._offset
            available = len(pending) - offset
            if offset == 0 and available <= want:
                part = pending
            else:
                part = pending[offset:offset + min(want, available)]
            self._offset += len(part)
            want -= len(part)
            parts.append(part)
        return parts[0] if len(parts) == 1 else b"".join(parts)

