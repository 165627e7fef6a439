"""The controller carries out the retention policy: completion, deletion, a restart in between.

Each test plays Tekton's part on the in-process API server: it lets the controller resolve a
request, merges the answer's labels and annotations into the PipelineRun (as the pipelines
controller does), stores the run's states at a real file:// target the way the injected
steps do, then ends or deletes the PipelineRun and looks at what is left in storage.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from tests.controller.conftest import decoded, ensure_namespace, wait_for
from tests.fixtures.kubeapi import rules_from_manifests
from wrapresolver.backends import reclaim
from wrapresolver.backends.file import LayoutStore
from wrapresolver.backends.registry import get_backend
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer
from wrapresolver.steps.open_target import open_steps

PR = "tekton.dev/v1"
NS = "retention"
CONFIG = Path(__file__).resolve().parents[2] / "config"
TASKS = [
    {"name": name, "workspaces": [{"name": "src", "workspace": "src"}], **({"runAfter": [after]} if after else {}),
     "taskSpec": {"workspaces": [{"name": "src"}], "steps": [{"name": "make", "image": "busybox", "script": "make"}]}}
    for name, after in (("clone", ""), ("build", "clone"))
]


@pytest.fixture(scope="module")
def storage(cluster, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("storage")
    cluster.configure({"default-target": f"file://{root}/<<workspace>>"})
    ensure_namespace(cluster.api, NS)
    cluster.pipeline("two-steps", namespace=NS, tasks=TASKS)
    return root


def resolved_run(cluster, name: str, **params: str) -> tuple[str, str]:
    """Resolve, then merge the answer's metadata into the PipelineRun; (run name, uid)."""
    cluster.request(name, {"pipelineref": "two-steps", **params}, namespace=NS)
    answer = decoded(cluster.answer(name, namespace=NS))
    run = f"run-{name}"
    meta = answer["metadata"]
    pr = cluster.api.patch(PR, "pipelineruns", NS, run, {"metadata": {
        "labels": {**meta.get("labels", {}), "tekton.dev/pipeline": meta["name"]},
        "annotations": meta.get("annotations", {})}})
    return run, pr["metadata"]["uid"]


def run_tasks(storage: Path, uid: str, tmp: Path, tag: str = "") -> None:
    """clone then build store their states; build also publishes the exact target (`tag`: its tag)."""
    target = f"file://{storage}/src" + (f":{tag}" if tag else "")
    graph: dict[str, ProducerNode] = {}
    for task, inputs in (("clone", ()), ("build", ("clone",))):
        graph[task] = ProducerNode(inputs=inputs, order=len(graph))
        spec = WorkspaceTransfer(workspace="src", target=target, run=uid, task=task, backend="file",
                                 inputs=inputs, graph=dict(graph), publish=task == "build")
        ws, state = tmp / f"{uid}-{task}", tmp / f"{uid}-{task}-state"
        ws.mkdir(parents=True)
        state.mkdir()
        with open_steps(get_backend("file"), target, {}) as steps:
            steps.fetch(spec, ws, state)
            (ws / f"{task}.txt").write_text(f"{task} of {uid}\n")
            steps.store(spec, ws, state)


def states(storage: Path) -> set[str]:
    return {i.name for i in reclaim.stored_items(LayoutStore(storage / "src")) if i.kind == reclaim.STATE}


def finish(cluster, run: str, succeeded: bool) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.api.patch(PR, "pipelineruns", NS, run, {"status": {
        "conditions": [{"type": "Succeeded", "status": "True" if succeeded else "False",
                        "reason": "Succeeded" if succeeded else "Failed"}],
        "completionTime": stamp}}, subresource="status")


def refs_of(uid: str) -> set[str]:
    return {producer_ref(uid, "clone"), producer_ref(uid, "build")}


