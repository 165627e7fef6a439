"""One `wrapresolver controller` process answering every kind of request: each source, each failure."""

from __future__ import annotations

import re

import pytest
import yaml

from tests.controller.conftest import RR, SYSTEM_NS, Controller, FakeGitResolver, decoded, failure, wait_for

STEP_IMAGE = "registry.example/wrapresolver:test"

GIT_PIPELINE = {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "from-git"},
                "spec": {"workspaces": [{"name": "src"}],
                         "tasks": [{"name": "test", "workspaces": [{"name": "src", "workspace": "src"}],
                                    "taskSpec": {"workspaces": [{"name": "src"}],
                                                 "steps": [{"name": "t", "image": "busybox", "script": "true"}]}}]}}
GIT_TASK = {"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": "lint"},
            "spec": {"workspaces": [{"name": "source"}], "steps": [{"name": "lint", "image": "busybox",
                                                                     "script": "lint"}]}}


def git_ref(path: str) -> str:
    return yaml.safe_dump({"resolver": "git", "params": [{"name": "url", "value": "https://git.example/ci.git"},
                                                         {"name": "pathInRepo", "value": path}]})


@pytest.fixture(scope="module")
def controller(cluster, tmp_path_factory):
    cluster.configure({"default-target": "oci://registry.example/ci/<<workspace>>", "step-image": STEP_IMAGE,
                       "blocked-namespaces": "blocked", "resolution-timeout": "3s"})
    cluster.pipeline("build")
    cluster.pipeline("old-style", version="v1beta1")
    cluster.pipeline("in-blocked", namespace="blocked")
    cluster.pipeline("with-remote-task", tasks=[{
        "name": "lint", "workspaces": [{"name": "source", "workspace": "src"}],
        "taskRef": {"resolver": "git", "params": [{"name": "url", "value": "https://git.example/ci.git"},
                                                  {"name": "pathInRepo", "value": "task/lint.yaml"}]}}])
    git = FakeGitResolver(cluster.api, {"pipeline/from-git.yaml": GIT_PIPELINE, "task/lint.yaml": GIT_TASK})
    ctl = Controller(cluster, tmp_path_factory.mktemp("logs") / "controller.log").start()
    yield ctl
    ctl.stop()
    git.close()


def test_cluster_pipeline_is_answered_with_rewritten_pipeline_data_and_ref_source(cluster, controller):
    cluster.request("plain", {"pipelineref": "build"})
    status = cluster.answer("plain")
    pipeline = decoded(status)
    assert (pipeline["kind"], pipeline["metadata"]["name"]) == ("Pipeline", "build")
    assert STEP_IMAGE in yaml.safe_dump(pipeline), "the step image from wrapresolver-config is used"
    source = cluster.api.get("tekton.dev/v1", "pipelines", "default", "build")
    assert status["refSource"] == status["source"]
    assert status["refSource"]["uri"] == f"/apis/tekton.dev/v1/namespaces/default/pipelines/build@{source['metadata']['uid']}"
    assert re.fullmatch(r"[0-9a-f]{64}", status["refSource"]["digest"]["sha256"])
    assert next(c for c in status["conditions"] if c["type"] == "Succeeded")["status"] == "True"


def test_v1beta1_pipeline_is_found_when_no_v1_pipeline_exists(cluster, controller):
    cluster.request("beta", {"pipelineref": "old-style"})
    status = cluster.answer("beta")
    assert decoded(status)["metadata"]["name"] == "old-style"
    assert status["refSource"]["uri"].startswith("/apis/tekton.dev/v1beta1/namespaces/default/pipelines/old-style@")


def test_pipelineref_naming_another_resolver_is_resolved_through_an_owned_child_request(cluster, controller):
    parent = cluster.request("nested", {"pipelineref": git_ref("pipeline/from-git.yaml")})
    status = cluster.answer("nested")
    assert decoded(status)["metadata"]["name"] == "from-git"
    assert status["refSource"]["uri"] == "git+https://git.example/ci.git"
    children = [rr for rr in cluster.api.list(RR, "resolutionrequests", "default", "resolution.tekton.dev/type=git")
                if rr["metadata"]["ownerReferences"][0]["uid"] == parent["metadata"]["uid"]]
    assert len(children) == 1
    assert children[0]["metadata"]["ownerReferences"][0]["kind"] == "ResolutionRequest"


