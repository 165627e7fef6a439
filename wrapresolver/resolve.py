"""One resolution, end to end, without any Kubernetes plumbing.

The controller and `wrapresolver render` both call `resolve`; they differ only in the
`Source` they pass and in where the answer goes (a ResolutionRequest's status, or stdout).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wrapresolver.answercache import AnswerCache, AnswerKey, CachedAnswer
from wrapresolver.backends.registry import REGISTRY
from wrapresolver.core import checks, inline, lifecycle, locations, names, pertask, rewrite, safeyaml
from wrapresolver.core.params import (
    CONFIG_TASK_RESOLUTION,
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
from wrapresolver.serialize import to_json
from wrapresolver.sources import Source, fetch_tasks

CONTENT_TYPE = "application/json"
ANNOTATION_CONTENT_TYPE = "resolution.tekton.dev/content-type"
ANNOTATION_WORKSPACES = "wrapresolver.dev/workspaces"
ANNOTATION_BACKEND = "wrapresolver.dev/backend"
ANNOTATION_TASK_RESOLUTION = "wrapresolver.dev/task-resolution"
"""On answers that are not inline: `per-task` (a Pipeline answer with taskRefs) or `task` (a Task)."""

PIPELINE_API_VERSIONS = ("tekton.dev/v1", "tekton.dev/v1beta1")
"""What the pipelines controller accepts as the answer to a pipelineRef."""

MAX_OBJECT_BYTES = 1536 * 1024
"""What one Kubernetes object can be: etcd's default request limit (1.5 MiB)."""
REQUEST_ROOM = 64 * 1024
"""Kept for the rest of the ResolutionRequest: metadata, params, refSource, conditions."""


@dataclass(frozen=True)
class Answer:
    """What goes into the ResolutionRequest's status (or to stdout for `render`)."""

    data: bytes
    """The rewritten Pipeline as compact JSON (`to_json`); `render` shows it as YAML."""
    annotations: dict[str, str] = field(default_factory=dict)
    ref_source: dict = field(default_factory=dict)
    """{uri, digest: {sha256}, entryPoint?}: where the Pipeline came from, digest of `data`."""
    warnings: tuple[checks.Notice, ...] = ()
    """Legal but probably not meant (core.checks): `render` prints them, the controller makes Events."""
    task_requests: tuple[TaskRequest, ...] = ()
    """With a per-task Pipeline answer: each request Tekton will make for a wrapped task, in the
    Pipeline's order, with its answer (the controller creates them answered: controller.taskrequests)."""


@dataclass(frozen=True)
class TaskRequest:
    """One per-task request as Tekton will make it: its task, its params substituted, its answer."""

    task: str
    params: tuple[dict, ...]
    answer: Answer


async def resolve(
    params: Sequence[Mapping], config: Mapping[str, str], context: RunContext, source: Source,
    *, config_name: str = f"the ConfigMap {CONFIGMAP_NAME}", signing_key: bytes = b"",
    answers: AnswerCache | None = None,
) -> Answer:
    """Resolve a `wrap` request: fetch, rewrite, serialise.

    Two kinds of request come here. A Pipeline request (a PipelineRun's `pipelineRef`) is
    answered with the rewritten Pipeline: inline, every wrapped task's spec embedded, or,
    when that is larger than the ConfigMap's `task-resolution` allows, per-task: the DAG with
    one `taskRef: {resolver: wrap}` per wrapped task (core.pertask). A per-task request (one
    such taskRef; it has param `wrap-task`) is answered with that task's Task, from the same
    inline answer, made again or found in `answers`, and only if its digest is the pin.

    `config_name` is how warnings name where `config` came from (`render` says `--config`).
    `signing_key` signs the storage annotations for the controller (core.lifecycle); the
    controller passes its own, `render` none. `answers` keeps the Task answers of per-task
    runs between requests (the controller's `Runtime` holds one).

    Raises `WrapError` for anything the author can fix. Exceptions a `Source` raises that
    are not `WrapError`s (an API server hiccup) pass through, so the caller can retry them.
    """
    given = {str(p.get("name")): p.get("value") for p in params if isinstance(p, Mapping)}
    if pertask.PARAM_TASK in given:
        return await _resolve_task(given, config, context, source, config_name, signing_key, answers)
    mode = pertask.mode_of(config)
    made = await _inline_answer(params, config, context, source, config_name, signing_key)
    if not pertask.wants_per_task(mode, len(made.data), made.wrapped):
        check_answer_size(made.data, made.pipeline, mode)
        ref_source = {**made.ref_source, "digest": {"sha256": hashlib.sha256(made.data).hexdigest()}}
        return Answer(data=made.data, annotations=made.annotations, ref_source=_ordered(ref_source),
                          warnings=made.notices)
    pin = pertask.pin_of(made.data)
    request = pertask.request_text(params)
    answer = pertask.per_task_pipeline(made.obj, made.wrapped, pin, request)
    data = to_json(answer, made.pipeline)
    _check_per_task_size(data, answer, made, request, pin)
    tasks = _task_answers(made, context)
    if answers is not None:
        answers.put(_answer_key(context, config, pin), tasks)
    ref_source = {**made.ref_source, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}
    annotations = {**made.annotations, ANNOTATION_TASK_RESOLUTION: pertask.MODE_PER_TASK}
    requests = tuple(TaskRequest(name, tuple(pertask.request_of(name, pin, request)), _task_answer(tasks, name))
                     for name in made.wrapped)
    return Answer(data=data, annotations=annotations, ref_source=_ordered(ref_source), warnings=made.notices,
                  task_requests=requests)


