"""The controller reads the asking PipelineRun's pod template and logs what cannot work as a warning."""

from __future__ import annotations

from tests.controller.conftest import decoded, wait_for

HARDENED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True}


def test_a_warning_at_resolution_is_logged_with_the_request_and_uses_the_pipeline_runs_pod_template(
        cluster, start_controller):
    cluster.configure({"default-target": "oci://registry.example/ci/<<workspace>>"})
    cluster.pipeline("two-users", tasks=[{
        "name": "build", "workspaces": [{"name": "src", "workspace": "src"}],
        "taskSpec": {"workspaces": [{"name": "src"}], "steps": [
            {"name": "a", "image": "busybox", "script": "true", "securityContext": {**HARDENED, "runAsUser": 1000}},
            {"name": "b", "image": "busybox", "script": "true", "securityContext": {**HARDENED, "runAsUser": 2000}},
        ]}}])
    # The pod template gives the injected steps a user: the warning is about owners, not about starting.
    cluster.api.create("tekton.dev/v1", "pipelineruns", "default", {
        "metadata": {"name": "run-two-users"},
        "spec": {"pipelineRef": {"resolver": "wrap"}, "workspaces": [{"name": "src", "emptyDir": {}}],
                 "taskRunTemplate": {"podTemplate": {"securityContext": {"runAsUser": 3000}}}}})
    ctl = start_controller()
    cluster.request("two-users", {"pipelineref": "two-users"}, run="run-two-users")
    status = cluster.answer("two-users")
    assert decoded(status)["kind"] == "Pipeline", "a warning does not fail the resolution"
    entry = wait_for(lambda: next((e for e in ctl.logs() if e.get("request") == "two-users"
                                   and e.get("level") == "warning"), None), "the warning in the log")
    assert entry["owner"] == "PipelineRun/run-two-users"
    for words in ("task 'build'", "different users", "run as 3000", "belongs to 3000", "one runAsUser"):
        assert words in entry["message"], (words, entry["message"])
