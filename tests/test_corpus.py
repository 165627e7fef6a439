"""Every Pipeline, PipelineRun and Task of the shared corpus of real Tekton files, rewritten.

For each Pipeline found (standalone, or embedded as a PipelineRun's pipelineSpec), the
workspaces its PipelineRun binds to a volume that shares data between tasks
(`volumeClaimTemplate`, `persistentVolumeClaim`, `emptyDir`) are wrapped, as if the run
had bound them to `emptyDir` instead; a Pipeline without a run gets all its workspaces
wrapped. Tasks come from the same file, then from the catalog. Each one either rewrites
into a Pipeline that passes the structural validator and leaves every field it does not
own unchanged, or fails with one of the deliberate errors listed in EXPECTED_ERRORS.
"""

from __future__ import annotations

import asyncio
import copy
import json
import re
from pathlib import Path

import pytest
import yaml

from tests import tekton_rules
from tests.core.test_rewrite import strip_rewrite
from wrapresolver.core.params import RunContext
from wrapresolver.errors import WrapError
from wrapresolver.resolve import resolve
from wrapresolver.sources import FileSource

SHARING_KINDS = ("volumeClaimTemplate", "persistentVolumeClaim", "emptyDir")
TARGET = "file:///srv/ci/$(context.pipelineRun.name)-<<workspace>>"

EXPECTED_ERRORS = {
    # A taskRef through another resolver (git, hub, http, bundles) needs the cluster: the
    # controller creates a child ResolutionRequest; offline there is nothing to fetch.
    "resolver": "cannot resolve resolver",
    # A pipeline task running a child Pipeline (alpha) cannot get steps injected.
    "pipelines-in-pipelines": "runs a Pipeline (pipelines in pipelines)",
}
"""Deliberate errors, by a substring of the message: the only failures the corpus may show."""


def load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]


def catalog_tasks(corpus: Path) -> list[dict]:
    return [d for p in sorted((corpus / "catalog-tasks").glob("*.yaml")) for d in load(p) if d.get("kind") == "Task"]


def cases(corpus: Path):
    """(label, pipeline object, run or None, documents) for every Pipeline in the examples."""
    for path in sorted((corpus / "tekton-examples").rglob("*.yaml")):
        docs = load(path)
        label = str(path.relative_to(corpus / "tekton-examples"))
        pipelines = {d["metadata"]["name"]: d for d in docs if d.get("kind") == "Pipeline" and d.get("metadata", {}).get("name")}
        used = set()
        for i, run in enumerate(d for d in docs if d.get("kind") == "PipelineRun"):
            spec = run.get("spec") or {}
            if "pipelineSpec" in spec:
                name = (run.get("metadata") or {}).get("name") or (run.get("metadata") or {}).get("generateName", "run").rstrip("-")
                pipeline = {
                    "apiVersion": run["apiVersion"], "kind": "Pipeline",
                    "metadata": {"name": f"{name}-pipeline"}, "spec": copy.deepcopy(spec["pipelineSpec"]),
                }
                propagate_run_workspaces(pipeline, run)
                yield f"{label}#run{i}", pipeline, run, docs + [pipeline]
            elif isinstance(spec.get("pipelineRef"), dict) and spec["pipelineRef"].get("name") in pipelines:
                used.add(spec["pipelineRef"]["name"])
                yield f"{label}#run{i}", pipelines[spec["pipelineRef"]["name"]], run, docs
        for name, pipeline in pipelines.items():
            if name not in used:
                yield f"{label}#{name}", pipeline, None, docs


def propagate_run_workspaces(pipeline: dict, run: dict) -> None:
    """An embedded pipelineSpec may use the run's workspaces and params without declaring them
    (Tekton propagates them); as a standalone Pipeline, it has to declare them."""
    declared = {w["name"] for w in pipeline["spec"].get("workspaces") or []}
    text = yaml.safe_dump(pipeline["spec"])
    for b in (run.get("spec") or {}).get("workspaces") or []:
        if b["name"] not in declared and f"$(workspaces.{b['name']}." in text:
            pipeline["spec"].setdefault("workspaces", []).append({"name": b["name"]})
    # The run's params too, as `wrapresolver convert` declares them (with the type of the value).
    declared_params = {p["name"] for p in pipeline["spec"].get("params") or []}
    for param in (run.get("spec") or {}).get("params") or []:
        if param["name"] not in declared_params and f"$(params.{param['name']}" in text:
            kind = "array" if isinstance(param["value"], list) else "object" if isinstance(param["value"], dict) \
                else "string"
            pipeline["spec"].setdefault("params", []).append({"name": param["name"], "type": kind})


