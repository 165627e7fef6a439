"""Per-task answers: a large Pipeline answered as its DAG, each wrapped task resolved on its own (pure).

The inline answer embeds every wrapped task's spec, with its injected steps, so it grows with
tasks x wrapped workspaces; past a few hundred tasks it no longer fits the ResolutionRequest
that must hold it (1.5 MiB per object). A pipeline task's `taskRef` may itself name a
resolver, and Tekton substitutes params into its params before it creates that TaskRun's
ResolutionRequest (tekton-facts §2). So the per-task answer keeps the DAG and gives each
wrapped task a small `taskRef: {resolver: wrap, params: [wrap-task, wrap-pin, wrap-request]}`;
each of those requests is answered with that task's spec from the very same inline answer.

`wrap-pin` is the sha256 of the inline answer: a per-task request is answered only from an
inline answer with that digest, so one run never mixes two versions of its Pipeline. Both
long values are declared once, as Pipeline params with defaults, and each taskRef names them
(`$(params.wrap-pin)`), so a taskRef costs about 150 bytes whatever the task.

A Task that is referenced is not treated by Tekton as an embedded spec is (tekton-facts §5):
Pipeline params are not propagated into it, and `$(context.pipelineRun.*)` and
`$(context.pipeline.name)` are not substituted in it. The per-task answers make up for both:
the Pipeline passes each propagated param explicitly and the Task declares it; the Task comes
with the context variables already substituted. The same holds for workspaces Tekton would
propagate into an embedded spec: they are bound and declared explicitly.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wrapresolver.core import plan as planning
from wrapresolver.core.params import CONFIG_TASK_RESOLUTION
from wrapresolver.errors import ParamError, WrapError

PARAM_TASK = "wrap-task"
PARAM_PIN = "wrap-pin"
PARAM_REQUEST = "wrap-request"
RESERVED_PARAMS = (PARAM_PIN, PARAM_REQUEST)
"""Pipeline params the per-task answer declares: a Pipeline may not declare them itself."""

MODE_AUTO, MODE_INLINE, MODE_PER_TASK = "auto", "inline", "per-task"
MODES = (MODE_AUTO, MODE_INLINE, MODE_PER_TASK)
INLINE_BUDGET = 512 * 1024
"""Bytes of JSON up to which `auto` answers inline (see docs/large-pipelines.md for the number)."""

REASON_CHANGED = "PipelineChanged"
"""The condition reason of a per-task request whose Pipeline answer no longer comes out the same."""
REASON_UNKNOWN_TASK = "UnknownTask"
"""The condition reason of a per-task request naming a task the answer does not wrap."""

_PARAM_REF = re.compile(
    r"""\$\(params(?:\.(?P<dot>[A-Za-z0-9_-]+)|\[(?P<q>["'])(?P<br>[^"']+)(?P=q)\])"""
)
_CONTEXT_VARIABLES = ("context.pipelineRun.name", "context.pipelineRun.namespace", "context.pipelineRun.uid",
                      "context.pipeline.name")


def mode_of(config: Mapping[str, str]) -> str:
    """The ConfigMap's `task-resolution`, checked; unset is `auto`."""
    value = str(config.get(CONFIG_TASK_RESOLUTION) or MODE_AUTO).strip()
    if value not in MODES:
        raise ParamError(
            f"`{CONFIG_TASK_RESOLUTION}` of the ConfigMap is {value!r}; it is one of {', '.join(MODES)} "
            f"(default {MODE_AUTO}: inline up to {INLINE_BUDGET // 1024} KiB of JSON, per-task above)"
        )
    return value


def wants_per_task(mode: str, inline_bytes: int, wrapped: Sequence[str]) -> bool:
    """Whether to answer per-task: asked for, or `auto` and the inline answer over the budget."""
    if not wrapped or mode == MODE_INLINE:
        return False
    return mode == MODE_PER_TASK or inline_bytes > INLINE_BUDGET


def pin_of(inline_data: bytes) -> str:
    """The pin: sha256 of the inline answer's bytes (compact JSON), hex."""
    return hashlib.sha256(inline_data).hexdigest()


def request_text(params: Sequence[Mapping]) -> str:
    """The Pipeline request's params as one JSON object, `$(` written so Tekton never substitutes in it.

    The value becomes a Pipeline param default, and Tekton substitutes `$(params.…)` inside
    defaults; `\\u0028` is `(` to any JSON reader, so the text reads back to the same params.
    """
    values = {str(p.get("name")): p.get("value") for p in params if isinstance(p, Mapping)}
    return json.dumps(values, sort_keys=True, separators=(",", ":")).replace("$(", "$\\u0028")


def request_params(text: str) -> list[dict]:
    """`request_text` read back as request params; a `ParamError` for what it never wrote."""
    try:
        values = json.loads(text)
    except (TypeError, ValueError):
        values = None
    if not isinstance(values, dict):
        raise ParamError(f"param `{PARAM_REQUEST}` is not the JSON object the wrap resolver wrote into the "
                         f"Pipeline answer; a per-task request is made by Tekton from a per-task Pipeline answer")
    return [{"name": k, "value": v} for k, v in values.items()]


def check_reserved(pipeline: Mapping, name: str) -> None:
    """A Pipeline declaring `wrap-pin` or `wrap-request` itself cannot be answered per-task."""
    declared = [str(p.get("name")) for p in planning.spec_of(pipeline).get("params") or [] if planning.is_map(p)]
    taken = [p for p in declared if p in RESERVED_PARAMS]
    if taken:
        raise ParamError(
            f"Pipeline {name!r} declares param(s) {', '.join(map(repr, taken))}; the wrap resolver reserves "
            f"these names for the answers it gives large Pipelines (one taskRef per task): rename them"
        )


@dataclass(frozen=True)
class TaskContext:
    """What Tekton would have substituted in an embedded spec: the run and the Pipeline's name."""

    pipelinerun: str = ""
    namespace: str = ""
    uid: str = ""
    pipeline: str = ""

    def values(self) -> dict[str, str]:
        given = dict(zip(_CONTEXT_VARIABLES, (self.pipelinerun, self.namespace, self.uid, self.pipeline),
                         strict=True))
        return {k: v for k, v in given.items() if v}


def per_task_pipeline(inline_answer: Mapping, wrapped: Sequence[str], pin: str, request: str) -> dict:
    """The Pipeline answer: `inline_answer` with each task in `wrapped` a `taskRef` to the resolver.

    Everything but the embedded specs of `wrapped` is kept as the inline answer has it, key
    order included. `request` is `request_text` of the Pipeline request's params. The answer
    shares the parts it does not change with `inline_answer`: serialise it, do not edit it.
    """
    out = dict(inline_answer)  # copied along the path that changes; the rest is shared
    spec = out["spec"] = dict(out["spec"])
    params = spec["params"] = list(spec.get("params") or [])
    by_name = {str(p.get("name")): p for p in params if planning.is_map(p)}
    declared_workspaces = {str(w.get("name")) for w in spec.get("workspaces") or [] if planning.is_map(w)}
    params.append({"name": PARAM_PIN, "type": "string", "default": pin})
    params.append({"name": PARAM_REQUEST, "type": "string", "default": request})
    names = set(wrapped)
    for section in ("tasks", "finally"):
        if not isinstance(spec.get(section), list):
            continue
        items = spec[section] = list(spec[section])
        for i, ptask in enumerate(items):
            if not planning.is_map(ptask) or str(ptask.get("name")) not in names:
                continue
            if not planning.is_map(ptask.get("taskSpec")):
                continue
            items[i] = _referenced(ptask, by_name, declared_workspaces)
    return out


def _referenced(ptask: Mapping, pipeline_params: Mapping[str, Mapping], pipeline_workspaces: set[str]) -> dict:
    task_spec = ptask["taskSpec"]
    passed = _passed(ptask)
    text = json.dumps(task_spec)
    extra_params = [
        {"name": name, "value": _reference(name, pipeline_params[name])}
        for name in propagated_params(ptask, task_spec, pipeline_params, text) if name not in passed
    ]
    extra_workspaces = [{"name": ws, "workspace": ws}
                        for ws in propagated_workspaces(ptask, task_spec, pipeline_workspaces, text)]
    ref = {"resolver": "wrap", "params": [
        {"name": PARAM_TASK, "value": str(ptask.get("name"))},
        {"name": PARAM_PIN, "value": f"$(params.{PARAM_PIN})"},
        {"name": PARAM_REQUEST, "value": f"$(params.{PARAM_REQUEST})"},
    ]}
    out: dict = {}
    for key, value in ptask.items():
        if key == "taskSpec":
            out["taskRef"] = ref
        elif key == "params" and extra_params:
            out[key] = [*value, *extra_params]
        elif key == "workspaces" and extra_workspaces:
            out[key] = [*value, *extra_workspaces]
        else:
            out[key] = value
    if extra_params and "params" not in out:
        out["params"] = extra_params
    if extra_workspaces and "workspaces" not in out:
        out["workspaces"] = extra_workspaces
    return out


def request_of(task: str, pin: str, request: str) -> list[dict]:
    """The params of `task`'s taskRef as Tekton sends them: the Pipeline's param defaults substituted."""
    return [{"name": PARAM_TASK, "value": task}, {"name": PARAM_PIN, "value": pin},
            {"name": PARAM_REQUEST, "value": request}]


def task_request(pipeline_answer: Mapping, task: str) -> list[dict]:
    """The params of the request Tekton makes for `task`'s taskRef: the Pipeline's param defaults substituted.

    What `render --task` and the local executor send, as Tekton would (tekton-facts §2).
    """
    spec = planning.spec_of(pipeline_answer)
    defaults = {str(p.get("name")): p.get("default") for p in spec.get("params") or [] if planning.is_map(p)}
    ptask = next((t for t in planning.all_tasks(spec) if str(t.get("name")) == task), None)
    ref = ptask.get("taskRef") if ptask is not None else None
    if not planning.is_map(ref) or ref.get("resolver") != "wrap":
        wrapped = [str(t.get("name")) for t in planning.all_tasks(spec)
                   if planning.is_map(t.get("taskRef")) and t["taskRef"].get("resolver") == "wrap"]
        raise ParamError(f"pipeline task {task!r} is not resolved on its own in this answer; the tasks that are: "
                         f"{', '.join(wrapped) or 'none (the answer is inline)'}")
    out = []
    for p in ref.get("params") or []:
        value = str(p.get("value", ""))
        for name in RESERVED_PARAMS:
            value = value.replace(f"$(params.{name})", str(defaults.get(name, "")))
        out.append({"name": str(p.get("name")), "value": value})
    return out


def task_answer(
    inline_answer: Mapping, task: str, context: TaskContext, api_version: str = "",
) -> dict:
    """The Task a per-task request for pipeline task `task` is answered with.

    Its spec is the inline answer's embedded spec for that task, with what Tekton would have
    done for it as an embedded spec done here: the context variables substituted, the
    propagated params and workspaces declared. Raises `WrapError` when the inline answer has
    no such task (a request Tekton did not make from this answer).
    """
    return task_answers(inline_answer, [task], context, api_version)[task]


def task_answers(
    inline_answer: Mapping, tasks: Sequence[str], context: TaskContext, api_version: str = "",
) -> dict[str, dict]:
    """`task_answer` of each of `tasks`, the Pipeline read once (a run's tasks are answered together)."""
    spec = planning.spec_of(inline_answer)
    by_name = {str(t.get("name")): t for t in planning.all_tasks(spec)}
    pipeline_params = {str(p.get("name")): p for p in spec.get("params") or [] if planning.is_map(p)}
    declared_workspaces = {str(w.get("name")) for w in spec.get("workspaces") or [] if planning.is_map(w)}
    pipeline_name = str((inline_answer.get("metadata") or {}).get("name", ""))
    if not context.pipeline:
        context = TaskContext(context.pipelinerun, context.namespace, context.uid, pipeline_name)
    values = context.values()
    version = api_version or str(inline_answer.get("apiVersion") or "tekton.dev/v1")
    out: dict[str, dict] = {}
    for task in tasks:
        ptask = by_name.get(task)
        if ptask is None or not planning.is_map(ptask.get("taskSpec")):
            raise WrapError(f"pipeline task {task!r} is not a wrapped task of Pipeline {pipeline_name!r}; a per-task "
                            f"request names a task of the per-task Pipeline answer it was made from",
                            reason=REASON_UNKNOWN_TASK)
        out[task] = _task(ptask, task, pipeline_params, declared_workspaces, values, version)
    return out


def _task(ptask: Mapping, task: str, pipeline_params: Mapping[str, Mapping], declared_workspaces: set[str],
          values: Mapping[str, str], version: str) -> dict:
    task_spec = dict(ptask["taskSpec"])  # changed below only where copied: params, workspaces, metadata
    passed = {str(p.get("name")): p.get("value") for p in ptask.get("params") or [] if planning.is_map(p)}
    text = json.dumps(task_spec)
    params = propagated_params(ptask, task_spec, pipeline_params, text)
    if params:
        task_spec["params"] = [*(task_spec.get("params") or []),
                               *(_declaration(n, pipeline_params.get(n) or {"default": passed.get(n)})
                                 for n in params)]
    extra = propagated_workspaces(ptask, task_spec, declared_workspaces, text)
    declared = _declared_workspaces(task_spec) | set(extra)
    extra += [str(b.get("name")) for b in ptask.get("workspaces") or []  # bound, not declared: Tekton adds it
              if planning.is_map(b) and b.get("name") and str(b.get("name")) not in declared]
    if extra:
        task_spec["workspaces"] = [*(task_spec.get("workspaces") or []), *({"name": ws} for ws in extra)]
    embedded_meta = task_spec.pop("metadata", None)
    task_spec = _substitute(task_spec, values)  # a new tree: nothing of the inline answer is shared
    metadata: dict[str, Any] = {"name": task}
    if planning.is_map(embedded_meta):
        metadata.update({k: copy.deepcopy(v) for k, v in embedded_meta.items() if k in ("labels", "annotations")})
    return {"apiVersion": version, "kind": "Task", "metadata": metadata, "spec": task_spec}


def propagated_params(ptask: Mapping, task_spec: Mapping, pipeline_params: Mapping[str, Mapping],
                      text: str = "") -> list[str]:
    """Params the spec uses without declaring them: Tekton propagates them into embedded specs only.

    A Pipeline param, or a param the pipeline task passes: a referenced Task must declare both.
    """
    declared = {str(p.get("name")) for p in task_spec.get("params") or [] if planning.is_map(p)}
    used = _param_names(text or json.dumps(task_spec))
    known = set(pipeline_params) | _passed(ptask)
    return [n for n in sorted(used) if n not in declared and n in known]


def propagated_workspaces(ptask: Mapping, task_spec: Mapping, pipeline_workspaces: set[str],
                          text: str = "") -> list[str]:
    """Pipeline workspaces the spec uses as `$(workspaces.W.…)` with no declaration and no binding."""
    declared = _declared_workspaces(task_spec)
    bound = {str(b.get("name")) for b in ptask.get("workspaces") or [] if planning.is_map(b)}
    text = text or json.dumps(task_spec)
    return [ws for ws in sorted(pipeline_workspaces)
            if ws not in declared and ws not in bound and f"$(workspaces.{ws}." in text]


def _declared_workspaces(task_spec: Mapping) -> set[str]:
    return {str(w.get("name")) for w in task_spec.get("workspaces") or [] if planning.is_map(w)}


def _passed(ptask: Mapping) -> set[str]:
    return {str(p.get("name")) for p in ptask.get("params") or [] if planning.is_map(p)}


def _param_names(text: str) -> set[str]:
    return {m.group("dot") or m.group("br") for m in _PARAM_REF.finditer(text)}


def _reference(name: str, declaration: Mapping) -> str:
    kind = declaration.get("type") or _type_of(declaration.get("default"))
    return f"$(params.{name}[*])" if kind in ("array", "object") else f"$(params.{name})"


def _declaration(name: str, pipeline_param: Mapping) -> dict:
    out: dict[str, Any] = {"name": name, "type": pipeline_param.get("type") or _type_of(pipeline_param.get("default"))}
    if pipeline_param.get("properties"):
        out["properties"] = copy.deepcopy(pipeline_param["properties"])
    return out


def _type_of(value: Any) -> str:
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return "string"


def _substitute(obj: Any, values: Mapping[str, str]) -> Any:
    """A copy of `obj` with `$(name)` replaced by `values[name]` in every string."""
    if isinstance(obj, str):
        if not values or "$(context." not in obj:
            return obj
        for name, value in values.items():
            obj = obj.replace(f"$({name})", value)
        return obj
    if isinstance(obj, dict):
        return {k: _substitute(v, values) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_substitute(v, values) for v in obj]
    return obj


CHILD_REFERENCE_BYTES = 160
"""A PipelineRun's `status.childReferences` entry per TaskRun, JSON as etcd keeps it: apiVersion,
kind, a `<run>-<task>` name up to 63 characters, pipelineTaskName, and `whenExpressions`
(in the largest case)."""


def stored_estimate(answer: Mapping, answer_bytes: int, wrapped: Sequence[str], request: str, pin: str) -> int:
    """About what a PipelineRun run from a per-task answer keeps (bytes of JSON).

    Tekton stores the resolved spec in `status.pipelineSpec` after substituting params, so
    there every wrapped task's taskRef holds the pin and the request text in full; and one
    `childReferences` entry per TaskRun (a matrix counted as one).
    """
    saved = len(f"$(params.{PARAM_PIN})") + len(f"$(params.{PARAM_REQUEST})")
    escaped = len(json.dumps(request)) - 2  # the request text is a JSON string inside a JSON string
    tasks = len(planning.all_tasks(planning.spec_of(answer)))
    return answer_bytes + len(wrapped) * (len(pin) + escaped - saved) + tasks * CHILD_REFERENCE_BYTES


def changed_message(pipeline: str, task: str) -> str:
    """What a pipeline author reads when the Pipeline answer cannot be made again the same."""
    return (
        f"pipeline task {task!r} of Pipeline {pipeline!r}: the Pipeline, one of its Tasks or the wrap "
        f"resolver's settings changed since this PipelineRun started (the answer made for this task now "
        f"differs from the one the run was started with); the run cannot continue with a mix of two "
        f"versions of its Pipeline: re-run the PipelineRun"
    )


def size_message(what: str, size: int, room: int, hint: str) -> str:
    return (f"{what} is {_mib(size)} base64-encoded, more than the {_mib(room)} a ResolutionRequest can hold "
            f"(etcd allows 1.5 MiB per object); {hint}")


def _mib(n: int) -> str:
    return f"{n / (1024 * 1024):.2f} MiB"
