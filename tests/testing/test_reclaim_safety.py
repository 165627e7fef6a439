"""Safety of reclaiming: two runs of one Pipeline on one target at once, through the executor.

The first run finishes and is collected (as the controller does it, from the answer's
annotation) while the second is held in the middle of its run; the second then goes on
and succeeds with all of its data.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

import yaml

from tests.controller.conftest import wait_for
from tests.fixtures.registry import Registry
from wrapresolver.backends import reclaim
from wrapresolver.backends.oci import BACKEND as OCI
from wrapresolver.controller.retention import reclaim_run_states
from wrapresolver.core import lifecycle
from wrapresolver.core.refs import producer_ref
from wrapresolver.render import render
from wrapresolver.testing.executor import SUCCEEDED, LocalExecutor, PipelineRunResult

PIPELINE = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: held}
spec:
  params: [{name: gate}]
  workspaces: [{name: src}]
  tasks:
    - name: clone
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - {name: clone, image: alpine, script: "echo $(context.pipelineRun.uid) > $(workspaces.src.path)/who"}
    - name: build
      runAfter: [clone]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - {name: build, image: alpine, script: "head -c 300000 /dev/urandom > $(workspaces.src.path)/app.bin"}
    - name: hold
      runAfter: [build]
      params: [{name: gate, value: $(params.gate)}]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        params: [{name: gate}]
        workspaces: [{name: src}]
        steps:
          - name: wait
            image: alpine
            script: |
              touch $(params.gate).reached
              while [ ! -f $(params.gate) ]; do sleep 0.05; done
              echo held > $(workspaces.src.path)/held
    - name: check
      runAfter: [hold]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: check
            image: alpine
            script: |
              cd $(workspaces.src.path)
              test "$(cat who)" = "$(context.pipelineRun.uid)"
              test -s app.bin && test -f held
"""
TASKS = ("clone", "build", "hold", "check")


def test_a_finished_run_is_collected_while_another_run_of_the_pipeline_goes_on_with_all_its_data(
    registry: Registry, tmp_path: Path,
) -> None:
    target = f"oci://{registry.repo('safety')}:latest"
    documents = [yaml.safe_load(PIPELINE)]
    rewritten = yaml.safe_load(render(documents, ["test"], params={"pipelineref": "held", "target": target, "workspaces": "src"}))
    entries = lifecycle.read_storage(rewritten["metadata"]["annotations"])
    assert [e["target"] for e in entries] == [target]

    first_uid, second_uid = str(uuid.uuid4()), str(uuid.uuid4())
    open_gate, held_gate = tmp_path / "open", tmp_path / "held"
    open_gate.touch()
    second: list[PipelineRunResult] = []
    runner = threading.Thread(target=lambda: second.append(LocalExecutor(
        rewritten, params={"gate": str(held_gate)}, uid=second_uid, workdir=tmp_path / "second").run()))
    runner.start()
    try:
        wait_for(lambda: Path(f"{held_gate}.reached").exists(), "the second run to reach its held task", 120)
        first = LocalExecutor(rewritten, params={"gate": str(open_gate)}, uid=first_uid, workdir=tmp_path / "first").run()
        assert first.status == SUCCEEDED, first.log()

        out = reclaim_run_states(first_uid, entries)
        assert out.failures == [] and out.deleted == len(TASKS)
        with OCI.open(target, {}) as store:
            left = {i.name for i in reclaim.stored_items(store)}
        assert left == {producer_ref(second_uid, "clone"), producer_ref(second_uid, "build")}
    finally:
        held_gate.touch()
        runner.join(300)
    assert second and second[0].status == SUCCEEDED, second[0].log() if second else "the second run did not end"
    with OCI.open(target, {}) as store:
        assert {i.name for i in reclaim.stored_items(store)} == {producer_ref(second_uid, t) for t in TASKS}
