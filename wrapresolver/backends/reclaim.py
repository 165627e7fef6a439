"""The delete side of a backend: what a target holds besides the published state, and removing it.

A run leaves one stored state per producing task (`core.refs.producer_ref(run, task)`);
killed or retried stores leave staging objects (`uploads/`, `.tmp-` blobs) or partial
rsync state directories. A backend that can reclaim them has a step half (`BlobStore` or
`WorkspaceStore`) that is `Reclaimable` (`wrapresolver.backends.base`):

* `stored_items()`: every run state and every leftover at the target, as `StoredItem`s
  (never the published target: it is not listed at all);
* `delete_items(items)`: delete exactly those, and say what was reclaimed (`Reclaimed`).

Two more abilities are optional: `PublishedListable` (`published_items()`: the published
results, each with the run that wrote it: what `publish-retention` and `gc --published`
choose from; `delete_items` must then accept `PUBLISHED` items) and `TargetExistence`
(`target_exists()`, so `gc` of a target that is not there is an error naming it). A store
without them gets `ReclaimUnsupported` for the first and no existence check for the second.

Everything else (which items belong to one run, which are old enough) is decided here,
once, over those abilities, so the controller and `wrapresolver gc` choose the same way.
Each function below takes any store and tests for the ability it needs (`isinstance`); a
store without it raises `ReclaimUnsupported` with a message that names what it lacks. The
values (`StoredItem`, `Reclaimed`, the item kinds) are defined in `base` and re-exported here.

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

from wrapresolver.backends.base import (
    PARTIAL,
    PUBLISHED,
    STATE,
    UPLOAD,
    Listable,
    PublishedListable,
    Reclaimable,
    Reclaimed,
    StoredItem,
    TargetExistence,
)
from wrapresolver.core.refs import is_run_uid, producer_ref
from wrapresolver.errors import TransferError

__all__ = [
    "PARTIAL", "PUBLISHED", "STATE", "UPLOAD", "ReclaimUnsupported", "Reclaimed", "StoredItem", "delete_items",
    "older_than", "published_items", "reclaim_published", "reclaim_run", "run_items", "stored_items",
    "target_exists", "unsupported",
]


class ReclaimUnsupported(TransferError):
    """The backend has no delete side (a plugin that predates it, or a store that refuses deletes)."""


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
    """What a `Listable` store holds; `ReclaimUnsupported` for any other."""
    if not isinstance(store, Listable):
        raise unsupported(store)
    return list(store.stored_items())


def delete_items(store: object, items: Sequence[StoredItem]) -> Reclaimed:
    """`items` deleted from a `Reclaimable` store; `ReclaimUnsupported` for any other."""
    if not isinstance(store, Reclaimable):
        raise unsupported(store)
    if not items:
        return Reclaimed()
    return store.delete_items(items)


def published_items(store: object) -> list[StoredItem]:
    """The published results at this target; `ReclaimUnsupported` for a store without them."""
    if not isinstance(store, PublishedListable):
        raise unsupported(store, "published_items")
    return list(store.published_items())


def reclaim_published(store: object, run: str) -> Reclaimed:
    """Delete what run `run` published here, if it is still its: a later run's result stays.

    The published manifest records its run (`dev.wrapresolver.run`); a target tag that a
    later run published again names that run, so it is never chosen.
    """
    return delete_items(store, [i for i in published_items(store) if i.run == run])


def target_exists(store: object) -> bool | None:
    """Whether the target exists; None when the store cannot tell."""
    return bool(store.target_exists()) if isinstance(store, TargetExistence) else None


def reclaim_run(store: object, run: str, tasks: Sequence[str] = ()) -> Reclaimed:
    """Delete every state of one run at this target (and nothing else)."""
    return delete_items(store, run_items(stored_items(store), run, tasks))
