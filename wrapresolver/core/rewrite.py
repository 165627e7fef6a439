"""The rewrite: a Pipeline in, the same Pipeline with wrapped workspaces out (pure).

For every pipeline task that binds a wrapped workspace:
- a `taskRef` is replaced by the Task's spec as an embedded `taskSpec` (the injected steps
  have to live somewhere, and Tekton substitutes `$(context.pipelineRun.uid)` and
  `$(workspaces.x.path)` inside embedded specs, which the step args rely on);
- a `wrap-fetch` step is put first and, for producers, a `wrap-store` step last, both
  `wrapresolver` with the JSON `WorkspaceTransfer` of each workspace as args;
- a `readOnly` wrapped task workspace (declared so by the Task, or by the pipeline task's
  binding) stays read-only for the task's steps and sidecars, as Tekton mounts it; the fetch
  step alone also mounts its volume writable and fills it from there (readonly.py);
- an `emptyDir` volume `wrap-state` carries what fetch saw to store.

When no producer's store can publish the final state to the user's exact target, a
`finally` task `wrap-publish` does it (see plan.py for who publishes). Embedding Tasks is inline.py's; the results the
injected steps report for Tekton Chains are results.py's; the injected steps' `securityContext` is stepsecurity.py's.

Everything else in the Pipeline comes out exactly as it went in, key order included.

One module of more than 400 lines on purpose: injecting a task's steps reads and writes one
task spec in one pass (declarations, steps, volumes, results, securityContext), and the
publish task is the same injection for a task of our own. The rules it applies each live in
their own module (plan, inline, readonly, results, stepsecurity, podsecurity); what is
left here is their order.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wrapresolver.core import inline, readonly, results, stepsecurity
from wrapresolver.core import plan as planning
from wrapresolver.core.backend import Backend
from wrapresolver.core.params import WrapRequest, base_of
from wrapresolver.core.podsecurity import pod_context
from wrapresolver.core.stepspec import STATE_DIR, WorkspaceTransfer
from wrapresolver.core.template import expand_target, run_id
from wrapresolver.core.values import StepRequirements
from wrapresolver.errors import RewriteError

FETCH_STEP = "wrap-fetch"
STORE_STEP = "wrap-store"
PUBLISH_TASK = "wrap-publish"
PUBLISH_STEP = "wrap-publish"
STATE_VOLUME = "wrap-state"
COMMAND = "wrapresolver"



@dataclass(frozen=True)
class TaskBinding:
    """One wrapped workspace as a pipeline task binds it."""

    workspace: str
    task_workspace: str
    sub_path: str
    declaration: dict
    read_only: bool = False
    """The Task declares it `readOnly`, or the pipeline task's binding says `readOnly: true`."""


def rewrite_pipeline(
    pipeline: Mapping,
    task_objects: Mapping[str, Mapping],
    request: WrapRequest,
    workspaces: Sequence[str],
    backend: Backend,
    warnings: list[str] | None = None,
    wrapped: list[str] | None = None,
) -> dict:
    """The rewritten Pipeline. `task_objects` maps pipeline task names to fetched Task objects.

    Four phases: inline and find the wrapped bindings, plan each workspace, inject the
    steps, add the publish task where no store step can publish. What the answer cannot
    make work but Tekton would accept (see stepsecurity.py) is appended to `warnings`; the
    names of the tasks that got injected steps (and the publish task) to `wrapped`, for a
    per-task answer (pertask.py).
    """
    out = _copy_tree(dict(pipeline))
    spec = out["spec"]
    _check_declared(out, workspaces)
    dag = planning.build_dag(spec)
    task_bindings = _inline_and_bind(out, task_objects, workspaces)
    plans = _plan_workspaces(spec, dag, workspaces, task_bindings)
    transfers = _Transfers.of(request, workspaces, plans)
    requirements = backend.step_requirements(request.options)
    run = request.context.pipelinerun
    security = _inject_steps(spec, task_bindings, plans, transfers, request.step_image, requirements, run)
    publisher = _add_publish_task(spec, workspaces, plans, transfers, request.step_image, requirements,
                                  list(security.values()), run)
    if warnings is not None:
        warnings.extend(w for s in [*security.values(), *([publisher] if publisher else [])] for w in s.warnings)
    if wrapped is not None:
        wrapped.extend(security)
        if publisher is not None:
            wrapped.append(str(spec["finally"][-1]["name"]))
    return out


