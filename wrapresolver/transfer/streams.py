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
