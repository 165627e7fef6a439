"""A structural validator for Pipelines, encoding the rules Tekton applies (tekton-facts §6).

Not a copy of Tekton's validation: the subset a rewrite could break. `problems(pipeline)`
returns human-readable findings; tests assert it is empty for everything we emit.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
TASK_REF = re.compile(r"\$\(tasks\.([^.)\s]+)\.")
WS_REF = re.compile(r"\$\(workspaces\.([^.)\s]+)\.(path|bound|claim|volume)\)")
WS_VOLUME = re.compile(r"\$\(workspaces\.([^.)\s]+)\.volume\)")
"""A step's name for a workspace's generated pod volume (Tekton substitutes it in volumeMounts)."""
RESULT_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
RESULT_PATH = re.compile(r"\$\(results\.([^.)\s]+)\.path\)")


def problems(pipeline: Mapping) -> list[str]:
    out: list[str] = []
    if pipeline.get("kind") != "Pipeline":
        out.append(f"kind is {pipeline.get('kind')!r}, not Pipeline")
    if pipeline.get("apiVersion") not in ("tekton.dev/v1", "tekton.dev/v1beta1"):
        out.append(f"apiVersion {pipeline.get('apiVersion')!r}")
    spec = pipeline.get("spec") or {}
    tasks = list(spec.get("tasks") or [])
    final = list(spec.get("finally") or [])
    if final and not tasks:
        out.append("finally without tasks")
    names = [t.get("name") for t in tasks + final]
    for name in names:
        if not isinstance(name, str) or not DNS_LABEL.match(name) or len(name) > 63:
            out.append(f"pipeline task name {name!r} is not a DNS-1123 label")
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        out.append(f"duplicate pipeline task names {sorted(dupes)}")
    dag_names = {t.get("name") for t in tasks}
    declared_ws = {w.get("name") for w in spec.get("workspaces") or []}
    declared_params = {p.get("name") for p in spec.get("params") or []}
    for t in tasks:
        for dep in t.get("runAfter") or []:
            if dep not in dag_names:
                out.append(f"task {t.get('name')}: runAfter unknown task {dep!r}")
    for t in final:
        if t.get("runAfter"):
            out.append(f"finally task {t.get('name')} has runAfter")
    for t in tasks + final:
        where = f"task {t.get('name')}"
        for text in _strings([t.get("params"), t.get("when"), t.get("matrix")]):
            for ref in TASK_REF.findall(text):
                if ref not in dag_names and ref not in names:
                    out.append(f"{where}: references unknown task {ref!r}")
        for text in _strings(t.get("when")):
            if "$(tasks.status)" in text and t not in final:
                out.append(f"{where}: $(tasks.status) outside finally")
        for b in t.get("workspaces") or []:
            ws = b.get("workspace") or b.get("name")
            if ws not in declared_ws:
                out.append(f"{where}: binds undeclared pipeline workspace {ws!r}")
            if set(b) - {"name", "workspace", "subPath"}:
                out.append(f"{where}: workspace binding has unknown fields {sorted(set(b) - {'name', 'workspace', 'subPath'})}")
        if "taskSpec" in t and "taskRef" in t:
            out.append(f"{where}: both taskRef and taskSpec")
        if isinstance(t.get("taskSpec"), Mapping) and not t["taskSpec"].get("apiVersion"):
            out.extend(f"{where}: {p}" for p in task_spec_problems(t["taskSpec"], t, declared_ws))
    _ = declared_params
    _check_acyclic(tasks, out)
    return out


def task_spec_problems(spec: Mapping, ptask: Mapping, pipeline_workspaces: set = frozenset()) -> list[str]:
    out: list[str] = []
    steps = list(spec.get("steps") or [])
    if not steps:
        out.append("no steps")
    step_names = [s.get("name") for s in steps if s.get("name")]
    for n in step_names:
        if not DNS_LABEL.match(n) or len(n) > 63:
            out.append(f"step name {n!r} is not a DNS-1123 label")
    if len(step_names) != len(set(step_names)):
        out.append(f"duplicate step names {step_names}")
    declared = {d.get("name"): d for d in spec.get("workspaces") or []}
    paths = [d.get("mountPath") or f"/workspace/{n}" for n, d in declared.items()]
    if len(paths) != len(set(paths)):
        out.append(f"duplicate workspace mount paths {paths}")
    bound = {b.get("name") for b in ptask.get("workspaces") or []}
    for n, d in declared.items():
        if n not in bound and not d.get("optional"):
            out.append(f"task workspace {n!r} is required but not bound")
    for b in bound:
        if b not in declared:
            out.append(f"binds task workspace {b!r} that the spec does not declare")
    volumes = [v.get("name") for v in spec.get("volumes") or []]
    if len(volumes) != len(set(volumes)):
        out.append(f"duplicate volume names {volumes}")
    containers = steps + list(spec.get("sidecars") or [])
    template = spec.get("stepTemplate") or {}
    for c in containers + [template]:
        for m in c.get("volumeMounts") or []:
            mp = str(m.get("mountPath", ""))
            if mp.startswith("/tekton/") and not mp.startswith("/tekton/home"):
                out.append(f"volumeMount under /tekton/: {mp}")
            if str(m.get("name", "")).startswith("tekton-internal-"):
                out.append(f"volumeMount name {m.get('name')}")
            if m.get("name") not in volumes and not str(m.get("name", "")).startswith("$("):
                out.append(f"volumeMount {m.get('name')!r} names no volume of the task")
            if mp in paths:
                out.append(f"volumeMount {mp} clashes with a workspace mountPath")
            volume_of = WS_VOLUME.fullmatch(str(m.get("name", "")))
            if volume_of and volume_of.group(1) not in declared:
                out.append(f"volumeMount names the volume of {volume_of.group(1)!r}, which the task does not declare")
    for s in steps:
        if "ref" in s:
            for forbidden in ("image", "command", "args", "script", "workingDir", "env", "volumeMounts"):
                if forbidden in s:
                    out.append(f"step {s.get('name')} with ref sets {forbidden}")
            continue
        if not s.get("image") and not template.get("image"):
            out.append(f"step {s.get('name')!r} has no image")
        if "script" in s and "command" in s:
            out.append(f"step {s.get('name')!r} has script and command")
        for w in s.get("workspaces") or []:
            if w.get("name") not in declared:
                out.append(f"step {s.get('name')!r} lists undeclared workspace {w.get('name')!r}")
    results = {r.get("name"): r for r in spec.get("results") or []}
    if len(results) != len(spec.get("results") or []):
        out.append("duplicate result names")
    for n, r in results.items():
        if not isinstance(n, str) or not RESULT_NAME.match(n):
            out.append(f"result name {n!r} is not valid")
        if r.get("type") == "object" and not r.get("properties"):
            out.append(f"object result {n!r} has no properties")
        if r.get("type") not in (None, "string", "array", "object"):
            out.append(f"result {n!r} has type {r.get('type')!r}")
        if r.get("type") in ("object", "array") and ptask.get("matrix"):
            out.append(f"matrixed task declares {r.get('type')} result {n!r}: only string results are allowed")
    for text in _strings(steps + [template] + list(spec.get("sidecars") or [])):
        for name in RESULT_PATH.findall(text):
            if name not in results:
                out.append(f"$(results.{name}.path) used but {name!r} is not declared")
        for ws, _ in WS_REF.findall(text):
            # An embedded spec may use a pipeline workspace it does not declare: Tekton
            # propagates it (tekton-facts §5).
            if ws not in declared and ws not in pipeline_workspaces:
                out.append(f"$(workspaces.{ws}...) used but {ws!r} is not declared")
    return out


def _check_acyclic(tasks: list, out: list[str]) -> None:
    deps = {t.get("name"): set(t.get("runAfter") or []) for t in tasks}
    for t in tasks:
        for text in _strings([t.get("params"), t.get("when"), t.get("matrix")]):
            deps[t.get("name")] |= set(TASK_REF.findall(text))
    state: dict = {}

    def visit(n, stack=()):
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            out.append(f"cycle through {n}")
            return
        state[n] = 1
        for d in deps.get(n, ()):
            if d in deps:
                visit(d)
        state[n] = 2

    for n in deps:
        visit(n)


def _strings(value) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)
