"""Per-task answers kept in memory, so a run's per-task requests cost no fetch and no planning.

A large Pipeline answered per-task brings one ResolutionRequest per wrapped task, all
answered from the same inline answer. The Pipeline request (or, on another replica or after
a restart, the first per-task request) makes every Task answer of the run at once and keeps
them here; the others find theirs with a lookup. An entry is found only by its full
key: the run's namespace and uid, a digest of the resolver's settings, and the pin (the
inline answer's sha256), so a request is never answered from another run's, another
namespace's or other settings' answer, nor from an answer other than the one it pins.
"""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Bytes of Task answers (their JSON) kept: a 1,000-task x 5-workspace run's are about 5 MiB."""


@dataclass(frozen=True)
class AnswerKey:
    namespace: str
    run_uid: str
    settings: str
    """A digest of the ConfigMap's data the answer was made with."""
    pin: str


@dataclass(frozen=True)
class CachedAnswer:
    """The Task answers of one pinned inline answer, ready to send: a hit costs a lookup."""

    tasks: dict[str, bytes]
    """Pipeline task name -> its Task answer as compact JSON (context variables substituted)."""
    ref_source: dict
    """The Pipeline's {uri, entryPoint?}; each answer adds the digest of its own bytes."""
    annotations: dict
    pipeline: str

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.tasks.values())


@dataclass
class AnswerCache:
    """A byte-bounded LRU of inline answers; safe to share between threads and tasks."""

    max_bytes: int = DEFAULT_MAX_BYTES
    _entries: OrderedDict = field(default_factory=OrderedDict)
    _bytes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    hits: int = 0
    misses: int = 0
    _making: dict = field(default_factory=dict)
    """key -> the future of the answer being made: one making per key, however many ask at once."""

    async def get_or_make(self, key: AnswerKey, make: Callable[[], Awaitable[CachedAnswer]]) -> CachedAnswer:
        """The answer under `key`, made by `make` when missing, kept when made.

        The tasks of a large run that become ready together ask at once; the first to miss
        makes the answer, the others wait for it instead of fetching and planning it again.
        A failure (a changed Pipeline) reaches every one of them and is not kept.
        """
        found = self.get(key)
        if found is not None:
            return found
        loop = asyncio.get_running_loop()
        pending = self._making.get(key)
        if pending is not None and pending.get_loop() is loop:  # a future is awaited on its own loop only
            return await asyncio.shield(pending)
        future: asyncio.Future = loop.create_future()
        self._making[key] = future
        try:
            answer = await make()
        except asyncio.CancelledError:
            future.cancel()
            raise
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" warning when nobody else waited
            raise
        finally:
            if self._making.get(key) is future:
                del self._making[key]
        future.set_result(answer)
        self.put(key, answer)
        return answer

    def get(self, key: AnswerKey) -> CachedAnswer | None:
        with self._lock:
            found = self._entries.get(key)
            if found is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return found

    def put(self, key: AnswerKey, answer: CachedAnswer) -> None:
        """Keep `answer`; one larger than the whole cache is not kept."""
        size = answer.size
        if size > self.max_bytes:
            return
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.size
            self._entries[key] = answer
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, dropped = self._entries.popitem(last=False)
                self._bytes -= dropped.size

    def values(self) -> list[CachedAnswer]:
        """What is held, least recently used first (for benchmarks and debugging)."""
        with self._lock:
            return list(self._entries.values())

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def size(self) -> int:
        """Bytes of JSON held."""
        return self._bytes
