"""One resolution, end to end, without any Kubernetes plumbing.

The controller and `wrapresolver render` both call `resolve`; they differ only in the
`Source` they pass and in where the answer goes (a ResolutionRequest's status, or stdout).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import yaml

from wrapresolver import names, rewrite, safeyaml
from wrapresolver.backends.base import get_backend
from wrapresolver.errors import RewriteError, SourceError, WrapError
from wrapresolver.params import RunContext, check_targets, parse_request, wrapped_workspaces
from wrapresolver.sources import Fetched, Source

CONTENT_TYPE = "application/x-yaml"
ANNOTATION_CONTENT_TYPE = "resolution.tekton.dev/content-type"
ANNOTATION_WORKSPACES = "wrapresolver.dev/workspaces"
ANNOTATION_BACKEND = "wrapresolver.dev/backend"

PIPELINE_API_VERSIONS = ("tekton.dev/v1", "tekton.dev/v1beta1")
"""What the pipelines controller accepts as the answer to a pipelineRef."""


@dataclass(frozen=True)
class Resolution:
    """What goes into the ResolutionRequest's status (or to stdout for `render`)."""

    data: bytes
    """The rewritten Pipeline as YAML."""
    annotations: dict[str, str] = field(default_factory=dict)
    ref_source: dict = field(default_factory=dict)
    """{uri, digest: {sha256}, entryPoint?}: where the Pipeline came from, digest of `data`."""


async def resolve(
    params: Sequence[Mapping], config: Mapping[str, str], context: RunContext, source: Source
) -> Resolution:
    """Resolve a `wrap` request: fetch, rewrite, serialise.

    Raises `WrapError` for anything the author can fix. Exceptions a `Source` raises that
    are not `WrapError`s (an API server hiccup) pass through, so the caller can retry them.
    """
    request = parse_request(params, config, context)
    fetched = await source.pipeline(request.pipelineref, context.namespace)
    pipeline = fetched.obj
    asked = request.pipelineref.name or request.pipelineref.resolver
    safeyaml.check_tree(pipeline, f"pipelineref {asked!r}")
    _check_pipeline(pipeline, asked)
    names.check_pipeline_task_names(pipeline, _name(pipeline))

    workspaces = wrapped_workspaces(request, pipeline)
    backend = get_backend(request.backend)
    check_targets(request, workspaces, backend)

    pipeline_name = _name(pipeline)
    try:
        to_inline = rewrite.taskrefs_to_inline(pipeline, workspaces)
    except WrapError:
        raise
    except Exception as exc:  # noqa: BLE001 - never a bare traceback to the author
        raise _unexpected(pipeline_name, exc) from exc
    task_objects = await _fetch_tasks(source, to_inline, context.namespace)

    try:
        rewritten = rewrite.rewrite_pipeline(pipeline, task_objects, request, workspaces, backend)
    except WrapError:
        raise
    except Exception as exc:  # noqa: BLE001
        raise _unexpected(pipeline_name, exc) from exc

    data = to_yaml(rewritten)
    ref_source: dict[str, Any] = {
        "uri": str(fetched.ref_source.get("uri", "")),
        "digest": {"sha256": hashlib.sha256(data).hexdigest()},
    }
    if fetched.ref_source.get("entryPoint"):
        ref_source["entryPoint"] = str(fetched.ref_source["entryPoint"])
    annotations = {
        ANNOTATION_CONTENT_TYPE: CONTENT_TYPE,
        ANNOTATION_WORKSPACES: ",".join(workspaces),
        ANNOTATION_BACKEND: request.backend,
    }
    return Resolution(data=data, annotations=annotations, ref_source=ref_source)


def to_yaml(obj: Any) -> bytes:
    """Deterministic YAML: same object, same bytes; key order kept, no anchors, scripts as blocks."""
    text = yaml.dump(
        _plain(obj),
        Dumper=_Dumper,
        sort_keys=False,
        default_flow_style=False,
        allow_unicode=True,
        width=4096,
    )
    return text.encode("utf-8")


async def _fetch_tasks(source: Source, refs: Mapping[str, Mapping], namespace: str) -> dict[str, Mapping]:
    """Fetch each distinct taskRef once, concurrently; report failures in pipeline order."""
    keys = {task: json.dumps(ref, sort_keys=True, default=str) for task, ref in refs.items()}
    distinct: dict[str, Mapping] = {}
    for task, ref in refs.items():
        distinct.setdefault(keys[task], ref)
    results = await asyncio.gather(
        *(source.task(ref, namespace) for ref in distinct.values()), return_exceptions=True
    )
    by_key = dict(zip(distinct, results))
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


def _check_pipeline(obj: Any, asked: str) -> None:
    if not isinstance(obj, Mapping):
        raise SourceError(f"pipelineref {asked!r} resolved to something that is not a Tekton object")
    api_version, kind = obj.get("apiVersion"), obj.get("kind")
    if kind != "Pipeline" or api_version not in PIPELINE_API_VERSIONS:
        raise SourceError(
            f"pipelineref {asked!r} resolved to a {api_version or '?'} {kind or 'object'}; "
            f"the wrap resolver needs a Pipeline of {' or '.join(PIPELINE_API_VERSIONS)}"
        )
    if not isinstance(obj.get("spec"), Mapping):
        raise SourceError(f"Pipeline {_name(obj)!r} has no spec")


def _unexpected(pipeline: str, exc: Exception) -> RewriteError:
    return RewriteError(
        f"could not rewrite Pipeline {pipeline!r}: unexpected {type(exc).__name__}: {exc} "
        f"(this is a bug in the wrap resolver; please report it with the Pipeline)"
    )


def _name(obj: Mapping) -> str:
    metadata = obj.get("metadata")
    return str(metadata.get("name", "")) if isinstance(metadata, Mapping) else ""


def _ref_text(ref: Mapping) -> str:
    if ref.get("resolver"):
        return f"(resolver {ref['resolver']})"
    return repr(ref.get("name", ""))


def _plain(obj: Any) -> Any:
    """Plain dicts, lists and scalars, so the dumper never emits Python tags."""
    if isinstance(obj, Mapping):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_plain(v) for v in obj]
    return obj


# libyaml's emitter when PyYAML has it: a large Pipeline serialises several times faster.
# Lists come out the way `kubectl get -o yaml` writes them (`- ` at the key's indentation).
_BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):  # type: ignore[misc, valid-type]
    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_str(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    # PyYAML falls back to a quoted style by itself when a block is not possible.
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _represent_str)
