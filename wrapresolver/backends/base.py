"""What a backend plugin implements: everything a plugin imports comes from this module.

A backend is a `Backend` (its resolver half: `validate_target`, `validate_options`,
`step_requirements`, pure) whose `open` returns one of two step halves:

* a `BlobStore`: six primitives over content-addressed blobs and named manifests. The
  layered data path (snapshots, diffs, merges, fallbacks, OCI images) is put around it by
  `wrapresolver.steps.engine`; an object store (S3-, GCS-, WebDAV-like) subclasses
  `wrapresolver.backends.objectstore.ObjectStore` and implements only its transport.
* a `WorkspaceStore`: a whole-directory backend (rsync-like) that resolves, materialises
  and saves trees itself. `wrapresolver.steps.runner` owns the rules around it (an
  unbound workspace is skipped, a failed fetch leaves an empty directory, the fetch record,
  timing, progress), so the backend writes none of them.

Optional abilities are small protocols a step half implements or not, as Tekton's resolver
framework declares them: `Listable` (what a target holds, for `wrapresolver inspect`),
`Reclaimable` (delete it: the retention policy and `wrapresolver gc`), `PublishedListable`,
`TargetExistence` and, for an object store, `KeyListable`. Callers test for them with
`isinstance`, so a plugin without one gets a message that names what it lacks. Their
answers are built from `StoredItem`, `Reclaimed` and `KeyInfo`, defined here. Errors are
the classes re-exported here, and every wait is bounded by `io_timeout()`.

Register the instance under the entry-point groups `wrapresolver.backends` (by name) and
`wrapresolver.schemes` (by target scheme); see `wrapresolver.backends.registry`.
Import client libraries (boto3, google-cloud-storage) inside `open`, never at module top,
so the controller and OCI-only images need none of them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from wrapresolver.core.backend import Backend
from wrapresolver.core.limits import io_timeout
from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.core.values import TEKTON_VARIABLE, Artifact, Descriptor, StepRequirements, TransferReport
from wrapresolver.errors import (
    AuthError,
    DiskFullError,
    IntegrityError,
    NetworkError,
    NotFoundError,
    ParamError,
    TransferError,
)
from wrapresolver.transfer.streams import IteratorReader

if TYPE_CHECKING:  # pragma: no cover
    from wrapresolver.transfer.snapshot import Changes, Entry

__all__ = [
    "TEKTON_VARIABLE", "Artifact", "Backend", "BlobStore", "Descriptor", "Input", "Moved",
    "Reader", "StepRequirements", "Tick", "TransferReport", "WorkspaceStore",
    # The optional abilities and their values (plugin-authors.md, "Reclaiming storage").
    "KeyInfo", "KeyListable", "Listable", "PublishedListable", "Reclaimable", "Reclaimed", "StoredItem",
    "TargetExistence", "PARTIAL", "PUBLISHED", "STATE", "UPLOAD",
    # The errors a backend raises, and the one bound on waiting.
    "AuthError", "DiskFullError", "IntegrityError", "NetworkError", "NotFoundError", "ParamError",
    "TransferError", "io_timeout",
]

Tick = Callable[[int, int], None]
"""Progress callback of a long transfer: (files so far, bytes so far)."""


class Reader(Protocol):
    """What `put_blob` reads from: a binary file, a pipe, a stream adapter."""

    def read(self, size: int = -1, /) -> bytes: ...



class BlobStore(ABC):
    """Content-addressed blobs and named manifests at one target.

    Reference names are `core.refs.producer_ref(...)` tags and `target_ref` for the user's
    exact target. Blobs are sha256-addressed and immutable; a reference is replaced
    atomically.
    """

    target_ref: str = "latest"
    """Name of the reference that is the user's exact target (the OCI tag, or `latest`)."""
    options: Mapping[str, str] = {}
    """The backend options it was opened with (`compression` for `push`)."""

    @abstractmethod
    def blob_exists(self, digest: str) -> bool: ...

    @abstractmethod
    def put_blob(self, reader: Reader, media_type: str) -> Descriptor:
        """Stream `reader` to a new blob; return its descriptor (sha256 computed on the fly).

        Never buffer the whole blob in memory. The blob must not become visible under its
        digest until it is complete and verified.
        """

    @abstractmethod
    def open_blob(self, digest: str) -> Iterator[bytes]:
        """Stream a blob's bytes. The caller verifies the digest while reading."""

    @abstractmethod
    def get_manifest(self, ref: str) -> bytes | None:
        """The manifest bytes stored under `ref`, or None if there is no such reference."""

    @abstractmethod
    def put_manifest(self, ref: str, data: bytes, media_type: str) -> None:
        """Store manifest bytes under `ref`, replacing any previous one atomically."""

    def copy_blob_from(self, other: BlobStore, descriptor: Descriptor) -> None:
        """Make a blob of `other` (e.g. the `base` store) available here.

        Default: stream it through this process. Registries override this with a
        cross-repository mount when both are on the same registry.
        """
        got = self.put_blob(IteratorReader(other.open_blob(descriptor.digest)), descriptor.media_type)
        if got.digest != descriptor.digest:
            raise IntegrityError(f"blob {descriptor.digest} copied from base arrived as {got.digest}")

    def probe(self, *, read: bool, write: bool) -> bool:
        """Check, cheaply, that this identity can reach the target and read it (`read`) or
        write it (`write`); raise what the real call would (`NetworkError`, `AuthError`,
        `NotFoundError` for a missing bucket, ...). Return True when checked.

        Optional: the fetch step calls it before the task's own steps run, so a dead or
        forbidden target fails the task before its work rather than in the store step
        after it. Use the cheapest call that proves it (one bucket-level request, a ping
        and a token), never a transfer, and leave nothing behind that is not a valid part of
        the layout. Default: False, not checked (the first real call reports the problem).
        """
        return False

    def warm_up(self) -> None:
        """A store step is about to walk the workspace: start connecting, if that takes a while.

        Called once, before the walk, which takes a few hundred milliseconds on a large
        workspace and mostly waits in `lstat`. A backend may open its connection (TLS
        trust, the first request) in a background thread meanwhile. It must return at
        once and never raise: a failure shows on the first real call, with the message
        that call would have given. Default: nothing.
        """

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> BlobStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _nothing() -> None:
    return None