def _check_declared(pipeline: Mapping, workspaces: Sequence[str]) -> None:
    spec = pipeline["spec"]
    declared = {w.get("name") for w in spec.get("workspaces") or [] if planning.is_map(w)}
    missing = [w for w in workspaces if w not in declared]
    if missing:
        name = str((pipeline.get("metadata") or {}).get("name", ""))
        raise RewriteError(f"Pipeline {name!r} does not declare workspace(s) {', '.join(map(repr, missing))}")


def _inline_and_bind(
    pipeline: dict, task_objects: Mapping[str, Mapping], workspaces: Sequence[str]
) -> dict[str, list[TaskBinding]]:
    """Phase 1: embed the Tasks of wrapped taskRefs; each task's wrapped bindings by task name."""
    api_version = str(pipeline.get("apiVersion") or inline.TEKTON_V1)
    spec = pipeline["spec"]
    pipeline_params = {p.get("name") for p in spec.get("params") or [] if planning.is_map(p)}
    task_bindings: dict[str, list[TaskBinding]] = {}
    for section in ("tasks", "finally"):
        items = spec.get(section) or []
        for i, ptask in enumerate(items):
            if not planning.is_map(ptask):
                continue
            name = str(ptask.get("name"))
            explicit = inline.explicit_wrapped(ptask, workspaces)
            if explicit:
                inline.check_rewritable(ptask, explicit)
            if explicit and planning.is_map(ptask.get("taskRef")):
                if name not in task_objects:
                    raise RewriteError(f"pipeline task {name!r}: its Task was not fetched")
                ptask = inline.inline_task(ptask, task_objects[name], api_version, pipeline_params)
                items[i] = ptask
            if not planning.is_map(ptask.get("taskSpec")):
                continue
            found = _wrapped_bindings(ptask, workspaces)
            if found:
                task_bindings[name] = found
    return task_bindings


def _plan_workspaces(
    spec: Mapping, dag: planning.Dag, workspaces: Sequence[str], task_bindings: Mapping[str, list[TaskBinding]]
) -> dict[str, planning.WorkspacePlan]:
    """Phase 2: who produces and who consumes each wrapped workspace."""
    finally_names = set(dag.finally_tasks)
    by_name = {str(t.get("name")): t for t in planning.all_tasks(spec)}
    per_workspace: dict[str, dict[str, planning.Binding]] = {ws: {} for ws in workspaces}
    for task, found in task_bindings.items():
        for b in found:
            binding = planning.Binding(
                task=task,
                task_workspace=b.task_workspace,
                sub_path=b.sub_path,
                read_only=b.read_only,
                is_finally=task in finally_names,
                matrix=bool(by_name[task].get("matrix")),
            )
            if binding.matrix and not binding.read_only:
                raise RewriteError(
                    f"pipeline task {task!r} has a matrix and writes wrapped workspace {b.workspace!r}: "
                    f"its parallel runs would each store a different state. Declare task "
                    f"workspace {binding.task_workspace!r} `readOnly: true` if the task only "
                    f"reads it, or do the writing in a task without matrix"
                )
            per_workspace[b.workspace][task] = binding
    return {ws: planning.plan_workspace(spec, dag, ws, per_workspace[ws]) for ws in workspaces}


