"""Making a PipelineRun use the wrap resolver: the pure part of `wrapresolver convert`.

The wrap resolver rewrites a Pipeline it fetches by reference, so a run with an embedded
`pipelineSpec` needs its Pipeline as an object of its own, and a run with a plain
`pipelineRef` (a name, or another resolver) needs that reference moved into the
`pipelineref` param. `convert_run` makes both objects; `conversion_hint` is what `render`
says when it is handed such a run. The command (`wrapresolver.convert`) reads and prints.

What it changes, and why (also in docs/pipeline-authors.md):
- the run's `pipelineRef` becomes `{resolver: wrap, params: [pipelineref, target?]}`;
- an embedded `pipelineSpec` becomes a Pipeline named `--name`, else the run's
  `generateName` without its trailing `-`, else its `name`. It declares the workspaces and
  params the embedded spec used without declaring (Tekton propagates those into an
  embedded spec only; a standalone Pipeline must declare them);
- a workspace bound to a `volumeClaimTemplate` is bound to `emptyDir` instead: that volume
  only existed to share files between the tasks, which the wrapped workspace now does. A
  `persistentVolumeClaim` is kept: a named claim outlives the run and may be wanted;
- what the API server filled in (`uid`, `resourceVersion`, `creationTimestamp`,
  `managedFields`, `status`, ...) is dropped; every other field is kept.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, Sequence

from wrapresolver.core.params import PARAM_PIPELINEREF, PARAM_TARGET, PARAM_WORKSPACES, RESOLVER_NAME
from wrapresolver.errors import ParamError

SERVER_FIELDS = (
    "uid", "resourceVersion", "creationTimestamp", "generation", "managedFields", "selfLink",
    "deletionTimestamp", "deletionGracePeriodSeconds",
)
"""Metadata the API server sets: a copy of them names the old run, not a new one."""
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"

_WORKSPACE_USE = re.compile(r"\$\(workspaces\.([A-Za-z0-9_-]+)\.")
_PARAM_USE = re.compile(r"""\$\(params(?:\.([A-Za-z0-9_-]+)|\[["']([^"']+)["']\])""")



def convert_run(run: Mapping, *, name: str = "", target: str = "") -> tuple[dict | None, dict, list[str]]:
    """(the Pipeline made from an embedded spec or None, the converted run, what was chosen)."""
    spec = run.get("spec")
    if not isinstance(spec, Mapping):
        raise ParamError(f"PipelineRun {_run_name(run)!r} has no spec")
    new_run = _clean_copy(run)
    new_spec = new_run["spec"]
    notes: list[str] = []
    pipeline: dict | None = None
    ref = spec.get("pipelineRef")
    if isinstance(spec.get("pipelineSpec"), Mapping):
        pipeline_name = name or _default_name(run)
        pipeline = _pipeline_of(run, pipeline_name)
        del new_spec["pipelineSpec"]
        reference: object = pipeline_name
        how = "--name" if name else ("the run's generateName" if _generate_name(run) else "the run's name")
        notes.append(f"The embedded pipelineSpec is now Pipeline {pipeline_name!r} (named after {how}).")
    elif isinstance(ref, Mapping) and ref.get("resolver") == RESOLVER_NAME:
        raise ParamError(f"PipelineRun {_run_name(run)!r} already uses `resolver: {RESOLVER_NAME}`; nothing to convert")
    elif isinstance(ref, Mapping) and ref.get("resolver"):
        reference = json.dumps({"resolver": ref["resolver"], "params": list(ref.get("params") or [])})
        notes.append(f"The {ref['resolver']} resolver's reference moved into param `{PARAM_PIPELINEREF}`.")
    elif isinstance(ref, Mapping) and isinstance(ref.get("name"), str) and ref["name"]:
        if ref.get("bundle"):
            raise ParamError(
                f"PipelineRun {_run_name(run)!r} uses a Tekton bundle (pipelineRef.bundle); write it as "
                f"`pipelineRef: {{resolver: bundles, params: [...]}}` first, then convert"
            )
        reference = ref["name"]
        notes.append(f"Pipeline {ref['name']!r} is now fetched through the wrap resolver.")
    else:
        raise ParamError(
            f"PipelineRun {_run_name(run)!r} has neither pipelineSpec nor pipelineRef; nothing to convert"
        )
    params: list[dict] = [{"name": PARAM_PIPELINEREF, "value": reference}]
    if target:
        params.append({"name": PARAM_TARGET, "value": target})
    else:
        notes.append(
            f"No --target: the run stores its workspaces at the cluster's `default-{PARAM_TARGET}` "
            f"(ConfigMap wrapresolver-config); add param `{PARAM_TARGET}` to choose."
        )
    new_spec["pipelineRef"] = {"resolver": RESOLVER_NAME, "params": params}
    notes += _rebind_volumes(new_spec)
    notes.append("Create both with `kubectl create -f -` (a PipelineRun with generateName cannot be applied).")
    return pipeline, _ordered(new_run), notes


def conversion_hint(documents: Sequence[Mapping], origins: Sequence[str]) -> None:
    """For `render`: raise `ParamError` saying what to change when the files hold a PipelineRun
    that does not use the wrap resolver (and none that does)."""
    for index, doc in enumerate(documents):
        if doc.get("kind") != "PipelineRun" or not isinstance(doc.get("spec"), Mapping):
            continue
        origin = origins[index] if index < len(origins) and origins[index] != "stdin" else "run.yaml"
        spec, what = doc["spec"], f"PipelineRun {_run_name(doc)!r}"
        ref = spec.get("pipelineRef")
        command = f"`wrapresolver convert -f {origin}`"
        if isinstance(spec.get("pipelineSpec"), Mapping):
            raise ParamError(
                f"{what} embeds its Pipeline (spec.pipelineSpec), and the wrap resolver rewrites a "
                f"Pipeline it fetches by reference: {command} prints the Pipeline as an object of its "
                f"own and the run with `pipelineRef: {{resolver: {RESOLVER_NAME}, params: "
                f"[{{name: {PARAM_PIPELINEREF}, value: <pipeline>}}, {{name: {PARAM_TARGET}, ...}}]}}`"
            )
        if isinstance(ref, Mapping) and ref.get("resolver") and ref.get("resolver") != RESOLVER_NAME:
            raise ParamError(
                f"{what} uses resolver {ref['resolver']!r}, not {RESOLVER_NAME!r}: to wrap its Pipeline, "
                f"make it `resolver: {RESOLVER_NAME}` and move the reference into param "
                f"`{PARAM_PIPELINEREF}` (`{{resolver: {ref['resolver']}, params: [...]}}`); {command} prints it"
            )
        if isinstance(ref, Mapping) and ref.get("name") and not ref.get("resolver"):
            raise ParamError(
                f"{what} runs Pipeline {ref['name']!r} directly (pipelineRef.name), not through the "
                f"wrap resolver: change its pipelineRef to `{{resolver: {RESOLVER_NAME}, params: "
                f"[{{name: {PARAM_PIPELINEREF}, value: {ref['name']}}}, {{name: {PARAM_TARGET}, ...}}]}}`; "
                f"{command} prints it"
            )


# ---- the pieces ----

def _pipeline_of(run: Mapping, name: str) -> dict:
    spec = copy.deepcopy(dict(run["spec"]["pipelineSpec"]))
    metadata: dict = {"name": name}
    namespace = (run.get("metadata") or {}).get("namespace")
    if namespace:
        metadata["namespace"] = namespace
    text = json.dumps(spec, default=str)
    run_spec = run["spec"]
    declared_ws = {w.get("name") for w in spec.get("workspaces") or [] if isinstance(w, Mapping)}
    used_ws = set(_WORKSPACE_USE.findall(text)) | _bound_workspaces(spec)
    for binding in run_spec.get("workspaces") or []:
        ws = binding.get("name") if isinstance(binding, Mapping) else None
        if ws and ws in used_ws and ws not in declared_ws:
            spec.setdefault("workspaces", []).append({"name": ws})
            declared_ws.add(ws)
    declared_params = {p.get("name") for p in spec.get("params") or [] if isinstance(p, Mapping)}
    used_params = {a or b for a, b in _PARAM_USE.findall(text)}
    for param in run_spec.get("params") or []:
        pname = param.get("name") if isinstance(param, Mapping) else None
        if pname and pname in used_params and pname not in declared_params:
            value = param.get("value")
            kind = "array" if isinstance(value, list) else "object" if isinstance(value, Mapping) else "string"
            spec.setdefault("params", []).append({"name": pname, "type": kind})
            declared_params.add(pname)
    return {"apiVersion": str(run.get("apiVersion") or "tekton.dev/v1"), "kind": "Pipeline",
            "metadata": metadata, "spec": spec}


def _bound_workspaces(spec: Mapping) -> set[str]:
    found = set()
    for section in ("tasks", "finally"):
        for task in spec.get(section) or []:
            for binding in (task.get("workspaces") or []) if isinstance(task, Mapping) else []:
                if isinstance(binding, Mapping):
                    found.add(str(binding.get("workspace") or binding.get("name")))
    return found


def _rebind_volumes(spec: dict) -> list[str]:
    notes = []
    for binding in spec.get("workspaces") or []:
        if not isinstance(binding, dict):
            continue
        ws = binding.get("name")
        if "volumeClaimTemplate" in binding:
            items = [("emptyDir", {}) if k == "volumeClaimTemplate" else (k, v) for k, v in binding.items()]
            binding.clear()
            binding.update(items)
            notes.append(f"Workspace {ws!r}: its volumeClaimTemplate is now an emptyDir, shared through storage.")
        elif "persistentVolumeClaim" in binding:
            notes.append(
                f"Workspace {ws!r} stays on PersistentVolumeClaim "
                f"{(binding['persistentVolumeClaim'] or {}).get('claimName')!r}, not wrapped; bind it to "
                f"`emptyDir: {{}}` to share it through storage instead."
            )
    if not any(isinstance(b, Mapping) and "emptyDir" in b for b in spec.get("workspaces") or []):
        notes.append(
            f"No workspace is bound to emptyDir, so none is wrapped by default: bind the shared ones to "
            f"`emptyDir: {{}}` or set param `{PARAM_WORKSPACES}`."
        )
    return notes


def _clean_copy(run: Mapping) -> dict:
    out = copy.deepcopy(dict(run))
    out.pop("status", None)
    metadata = out.get("metadata")
    if isinstance(metadata, dict):
        for key in SERVER_FIELDS:
            metadata.pop(key, None)
        annotations = metadata.get("annotations")
        if isinstance(annotations, dict):
            annotations.pop(LAST_APPLIED, None)
            if not annotations:
                metadata.pop("annotations")
    out["spec"] = dict(out["spec"])
    return out


def _ordered(run: dict) -> dict:
    """`pipelineRef` first in the spec, where pipelineSpec or pipelineRef was: what a reader looks for."""
    spec = run["spec"]
    run["spec"] = {"pipelineRef": spec.pop("pipelineRef"), **spec}
    return run


def _generate_name(run: Mapping) -> str:
    return str((run.get("metadata") or {}).get("generateName") or "")


def _default_name(run: Mapping) -> str:
    name = _generate_name(run).rstrip("-.") or str((run.get("metadata") or {}).get("name") or "")
    if not name:
        raise ParamError("the PipelineRun has neither metadata.name nor generateName; give the Pipeline a name with --name")
    return name


def _run_name(run: Mapping) -> str:
    metadata = run.get("metadata") or {}
    return str(metadata.get("name") or metadata.get("generateName") or "?")
