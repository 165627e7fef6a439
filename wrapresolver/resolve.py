"""One resolution, end to end, without any Kubernetes plumbing.

The controller and `wrapresolver render` both call `resolve`; they differ only in the
`Source` they pass and in where the answer goes (a ResolutionRequest's status, or stdout).
"""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import yaml

from wrapresolver.backends.registry import REGISTRY
from wrapresolver.core import checks, inline, lifecycle, locations, names, rewrite, safeyaml
from wrapresolver.core.params import (
    CONFIGMAP_NAME,
    RunContext,
    base_of,
    check_bases,
    check_targets,
    parse_request,
    wrapped_workspaces,
)
from wrapresolver.core.retention import publish_retention_of, retention_of
from wrapresolver.core.template import PIPELINE_PLACEHOLDER, expand_target
from wrapresolver.errors import ParamError, RewriteError, SourceError, WrapError
from wrapresolver.pycollector import paused_gc
from wrapresolver.sources import Fetched, Source

CONTENT_TYPE = "application/json"
ANNOTATION_CONTENT_TYPE = "resolution.tekton.dev/content-type"
ANNOTATION_WORKSPACES = "wrapresolver.dev/workspaces"
ANNOTATION_BACKEND = "wrapresolver.dev/backend"

PIPELINE_API_VERSIONS = ("tekton.dev/v1", "tekton.dev/v1beta1")
"""What the pipelines controller accepts as the answer to a pipelineRef."""

MAX_OBJECT_BYTES = 1536 * 1024
"""What one Kubernetes object can be: etcd's default request limit (1.5 MiB)."""
REQUEST_ROOM = 64 * 1024
"""Kept for the rest of the ResolutionRequest: metadata, params, refSource, conditions."""


@dataclass(frozen=True)
class Resolution:
    """What goes into the ResolutionRequest's status (or to stdout for `render`)."""

    data: bytes
    """The rewritten Pipeline as compact JSON (`to_json`); `render` shows it as YAML."""
    annotations: dict[str, str] = field(default_factory=dict)
    ref_source: dict = field(default_factory=dict)
    """{uri, digest: {sha256}, entryPoint?}: where the Pipeline came from, digest of `data`."""
    warnings: tuple[checks.Notice, ...] = ()
    """Legal but probably not meant (core.checks): `render` prints them, the controller makes Events."""


async def resolve(
    params: Sequence[Mapping], config: Mapping[str, str], context: RunContext, source: Source,
    *, config_name: str = f"the ConfigMap {CONFIGMAP_NAME}", signing_key: bytes = b"",
) -> Resolution:
    """Resolve a `wrap` request: fetch, rewrite, serialise.

    `config_name` is how warnings name where `config` came from (`render` says `--config`).
    `signing_key` signs the storage annotations for the controller (core.lifecycle); the
    controller passes its own, `render` none.

    Raises `WrapError` for anything the author can fix. Exceptions a `Source` raises that
    are not `WrapError`s (an API server hiccup) pass through, so the caller can retry them.
    """
    request = parse_request(params, config, context, REGISTRY)
    fetched = await source.pipeline(request.pipelineref, context.namespace)
    pipeline = fetched.obj
    asked = request.pipelineref.name or request.pipelineref.resolver
    safeyaml.check_tree(pipeline, f"pipelineref {asked!r}")
    _check_pipeline(pipeline, asked)
    names.check_pipeline_task_names(pipeline, _name(pipeline))
    checks.check_pipeline_bindings(pipeline)
    request = _with_pipeline_name(request, _name(pipeline))

    workspaces = wrapped_workspaces(request, pipeline)
    notices = [*checks.unknown_config_notices(config, backend_option_names(), config_name),
               *checks.volume_bound_notices(context, workspaces), *checks.embedded_binding_notices(pipeline)]
    backend = REGISTRY.by_name(request.backend)
    check_targets(request, workspaces, backend)
    check_bases(request, workspaces, backend)
    _check_allowed(config, request, workspaces, backend)

    pipeline_name = _name(pipeline)
    try:
        to_inline = inline.taskrefs_to_inline(pipeline, workspaces)
    except WrapError:
        raise
    except Exception as exc:  # never a bare traceback to the author
        raise _unexpected(pipeline_name, exc) from exc
    task_objects = await _fetch_tasks(source, to_inline, context.namespace)
    checks.check_task_bindings(pipeline, task_objects)

    # No await inside: no other request runs while the collector is off.
    warnings: list[str] = []
    with paused_gc():
        try:
            rewritten = rewrite.rewrite_pipeline(pipeline, task_objects, request, workspaces, backend, warnings)
        except WrapError:
            raise
        except Exception as exc:
            raise _unexpected(pipeline_name, exc) from exc
        _mark_storage(rewritten, params, config, request, workspaces, pipeline, signing_key, backend)
        data = to_json(rewritten, pipeline_name)
    check_answer_size(data, pipeline_name)
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
    notices += [checks.Notice(checks.REASON_POD_SECURITY, warning) for warning in warnings]
    return Resolution(data=data, annotations=annotations, ref_source=ref_source, warnings=tuple(notices))


