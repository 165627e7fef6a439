"""The carried cache of examples/cache, end to end: real runs through a real registry and file://.

Run 1 finds no cache and publishes one, run 2 starts from it, a run that fails publishes
nothing, and two runs carrying the same cache at once leave exactly one of their states,
never a mix. The Pipeline and PipelineRun are the example's own files.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from wrapresolver.backends.registry import get_backend
from wrapresolver.render import render
from wrapresolver.steps.open_target import open_steps
from wrapresolver.testing.executor import FAILED, SUCCEEDED, LocalExecutor, PipelineRunResult

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "cache"

# Both runs wait here after their fetch, so each has read the cache before either publishes.
RENDEZVOUS = """
touch "$WRAP_TEST_RENDEZVOUS/$(context.pipelineRun.name)"
n=0
while [ "$(ls "$WRAP_TEST_RENDEZVOUS" | wc -l)" -lt 2 ]; do
  n=$((n+1)); [ "$n" -lt 1200 ] || { echo "the other run never came"; exit 1; }
  sleep 0.1
done
"""


class CacheRuns:
    """Runs of the example against one storage place; `cache()` is what is published now."""

    def __init__(self, target: str, base: str, backend: str, env: Mapping[str, str], tmp: Path) -> None:
        self.target, self.base, self.backend, self.env, self.tmp = target, base, backend, dict(env), tmp

    def documents(self, name: str, extra_step: str = "") -> list[dict]:
        pipeline = yaml.safe_load((EXAMPLE / "pipeline.yaml").read_text())
        if extra_step:
            build = next(t for t in pipeline["spec"]["tasks"] if t["name"] == "build")
            build["taskSpec"]["steps"].append({"name": "extra", "image": "alpine:3.20", "script": extra_step})
        run = yaml.safe_load((EXAMPLE / "pipelinerun.yaml").read_text())
        run["metadata"] = {"name": name}
        values = {"target": self.target, "base": f"cache={self.base}"}
        run["spec"]["pipelineRef"]["params"] = [
            {"name": p["name"], "value": values.get(p["name"], p["value"])} for p in run["spec"]["pipelineRef"]["params"]
        ]
        return [pipeline, run]

    def run(self, name: str, extra_step: str = "", env: Mapping[str, str] | None = None) -> PipelineRunResult:
        rewritten = yaml.safe_load(render(self.documents(name, extra_step)))
        executor = LocalExecutor(rewritten, name=name, uid=str(uuid.uuid4()), workdir=self.tmp / name,
                                 env={**self.env, **(env or {})})
        return executor.run()

    def cache(self) -> dict[str, str]:
        out = self.tmp / f"pulled-{uuid.uuid4().hex[:6]}"
        with open_steps(get_backend(self.backend), self.base, {}) as store:
            store.pull(out)
        return files(out)


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def cache_result(result: PipelineRunResult, kind: str) -> dict:
    """The build task's Chains result for the cache workspace: `INPUTS`, `OUTPUTS` or `published-OUTPUTS`."""
    name = "wrap-cache-published-ARTIFACT_OUTPUTS" if kind == "published" else f"wrap-cache-ARTIFACT_{kind}"
    return json.loads(result.tasks["build"].results[name])


def status_of(result: PipelineRunResult) -> str:
    return (result.tasks["build"].workspaces["src"] / "cache-status").read_text().strip()


@pytest.fixture(params=["oci", "file"])
def runs(request, tmp_path: Path) -> Iterator[CacheRuns]:
    unique = uuid.uuid4().hex[:8]
    if request.param == "oci":
        registry = request.getfixturevalue("registry")
        prefix = f"oci://{registry.host}/cache/{unique}"
        env = {"DOCKER_CONFIG": str(tmp_path / "no-docker-config")}
    else:
        prefix, env = f"file://{tmp_path}/store/{unique}", {}
    yield CacheRuns(f"{prefix}-<<workspace>>", f"{prefix}-cache", request.param, env, tmp_path)


