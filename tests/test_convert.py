"""`wrapresolver convert` (a process): a PipelineRun not using the wrap resolver, converted."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from tests.fixtures.cli import wrapresolver
from wrapresolver.convert import convert
from wrapresolver.render import render

TARGET = "oci://registry.example/ci/$(context.pipelineRun.name)-<<workspace>>"

EMBEDDED = """
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata:
  generateName: build-
  namespace: ci
  uid: 0d9c6a52-2222-4c2e-9e1b-4a0c8a7f0002
  resourceVersion: "4711"
  creationTimestamp: "2026-01-02T03:04:05Z"
  labels: {team: blue}
  annotations:
    kubectl.kubernetes.io/last-applied-configuration: "{}"
    note: kept
spec:
  params: [{name: revision, value: main}, {name: flags, value: [-v, -x]}]
  pipelineSpec:
    workspaces: [{name: sources}]
    tasks:
      - name: clone
        workspaces: [{name: out, workspace: sources}]
        taskSpec:
          workspaces: [{name: out}]
          steps: [{name: s, image: alpine, script: "echo $(params.revision) > $(workspaces.out.path)/rev"}]
      - name: test
        runAfter: [clone]
        params: [{name: flags, value: ["$(params.flags[*])"]}]
        workspaces: [{name: src, workspace: sources}, {name: cache, workspace: cache}]
        taskSpec:
          params: [{name: flags, type: array}]
          workspaces: [{name: src}, {name: cache}]
          steps: [{name: s, image: alpine, args: ["$(params.flags[*])"], script: "cat $(workspaces.src.path)/rev"}]
  workspaces:
    - name: sources
      subPath: run
      volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}}
    - {name: cache, persistentVolumeClaim: {claimName: shared-cache}}
  taskRunTemplate: {serviceAccountName: builder}
  timeouts: {pipeline: 1h}
status:
  conditions: [{type: Succeeded, status: "True"}]
