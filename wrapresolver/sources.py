"""Where Pipelines and Tasks come from, behind one small interface.

The pure core never fetches anything; `resolve.resolve` asks a `Source`. The controller
passes a cluster source (by name in the request's namespace, nested resolvers through child
ResolutionRequests); `render` passes `FileSource` over local YAML documents.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from wrapresolver.core import safeyaml
from wrapresolver.core.params import PipelineRef
from wrapresolver.errors import SourceError, WrapError


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


class FileSource:
    """Pipelines and Tasks from local YAML documents, looked up by `metadata.name`.

    For `wrapresolver render`: no cluster, no network, so a resolver reference (in
    `pipelineref` or in a `taskRef`) cannot be followed and is reported instead.
    `ref_source.uri` is `file:<origin>` (the file the document came from, as given, or
    `file:` when unknown) and `entryPoint` is `<Kind>/<name>`, so two documents in one file
    stay distinguishable.
    """

    def __init__(self, documents: Iterable[Mapping], origins: Sequence[str] = ()) -> None:
        self._objects: dict[tuple[str, str], tuple[Mapping, str]] = {}
        for index, doc in enumerate(documents):
            if not isinstance(doc, Mapping):
                continue
            kind = doc.get("kind")
            name = (doc.get("metadata") or {}).get("name") if isinstance(doc.get("metadata"), Mapping) else None
            if kind not in ("Pipeline", "Task") or not isinstance(name, str) or not name:
                continue
            if not str(doc.get("apiVersion", "")).startswith("tekton.dev/"):
                continue
            origin = origins[index] if index < len(origins) else ""
            key = (kind, name)
            if key in self._objects:
                raise SourceError(
                    f"two {kind}s named {name!r} in the input files; keep one of them"
                )
            self._objects[key] = (doc, origin)

    def names(self, kind: str) -> list[str]:
        return sorted(name for k, name in self._objects if k == kind)

    async def pipeline(self, ref: PipelineRef, namespace: str) -> Fetched:
        if ref.resolver:
            raise SourceError(
                f"render cannot resolve resolver {ref.resolver!r} offline; pass the Pipeline with -f"
            )
        return self._get("Pipeline", ref.name)

    async def task(self, task_ref: Mapping, namespace: str) -> Fetched:
        resolver = task_ref.get("resolver")
        if resolver:
            raise SourceError(
                f"render cannot resolve resolver {resolver!r} offline; pass the Task with -f "
                f"and refer to it by name"
            )
        kind = task_ref.get("kind") or "Task"
        if kind != "Task":
            raise SourceError(f"taskRef of kind {kind!r} cannot be fetched; only Tasks can")
        return self._get("Task", str(task_ref.get("name") or ""))

    def _get(self, kind: str, name: str) -> Fetched:
        found = self._objects.get((kind, name))
        if found is None:
            known = ", ".join(self.names(kind)) or "none"
            raise SourceError(
                f"{kind} {name!r} is not in the input files ({kind}s found: {known}); "
                f"add the file that holds it with -f"
            )
        obj, origin = found
        return Fetched(obj=obj, ref_source={"uri": f"file:{origin}", "entryPoint": f"{kind}/{name}"})


async def fetch_tasks(source: Source, refs: Mapping[str, Mapping], namespace: str) -> dict[str, Mapping]:
    """Fetch each distinct taskRef once, concurrently; report failures in pipeline order."""
    keys = {task: json.dumps(ref, sort_keys=True, default=str) for task, ref in refs.items()}
    distinct: dict[str, Mapping] = {}
    for task, ref in refs.items():
        distinct.setdefault(keys[task], ref)
    results = await asyncio.gather(
        *(source.task(ref, namespace) for ref in distinct.values()), return_exceptions=True
    )
    by_key = dict(zip(distinct, results, strict=True))
    objects: dict[str, Mapping] = {}
    for task, ref in refs.items():
        result = by_key[keys[task]]
        if isinstance(result, WrapError):
            raise SourceError(f"pipeline task {task!r}: {result}", reason=result.reason) from result
        if isinstance(result, BaseException):
            raise result
        objects[task] = _checked_task(task, ref, result)
    return objects


def _checked_task(task: str, ref: Mapping, fetched: Fetched) -> Mapping:
    obj = fetched.obj
    safeyaml.check_tree(obj, f"the Task of pipeline task {task!r}")
    api_version = str(obj.get("apiVersion", "")) if isinstance(obj, Mapping) else ""
    kind = obj.get("kind") if isinstance(obj, Mapping) else None
    if not api_version.startswith("tekton.dev/") or kind != "Task":
        what = f"{api_version or '?'} {kind or 'object'}"
        raise SourceError(
            f"pipeline task {task!r}: taskRef {_ref_text(ref)} resolved to a {what}, not a Task"
        )
    return obj


def _ref_text(ref: Mapping) -> str:
    if ref.get("resolver"):
        return f"(resolver {ref['resolver']})"
    return repr(ref.get("name", ""))
