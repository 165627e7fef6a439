"""Where Pipelines and Tasks come from, behind one small interface.

The pure core never fetches anything; `resolve.resolve` asks a `Source`. The controller
passes a cluster source (by name in the request's namespace, nested resolvers through child
ResolutionRequests); `render` passes `FileSource` over local YAML documents.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Protocol

from wrapresolver.params import PipelineRef


@dataclass(frozen=True)
class Fetched:
    """A fetched Tekton object and where it came from (becomes `status.refSource`)."""

    obj: Mapping
    """The whole object: apiVersion, kind, metadata, spec."""
    ref_source: Mapping = field(default_factory=dict)
    """{uri, digest: {sha256: hex}, entryPoint?} as Tekton's RefSource."""


class Source(Protocol):
    async def pipeline(self, ref: PipelineRef, namespace: str) -> Fetched:
        """The Pipeline named by `ref`. Raise `SourceError` with an actionable message."""
        ...

    async def task(self, task_ref: Mapping, namespace: str) -> Fetched:
        """The Task a pipeline task's `taskRef` names (`{name}` or `{resolver, params}`)."""
        ...