"""


def documents(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def run_convert(tmp_path: Path, text: str, *args: str):
    (tmp_path / "run.yaml").write_text(text)
    return wrapresolver("convert", "-f", str(tmp_path / "run.yaml"), *args)


def test_an_embedded_pipeline_spec_becomes_a_pipeline_and_a_wrapped_run_keeping_every_field(tmp_path):
    proc = run_convert(tmp_path, EMBEDDED, "--target", TARGET)
    assert (proc.returncode, proc.stderr) == (0, "")
    pipeline, run = documents(proc.stdout)
    original = yaml.safe_load(EMBEDDED)
    assert (pipeline["kind"], pipeline["metadata"]) == ("Pipeline", {"name": "build", "namespace": "ci"})
    assert pipeline["apiVersion"] == "tekton.dev/v1"
    assert pipeline["spec"]["tasks"] == original["spec"]["pipelineSpec"]["tasks"]
    # What Tekton propagated into the embedded spec, a standalone Pipeline declares.
    assert pipeline["spec"]["workspaces"] == [{"name": "sources"}, {"name": "cache"}]
    assert pipeline["spec"]["params"] == [{"name": "revision", "type": "string"}, {"name": "flags", "type": "array"}]
    assert run["spec"]["pipelineRef"] == {"resolver": "wrap", "params": [
        {"name": "pipelineref", "value": "build"}, {"name": "target", "value": TARGET}]}
    assert "pipelineSpec" not in run["spec"] and "status" not in run
    assert run["metadata"] == {"generateName": "build-", "namespace": "ci", "labels": {"team": "blue"},
                               "annotations": {"note": "kept"}}
    for kept in ("params", "taskRunTemplate", "timeouts"):
        assert run["spec"][kept] == original["spec"][kept]
    assert run["spec"]["workspaces"] == [{"name": "sources", "subPath": "run", "emptyDir": {}},
                                         {"name": "cache", "persistentVolumeClaim": {"claimName": "shared-cache"}}]
    assert "# The embedded pipelineSpec is now Pipeline 'build' (named after the run's generateName)." in proc.stdout
    assert "Workspace 'cache' stays on PersistentVolumeClaim 'shared-cache', not wrapped" in proc.stdout


def test_the_converted_output_renders_without_a_warning(tmp_path):
    proc = run_convert(tmp_path, EMBEDDED, "--target", TARGET)
    warnings: list[str] = []
    data = render(documents(proc.stdout), warnings=warnings)
    assert warnings == []
    tasks = {t["name"]: t for t in yaml.safe_load(data)["spec"]["tasks"]}
    assert tasks["test"]["taskSpec"]["steps"][0]["name"] == "wrap-fetch"


def test_name_chooses_the_pipelines_name(tmp_path):
    proc = run_convert(tmp_path, EMBEDDED, "--name", "ci-pipeline")
    pipeline, run = documents(proc.stdout)
    assert pipeline["metadata"]["name"] == "ci-pipeline"
    assert run["spec"]["pipelineRef"]["params"] == [{"name": "pipelineref", "value": "ci-pipeline"}]
    assert "named after --name" in proc.stdout
    assert "No --target: the run stores its workspaces at the cluster's `default-target`" in proc.stdout


def test_a_run_of_a_pipeline_by_name_becomes_only_the_wrapped_run(tmp_path):
    run = yaml.safe_load(EMBEDDED)
    run["spec"].pop("pipelineSpec")
    run["spec"]["pipelineRef"] = {"name": "build-and-test"}
    proc = run_convert(tmp_path, yaml.safe_dump(run), "--target", TARGET)
    (converted,) = documents(proc.stdout)
    assert converted["kind"] == "PipelineRun"
    assert converted["spec"]["pipelineRef"]["params"][0] == {"name": "pipelineref", "value": "build-and-test"}


def test_a_run_through_another_resolver_keeps_that_reference_in_pipelineref(tmp_path):
    run = yaml.safe_load(EMBEDDED)
    run["spec"].pop("pipelineSpec")
    git = {"resolver": "git", "params": [{"name": "url", "value": "https://git.example/ci.git"},
                                         {"name": "pathInRepo", "value": "pipeline.yaml"}]}
    run["spec"]["pipelineRef"] = copy.deepcopy(git)
    proc = run_convert(tmp_path, yaml.safe_dump(run))
    (converted,) = documents(proc.stdout)
    assert yaml.safe_load(converted["spec"]["pipelineRef"]["params"][0]["value"]) == git


def test_a_run_already_using_the_wrap_resolver_is_not_converted(tmp_path):
    run = yaml.safe_load(EMBEDDED)
    run["spec"].pop("pipelineSpec")
    run["spec"]["pipelineRef"] = {"resolver": "wrap", "params": [{"name": "pipelineref", "value": "x"}]}
    proc = run_convert(tmp_path, yaml.safe_dump(run))
    assert proc.returncode == 1 and proc.stdout == ""
    assert "already uses `resolver: wrap`; nothing to convert" in proc.stderr


def test_a_file_without_a_pipelinerun_is_refused(tmp_path):
    proc = run_convert(tmp_path, "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata: {name: x}\nspec: {}\n")
    assert proc.returncode == 1
    assert "convert needs exactly one PipelineRun in the file, found 0" in proc.stderr


def test_every_corpus_run_with_an_embedded_spec_converts_and_renders_or_fails_deliberately(corpus_dir):
    """Real runs: the conversion is complete when its output resolves like any Pipeline would."""
    from tests.test_corpus import EXPECTED_ERRORS, catalog_tasks
    from wrapresolver.errors import WrapError

    catalog = catalog_tasks(corpus_dir)
    converted, failed = 0, []
    for path in sorted((corpus_dir / "tekton-examples").rglob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if isinstance(d, dict)]
        runs = [d for d in docs if d.get("kind") == "PipelineRun" and "pipelineSpec" in (d.get("spec") or {})]
        for run in runs:
            text = convert([run], target=TARGET)
            out = documents(text)
            names = {t["metadata"]["name"] for t in docs if t.get("kind") == "Task"}
            tasks = [d for d in docs if d.get("kind") == "Task"] + [
                t for t in catalog if t["metadata"]["name"] not in names]
            try:
                render(out + tasks, params={"workspaces": ",".join(
                    w["name"] for w in out[0]["spec"].get("workspaces") or [])} if out[0]["spec"].get("workspaces") else {})
            except WrapError as exc:
                if not any(s in str(exc) for s in (*EXPECTED_ERRORS.values(), "declares no workspaces",
                                                   "is not set and", "is empty")):
                    failed.append(f"{path.name}: {exc}")
                continue
            converted += 1
    assert converted > 0
    assert failed == []


@pytest.mark.parametrize("api_version", ["tekton.dev/v1beta1"])
def test_a_v1beta1_run_gives_a_v1beta1_pipeline(tmp_path, api_version):
    proc = run_convert(tmp_path, EMBEDDED.replace("apiVersion: tekton.dev/v1\n", f"apiVersion: {api_version}\n", 1))
    pipeline, run = documents(proc.stdout)
    assert pipeline["apiVersion"] == run["apiVersion"] == api_version