def backend_option_names() -> set[str]:
    """The options of every installed backend, whose `default-<option>` ConfigMap keys are known.

    A plugin that fails to load is skipped here: it is reported when a request names it.
    """
    names: set[str] = set()
    for backend_name in REGISTRY.names():
        try:
            names.update(REGISTRY.by_name(backend_name).options)
        except WrapError:
            continue
    return names


def _with_pipeline_name(request: Any, name: str) -> Any:
    """The request with the Pipeline's name in its context, for `<<pipeline>>` in target and base."""
    uses = PIPELINE_PLACEHOLDER in request.target or PIPELINE_PLACEHOLDER in request.base or any(
        PIPELINE_PLACEHOLDER in b for b in (request.bases or {}).values())
    if uses and not name:
        raise ParamError(f"param `target` or `base` holds {PIPELINE_PLACEHOLDER}, but the Pipeline has no "
                         f"metadata.name to put there; name the Pipeline or write the name in the target")
    return dataclasses.replace(request, context=dataclasses.replace(request.context, pipeline=name))


def _check_allowed(config: Mapping[str, str], request: Any, workspaces: Sequence[str], backend: Any) -> None:
    """`allowed-targets`: every concrete target and base inside the admin's prefixes."""
    scheme = backend.schemes[0] if backend.schemes else backend.name
    targets = {ws: expand_target(request.target, ws, request.context) for ws in workspaces}
    bases = {ws: base_of(request, ws) for ws in workspaces if base_of(request, ws)}
    locations.check_locations(config, scheme, targets, bases)


def _mark_storage(
    rewritten: dict, params: Sequence[Mapping], config: Mapping[str, str], request: Any,
    workspaces: Sequence[str], pipeline: Mapping, signing_key: bytes = b"", backend: Any = None,
) -> None:
    """Labels and annotations Tekton merges into the PipelineRun, for the retention controller."""
    targets = {ws: expand_target(request.target, ws, request.context) for ws in workspaces}
    scheme = backend.schemes[0] if backend is not None and backend.schemes else request.backend
    carried = [ws for ws in workspaces if _same_repository(base_of(request, ws), targets[ws], scheme)]
    entries = lifecycle.storage_entries(workspaces, targets, request.backend, request.options, pipeline, carried)
    lifecycle.mark(rewritten, retention_of(params, config), entries, publish_retention_of(params, config),
                   signing_key, request.context.uid)


def _same_repository(base: str, target: str, scheme: str) -> bool:
    """A carried workspace: its base is in its target's repository (tags aside). Unsure: yes."""
    if not base:
        return False
    try:
        return locations.parse_location(base, scheme) == locations.parse_location(target, scheme)
    except locations.LocationError:
        return True


def check_answer_size(data: bytes, pipeline: str) -> None:
    """A `WrapError` when the answer cannot fit in the ResolutionRequest that must hold it.

    The status stores it base64-encoded (4 bytes for every 3). Without this check the API
    server would refuse the status patch and the run would wait for the resolution timeout
    instead of failing with a reason.
    """
    encoded = 4 * ((len(data) + 2) // 3)
    room = MAX_OBJECT_BYTES - REQUEST_ROOM
    if encoded > room:
        raise WrapError(
            f"the rewritten Pipeline {pipeline!r} is {_mib(len(data))} of JSON, {_mib(encoded)} "
            f"base64-encoded in the ResolutionRequest's status, more than the {_mib(room)} a "
            f"Kubernetes object can hold next to the request itself (etcd allows 1.5 MiB per "
            f"object); wrap fewer workspaces (param `workspaces`), or split the Pipeline into "
            f"smaller Pipelines run one after the other",
            reason="AnswerTooLarge",
        )


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.2f} MiB"


