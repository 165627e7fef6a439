"""A resolution that succeeds but is probably not what was meant: a Warning Event on the
PipelineRun and a log line from the controller, the answer unchanged."""

from __future__ import annotations

import pytest

from tests.controller.conftest import Controller, decoded, wait_for


@pytest.fixture(scope="module")
def controller(cluster, tmp_path_factory):
    cluster.configure({"default-target": "oci://registry.example/ci/<<workspace>>",
                       "default-compresion": "gzip"})
    cluster.pipeline("build")
    ctl = Controller(cluster, tmp_path_factory.mktemp("logs") / "controller.log").start()
    yield ctl
    ctl.stop()


def events_of(cluster, run: str) -> list[dict]:
    return [e for e in cluster.api.list("v1", "events", "default") if e["involvedObject"]["name"] == run]


def test_a_wrapped_workspace_on_a_volume_claim_template_is_a_warning_event_on_the_run(cluster, controller):
    cluster.api.create("tekton.dev/v1", "pipelineruns", "default", {
        "metadata": {"name": "run-on-pvc"},
        "spec": {"pipelineRef": {"resolver": "wrap"},
                 "workspaces": [{"name": "src", "volumeClaimTemplate": {"spec": {"accessModes": ["ReadWriteOnce"]}}}]}})
    cluster.request("on-pvc", {"pipelineref": "build", "workspaces": "src"}, run="run-on-pvc")
    status = cluster.answer("on-pvc")
    assert decoded(status)["kind"] == "Pipeline", "a warning does not fail the resolution"
    found = wait_for(lambda: [e for e in events_of(cluster, "run-on-pvc") if e["reason"] == "WrappedWorkspaceOnVolume"],
                     "the volume Event")
    event = found[0]
    assert (event["type"], event["involvedObject"]["kind"]) == ("Warning", "PipelineRun")
    assert "workspace 'src' is wrapped but the PipelineRun binds it to a volumeClaimTemplate" in event["message"]
    assert "bind 'src' to `emptyDir: {}`" in event["message"]
    line = wait_for(lambda: next((e for e in controller.logs() if e.get("reason") == "WrappedWorkspaceOnVolume"), None),
                    "the volume log line")
    assert line["request"] == "on-pvc" and "volumeClaimTemplate" in line["message"]


def test_an_unknown_configmap_key_is_a_warning_event_naming_the_closest_key(cluster, controller):
    cluster.request("with-typo", {"pipelineref": "build"}, run="run-with-typo")
    cluster.answer("with-typo")
    found = wait_for(lambda: [e for e in events_of(cluster, "run-with-typo") if e["reason"] == "UnknownConfigKey"],
                     "the unknown key Event")
    message = found[0]["message"]
    assert "the ConfigMap wrapresolver-config has key 'default-compresion', which the wrap resolver does not read" in message
    assert "did you mean 'default-compression'?" in message
    assert wait_for(lambda: any(e.get("reason") == "UnknownConfigKey" and e.get("request") == "with-typo"
                                for e in controller.logs()), "the unknown key log line")


def test_an_unknown_configmap_key_is_logged_when_the_configuration_is_applied(cluster, controller):
    line = wait_for(lambda: next((e for e in controller.logs()
                                  if e.get("reason") == "UnknownConfigKey" and e.get("configmap")), None),
                    "the log line of the applied configuration")
    assert line["configmap"] == "tekton-pipelines-resolvers/wrapresolver-config"
    assert "'default-compresion'" in line["message"] and "did you mean 'default-compression'?" in line["message"]