def test_task_ref_with_a_resolver_inside_the_pipeline_is_fetched_through_a_child_request(cluster, controller):
    parent = cluster.request("remote-task", {"pipelineref": "with-remote-task"})
    status = cluster.answer("remote-task")
    assert "lint" in yaml.safe_dump(decoded(status)["spec"]["tasks"])
    owners = [rr["metadata"]["ownerReferences"][0]["uid"]
              for rr in cluster.api.list(RR, "resolutionrequests", "default", "resolution.tekton.dev/type=git")]
    assert parent["metadata"]["uid"] in owners


@pytest.mark.parametrize("params, words", [
    ({"workspaces": "src"}, ["pipelineref"]),
    ({"pipelineref": "build", "workspaces": "nope"}, ["nope"]),
    ({"pipelineref": "does-not-exist"}, ["does-not-exist", "not found", "default"]),
    ({"pipelineref": git_ref("fail")}, ["git", "fail"]),
    ({"pipelineref": git_ref("never")}, ["git", "in time", "resolution-timeout"]),
    ({"pipelineref": yaml.safe_dump({"resolver": "wrap", "params": [{"name": "pipelineref", "value": "x"}]})},
     ["`wrap` resolver again", "loop"]),
], ids=["missing-param", "unknown-workspace", "pipeline-not-found", "nested-failure", "nested-timeout", "loop"])
def test_every_failure_ends_succeeded_false_with_an_actionable_message(cluster, controller, params, words, request):
    name = f"fail-{request.node.callspec.id}"
    cluster.request(name, params)
    cond = failure(cluster.answer(name))
    assert cond["reason"] and cond["reason"] != "InternalError", cond
    for word in words:
        assert word.lower() in cond["message"].lower(), cond


def test_a_blocked_namespace_is_refused_with_the_configmap_key_to_change(cluster, controller):
    cluster.request("in-blocked", {"pipelineref": "in-blocked"}, namespace="blocked")
    cond = failure(cluster.answer("in-blocked", namespace="blocked"))
    assert cond["reason"] == "NamespaceNotAllowed"
    assert "blocked-namespaces" in cond["message"]


def test_a_failure_is_reported_as_a_warning_event_on_the_pipelinerun(cluster, controller):
    cluster.request("event", {"pipelineref": "missing-for-event"}, run="run-with-event")
    cluster.answer("event")
    events = wait_for(lambda: [e for e in cluster.api.list("v1", "events", "default")
                               if e["involvedObject"]["name"] == "run-with-event"], "an Event")
    assert events[0]["involvedObject"]["kind"] == "PipelineRun"
    assert events[0]["type"] == "Warning" and "missing-for-event" in events[0]["message"]


def test_metrics_count_requests_by_outcome_and_time_them(cluster, controller):
    cluster.request("metered", {"pipelineref": "build"})
    cluster.answer("metered")
    text = wait_for(lambda: (t := controller.scrape()) and 'wrapresolver_requests_total{outcome="succeeded"}' in t and t,
                    "the success counter")
    assert "wrapresolver_resolution_seconds_bucket" in text
    assert re.search(r'wrapresolver_requests_total\{outcome="succeeded"\} [1-9]', text)


def test_logs_are_json_lines_naming_the_request_and_its_owner(cluster, controller):
    cluster.request("logged", {"pipelineref": "build"}, run="run-logged")
    cluster.answer("logged")
    entry = wait_for(lambda: next((e for e in controller.logs() if e.get("request") == "logged"), None), "a log line")
    assert entry["namespace"] == "default" and entry["owner"] == "PipelineRun/run-logged"
    assert entry["outcome"] == "succeeded"


def test_no_finalizers_or_bookkeeping_annotations_are_left_on_any_request(cluster, controller):
    cluster.request("clean", {"pipelineref": "build"})
    cluster.answer("clean")
    requests = cluster.api.list(RR, "resolutionrequests")
    assert len(requests) > 5
    for rr in requests:
        assert not rr["metadata"].get("finalizers"), rr["metadata"]
        assert not rr["metadata"].get("annotations"), rr["metadata"]
    config = cluster.api.get("v1", "configmaps", SYSTEM_NS, "wrapresolver-config")
    assert not config["metadata"].get("annotations")
