"""The backend interface: a resolver half (pure) and a step half (the data path).

A backend is a `Backend` instance registered under the entry-point group
`wrapresolver.backends`; the built-ins register the same way (see pyproject.toml), so a
third-party package is a first-class citizen.

Resolver half (runs in the controller, no I/O, no heavy imports):
  `validate_target`, `validate_options`, `step_requirements`.
Step half (runs in the injected steps): `open(target, options)` returns a `WorkspaceStore`.
Import client libraries (boto3, google-cloud-storage) inside `open`, never at module top,
so the controller and OCI-only images need none of them.

Most backends subclass `BlobStore`: content-addressed blobs plus named references to
manifests. The layered logic (snapshots, diffs, merges, fallbacks) is written once in
`wrapresolver.transfer.engine` on top of those primitives. A whole-directory backend
(rsync-like) subclasses `WorkspaceStore` and implements fetch/store/publish itself.
"""

from __future__ import annotations

import functools
import hashlib
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, ClassVar, Iterator, Mapping

from wrapresolver.errors import ParamError, TransferError

if TYPE_CHECKING:  # pragma: no cover
    from wrapresolver.stepspec import WorkspaceTransfer
    from wrapresolver.transfer.report import TransferReport

ENTRY_POINT_GROUP = "wrapresolver.backends"
LAYER_COMPRESSIONS = ("zstd", "gzip")
_OBJECT_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
TEKTON_VARIABLE = re.compile(r"\$\([^)]*\)")
"""`$(context.pipelineRun.name)`, `$(params.x)`: filled in by Tekton after resolution, so
validation accepts them wherever a backend option or target may hold one."""


@dataclass(frozen=True)
class StepRequirements:
    """What the injected steps need from the pod to reach the backend.

    Plain Kubernetes dicts (EnvVar, Volume, VolumeMount) so the rewrite can add them to the
    task spec unchanged. Secrets are referenced, never copied into the Pipeline.
    """

    env: tuple[Mapping, ...] = ()
    volumes: tuple[Mapping, ...] = ()
    volume_mounts: tuple[Mapping, ...] = ()
    args: tuple[str, ...] = ()


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about a blob."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict:
        out: dict = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_dict(cls, data: Mapping) -> "Descriptor":
        return cls(
            media_type=data["mediaType"],
            digest=data["digest"],
            size=int(data["size"]),
            annotations=dict(data.get("annotations") or {}),
        )


