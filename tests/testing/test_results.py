"""The injected steps' results, as the local executor collects them, name what really moved.

Every store's `wrap-src-ARTIFACT_OUTPUTS` carries the digest the storage itself reports
for the manifest under that producer's reference (the registry's Docker-Content-Digest,
the file backend's bytes), every fetch's `*ARTIFACT_INPUTS` the outputs of exactly the
producers it merged, in merge order, and the publisher names the exact target.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from tests.fixtures import chains
from tests.testing.test_executor import FAN_IN, pipelinerun
from wrapresolver.backends.registry import get_backend
from wrapresolver.core.refs import producer_ref, state_uri
from wrapresolver.render import render
from wrapresolver.testing.executor import SUCCEEDED, LocalExecutor

OUT, IN, IN2 = "wrap-src-ARTIFACT_OUTPUTS", "wrap-src-ARTIFACT_INPUTS", "wrap-src-2-ARTIFACT_INPUTS"
PUBLISHED = "wrap-src-published-ARTIFACT_OUTPUTS"


@pytest.fixture(params=["oci", "file"])
def storage(request, tmp_path: Path):
    """(backend, target template, env, digest of the manifest under a reference as the storage reports it)."""
    unique = uuid.uuid4().hex[:8]
    if request.param == "oci":
        registry = request.getfixturevalue("registry")
        repository = f"results/{unique}-src"

        def reported(ref: str) -> str:
            response = httpx.head(f"http://{registry.host}/v2/{repository}/manifests/{ref}",
                                  headers={"Accept": "application/vnd.oci.image.manifest.v1+json"})
            response.raise_for_status()
            return response.headers["Docker-Content-Digest"]

        return ("oci", f"oci://{registry.host}/results/{unique}-<<workspace>>",
                {"DOCKER_CONFIG": str(tmp_path / "none")}, reported)
    root = tmp_path / "store"

    def stored(ref: str) -> str:
        with get_backend("file").open(f"file://{root}/{unique}-src", {}) as store:
            data = store.get_manifest(ref)
        assert data is not None, ref
        return "sha256:" + hashlib.sha256(data).hexdigest()

    return "file", f"file://{root}/{unique}-<<workspace>>", {}, stored


def test_results_name_the_digests_really_stored_and_the_states_really_fetched(storage, tmp_path: Path) -> None:
    backend, target, env, reported = storage
    documents = list(yaml.safe_load_all(FAN_IN)) + [yaml.safe_load(pipelinerun("fan-in", target))]
    rewritten = yaml.safe_load(render(documents))
    uid = str(uuid.uuid4())
    result = LocalExecutor(rewritten, name="fan-in-run", uid=uid, workdir=tmp_path / "run", env=env).run()
    assert result.status == SUCCEEDED, result.log()
    results = {name: {k: json.loads(v) for k, v in run.results.items()} for name, run in result.tasks.items()}
    ws_target = target.replace("<<workspace>>", "src")

    for task in ("clone", "compile", "docs", "package", "report"):
        out = results[task][OUT]
        ref = producer_ref(uid, task)
        assert out == {"uri": state_uri(backend, ws_target, ref), "digest": reported(ref)}, task

    # Consumers name exactly what their producers stored: the chain Chains can follow.
    assert results["compile"][IN] == results["clone"][OUT]
    assert results["docs"][IN] == results["clone"][OUT]
    assert [results["package"][IN], results["package"][IN2]] == [results["compile"][OUT], results["docs"][OUT]]
    assert results["report"][IN] == results["package"][OUT]
    assert "wrap-src-2-ARTIFACT_INPUTS" not in results["clone"]

    # The finally writer publishes: a manifest of its own at the exact target, named second.
    published = results["report"][PUBLISHED]
    assert published == {"uri": ws_target, "digest": reported("latest"), "isBuildArtifact": "true"}
    assert PUBLISHED not in results["package"]


FAN_OUT = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: fan-out}
spec:
  workspaces: [{name: src}]
  tasks:
    - name: clone
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: s, image: alpine, script: "echo c > $(workspaces.src.path)/c"}]
    - name: left
      runAfter: [clone]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: s, image: alpine, script: "echo l > $(workspaces.src.path)/l"}]
    - name: right
      runAfter: [clone]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: s, image: alpine, script: "echo r > $(workspaces.src.path)/r"}]
"""


def _as_tekton_records(run) -> dict[str, object]:
    """Result values as Tekton's ParamValue.UnmarshalJSON keeps them: a JSON object of strings
    becomes an object value (every key), anything else a string."""
    records: dict[str, object] = {}
    for name, text in run.results.items():
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        ok = isinstance(value, dict) and all(isinstance(v, str) for v in value.values())
        records[name] = value if ok else text
    return records


