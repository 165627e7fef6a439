"""The delete side of a backend: what a target holds besides the published state, and removing it.

A run leaves one stored state per producing task (`core.refs.producer_ref(run, task)`);
killed or retried stores leave staging objects (`uploads/`, `.tmp-` blobs) or partial
rsync state directories. A backend that can reclaim them implements two methods on its
step half (`BlobStore` or `WorkspaceStore`):

* `stored_items()`: every run state and every leftover at the target, as `StoredItem`s
  (never the published target: it is not listed at all);
* `delete_items(items)`: delete exactly those, and say what was reclaimed (`Reclaimed`).

Two more are optional: `published_items()` (the published results, each with the run that
wrote it: what `publish-retention` and `gc --published` choose from; `delete_items` must then
accept `PUBLISHED` items) and `target_exists()` (so `gc` of a target that is not there is an
error naming it). A store without them gets `ReclaimUnsupported` for the first and no
existence check for the second.

Everything else (which items belong to one run, which are old enough) is decided here,
once, over those two methods, so the controller and `wrapresolver gc` choose the same way.
A backend without them raises `ReclaimUnsupported` with a message that names it.

Safety rules, kept by every implementation:

* the published target (`target_ref`, rsync's `latest/`) is never listed, so never deleted;
* a run's items are chosen by exact reference names when its tasks are known, and by the
  `wrap-<run>-` prefix only for a run id of fixed length (a Kubernetes UID), so one run's
  id being a prefix of another's can never select the other's states;
* deleting a state frees only the blobs that no remaining reference names.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from wrapresolver.core.refs import is_run_uid, producer_ref
from wrapresolver.errors import TransferError

STATE = "state"
"""A run's stored state under its producer reference."""
UPLOAD = "upload"
"""A blob or object left in staging by a killed or failed store."""
PUBLISHED = "published"
"""A published result (its manifest says `dev.wrapresolver.published`): listed only by
`published_items()`, deleted only when asked for by name (publish-retention, `gc --published`)."""
PARTIAL = "partial"
"""An rsync state directory that no reference names (a killed or retried store)."""


class ReclaimUnsupported(TransferError):
    """The backend has no delete side (a plugin that predates it, or a store that refuses deletes)."""


@dataclass(frozen=True)
class StoredItem:
    """One thing at a target that is not the published state."""

    name: str
    """The reference name (a state) or the key relative to the target (a leftover)."""
    kind: str = STATE
    run: str = ""
    """The run it belongs to, where the store records it (OCI-style annotations)."""
    size: int | None = None
    """Bytes it holds where known (for a state: its blobs, some maybe shared)."""
    created: float | None = None
    """When it was written (epoch seconds), where known."""


@dataclass
class Reclaimed:
    """What a delete did: counted per item, bytes where the store knows them."""

    deleted: list[str] = field(default_factory=list)
    bytes: int = 0
    bytes_known: bool = True
    kept: list[str] = field(default_factory=list)
    """Items left in place, each with the reason (a shared manifest, a refused delete)."""
    notes: list[str] = field(default_factory=list)
    """Said once per delete: e.g. the registry refuses manifest deletion."""
    failures: list[str] = field(default_factory=list)

    def add(self, other: Reclaimed) -> None:
        self.deleted += other.deleted
        self.bytes += other.bytes
        self.bytes_known = self.bytes_known and other.bytes_known
        self.kept += other.kept
        self.notes += [n for n in other.notes if n not in self.notes]
        self.failures += other.failures

    def summary(self) -> str:
        size = f"{self.bytes} bytes" if self.bytes_known else f"at least {self.bytes} bytes"
        text = f"{len(self.deleted)} deleted ({size})"
        if self.kept:
            text += f", {len(self.kept)} kept"
        if self.failures:
            text += f", {len(self.failures)} failed"
        return text


def unsupported(store: object, missing: str = "stored_items/delete_items") -> ReclaimUnsupported:
    return ReclaimUnsupported(
        f"backend store {type(store).__name__} has no delete side ({missing}): "
        f"its states are not reclaimed automatically; remove them with the storage's own tools "
        f"or upgrade the plugin (see plugin-authors.md, 'Reclaiming storage')"
    )


def run_items(items: Iterable[StoredItem], run: str, tasks: Sequence[str] = ()) -> list[StoredItem]:
    """The states of exactly one run: by exact names when its tasks are known, else by UID prefix."""
    states = [i for i in items if i.kind == STATE]
    if tasks:
        names = {producer_ref(run, task) for task in tasks}
        return [i for i in states if i.name in names]
    if not is_run_uid(run):
        raise ValueError(f"run id {run!r} is not a UID: name its tasks so only its own states are chosen")
    prefix = f"wrap-{run}-"
    return [i for i in states if i.name.startswith(prefix) or i.run == run]


def older_than(items: Iterable[StoredItem], seconds: float, now: float | None = None) -> tuple[list[StoredItem], list[StoredItem]]:
    """(items written more than `seconds` ago, items whose age is unknown)."""
    limit = (time.time() if now is None else now) - seconds
    old, unknown = [], []
    for item in items:
        if item.created is None:
            unknown.append(item)
        elif item.created < limit:
            old.append(item)
    return old, unknown


def stored_items(store: object) -> list[StoredItem]:
    method = getattr(store, "stored_items", None)
    if method is None:
        raise unsupported(store)
    return list(method())


def delete_items(store: object, items: Sequence[StoredItem]) -> Reclaimed:
    method = getattr(store, "delete_items", None)
    if method is None:
        raise unsupported(store)
    if not items:
        return Reclaimed()
    result: Reclaimed = method(items)
    return result


def published_items(store: object) -> list[StoredItem]:
    """The published results at this target; `ReclaimUnsupported` for a store without them."""
    method = getattr(store, "published_items", None)
    if method is None:
        raise unsupported(store, "published_items")
    return list(method())


def reclaim_published(store: object, run: str) -> Reclaimed:
    """Delete what run `run` published here, if it is still its: a later run's result stays.

    The published manifest records its run (`dev.wrapresolver.run`); a target tag that a
    later run published again names that run, so it is never chosen.
    """
    return delete_items(store, [i for i in published_items(store) if i.run == run])


def target_exists(store: object) -> bool | None:
    """Whether the target exists; None when the store cannot tell."""
    method = getattr(store, "target_exists", None)
    return None if method is None else bool(method())


def reclaim_run(store: object, run: str, tasks: Sequence[str] = ()) -> Reclaimed:
    """Delete every state of one run at this target (and nothing else)."""
    return delete_items(store, run_items(stored_items(store), run, tasks))