class Backend(ABC):
    """One storage backend. Instances are stateless and cheap; `BACKEND = MyBackend()`."""

    name: ClassVar[str]
    """The name users write in the `backend` param and the entry point's name."""
    schemes: ClassVar[tuple[str, ...]] = ()
    """Target schemes that select this backend (`s3` for `s3://...`)."""
    options: ClassVar[Mapping[str, str]] = {}
    """Backend options the resolver accepts as params: name -> one-line description."""

    # ---- resolver half: pure ----
    def validate_target(self, target: str) -> None:
        """Raise `ParamError` if `target` (workspace already substituted) cannot work.

        `target` may still hold `$(context.pipelineRun.*)` or `$(params.*)`: accept those.
        """

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """Check and normalise backend options; unknown names are an error."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise ParamError(
                f"unknown param(s) {', '.join(unknown)} for backend {self.name!r}; "
                f"its options are: {known}"
            )
        # Options that name a Secret or a ConfigMap (`credentials-secret`, `ca-configmap`, ...)
        # must be object names in the PipelineRun's namespace: checked once, here.
        for name, value in options.items():
            kind = "Secret" if name.endswith("-secret") else "ConfigMap" if name.endswith("-configmap") else ""
            if kind and value and not TEKTON_VARIABLE.search(value) and not _OBJECT_NAME.match(value):
                raise ParamError(
                    f"param `{name}` must name a {kind} in the PipelineRun's namespace: "
                    f"{value!r} is not a valid Kubernetes {kind} name (lowercase letters, "
                    f"digits, '-' and '.', at most 253 characters)"
                )
        # `compression` means the same for every layered backend: checked once, here.
        if options.get("compression", "zstd") not in LAYER_COMPRESSIONS:
            raise ParamError(
                f"compression {options['compression']!r} is not supported; use zstd or gzip"
            )
        return dict(options)

    def step_requirements(self, options: Mapping[str, str]) -> StepRequirements:
        """Env, Secret volumes and mounts the injected steps need (pure)."""
        return StepRequirements()

    # ---- step half ----
    @abstractmethod
    def open(self, target: str, options: Mapping[str, str]) -> "WorkspaceStore":
        """Connect to the storage at `target`. Import client libraries here."""


class WorkspaceStore(ABC):
    """The step half of a backend: moves one workspace's states for one target."""

    @abstractmethod
    def fetch(self, spec: "WorkspaceTransfer", dest: Path, state_dir: Path) -> "TransferReport":
        """Reconstruct W's input state for `spec.task` into the empty directory `dest`.

        Resolves `spec.inputs` through `spec.graph` (a missing producer falls back to its own
        inputs), merges them in order, starts from `spec.base` when there are none, applies
        only `spec.sub_path`, and leaves in `state_dir` what `store` needs to find changes.
        """

    @abstractmethod
    def store(self, spec: "WorkspaceTransfer", src: Path, state_dir: Path) -> "TransferReport":
        """Record what the task changed in `src` under its producer reference.

        Reference last (atomic). With `spec.publish`, also write the final state of W to
        the exact target. Without a fetch record in `state_dir` it stores the whole tree.
        """

    @abstractmethod
    def publish(self, spec: "WorkspaceTransfer") -> "TransferReport":
        """Write the merge of `spec.inputs` (with fallbacks) to the exact target."""

    def pull(self, dest: Path, sub_path: str = "") -> "TransferReport":
        """Extract the state stored at the user's exact target into `dest` (by hand).

        `wrapresolver fetch --target REF --path DIR` calls this, so a person can look at the
        final workspace of a run. Backends that cannot do it say so clearly.
        """
        raise TransferError(f"backend {type(self).__name__} cannot fetch a target by hand")

    def push(self, src: Path, options: Mapping[str, str] | None = None) -> "TransferReport":
        """Store the whole tree `src` at the user's exact target (by hand, or to seed a `base`)."""
        raise TransferError(f"backend {type(self).__name__} cannot store a target by hand")

    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> "WorkspaceStore":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class BlobStore(WorkspaceStore):
    """Content-addressed blobs and named manifests at one target; the layered logic is inherited.

    Implement the six primitives; fetch/store/publish come from `wrapresolver.transfer.engine`.
    Reference names are `refs.producer_ref(...)` tags and `target_ref` for the user's exact
    target. Blobs are sha256-addressed and immutable; a reference is replaced atomically.
    """

    target_ref: str = "latest"
    """Name of the reference that is the user's exact target (the OCI tag, or `latest`)."""
    options: Mapping[str, str] = {}
    """The backend options it was opened with (`compression` for `push`)."""

    @abstractmethod
    def blob_exists(self, digest: str) -> bool: ...

    @abstractmethod
    def put_blob(self, reader: BinaryIO, media_type: str) -> Descriptor:
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

    def copy_blob_from(self, other: "BlobStore", descriptor: Descriptor) -> None:
        """Make a blob of `other` (e.g. the `base` store) available here.

        Default: stream it through this process. Registries override this with a
        cross-repository mount when both are on the same registry.
        """
        from wrapresolver.transfer.streams import IteratorReader

        got = self.put_blob(IteratorReader(other.open_blob(descriptor.digest)), descriptor.media_type)
        if got.digest != descriptor.digest:
            from wrapresolver.errors import IntegrityError

            raise IntegrityError(
                f"blob {descriptor.digest} copied from base arrived as {got.digest}"
            )

    def fetch(self, spec, dest, state_dir):
        from wrapresolver.transfer import engine

        return engine.fetch(self, spec, dest, state_dir)

    def store(self, spec, src, state_dir):
        from wrapresolver.transfer import engine

        return engine.store(self, spec, src, state_dir)

    def publish(self, spec):
        from wrapresolver.transfer import engine

        return engine.publish(self, spec)

    def pull(self, dest, sub_path=""):
        from wrapresolver.transfer import engine

        return engine.fetch_ref(self, self.target_ref, dest, sub_path)

    def push(self, src, options=None):
        from wrapresolver.transfer import engine

        return engine.store_ref(self, src, self.target_ref, self.options if options is None else options)


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---- registry ----

@functools.lru_cache(maxsize=1)
def _registered() -> tuple[EntryPoint, ...]:
    """The group's entry points, read once per process.

    Scanning every installed distribution's metadata costs milliseconds of file reads;
    the controller asks on every request, and plugins are installed with the image, not
    while it runs.
    """
    return tuple(entry_points(group=ENTRY_POINT_GROUP))


@functools.lru_cache(maxsize=None)
def _load(entry: EntryPoint) -> Backend:
    return entry.load()


def installed_backends() -> dict[str, Backend]:
    """Every backend registered under `wrapresolver.backends`, by name.

    A plugin that fails to import is skipped here and reported when asked for by name, so
    one broken package cannot take the resolver down.
    """
    found: dict[str, Backend] = {}
    for ep in _registered():
        try:
            found[ep.name] = _load(ep)
        except Exception:  # noqa: BLE001 - reported in get_backend
            continue
    return found


def get_backend(name: str) -> Backend:
    for ep in _registered():
        if ep.name == name:
            try:
                return _load(ep)
            except Exception as exc:  # noqa: BLE001
                raise ParamError(f"backend {name!r} is installed but failed to load: {exc}") from exc
    names = ", ".join(sorted(installed_backends())) or "none"
    raise ParamError(f"unknown backend {name!r}; installed backends: {names}")


def backend_for_scheme(scheme: str) -> Backend:
    backends = installed_backends()
    for backend in backends.values():
        if scheme in backend.schemes:
            return backend
    schemes = ", ".join(sorted(f"{s}://" for b in backends.values() for s in b.schemes))
    raise ParamError(
        f"no installed backend handles targets of scheme {scheme!r}; known schemes: {schemes} "
        f"(or set the `backend` param)"
    )
