"""Opening a target for the injected steps (and for tools): one object with the step actions.

`backend.open` gives a `BlobStore` or a `WorkspaceStore`; `open_steps` puts the layered
engine around the first and the runner's rules around both, so callers (the CLI, the
conformance kit, benchmarks) never need to know which kind a backend is.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from wrapresolver.backends.base import Backend, BlobStore, WorkspaceStore
from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.core.values import TransferReport
from wrapresolver.errors import TransferError
from wrapresolver.steps import runner
from wrapresolver.steps.engine import LayeredStore
from wrapresolver.steps.runner import Progress


def open_store(backend: Backend, target: str, options: Mapping[str, str]) -> WorkspaceStore:
    """`backend.open`, with the layered data path put around a `BlobStore`."""
    opened = backend.open(target, options)
    if isinstance(opened, BlobStore):
        return LayeredStore(opened, target)
    if isinstance(opened, WorkspaceStore):
        return opened
    raise TransferError(
        f"backend {backend.name!r} opened {target!r} as a {type(opened).__name__}, which is "
        f"neither a BlobStore nor a WorkspaceStore"
    )


def open_steps(backend: Backend, target: str, options: Mapping[str, str]) -> Steps:
    return Steps(open_store(backend, target, options))


class Steps:
    """A `WorkspaceStore` with the runner's rules: fetch, store, publish, and by hand pull, push."""

    def __init__(self, store: WorkspaceStore) -> None:
        self.inner = store

    def fetch(
        self, spec: WorkspaceTransfer, dest: Path, state_dir: Path, progress: Progress | None = None,
    ) -> TransferReport:
        return runner.fetch(self.inner, spec, dest, state_dir, progress)

    def store(
        self, spec: WorkspaceTransfer, src: Path, state_dir: Path, progress: Progress | None = None,
    ) -> TransferReport:
        return runner.store(self.inner, spec, src, state_dir, progress)

    def publish(self, spec: WorkspaceTransfer, progress: Progress | None = None) -> TransferReport:
        return runner.publish(self.inner, spec, progress)

    def pull(self, dest: Path, sub_path: str = "", progress: Progress | None = None) -> TransferReport:
        return runner.pull(self.inner, dest, sub_path, progress)

    def push(
        self, src: Path, options: Mapping[str, str] | None = None, progress: Progress | None = None,
    ) -> TransferReport:
        return runner.push(self.inner, src, options, progress)

    def close(self) -> None:
        self.inner.close()

    def __enter__(self) -> Steps:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