@dataclass(frozen=True)
class _Inline:
    """The inline answer and what the two kinds of answer made from it need."""

    data: bytes
    obj: dict
    wrapped: tuple[str, ...]
    pipeline: str
    ref_source: dict
    """{uri, entryPoint?} of the Pipeline: an answer adds the digest of its own bytes."""
    annotations: dict[str, str]
    notices: tuple[checks.Notice, ...]


async def _inline_answer(
    params: Sequence[Mapping], config: Mapping[str, str], context: RunContext, source: Source,
    config_name: str, signing_key: bytes,
) -> _Inline:
    """The inline answer: every wrapped task's spec embedded, with its injected steps."""
    request = parse_request(params, config, context, REGISTRY)
    fetched = await source.pipeline(request.pipelineref, context.namespace)
    pipeline = fetched.obj
    asked = request.pipelineref.name or request.pipelineref.resolver
    safeyaml.check_tree(pipeline, f"pipelineref {asked!r}")
    _check_pipeline(pipeline, asked)
    names.check_pipeline_task_names(pipeline, _name(pipeline))
    pertask.check_reserved(pipeline, _name(pipeline))
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
    task_objects = await fetch_tasks(source, to_inline, context.namespace)
    checks.check_task_bindings(pipeline, task_objects)

    # No await inside: no other request runs while the collector is off.
    warnings: list[str] = []
    wrapped: list[str] = []
    with paused_gc():
        try:
            rewritten = rewrite.rewrite_pipeline(pipeline, task_objects, request, workspaces, backend, warnings,
                                                 wrapped)
        except WrapError:
            raise
        except Exception as exc:
            raise _unexpected(pipeline_name, exc) from exc
        _mark_storage(rewritten, params, config, request, workspaces, pipeline, signing_key, backend)
        data = to_json(rewritten, pipeline_name)
    ref_source: dict[str, Any] = {"uri": str(fetched.ref_source.get("uri", ""))}
    if fetched.ref_source.get("entryPoint"):
        ref_source["entryPoint"] = str(fetched.ref_source["entryPoint"])
    annotations = {
        ANNOTATION_CONTENT_TYPE: CONTENT_TYPE,
        ANNOTATION_WORKSPACES: ",".join(workspaces),
        ANNOTATION_BACKEND: request.backend,
    }
    notices += [checks.Notice(checks.REASON_POD_SECURITY, warning) for warning in warnings]
    return _Inline(data=data, obj=rewritten, wrapped=tuple(wrapped), pipeline=pipeline_name,
                   ref_source=ref_source, annotations=annotations, notices=tuple(notices))


async def _resolve_task(
    given: Mapping[str, Any], config: Mapping[str, str], context: RunContext, source: Source,
    config_name: str, signing_key: bytes, answers: AnswerCache | None,
) -> Answer:
    """A per-task request: the Task of one wrapped task, from the inline answer its pin names."""
    task = given.get(pertask.PARAM_TASK)
    pin = given.get(pertask.PARAM_PIN)
    text = given.get(pertask.PARAM_REQUEST)
    if not isinstance(task, str) or not isinstance(pin, str) or not isinstance(text, str) or not task or not pin:
        raise ParamError(f"a per-task request (param `{pertask.PARAM_TASK}`) needs the string params "
                         f"`{pertask.PARAM_TASK}`, `{pertask.PARAM_PIN}` and `{pertask.PARAM_REQUEST}` that the "
                         f"per-task Pipeline answer writes into each taskRef")
    key = _answer_key(context, config, pin)

    async def make() -> CachedAnswer:
        made = await _inline_answer(pertask.request_params(text), config, context, source, config_name,
                                    signing_key)
        if pertask.pin_of(made.data) != pin:
            raise WrapError(pertask.changed_message(made.pipeline, str(task)), reason=pertask.REASON_CHANGED)
        return _task_answers(made, context)

    tasks = await answers.get_or_make(key, make) if answers is not None else await make()
    if task not in tasks.tasks:
        raise WrapError(f"pipeline task {task!r} is not a wrapped task of Pipeline {tasks.pipeline!r}; a per-task "
                        f"request names a task of the per-task Pipeline answer it was made from",
                        reason=pertask.REASON_UNKNOWN_TASK)
    return _task_answer(tasks, task)