def _run(pipeline_yaml: str, name: str, target: str, env: dict, tmp_path: Path) -> tuple[dict, dict, str]:
    documents = list(yaml.safe_load_all(pipeline_yaml)) + [yaml.safe_load(pipelinerun(name, target))]
    rewritten = yaml.safe_load(render(documents))
    result = LocalExecutor(rewritten, name=f"{name}-run", uid=str(uuid.uuid4()), workdir=tmp_path / "run",
                           env=env).run()
    assert result.status == SUCCEEDED, result.log()
    declared = {t["name"]: {r["name"]: r for r in (t.get("taskSpec") or {}).get("results") or []}
                for t in [*rewritten["spec"]["tasks"], *(rewritten["spec"].get("finally") or [])]}
    return {n: _as_tekton_records(r) for n, r in result.tasks.items()}, declared, target.replace("<<workspace>>", "src")


def _tekton_accepts(records: dict, declared: dict) -> None:
    """Tekton's reconciler (taskrun/validate_taskrun.go missingKeysofObjectResults) fails a TaskRun whose
    object result lacks a declared property; extra keys are kept."""
    for name, value in records.items():
        spec = declared.get(name) or {}
        if spec.get("type") == "object":
            assert isinstance(value, dict) and set(spec["properties"]) <= set(value), (name, value)


def test_the_published_state_is_the_only_chains_v2alpha4_subject_and_every_other_state_a_byproduct(
        storage, tmp_path: Path) -> None:
    backend, target, env, reported = storage
    records, declared, ws_target = _run(FAN_IN, "fan-in", target, env, tmp_path)
    published = (ws_target, reported("latest"))
    for task, results in records.items():
        _tekton_accepts(results, declared[task])
    # The publishing TaskRun: its published target is its one subject; its own state a byproduct.
    assert chains.subjects_v2alpha4(records["report"]) == [published]
    assert chains.byproducts_v2alpha4(records["report"]) == [IN, OUT]
    assert chains.is_build_artifact(PUBLISHED, records["report"][PUBLISHED])
    assert not chains.is_build_artifact(OUT, records["report"][OUT])
    # Every other TaskRun names no subject in v2alpha4: intermediate states are byproducts.
    for task in ("clone", "compile", "docs", "package"):
        assert chains.subjects_v2alpha4(records[task]) == [], task
        assert OUT in chains.byproducts_v2alpha4(records[task]), task
    # Inputs stay resolvedDependencies, in merge order.
    assert chains.resolved_dependencies(records["package"]) == [
        (records["compile"][OUT]["uri"], records["compile"][OUT]["digest"]),
        (records["docs"][OUT]["uri"], records["docs"][OUT]["digest"]),
    ]
    # The PipelineRun: with deep inspection, exactly the published target; without it Chains
    # reads only Pipeline-level results, which the rewrite does not add.
    assert chains.pipelinerun_subjects(records, chains.subjects_v2alpha4, deep_inspection=True) == [published]
    assert chains.pipelinerun_subjects(records, chains.subjects_v2alpha4, deep_inspection=False) == []
    # slsa/v1 and v2alpha3 make every *ARTIFACT_OUTPUTS a subject, the mark changes nothing there.
    assert published in chains.subjects_v1(records["report"])
    assert len(chains.subjects_v1(records["report"])) == 2


def test_the_wrap_publish_task_result_is_marked_as_the_build_artifact(tmp_path: Path) -> None:
    records, declared, ws_target = _run(FAN_OUT, "fan-out", f"file://{tmp_path}/store/<<workspace>>", {}, tmp_path)
    assert "wrap-publish" in records
    _tekton_accepts(records["wrap-publish"], declared["wrap-publish"])
    written = records["wrap-publish"][OUT]
    assert isinstance(written, dict) and written["isBuildArtifact"] == "true" and written["uri"] == ws_target
    assert chains.subjects_v2alpha4(records["wrap-publish"]) == [(ws_target, written["digest"])]
    assert [s for t in ("clone", "left", "right") for s in chains.subjects_v2alpha4(records[t])] == []


def test_the_build_artifact_mark_is_the_string_true_as_chains_compares_it() -> None:
    from wrapresolver.core.values import Artifact

    digest = "sha256:" + "ab" * 32
    text = Artifact("oci://r.example/ci/src", digest, build_artifact=True).to_result()
    assert json.loads(text) == {"digest": digest, "isBuildArtifact": "true", "uri": "oci://r.example/ci/src"}
    assert chains.is_build_artifact("wrap-src-ARTIFACT_OUTPUTS", json.loads(text))
    assert not chains.is_build_artifact("wrap-src-ARTIFACT_OUTPUTS", {"uri": "u", "digest": digest,
                                                                      "isBuildArtifact": True})
    assert "isBuildArtifact" not in json.loads(Artifact("oci://r.example/ci/src:wrap-x-a", digest).to_result())