def to_wrap(pipeline: dict, run: dict | None) -> list[str]:
    declared = [w["name"] for w in pipeline["spec"].get("workspaces") or []]
    if run is None:
        return declared
    bound = {
        b["name"] for b in (run.get("spec") or {}).get("workspaces") or []
        if any(k in b for k in SHARING_KINDS)
    }
    return [w for w in declared if w in bound]


def run_case(pipeline: dict, run: dict | None, docs: list[dict], catalog: list[dict], wrap_all: bool = False,
             config: dict | None = None, whole: bool = False, context: RunContext | None = None):
    wrap = to_wrap(pipeline, None if wrap_all else run)
    if not wrap:
        return None, None
    names = {(d.get("kind"), d["metadata"]["name"]) for d in docs if d.get("metadata", {}).get("name")}
    extra = [t for t in catalog if ("Task", t["metadata"]["name"]) not in names]
    # Only the Pipeline under test: a file may hold several with the same name across runs.
    others = [d for d in docs if d.get("kind") == "Task"]
    source = FileSource([pipeline] + others + extra)
    meta = (run or {}).get("metadata") or {}
    context = context or RunContext(name=meta.get("name", ""), namespace="default", uid=meta.get("uid", ""))
    params = [
        {"name": "pipelineref", "value": pipeline["metadata"]["name"]},
        {"name": "workspaces", "value": ",".join(wrap)},
        {"name": "target", "value": TARGET},
    ]
    try:
        result = asyncio.run(resolve(params, config or {}, context, source))
    except WrapError as exc:
        return None, exc
    return (result if whole else yaml.safe_load(result.data)), None


@pytest.mark.parametrize("wrap_all", [False, True], ids=["shared-volumes-wrapped", "every-workspace-wrapped"])
def test_every_corpus_pipeline_rewrites_or_fails_deliberately(corpus_dir, wrap_all):
    catalog = catalog_tasks(corpus_dir)
    rewritten, deliberate, unexpected, problems = [], [], [], []
    for label, pipeline, run, docs in cases(corpus_dir):
        before = copy.deepcopy(pipeline)
        out, error = run_case(pipeline, run, docs, catalog, wrap_all)
        assert pipeline == before, f"{label}: the input was modified"
        if error is not None:
            if any(s in str(error) for s in EXPECTED_ERRORS.values()):
                deliberate.append(label)
            else:
                unexpected.append(f"{label}: {error}")
            continue
        if out is None:
            continue
        rewritten.append(label)
        found = tekton_rules.problems(out)
        if found:
            problems.append(f"{label}: {found}")
        if strip_rewrite(out, pipeline) != pipeline:
            problems.append(f"{label}: fields outside the rewrite changed")
    assert unexpected == [] and problems == [], '\n'.join(unexpected + problems)
    # 29 Pipelines with workspaces rewrite (7 more fail deliberately): guard against silently skipping.
    assert len(rewritten) >= (28 if wrap_all else 20), (rewritten, deliberate)