def _task_answer(tasks: CachedAnswer, task: str) -> Answer:
    data = tasks.tasks[task]
    ref_source = {**tasks.ref_source, "digest": {"sha256": hashlib.sha256(data).hexdigest()}}
    annotations = {**tasks.annotations, ANNOTATION_TASK_RESOLUTION: "task"}
    return Answer(data=data, annotations=annotations, ref_source=_ordered(ref_source))


def _task_answers(made: _Inline, context: RunContext) -> CachedAnswer:
    """Every wrapped task's Task answer, as compact JSON; refused here when one cannot fit."""
    run = pertask.TaskContext(context.name, context.namespace, context.uid, made.pipeline)
    tasks: dict[str, bytes] = {}
    with paused_gc():
        for name, task in pertask.task_answers(made.obj, made.wrapped, run).items():
            data = to_json(task, made.pipeline)
            encoded = _base64_size(data)
            if encoded > MAX_OBJECT_BYTES - REQUEST_ROOM:
                raise WrapError(pertask.size_message(
                    f"the Task of pipeline task {name!r} of Pipeline {made.pipeline!r}, with its injected steps,",
                    encoded, MAX_OBJECT_BYTES - REQUEST_ROOM,
                    "bind fewer wrapped workspaces in that task (param `workspaces`) or give it fewer steps"),
                    reason="AnswerTooLarge")
            tasks[name] = data
    return CachedAnswer(tasks=tasks, ref_source=dict(made.ref_source), annotations=dict(made.annotations),
                        pipeline=made.pipeline)


def _check_per_task_size(data: bytes, answer: Mapping, made: _Inline, request: str, pin: str) -> None:
    """Refuse a per-task answer that its ResolutionRequest, or the PipelineRun after it, cannot hold."""
    encoded = _base64_size(data)
    room = MAX_OBJECT_BYTES - REQUEST_ROOM
    if encoded > room:
        raise WrapError(pertask.size_message(
            f"the rewritten Pipeline {made.pipeline!r}, even with each of its {len(made.wrapped)} wrapped tasks "
            f"resolved on its own (its inline answer is {_mib(len(made.data))} of JSON),",
            encoded, room,
            "its tasks, params and bindings alone are too large for one answer: split the Pipeline into "
            "smaller Pipelines run one after the other"), reason="AnswerTooLarge")
    stored = pertask.stored_estimate(answer, len(data), made.wrapped, request, pin)
    if stored > room:
        raise WrapError(
            f"the rewritten Pipeline {made.pipeline!r}, answered with each of its {len(made.wrapped)} wrapped tasks "
            f"resolved on its own, fits its ResolutionRequest ({_mib(len(data))} of JSON), but the PipelineRun "
            f"would store about {_mib(stored)} (Tekton keeps the spec with every taskRef's params substituted in "
            f"status.pipelineSpec, next to one status.childReferences entry per TaskRun), more than the "
            f"{_mib(room)} a Kubernetes object can hold; shorten the PipelineRun's resolver params (each task's "
            f"taskRef carries them), or split the Pipeline into smaller Pipelines run one after the other",
            reason="AnswerTooLarge")


def _answer_key(context: RunContext, config: Mapping[str, str], pin: str) -> AnswerKey:
    settings = hashlib.sha256(json.dumps(sorted((str(k), str(v)) for k, v in config.items())).encode()).hexdigest()
    return AnswerKey(context.namespace, context.uid, settings, pin)


def _ordered(ref_source: Mapping[str, Any]) -> dict[str, Any]:
    """{uri, digest, entryPoint?}: the order the answer always had."""
    out = {"uri": ref_source.get("uri", ""), "digest": ref_source["digest"]}
    if ref_source.get("entryPoint"):
        out["entryPoint"] = ref_source["entryPoint"]
    return out


def _base64_size(data: bytes) -> int:
    return 4 * ((len(data) + 2) // 3)


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


def check_answer_size(data: bytes, pipeline: str, mode: str = pertask.MODE_AUTO) -> None:
    """A `WrapError` when the inline answer cannot fit in the ResolutionRequest that must hold it.

    The status stores it base64-encoded (4 bytes for every 3). Without this check the API
    server would refuse the status patch and the run would wait for the resolution timeout
    instead of failing with a reason.
    """
    encoded = _base64_size(data)
    room = MAX_OBJECT_BYTES - REQUEST_ROOM
    if encoded > room:
        raise WrapError(
            f"the rewritten Pipeline {pipeline!r} is {_mib(len(data))} of JSON, {_mib(encoded)} "
            f"base64-encoded in the ResolutionRequest's status, more than the {_mib(room)} a "
            f"Kubernetes object can hold next to the request itself (etcd allows 1.5 MiB per "
            f"object); " + (
                f"the ConfigMap's `{CONFIG_TASK_RESOLUTION}: {pertask.MODE_INLINE}` keeps it from being answered "
                f"one task at a time: set it to `{pertask.MODE_AUTO}`, " if mode == pertask.MODE_INLINE else ""
            ) + "wrap fewer workspaces (param `workspaces`), or split the Pipeline into "
            "smaller Pipelines run one after the other",
            reason="AnswerTooLarge",
        )


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.2f} MiB"


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