@dataclass(frozen=True)
class _Transfers:
    """Builds the `WorkspaceTransfer` of each injected step: only what that step uses."""

    request: WrapRequest
    run: str
    targets: Mapping[str, str]
    bases: Mapping[str, str]
    plans: Mapping[str, planning.WorkspacePlan]

    @classmethod
    def of(cls, request: WrapRequest, workspaces: Sequence[str], plans: Mapping[str, planning.WorkspacePlan]) -> _Transfers:
        return cls(
            request=request,
            run=run_id(request.context),
            targets={ws: expand_target(request.target, ws, request.context) for ws in workspaces},
            bases={ws: base_of(request, ws) for ws in workspaces},
            plans=plans,
        )

    def _make(self, ws: str, task: str, **fields: Any) -> WorkspaceTransfer:
        return WorkspaceTransfer(
            workspace=ws, target=self.targets[ws], run=self.run, task=task, backend=self.request.backend,
            base=self.bases[ws], options=dict(self.request.options),
            base_required=bool(self.bases[ws]) and self.request.base_required, **fields,
        )

    def fetch(self, b: TaskBinding, task: str, fill: str = "") -> WorkspaceTransfer:
        p = self.plans[b.workspace]
        return self._make(
            b.workspace, task, inputs=p.inputs[task], graph=p.fallback_graph(task), fill=fill,
            stores=task in p.graph, **_mount(b),
        )

    def store(self, b: TaskBinding, task: str, read_only: bool = False) -> WorkspaceTransfer:
        # A store starts from what its own fetch recorded: it needs no inputs.
        if read_only:
            return self._make(b.workspace, task, read_only=True, **_mount(b))
        if self.plans[b.workspace].publisher == task:
            return self._make(b.workspace, task, publish=True, max_layers=self.request.max_layers, **_mount(b))
        return self._make(b.workspace, task, **_mount(b))

    def publish(self, ws: str, task: str) -> WorkspaceTransfer:
        p = self.plans[ws]
        return self._make(ws, task, inputs=p.publish_inputs, graph=p.publish_graph(), publish=True,
                          max_layers=self.request.max_layers)


def _mount(b: TaskBinding) -> dict[str, str]:
    return dict(
        path=f"$(workspaces.{b.task_workspace}.path)",
        bound=f"$(workspaces.{b.task_workspace}.bound)" if b.declaration.get("optional") else "true",
        sub_path=b.sub_path,
    )


def _inject_steps(
    spec: Mapping,
    task_bindings: Mapping[str, list[TaskBinding]],
    plans: Mapping[str, planning.WorkspacePlan],
    transfers: _Transfers,
    image: str,
    requirements: StepRequirements,
    run: Mapping | None = None,
) -> dict[str, stepsecurity.InjectedSecurity]:
    """Phase 3: a fetch step first in every consumer, a store step last in every producer.

    Returns each task's injected securityContext (for the publish task, and its warnings)."""
    by_name = {str(t.get("name")): t for t in planning.all_tasks(spec)}
    security: dict[str, stepsecurity.InjectedSecurity] = {}
    optional = {str(w.get("name")) for w in spec.get("workspaces") or [] if planning.is_map(w) and w.get("optional")}
    for task, found in task_bindings.items():
        task_spec = by_name[task]["taskSpec"]
        checked = [b for b in found if b.read_only and b.workspace in optional]
        fills = readonly.fill_paths(
            [b.task_workspace for b in found if b.read_only and b not in checked], _mount_paths(task_spec),
        )
        fetches = [transfers.fetch(b, task, fills.get(b.task_workspace, "")) for b in found]
        stores = [transfers.store(b, task) for b in found if task in plans[b.workspace].graph]  # graph: by producer
        if transfers.request.chains_results and not by_name[task].get("matrix"):  # matrix: string results only
            fetches, stores = results.declare_results(task_spec, fetches, stores)
        for b in checked:  # no volume to name when the run leaves it unbound: checked instead
            b.declaration.pop("readOnly", None)
            stores.append(transfers.store(b, task, read_only=True))
        names = [FETCH_STEP, STORE_STEP] if stores else [FETCH_STEP]
        security[task] = stepsecurity.for_task(task, task_spec, pod_context(run, task), names)
        fill_mounts = [readonly.fill_mount(ws, path) for ws, path in fills.items()]
        _inject(task_spec, fetches, stores, [b.task_workspace for b in found], image, requirements,
                security[task].context, fill_mounts)
    return security


def _add_publish_task(
    spec: dict,
    workspaces: Sequence[str],
    plans: Mapping[str, planning.WorkspacePlan],
    transfers: _Transfers,
    image: str,
    requirements: StepRequirements,
    wrapped: Sequence[stepsecurity.InjectedSecurity] = (),
    run: Mapping | None = None,
) -> stepsecurity.InjectedSecurity | None:
    """Phase 4: publish the final state where no store step can; its step's securityContext
    is what the `wrapped` tasks' injected steps share."""
    needing = [ws for ws in workspaces if plans[ws].needs_publish_task]
    if not needing:
        return None
    task_name = _unique(PUBLISH_TASK, {str(t.get("name")) for t in planning.all_tasks(spec)})
    publisher = stepsecurity.for_publish(task_name, wrapped, pod_context(run, task_name))
    publishing = [transfers.publish(ws, task_name) for ws in needing]
    declared: dict = {}
    if transfers.request.chains_results:
        _, publishing = results.declare_results(declared, [], publishing, publish_task=True)
    spec.setdefault("finally", []).append(
        _publish_task(task_name, publishing, image, requirements, declared.get("results"), publisher.context)
    )
    return publisher