def test_the_first_run_starts_empty_and_publishes_the_cache_the_second_run_starts_from(runs: CacheRuns) -> None:
    first = runs.run("run-1")
    assert first.status == SUCCEEDED, first.log()
    assert status_of(first) == "cache miss"
    assert "does not exist yet" in first.tasks["build"].log
    assert runs.cache() == {"example.com/dep@v1.0.0": "downloaded\n", "warmed-by": "run-1\n"}

    published = cache_result(first, "published")
    assert published["uri"] == runs.base  # the store that publishes names the carried reference
    assert "wrap-cache-ARTIFACT_INPUTS" not in first.tasks["build"].results  # nothing was there to consume

    second = runs.run("run-2")
    assert second.status == SUCCEEDED, second.log()
    assert status_of(second) == "cache hit"
    # Provenance links the runs: run 2 consumed exactly the state run 1 published.
    # (Only the publishing result carries Chains' isBuildArtifact mark: an input never does.)
    assert cache_result(second, "INPUTS") == {"uri": published["uri"], "digest": published["digest"]}
    assert runs.cache() == {"example.com/dep@v1.0.0": "downloaded\n", "warmed-by": "run-1\nrun-2\n"}
    # `sources` is not carried: run 2's checkout started from nothing although run 1 published it.
    assert "wrap fetch sources: 0 files" in second.tasks["checkout"].log


def test_a_run_whose_cache_writer_fails_leaves_the_published_cache_as_it_was(runs: CacheRuns) -> None:
    assert runs.run("run-1").status == SUCCEEDED
    before = runs.cache()
    failed = runs.run("run-broken", extra_step="echo half > $(workspaces.modules.path)/partial; exit 3")
    assert failed.status == FAILED
    assert runs.cache() == before


def test_with_base_missing_fail_the_first_run_fails_naming_the_base(runs: CacheRuns) -> None:
    documents = runs.documents("strict")
    documents[1]["spec"]["pipelineRef"]["params"].append({"name": "base-missing", "value": "fail"})
    rewritten = yaml.safe_load(render(documents))
    result = LocalExecutor(rewritten, name="strict", workdir=runs.tmp / "strict", env=runs.env).run()
    assert result.status == FAILED
    assert result.tasks["build"].status == FAILED
    assert runs.base in result.tasks["build"].log and "base-missing" in result.tasks["build"].log


def test_two_runs_carrying_the_cache_at_once_leave_exactly_one_of_their_states(runs: CacheRuns) -> None:
    assert runs.run("run-1").status == SUCCEEDED
    rendezvous = runs.tmp / "rendezvous"
    rendezvous.mkdir()
    results: dict[str, PipelineRunResult] = {}

    def carry(name: str) -> None:
        results[name] = runs.run(name, extra_step=RENDEZVOUS, env={"WRAP_TEST_RENDEZVOUS": str(rendezvous)})

    threads = [threading.Thread(target=carry, args=(name,)) for name in ("run-a", "run-b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, result in results.items():
        assert result.status == SUCCEEDED, f"{name}\n{result.log()}"
        assert status_of(result) == "cache hit"  # both started from run 1's cache

    published = runs.cache()
    finals = {name: files(result.tasks["build"].workspaces["modules"]) for name, result in results.items()}
    assert finals["run-a"]["warmed-by"] == "run-1\nrun-a\n" and finals["run-b"]["warmed-by"] == "run-1\nrun-b\n"
    assert published in (finals["run-a"], finals["run-b"])  # one run's whole state, never a mix
    winner = "run-a" if published == finals["run-a"] else "run-b"
    with get_backend(runs.backend).open(runs.base, {}) as blobs:
        manifest = blobs.get_manifest(blobs.target_ref)
    assert manifest is not None
    assert cache_result(results[winner], "published")["digest"] == "sha256:" + hashlib.sha256(manifest).hexdigest()