def test_a_completed_run_loses_its_states_while_another_still_going_keeps_them(
    cluster, storage: Path, start_controller, tmp_path: Path,
) -> None:
    start_controller()
    done, done_uid = resolved_run(cluster, "completes")
    going, going_uid = resolved_run(cluster, "still-going")
    run_tasks(storage, done_uid, tmp_path)
    run_tasks(storage, going_uid, tmp_path)
    assert refs_of(done_uid) | refs_of(going_uid) <= states(storage)
    finish(cluster, done, succeeded=True)
    wait_for(lambda: not (refs_of(done_uid) & states(storage)), "the completed run's states to go")
    assert refs_of(going_uid) <= states(storage)
    assert LayoutStore(storage / "src").get_manifest("latest") is not None  # the published target stays


def test_delete_on_success_keeps_a_failed_runs_states_until_its_pipelinerun_is_deleted(
    cluster, storage: Path, start_controller, tmp_path: Path,
) -> None:
    ctl = start_controller()
    run, uid = resolved_run(cluster, "fails", retention="delete-on-success")
    run_tasks(storage, uid, tmp_path)
    finish(cluster, run, succeeded=False)
    # The controller saw the failure and decided nothing is due: its log says so by silence,
    # so look at a later run of the same controller being collected instead of waiting.
    other, other_uid = resolved_run(cluster, "succeeds-after", retention="delete-on-success")
    run_tasks(storage, other_uid, tmp_path)
    finish(cluster, other, succeeded=True)
    wait_for(lambda: not (refs_of(other_uid) & states(storage)), "the succeeded run's states to go")
    assert refs_of(uid) <= states(storage)
    cluster.api.delete(PR, "pipelineruns", NS, run)
    wait_for(lambda: not (refs_of(uid) & states(storage)), "the deleted run's states to go")
    wait_for(lambda: "wrapresolver_reclaimed_states_total 4.0" in ctl.scrape(), "4 states counted in the metrics")


def test_keep_leaves_the_states_and_a_run_that_ended_while_the_controller_was_down_is_collected_on_start(
    cluster, storage: Path, start_controller, tmp_path: Path,
) -> None:
    ctl = start_controller(name="before")
    kept, kept_uid = resolved_run(cluster, "kept", retention="keep")
    down, down_uid = resolved_run(cluster, "ends-while-down")
    run_tasks(storage, kept_uid, tmp_path)
    run_tasks(storage, down_uid, tmp_path)
    ctl.stop()
    finish(cluster, kept, succeeded=True)
    finish(cluster, down, succeeded=True)
    start_controller(name="after")
    wait_for(lambda: not (refs_of(down_uid) & states(storage)), "the run that ended while down to be collected")
    assert refs_of(kept_uid) <= states(storage)


def test_states_that_cannot_be_reclaimed_are_a_warning_event_on_the_pipelinerun(
    cluster, storage: Path, start_controller, tmp_path: Path,
) -> None:
    start_controller()
    # Nothing listens on port 9: the delete side cannot reach the registry.
    run, uid = resolved_run(cluster, "unreachable", target="oci://127.0.0.1:9/ci/<<workspace>>")
    finish(cluster, run, succeeded=True)
    event = wait_for(lambda: next((e for e in cluster.api.list("v1", "events", NS)
                                   if e["involvedObject"].get("uid") == uid and e["reason"] == "StatesNotReclaimed"),
                                  None), "a Warning Event", timeout=120)
    assert event["type"] == "Warning" and "127.0.0.1:9" in event["message"]


def test_the_retention_controller_needs_no_permission_beyond_the_rbac_in_config(
    cluster, storage: Path, start_controller, tmp_path: Path,
) -> None:
    rules = rules_from_manifests(yaml.safe_load_all((CONFIG / "rbac.yaml").read_text()), "wrapresolver")
    cluster.api.rules = rules
    try:
        start_controller()
        run, uid = resolved_run(cluster, "with-rbac")
        run_tasks(storage, uid, tmp_path)
        finish(cluster, run, succeeded=True)
        wait_for(lambda: not (refs_of(uid) & states(storage)), "the run's states to go")
        assert cluster.api.denied == []
    finally:
        cluster.api.rules = None