# ---- bindings ----

def _wrapped_bindings(ptask: dict, workspaces: Sequence[str]) -> list[TaskBinding]:
    task_spec = ptask["taskSpec"]
    name = str(ptask.get("name"))
    # The Pipeline was copied into plain dicts (`_copy_tree`), so declarations can be edited in place.
    declarations: dict[Any, dict] = {
        d.get("name"): d for d in task_spec.get("workspaces") or [] if isinstance(d, dict)
    }
    found: list[TaskBinding] = []
    seen: dict[str, str] = {}
    bound_task_names = set()
    for binding in ptask.get("workspaces") or []:
        if not planning.is_map(binding):
            continue
        task_ws = str(binding.get("name"))
        bound_task_names.add(task_ws)
        ws = str(binding.get("workspace") or task_ws)
        if ws not in workspaces:
            continue
        if ws in seen:
            raise RewriteError(
                f"pipeline task {name!r} binds wrapped workspace {ws!r} twice (as {seen[ws]!r} "
                f"and {task_ws!r}); the wrap resolver supports one binding per task: use one "
                f"task workspace and subdirectories"
            )
        seen[ws] = task_ws
        decl = declarations.get(task_ws)
        if decl is None:
            # Tekton adds a declaration for a workspace bound to an embedded spec (propagation).
            decl = {"name": task_ws}
            task_spec.setdefault("workspaces", []).append(decl)
            declarations[task_ws] = decl
        read_only = readonly.take_binding_read_only(binding, decl)
        found.append(TaskBinding(ws, task_ws, str(binding.get("subPath") or ""), decl, read_only=read_only))
    # Propagated: an embedded spec that uses $(workspaces.W.*) of a pipeline workspace it
    # neither declares nor binds gets it bound by Tekton. Make that explicit.
    text = json.dumps(task_spec)
    for ws in workspaces:
        if ws in seen or ws in declarations or ws in bound_task_names:
            continue
        if f"$(workspaces.{ws}." in text:
            decl = {"name": ws}
            task_spec.setdefault("workspaces", []).append(decl)
            ptask.setdefault("workspaces", []).append({"name": ws, "workspace": ws})
            found.append(TaskBinding(ws, ws, "", decl))  # Tekton would propagate it: used without a binding
    return found


# ---- steps ----