@dataclass
class Input:
    """A task's input as a `WorkspaceStore` resolved it (producers merged, fallbacks taken)."""

    record: Mapping[str, Any]
    """JSON: what `save` needs to know about the input; kept in the fetch record."""
    layers: int = 0
    detail: str = ""
    """For the log line: "from build, test (lint skipped: fell back to clone)"."""
    value: Any = None
    """The backend's own form of the input, for `materialize`."""
    close: Callable[[], None] = field(default=_nothing, repr=False)
    """Releases what resolving opened (a `base` store); called after materialising."""
    artifacts: tuple[Artifact, ...] = ()
    """The stored states this input was made of, in merge order (for the fetch's results);
    empty when the backend has no digest for them."""


@dataclass
class Moved:
    """What one step-half primitive did, for the report."""

    files: int | None = None
    """None: the runner counts the files of the workspace."""
    bytes: int = 0
    layers: int = 0
    detail: str = ""
    name: str = ""
    """By hand (pull/push): what the report is about, when not a workspace."""
    artifacts: tuple[Artifact, ...] = ()
    """What a store or publish wrote, as provenance names it (for the step's results)."""
    entries: dict[str, Entry] | None = None
    """A materialize that knows what it wrote (path -> metadata, as `snapshot.take` would
    find it) hands it here, and the runner records it instead of walking the workspace again."""