def to_json(obj: Any, pipeline: str = "") -> bytes:
    """The answer as the ResolutionRequest carries it: compact JSON, same object, same bytes.

    Tekton decodes `status.data` as JSON or YAML (tekton-facts §4), and JSON is the smaller
    and by far the faster of the two to write: block YAML indents every level and quotes
    every step argument that holds JSON, and libyaml's emitter took two thirds of the time
    of a 2,000-task request, where `json` needs less than a tenth of what it took. Key
    order is kept and the text is ASCII (`\\u` escapes), so any JSON or YAML reader reads
    it. `render` prints the same object as YAML for people.
    """
    try:
        return _ANSWER_JSON.encode(obj).encode("ascii")
    except (TypeError, ValueError) as exc:  # NaN/Infinity, or a value JSON has no form for
        name = f" {pipeline!r}" if pipeline else ""
        raise RewriteError(f"the rewritten Pipeline{name} cannot be written as JSON: {exc}") from None


def _plain(obj: Any) -> Any:
    """JSON for what a YAML file can hold besides plain data: dates as they were written."""
    if isinstance(obj, (datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, bytes):
        raise TypeError("a binary value (YAML `!!binary`) has no place in a Tekton Pipeline")
    raise TypeError(f"a value of type {type(obj).__name__}")


_ANSWER_JSON = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=_plain)


def to_yaml(obj: Any) -> bytes:
    """Deterministic YAML: same object, same bytes; key order kept, no anchors, scripts as blocks.

    The nodes are built here in one pass instead of by PyYAML's representer, whose
    per-object dispatch was most of the time for large Pipelines; the output is the same as
    `yaml.dump(..., default_flow_style=False, sort_keys=False, allow_unicode=True, width=4096)`.
    """
    stream = io.StringIO()
    dumper = _Dumper(stream, default_flow_style=False, allow_unicode=True, width=4096, sort_keys=False)
    dumper.tags_seen = {}
    # Millions of short-lived node objects and no cycles among them: the cyclic collector's
    # repeated passes over them took almost half the time of a 3 MiB answer.
    with paused_gc():
        try:
            dumper.open()
            dumper.serialize(_node(obj, dumper))
            dumper.close()
        finally:
            dumper.dispose()
    return stream.getvalue().encode("utf-8")


async def _fetch_tasks(source: Source, refs: Mapping[str, Mapping], namespace: str) -> dict[str, Mapping]:
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


_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def _node(obj: Any, dumper: Any) -> yaml.Node:
    """Plain mappings, sequences and scalars as YAML nodes, so the dumper never emits Python tags."""
    kind = type(obj)
    if kind is str:
        return _Scalar(_STR, obj, style="|" if "\n" in obj else None)
    if kind is dict or (kind is not list and isinstance(obj, Mapping)):
        items = []
        for k, v in obj.items():
            k = k if type(k) is str else str(k)
            key = _Scalar(_STR, k, style="|" if "\n" in k else None)
            if type(v) is str:
                items.append((key, _Scalar(_STR, v, style="|" if "\n" in v else None)))
            else:
                items.append((key, _node(v, dumper)))
        return _Mapping(_MAP, items, flow_style=False)
    if kind is list or kind is tuple:
        return _Sequence(_SEQ, [_node(v, dumper) for v in obj], flow_style=False)
    if isinstance(obj, str):
        return _Scalar(_STR, obj, style="|" if "\n" in obj else None)
    if isinstance(obj, (list, tuple)):
        return _Sequence(_SEQ, [_node(v, dumper) for v in obj], flow_style=False)
    return dumper.represent_data(obj)


_Scalar, _Mapping, _Sequence = yaml.ScalarNode, yaml.MappingNode, yaml.SequenceNode


# libyaml's emitter when PyYAML has it: a large Pipeline serialises several times faster.
# Lists come out the way `kubectl get -o yaml` writes them (`- ` at the key's indentation).
if TYPE_CHECKING:  # the C emitter has the same interface
    from yaml import SafeDumper as _BaseDumper
else:
    _BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        # The emitter asks twice per scalar whether its plain form would read back as the
        # same type; the answer depends on the text alone and Pipelines repeat their texts.
        if kind is not _Scalar:
            return _BaseDumper.resolve(self, kind, value, implicit)
        key = (value, implicit)
        tag = self.tags_seen.get(key)
        if tag is None:
            tag = self.tags_seen[key] = _BaseDumper.resolve(self, kind, value, implicit)
        return tag