def _inject(
    task_spec: dict,
    fetches: Sequence[WorkspaceTransfer],
    stores: Sequence[WorkspaceTransfer],
    task_workspaces: Sequence[str],
    image: str,
    requirements: StepRequirements,
    security: Mapping | None = None,
    fill_mounts: Sequence[Mapping] = (),
) -> None:
    steps = task_spec.setdefault("steps", [])
    names = {str(s.get("name")) for s in steps if planning.is_map(s) and s.get("name")}
    volumes = task_spec.setdefault("volumes", [])
    volume_names = {str(v.get("name")) for v in volumes if planning.is_map(v)}
    state_volume = STATE_VOLUME
    if state_volume in volume_names:
        state_volume = _unique(STATE_VOLUME, volume_names)
    mount_paths = _mount_paths(task_spec)
    state_dir = STATE_DIR if STATE_DIR not in mount_paths else _unique(STATE_DIR, mount_paths)
    volumes.append({"name": state_volume, "emptyDir": {}})
    for volume in requirements.volumes:
        if volume.get("name") not in volume_names:
            volumes.append(dict(copy.deepcopy(volume)))
    isolated = _uses_isolated_workspaces(task_spec)

    # The step command's default state dir and the image's own working directory need no
    # words; `/` is written only against a stepTemplate `workingDir` (it may name a directory
    # inside a workspace, which fetch replaces).
    state_args = [] if state_dir == STATE_DIR else ["--state-dir", state_dir]
    template = task_spec.get("stepTemplate")
    working_dir = planning.is_map(template) and bool(template.get("workingDir"))

    def step(name: str, verb: str, specs: Sequence[WorkspaceTransfer], extra_mounts: Sequence[Mapping] = ()) -> dict:
        args = [verb, *state_args]
        for s in specs:
            args += ["--workspace", s.to_json()]
        args += list(requirements.args)
        out: dict = {"name": name, "image": image, "command": [COMMAND], "args": args}
        if working_dir:
            out["workingDir"] = "/"
        if requirements.env:
            out["env"] = [dict(copy.deepcopy(e)) for e in requirements.env]
        out["volumeMounts"] = [{"name": state_volume, "mountPath": state_dir}] + [
            dict(copy.deepcopy(m)) for m in requirements.volume_mounts
        ] + [dict(m) for m in extra_mounts]
        if isolated:
            out["workspaces"] = [{"name": w} for w in task_workspaces]
        if security is not None:
            out["securityContext"] = _copy_tree(dict(security))
        return out

    fetch_name = _unique(FETCH_STEP, names)
    names.add(fetch_name)
    steps.insert(0, step(fetch_name, "fetch", fetches, fill_mounts))
    if stores:
        steps.append(step(_unique(STORE_STEP, names), "store", stores))


def _publish_task(
    name: str, specs: Sequence[WorkspaceTransfer], image: str, requirements: StepRequirements,
    results: Sequence[Mapping] | None = None,
    security: Mapping | None = None,
) -> dict:
    args = ["publish"]
    for s in specs:
        args += ["--workspace", s.to_json()]
    args += list(requirements.args)
    step: dict = {"name": PUBLISH_STEP, "image": image, "command": [COMMAND], "args": args}
    if requirements.env:
        step["env"] = [dict(copy.deepcopy(e)) for e in requirements.env]
    if requirements.volume_mounts:
        step["volumeMounts"] = [dict(copy.deepcopy(m)) for m in requirements.volume_mounts]
    if security is not None:
        step["securityContext"] = _copy_tree(dict(security))
    task_spec: dict = {"steps": [step]}
    if results:
        task_spec["results"] = list(results)
    if requirements.volumes:
        task_spec["volumes"] = [dict(copy.deepcopy(v)) for v in requirements.volumes]
    return {
        "name": name,
        # Only a run whose DAG tasks all succeeded (or were skipped) has a final state to publish.
        "when": [{"input": "$(tasks.status)", "operator": "in", "values": ["Succeeded", "Completed"]}],
        "taskSpec": task_spec,
    }


def _mount_paths(task_spec: Mapping) -> set[str]:
    paths = set()
    for d in task_spec.get("workspaces") or []:
        if planning.is_map(d):
            paths.add(str(d.get("mountPath") or f"/workspace/{d.get('name')}"))
    containers = list(task_spec.get("steps") or []) + list(task_spec.get("sidecars") or [])
    if planning.is_map(task_spec.get("stepTemplate")):
        containers.append(task_spec["stepTemplate"])
    for c in containers:
        if planning.is_map(c):
            for m in c.get("volumeMounts") or []:
                if planning.is_map(m) and m.get("mountPath"):
                    paths.add(str(m["mountPath"]))
    return paths


def _uses_isolated_workspaces(task_spec: Mapping) -> bool:
    containers = list(task_spec.get("steps") or []) + list(task_spec.get("sidecars") or [])
    return any(planning.is_map(c) and c.get("workspaces") for c in containers)


# ---- helpers ----



def _copy_tree(obj: Any) -> Any:
    """A deep copy of parsed YAML/JSON (dicts, lists, scalars), several times faster than
    `copy.deepcopy`, which a large Pipeline spent a sixth of its rewrite in."""
    kind = type(obj)
    if kind is dict:
        return {k: _copy_tree(v) for k, v in obj.items()}
    if kind is list:
        return [_copy_tree(v) for v in obj]
    if kind in (str, int, float, bool) or obj is None:
        return obj
    return copy.deepcopy(obj)


def _unique(base: str, taken: Iterable[str]) -> str:
    taken = set(taken)
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"




