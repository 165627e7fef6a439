"""Small stream adapters so every backend can take a plain readable file object."""

from __future__ import annotations

import hashlib
import io
from typing import Iterator


class IteratorReader(io.RawIOBase):
    """A readable binary file over an iterator of byte chunks (no full buffering)."""

    def __init__(self, chunks: Iterator[bytes]) -> None:
        self._chunks = iter(chunks)
        self._pending = b""

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:  # type: ignore[override]
        while not self._pending:
            try:
                self._pending = next(self._chunks)
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

    def readinto(self, buffer) -> int:  # type: ignore[override]
        data = self._inner.read(len(buffer))
        if not data:
            return 0
        n = len(data)
        buffer[:n] = data
        self._hash.update(data)
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


class ForwardHashingReader(HashingReader):
    """A `HashingReader` that can also seek forward, by reading (and hashing) what it skips.

    That lets `tarfile` read it in its seekable mode, which reads headers block by block,
    while the stream mode re-slices a large buffer on every small read. Kept separate
    because clients that see `seekable()` (boto3, httpx) may seek backwards to retry.
    """

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self.size

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        target = offset if whence == io.SEEK_SET else self.size + offset if whence == io.SEEK_CUR else -1
        if target < self.size:
            raise io.UnsupportedOperation("a stream can only seek forward")
        while self.size < target:
            if not self.read(min(target - self.size, 1 << 20)):
                break  # end of data: the caller's next read sees it
        return self.size
