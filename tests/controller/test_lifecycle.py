"""Restarts, replicas, kills and live configuration: the controller's promises over time."""

from __future__ import annotations

import pytest
import yaml

from tests.controller.conftest import FakeGitResolver, decoded, ensure_namespace, wait_for

IMAGE_V1, IMAGE_V2 = "registry.example/wrapresolver:v1", "registry.example/wrapresolver:v2"


@pytest.fixture(scope="module", autouse=True)
def setup(cluster):
    cluster.configure({"default-target": "oci://registry.example/ci/<<workspace>>", "step-image": IMAGE_V1})
    for ns in ("down", "ha", "burst", "live"):
        ensure_namespace(cluster.api, ns)
        cluster.pipeline("build", namespace=ns)


def status_writes(cluster, namespace: str, prefix: str = "") -> dict[str, int]:
    """How many times each request's status was changed, from the API server's own history."""
    writes: dict[str, int] = {}
    for _, rtype, kind, obj, old in cluster.api.events:
        if (rtype.plural == "resolutionrequests" and kind == "MODIFIED" and obj["metadata"]["namespace"] == namespace
                and obj["metadata"]["name"].startswith(prefix)
                and obj.get("status") != (old or {}).get("status")):
            writes[obj["metadata"]["name"]] = writes.get(obj["metadata"]["name"], 0) + 1
    return writes


def test_a_request_created_while_the_controller_was_down_is_answered_after_start(cluster, start_controller):
    cluster.request("while-down", {"pipelineref": "build"}, namespace="down")
    start_controller()
    assert decoded(cluster.answer("while-down", namespace="down"))["metadata"]["name"] == "build"


def test_two_replicas_answer_100_requests_once_each_with_identical_results(cluster, start_controller):
    start_controller(name="replica-a")
    start_controller(name="replica-b")
    names = [f"ha-{i:03d}" for i in range(100)]
    for name in names:
        cluster.request(name, {"pipelineref": "build"}, namespace="ha", run="run-ha")
    answers = {name: cluster.answer(name, namespace="ha")["data"] for name in names}
    assert len(set(answers.values())) == 1, "same inputs, same bytes, whichever replica answered"
    assert status_writes(cluster, "ha") == {name: 1 for name in names}, "each request is written exactly once"


def test_a_controller_killed_mid_burst_leaves_nothing_unanswered_after_restart(cluster, start_controller):
    # The Pipeline comes from a (fake) git resolver that answers only 20 child requests until
    # released, so the kill is sure to land while most requests are half-way.
    pipeline = {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "from-git"},
                "spec": {"workspaces": [{"name": "src"}], "tasks": [{
                    "name": "t", "workspaces": [{"name": "src", "workspace": "src"}],
                    "taskSpec": {"workspaces": [{"name": "src"}], "steps": [{"image": "busybox", "script": "true"}]}}]}}
    git = FakeGitResolver(cluster.api, {"p.yaml": pipeline}, limit=20)
    ref = yaml.safe_dump({"resolver": "git", "params": [{"name": "url", "value": "https://git.example/r.git"},
                                                        {"name": "pathInRepo", "value": "p.yaml"}]})
    try:
        first = start_controller(name="killed")
        names = [f"burst-{i:03d}" for i in range(150)]
        for name in names:
            cluster.request(name, {"pipelineref": ref}, namespace="burst", run="run-burst")
        wait_for(lambda: len(status_writes(cluster, "burst", "burst-")) >= 10, "the first answers")
        first.kill()
        assert len(status_writes(cluster, "burst", "burst-")) <= 20, "the rest were in flight when it died"
        git.limit = None
        start_controller(name="restarted")
        for name in names:
            assert decoded(cluster.answer(name, namespace="burst"))["metadata"]["name"] == "from-git"
        assert status_writes(cluster, "burst", "burst-") == {n: 1 for n in names}, "none was answered twice"
    finally:
        git.close()


def test_a_configmap_change_applies_to_the_next_request_without_restart(cluster, start_controller):
    ctl = start_controller()
    cluster.request("before-change", {"pipelineref": "build"}, namespace="live")
    assert IMAGE_V1 in yaml.safe_dump(decoded(cluster.answer("before-change", namespace="live")))
    changed = cluster.configure({"default-target": "oci://registry.example/ci/<<workspace>>", "step-image": IMAGE_V2})
    version = changed["metadata"]["resourceVersion"]
    wait_for(lambda: any(e.get("message") == "configuration applied" and e.get("resourceVersion") == version
                         for e in ctl.logs()), "the controller to apply the new ConfigMap")
    cluster.request("after-change", {"pipelineref": "build"}, namespace="live")
    rewritten = yaml.safe_dump(decoded(cluster.answer("after-change", namespace="live")))
    assert IMAGE_V2 in rewritten and IMAGE_V1 not in rewritten
    assert ctl.proc.poll() is None, "no restart happened"
