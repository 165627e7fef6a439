"""Which pipeline tasks need their Task fetched, and the Task embedded in their place (pure).

A task that binds a wrapped workspace through `taskRef` gets the Task's spec as an embedded
`taskSpec`: the injected steps have to live somewhere, and Tekton substitutes
`$(context.pipelineRun.uid)` and `$(workspaces.x.path)` inside embedded specs, which the
step args rely on. Embedding is also where the two Tekton API versions meet.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence

from wrapresolver.core import plan as planning
from wrapresolver.errors import RewriteError

TEKTON_V1 = "tekton.dev/v1"
TEKTON_V1BETA1 = "tekton.dev/v1beta1"
_TASK_KINDS = (None, "", "Task", "ClusterTask")


def taskrefs_to_inline(pipeline: Mapping, workspaces: Sequence[str]) -> dict[str, Mapping]:
    """`{pipeline task: taskRef}` for every `taskRef` task that binds a wrapped workspace.

    Raises `RewriteError` for tasks that bind one but cannot be rewritten (custom tasks,
    pipelines in pipelines), before anything is fetched.
    """
    out: dict[str, Mapping] = {}
    for ptask in planning.all_tasks(planning.spec_of(pipeline)):
        bound = explicit_wrapped(ptask, workspaces)
        if not bound:
            continue
        check_rewritable(ptask, bound)
        ref = ptask.get("taskRef")
        if planning.is_map(ref):
            out[str(ptask.get("name"))] = ref
    return out


def explicit_wrapped(ptask: Mapping, workspaces: Sequence[str]) -> list[str]:
    found = []
    for binding in ptask.get("workspaces") or []:
        if planning.is_map(binding):
            ws = binding.get("workspace") or binding.get("name")
            if ws in workspaces:
                found.append(str(ws))
    return found


def check_rewritable(ptask: Mapping, bound: Sequence[str]) -> None:
    name = ptask.get("name")
    what = ", ".join(repr(w) for w in dict.fromkeys(bound))
    if "pipelineRef" in ptask or "pipelineSpec" in ptask:
        raise RewriteError(
            f"pipeline task {name!r} runs a Pipeline (pipelines in pipelines) and binds wrapped "
            f"workspace {what}; the wrap resolver can only rewrite Tasks: wrap the child "
            f"Pipeline on its own, or leave {what} out of param `workspaces`"
        )
    ref = ptask.get("taskRef")
    spec = ptask.get("taskSpec")
    custom = (
        planning.is_map(ref) and (
            ref.get("kind") not in _TASK_KINDS
            or (ref.get("apiVersion") and not str(ref.get("apiVersion")).startswith("tekton.dev/"))
        )
    ) or (planning.is_map(spec) and (spec.get("apiVersion") or spec.get("kind")))
    if custom:
        raise RewriteError(
            f"pipeline task {name!r} is a custom task and binds wrapped workspace {what}; the "
            f"wrap resolver cannot add steps to a custom task: leave {what} out of param "
            f"`workspaces` or use a Task"
        )
    if not planning.is_map(ref) and not planning.is_map(spec):
        raise RewriteError(f"pipeline task {name!r} has neither taskRef nor taskSpec")


# ---- the rewrite ----


def inline_task(ptask: Mapping, task_obj: Mapping, api_version: str, pipeline_params: set) -> dict:
    """`taskRef` replaced by an embedded `taskSpec`, in the position the taskRef had."""
    source_api = str(task_obj.get("apiVersion") or api_version)
    task_spec = convert_task_spec(copy.deepcopy(dict(task_obj.get("spec") or {})), source_api, api_version,
                                  str(ptask.get("name")))
    metadata = task_obj.get("metadata") or {}
    embedded_meta = {k: copy.deepcopy(metadata[k]) for k in ("labels", "annotations") if metadata.get(k)}
    if embedded_meta:
        task_spec = {"metadata": embedded_meta, **task_spec}
    out: dict = {}
    for key, value in ptask.items():
        if key == "taskRef":
            out["taskSpec"] = task_spec
        else:
            out[key] = value
    _pin_defaults(out, task_spec, pipeline_params)
    return out


def _pin_defaults(ptask: dict, task_spec: Mapping, pipeline_params: set) -> None:
    """Keep a referenced Task's param defaults once it is embedded.

    For an embedded spec Tekton lets a Pipeline param of the same name override the task's
    own default (tekton-facts §5), which a `taskRef` never did. Passing the default
    explicitly keeps the value the author had.
    """
    passed = {p.get("name") for p in ptask.get("params") or [] if planning.is_map(p)}
    pinned = [
        {"name": p["name"], "value": copy.deepcopy(p["default"])}
        for p in task_spec.get("params") or []
        if planning.is_map(p) and "default" in p and p.get("name") in pipeline_params
        and p.get("name") not in passed
    ]
    if pinned:
        ptask["params"] = list(ptask.get("params") or []) + pinned


def convert_task_spec(spec: dict, source_api: str, target_api: str, task: str) -> dict:
    """A Task spec of one Tekton apiVersion written for the other (the Pipeline's)."""
    if source_api == target_api:
        return spec
    if source_api == TEKTON_V1BETA1 and target_api == TEKTON_V1:
        if spec.get("resources"):
            raise RewriteError(
                f"pipeline task {task!r}: its v1beta1 Task uses PipelineResources (`resources`), "
                f"which tekton.dev/v1 Pipelines cannot embed; use a v1beta1 Pipeline or drop them"
            )
        spec.pop("resources", None)
        _rename_in_containers(spec, "resources", "computeResources")
    elif source_api == TEKTON_V1 and target_api == TEKTON_V1BETA1:
        _rename_in_containers(spec, "computeResources", "resources")
    return spec


def _rename_in_containers(spec: dict, old: str, new: str) -> None:
    containers = list(spec.get("steps") or []) + list(spec.get("sidecars") or [])
    if isinstance(spec.get("stepTemplate"), dict):
        containers.append(spec["stepTemplate"])
    for c in containers:
        if isinstance(c, dict) and old in c:
            c[new] = c.pop(old)
