"""End to end through the local executor: a task that cannot use its target fails in its
fetch step, and its own steps never run (they would leave a marker file behind)."""

from __future__ import annotations

import uuid
from pathlib import Path

from tests.fixtures.ports import free_port
from tests.fixtures.registry import TokenRegistry, docker_config
from tests.testing.test_executor import run_pipeline
from wrapresolver.testing.executor import FAILED, SKIPPED, SUCCEEDED


def pipeline(marker: Path) -> str:
    return f"""
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {{name: early}}
spec:
  workspaces: [{{name: src}}]
  tasks:
    - name: build
      workspaces: [{{name: out, workspace: src}}]
      taskSpec:
        workspaces: [{{name: out}}]
        steps:
          - name: work
            image: alpine
            script: |
              touch {marker}
              echo built > $(workspaces.out.path)/artifact
    - name: test
      runAfter: [build]
      workspaces: [{{name: src, workspace: src}}]
      taskSpec:
        workspaces: [{{name: src}}]
        steps:
          - name: check
            image: alpine
            script: test -f $(workspaces.src.path)/artifact
"""


def test_an_unreachable_registry_fails_the_first_task_before_its_own_steps_run(tmp_path: Path) -> None:
    marker = tmp_path / "build-ran"
    target = f"oci://127.0.0.1:{free_port()}/e2e/{uuid.uuid4().hex[:8]}-<<workspace>>"
    result = run_pipeline(pipeline(marker), target, tmp_path, env={"DOCKER_CONFIG": str(tmp_path / "none")})
    build = result.tasks["build"]
    assert result.status == FAILED and build.status == FAILED, result.log()
    assert not marker.exists(), "the task's own step ran although its target is unreachable"
    assert "[work]" not in build.log and "[wrap-store]" not in build.log
    concrete = target.replace("<<workspace>>", "src")
    assert f"needs to read and write target {concrete}" in build.log and "cannot reach registry" in build.log
    assert result.tasks["test"].status == SKIPPED


def test_read_only_registry_credentials_fail_a_storing_task_before_its_own_steps_run(
    token_registry: TokenRegistry, tmp_path: Path,
) -> None:
    marker = tmp_path / "build-ran"
    registry = token_registry.registry
    # The control: with push rights the same pipeline runs, and its step leaves the marker.
    pusher = docker_config(tmp_path / "pusher", registry.host, "pusher", "push-pass")
    result = run_pipeline(pipeline(marker), f"oci://{registry.repo('early')}-<<workspace>>", tmp_path / "ok",
                          env={"DOCKER_CONFIG": str(pusher)})
    assert result.status == SUCCEEDED and marker.exists(), result.log()
    marker.unlink()
    reader = docker_config(tmp_path / "reader", registry.host, "reader", "read-pass")
    result = run_pipeline(pipeline(marker), f"oci://{registry.repo('early')}-<<workspace>>", tmp_path / "ro",
                          env={"DOCKER_CONFIG": str(reader)})
    assert result.tasks["build"].status == FAILED, result.log()
    assert not marker.exists(), "the task's own step ran although its credentials cannot push"
    assert "refused to let us push" in result.tasks["build"].log