class WorkspaceStore(ABC):
    """The step half of a backend for one target, as primitives the runner calls.

    The runner (`wrapresolver.steps.runner`) skips unbound workspaces, times the call,
    reports progress, keeps the fetch record, empties a half-fetched workspace and turns OS
    errors into messages; these methods only move the data.
    """

    @abstractmethod
    def resolve(self, spec: WorkspaceTransfer) -> Input:
        """The merged input of `spec.task`: `spec.inputs` through `spec.graph` (a missing
        producer falls back to its own inputs), else `spec.base`, else empty."""

    @abstractmethod
    def materialize(self, spec: WorkspaceTransfer, inputs: Input, dest: Path, tick: Tick) -> Moved:
        """Write the input (only `spec.sub_path` of it) into the empty directory `dest`."""

    @abstractmethod
    def save(
        self, spec: WorkspaceTransfer, src: Path, scratch: Path, record: Mapping[str, Any] | None,
        before: Mapping[str, Entry], after: Mapping[str, Entry], changes: Changes, tick: Tick,
    ) -> Moved:
        """Record `changes` (what the task changed in `src`) under its producer reference.

        `record` is the fetch's `Input.record`, None when there was no fetch (then `changes`
        is the whole tree). The reference last (atomic); with `spec.publish` also write the
        final state to the exact target. `scratch` is a private directory for temporaries.
        """

    @abstractmethod
    def publish(self, spec: WorkspaceTransfer, tick: Tick) -> Moved:
        """Write the merge of `spec.inputs` (with fallbacks) to the exact target."""

    def pull(self, dest: Path, sub_path: str, tick: Tick) -> Moved:
        """Extract the state stored at the user's exact target into `dest` (by hand)."""
        raise TransferError(f"backend {type(self).__name__} cannot fetch a target by hand")

    def push(self, src: Path, options: Mapping[str, str] | None, tick: Tick) -> Moved:
        """Store the whole tree `src` at the user's exact target (by hand, or to seed a `base`)."""
        raise TransferError(f"backend {type(self).__name__} cannot store a target by hand")

    def probe(self, *, read: bool, write: bool) -> bool:
        """As `BlobStore.probe`: check read and/or write access cheaply; False if not checked."""
        return False

    def warm_up(self) -> None:
        """As `BlobStore.warm_up`: called once before a store step walks the workspace."""

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> WorkspaceStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---- optional abilities: what a step half may also do, and the values they answer with ----

STATE = "state"
"""A run's stored state under its producer reference."""
UPLOAD = "upload"
"""A blob or object left in staging by a killed or failed store."""
PUBLISHED = "published"
"""A published result (its manifest says `dev.wrapresolver.published`): listed only by
`published_items()`, deleted only when asked for by name (publish-retention, `gc --published`)."""
PARTIAL = "partial"
"""An rsync state directory that no reference names (a killed or retried store)."""


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


@dataclass(frozen=True)
class KeyInfo:
    """One object: its key relative to the target, size, last modification (epoch seconds)."""

    key: str
    size: int | None = None
    modified: float | None = None


@runtime_checkable
class Listable(Protocol):
    """Lists what the target holds: what `wrapresolver inspect` and every reclaim start from."""

    def stored_items(self) -> list[StoredItem]:
        """Every run state (kind `STATE`, named by its reference) and every leftover (`UPLOAD`,
        `PARTIAL`); never the exact target."""
        ...


@runtime_checkable
class Reclaimable(Listable, Protocol):
    """Deletes what it listed: the controller's retention policy and `wrapresolver gc` need it."""

    def delete_items(self, items: Sequence[StoredItem]) -> Reclaimed:
        """Delete exactly `items`; free only what no remaining reference needs."""
        ...


@runtime_checkable
class PublishedListable(Protocol):
    """Lists the published results, each with the run that wrote it (publish-retention,
    `gc --published`); `delete_items` of such a store must accept `PUBLISHED` items."""

    def published_items(self) -> list[StoredItem]: ...


@runtime_checkable
class TargetExistence(Protocol):
    """Tells whether the target exists, so `wrapresolver gc` of a missing one names it."""

    def target_exists(self) -> bool: ...


@runtime_checkable
class KeyListable(Protocol):
    """An object store that lists keys: `ObjectStore` builds `Reclaimable` on it, and
    `wrapresolver gc` finds the layouts under a bucket prefix with it."""

    def list_keys(self, prefix: str) -> Iterator[KeyInfo]:
        """Every object whose key starts with `prefix`, recursively (the one place a store lists)."""
        ...
