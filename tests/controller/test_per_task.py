"""A PipelineRun answered per-task by a real controller: the Pipeline request, then its tasks' requests."""

from __future__ import annotations

import asyncio

import pytest

from tests.controller.conftest import RR, decoded, failure, wait_for
from wrapresolver.controller import events, taskrequests
from wrapresolver.controller.kube import Credentials, HttpKube
from wrapresolver.core.tektonnames import resolution_request_name, task_run_name
from wrapresolver.resolve import Answer, TaskRequest

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


def created_answered(cluster, name: str) -> dict:
    """The request `name` once the controller has created and answered it (it does so after the Pipeline answer)."""
    def found():
        try:
            request = cluster.get(name)
        except Exception:  # not created yet
            return None
        return request if (request.get("status") or {}).get("data") else None
    return wait_for(found, f"request {name} created answered")  # type: ignore[return-value]


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
        # The Event follows the status write.
        wait_for(lambda: any(e.get("reason") == "PipelineChanged" for e in per_task.api.list("v1", "events", "default")),
                 "a PipelineChanged Event")
    finally:
        per_task.api.patch("tekton.dev/v1", "pipelines", "default", "big", {"spec": pipeline["spec"]})


def test_each_task_request_is_created_answered_under_the_name_tekton_gives_it(per_task, start_controller):
    """Tekton resolves a run's tasks one per reconcile, stopping at the first unanswered
    request: the controller creates them all, answered, where Tekton will look first."""
    start_controller()
    per_task.request("warm-pipeline", {"pipelineref": "big"}, run="run-warm")
    answer = decoded(per_task.answer("warm-pipeline"))
    defaults = {p["name"]: p["default"] for p in answer["spec"]["params"]}
    for ptask in answer["spec"]["tasks"]:
        params = [{"name": p["name"], "value": p["value"].replace("$(params.wrap-pin)", defaults["wrap-pin"])
                   .replace("$(params.wrap-request)", defaults["wrap-request"])} for p in ptask["taskRef"]["params"]]
        name = resolution_request_name("wrap", "default", task_run_name("run-warm", ptask["name"]), params)
        created = created_answered(per_task, name)
        status = created["status"]
        assert created["metadata"]["ownerReferences"][0]["name"] == "run-warm"
        assert created["metadata"]["labels"]["resolution.tekton.dev/type"] == "wrap"
        assert sorted(created["spec"]["params"], key=lambda p: p["name"]) == sorted(params, key=lambda p: p["name"])
        task = decoded(status)
        assert (task["kind"], task["metadata"]["name"]) == ("Task", ptask["name"])
        # The same Task a request Tekton made itself gets.
        task_request(per_task, f"warm-{ptask['name']}", "run-warm", answer, ptask["name"])
        assert decoded(per_task.answer(f"warm-{ptask['name']}")) == task


def test_a_task_request_tekton_made_first_is_left_to_the_handler(per_task, start_controller):
    """Tekton may create a task's request before the controller does: creating it meets 409,
    the request is left as it is (the handler answers it) and the others are created answered."""
    start_controller()
    per_task.request("early-pipeline", {"pipelineref": "big"}, run="run-early")
    answer = decoded(per_task.answer("early-pipeline"))
    pipeline_request = per_task.get("early-pipeline")
    defaults = {p["name"]: p["default"] for p in answer["spec"]["params"]}
    tekton_made = created_answered(per_task, resolution_request_name("wrap", "default", task_run_name("run-early", "first"), [
        {"name": "wrap-task", "value": "first"}, {"name": "wrap-pin", "value": defaults["wrap-pin"]},
        {"name": "wrap-request", "value": defaults["wrap-request"]}]))
    task_answer = Answer(data=b'{"kind":"Task"}', ref_source={"uri": "u", "digest": {"sha256": "0"}})
    requests = [TaskRequest(task, ({"name": "wrap-task", "value": task}, {"name": "other", "value": "x"}), task_answer)
                for task in ("first", "third")]
    existing = per_task.api.create(RR, "resolutionrequests", "default", {
        "apiVersion": RR, "kind": "ResolutionRequest",
        "metadata": {"name": taskrequests.request_body("default", events.owner_pipelinerun(pipeline_request),
                                                       requests[0])["metadata"]["name"]},
        "spec": {"params": list(requests[0].params)}})
    written: list[str] = []

    async def write(created: dict, task: Answer) -> str:
        written.append(created["metadata"]["name"])
        return "written"

    async def create() -> dict[str, int]:
        kube = HttpKube(Credentials.load(str(per_task.kubeconfig)))
        try:
            return await taskrequests.create_answered(kube, pipeline_request, requests, write)
        finally:
            await kube.close()

    counts = asyncio.run(create())
    assert counts == {"answered": 1, "existed": 1, "failed": 0}
    assert written == [taskrequests.request_body("default", events.owner_pipelinerun(pipeline_request),
                                                 requests[1])["metadata"]["name"]]
    assert per_task.get(existing["metadata"]["name"])["metadata"]["uid"] == existing["metadata"]["uid"]
    assert tekton_made["status"]["data"]  # and the run's own ones were answered by the controller