def test_every_corpus_pipeline_answered_per_task_keeps_tektons_rules_for_the_pipeline_and_each_task(corpus_dir):
    """The same Pipelines, every workspace wrapped, answered one task at a time: the Pipeline
    answer passes the validator, and each Task a task's request gets declares everything it
    uses (Tekton propagates nothing into a referenced Task) and has its context substituted."""
    catalog = catalog_tasks(corpus_dir)
    answered, problems = 0, []
    for label, pipeline, run, docs in cases(corpus_dir):
        # As the controller answers: the asking PipelineRun is known (generateName runs have a name by then).
        context = RunContext(name="corpus-run-x7k2p", namespace="default", uid="5b1c0e4e-1f7a-4d2b-9c1e-3a0d6f2e8b7c")
        result, error = run_case(pipeline, run, docs, catalog, True, {"task-resolution": "per-task"}, whole=True,
                                 context=context)
        if error is not None or result is None:
            continue  # the inline test above accounts for every error
        answer = yaml.safe_load(result.data)
        problems += [f"{label}: {p}" for p in tekton_rules.problems(answer)]
        ptasks = {t["name"]: t for t in [*answer["spec"]["tasks"], *(answer["spec"].get("finally") or [])]}
        assert [r.task for r in result.task_requests] == [n for n, t in ptasks.items() if "taskRef" in t
                                                        and t["taskRef"].get("resolver") == "wrap"], label
        for request in result.task_requests:
            task = yaml.safe_load(request.answer.data)
            ptask = ptasks[request.task]
            problems += [f"{label} {request.task}: {p}"
                         for p in tekton_rules.task_spec_problems(task["spec"], ptask, set())]
            declared = {p["name"] for p in task["spec"].get("params") or []}
            used = set(re.findall(r"\$\(params\.([\w-]+)", json.dumps(task["spec"])))
            if not used <= declared:
                problems.append(f"{label} {request.task}: uses undeclared params {sorted(used - declared)}")
            if "$(context.pipelineRun." in json.dumps(task["spec"]):
                problems.append(f"{label} {request.task}: a context variable left for Tekton, which substitutes "
                                f"none in a referenced Task")
        answered += 1
    assert problems == [], "\n".join(problems)
    assert answered >= 28


@pytest.mark.parametrize("api_version", ["tekton.dev/v1", "tekton.dev/v1beta1"])
def test_every_catalog_task_embeds_into_a_valid_pipeline(corpus_dir, api_version):
    """Each catalog Task (stepTemplate, sidecars, volumes, optional and custom-path workspaces)
    used twice in a row through taskRef, every workspace it declares wrapped."""
    checked = 0
    for task in catalog_tasks(corpus_dir):
        decls = task["spec"].get("workspaces") or []
        if not decls:
            continue
        params = [
            {"name": p["name"], "value": ["x"] if p.get("type") == "array" else ({} if p.get("type") == "object" else "x")}
            for p in task["spec"].get("params") or [] if "default" not in p
        ]
        bindings = [{"name": d["name"], "workspace": d["name"]} for d in decls]
        pipeline = {
            "apiVersion": api_version, "kind": "Pipeline", "metadata": {"name": "uses-" + task["metadata"]["name"]},
            "spec": {
                "workspaces": [{"name": d["name"]} for d in decls],
                "tasks": [
                    {"name": "first", "taskRef": {"name": task["metadata"]["name"]}, "params": params, "workspaces": bindings},
                    {"name": "second", "runAfter": ["first"], "taskRef": {"name": task["metadata"]["name"]},
                     "params": params, "workspaces": bindings},
                ],
            },
        }
        out, error = run_case(pipeline, None, [pipeline, task], [])
        if task["spec"].get("resources") and api_version == "tekton.dev/v1":
            # PipelineResources exist only in v1beta1: a deliberate, documented error.
            assert "uses PipelineResources" in str(error), task["metadata"]["name"]
            continue
        assert error is None, f"{task['metadata']['name']}: {error}"
        assert tekton_rules.problems(out) == [], task["metadata"]["name"]
        second = out["spec"]["tasks"][1]["taskSpec"]
        user_steps = [s for s in second["steps"] if s.get("command") != ["wrapresolver"]]
        want_steps = copy.deepcopy(task["spec"]["steps"])
        if task["apiVersion"] != api_version:
            key_from, key_to = (("resources", "computeResources") if api_version == "tekton.dev/v1" else ("computeResources", "resources"))
            for s in want_steps:
                if key_from in s:
                    s[key_to] = s.pop(key_from)
        assert user_steps == want_steps, task["metadata"]["name"]
        checked += 1
    assert checked >= 30
