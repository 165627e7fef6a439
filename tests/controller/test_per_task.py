"""A PipelineRun answered per-task by a real controller: the Pipeline request, then its tasks' requests."""

from __future__ import annotations

import pytest

from tests.controller.conftest import decoded, failure

TASKS = [
    {"name": "first", "workspaces": [{"name": "src", "workspace": "src"}],
     "taskSpec": {"workspaces": [{"name": "src"}],
                  "steps": [{"name": "make", "image": "busybox", "script": "echo $(context.pipelineRun.uid)"}]}},
    {"name": "second", "runAfter": ["first"], "workspaces": [{"name": "src", "workspace": "src"}],
     "taskSpec": {"workspaces": [{"name": "src"}], "steps": [{"name": "test", "image": "busybox", "script": "t"}]}},
]


@pytest.fixture(scope="module")
def per_task(cluster):
    cluster.configure({"default-target": "oci://registry.example/ci/<<workspace>>", "task-resolution": "per-task"})
    cluster.pipeline("big", tasks=TASKS)
    return cluster


def task_request(cluster, name: str, run: str, answer: dict, task: str) -> dict:
    """The request Tekton creates for one taskRef: owned by the PipelineRun, Pipeline defaults substituted."""
    defaults = {p["name"]: p["default"] for p in answer["spec"]["params"]}
    ptask = next(t for t in answer["spec"]["tasks"] if t["name"] == task)
    params = {}
    for p in ptask["taskRef"]["params"]:
        value = p["value"]
        for key, default in defaults.items():
            value = value.replace(f"$(params.{key})", default)
        params[p["name"]] = value
    return cluster.request(name, params, run=run)


def test_a_pipelinerun_is_answered_per_task_then_each_task_request_with_its_task(per_task, start_controller):
    start_controller()
    per_task.request("big-pipeline", {"pipelineref": "big"}, run="run-big")
    answer = decoded(per_task.answer("big-pipeline"))
    assert [t["taskRef"]["resolver"] for t in answer["spec"]["tasks"]] == ["wrap", "wrap"]
    run_uid = per_task.api.get("tekton.dev/v1", "pipelineruns", "default", "run-big")["metadata"]["uid"]
    for task in ("first", "second"):
        task_request(per_task, f"big-{task}", "run-big", answer, task)
        status = per_task.answer(f"big-{task}")
        obj = decoded(status)
        assert (obj["kind"], obj["metadata"]["name"]) == ("Task", task)
        assert [s["name"] for s in obj["spec"]["steps"]][0] == "wrap-fetch"
        assert status["annotations"]["wrapresolver.dev/task-resolution"] == "task"
        assert status["refSource"]["uri"].endswith("/pipelines/big@" + per_task.api.get(
            "tekton.dev/v1", "pipelines", "default", "big")["metadata"]["uid"])
    first = decoded(per_task.get("big-first")["status"])
    assert first["spec"]["steps"][1]["script"] == f"echo {run_uid}"


def test_a_pipeline_changed_before_a_task_request_fails_it_asking_for_a_rerun(per_task, start_controller):
    controller = start_controller()
    per_task.request("moving-pipeline", {"pipelineref": "big"}, run="run-moving")
    answer = decoded(per_task.answer("moving-pipeline"))
    pipeline = per_task.api.get("tekton.dev/v1", "pipelines", "default", "big")
    changed = [dict(TASKS[0]), TASKS[1]]
    changed[0]["taskSpec"] = {**TASKS[0]["taskSpec"], "steps": [{"name": "make", "image": "busybox",
                                                                  "script": "echo changed"}]}
    per_task.api.patch("tekton.dev/v1", "pipelines", "default", "big", {"spec": {**pipeline["spec"],
                                                                                 "tasks": changed}})
    try:
        # Another replica, or this one after a restart: nothing kept, the answer is made again.
        controller.stop()
        start_controller(name="restarted")
        task_request(per_task, "moving-first", "run-moving", answer, "first")
        cond = failure(per_task.answer("moving-first"))
        assert cond["reason"] == "PipelineChanged"
        assert "changed since this PipelineRun started" in cond["message"] and "re-run" in cond["message"]
        events = per_task.api.list("v1", "events", "default")
        assert any(e.get("reason") == "PipelineChanged" for e in events)
    finally:
        per_task.api.patch("tekton.dev/v1", "pipelines", "default", "big", {"spec": pipeline["spec"]})
