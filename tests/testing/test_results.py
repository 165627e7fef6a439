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
    assert published == {"uri": ws_target, "digest": reported("latest")}
    assert PUBLISHED not in results["package"]
