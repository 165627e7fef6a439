"""The controller works with exactly the permissions config/ grants, and asks for nothing more."""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.controller.conftest import FakeGitResolver, decoded, failure
from tests.fixtures.kubeapi import rules_from_manifests

CONFIG = Path(__file__).resolve().parents[2] / "config"


def test_the_controller_needs_no_permission_beyond_the_rbac_in_config(cluster, start_controller):
    rules = rules_from_manifests(yaml.safe_load_all((CONFIG / "rbac.yaml").read_text()), "wrapresolver")
    assert rules, "config/rbac.yaml binds rules to the wrapresolver ServiceAccount"
    cluster.api.rules = rules
    cluster.configure({"default-target": "oci://registry.example/ci/<<workspace>>"})
    cluster.pipeline("build")
    cluster.pipeline("remote-task", tasks=[{
        "name": "lint", "workspaces": [{"name": "source", "workspace": "src"}],
        "taskRef": {"resolver": "git", "params": [{"name": "pathInRepo", "value": "lint.yaml"}]}}])
    task = {"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": "lint"},
            "spec": {"workspaces": [{"name": "source"}], "steps": [{"image": "busybox", "script": "lint"}]}}
    git = FakeGitResolver(cluster.api, {"lint.yaml": task})
    try:
        start_controller()
        cluster.request("by-name", {"pipelineref": "build"})
        cluster.request("nested", {"pipelineref": "remote-task"})
        cluster.request("failing", {"pipelineref": "absent"})
        assert decoded(cluster.answer("by-name"))["metadata"]["name"] == "build"
        assert decoded(cluster.answer("nested"))["metadata"]["name"] == "remote-task"
        assert "absent" in failure(cluster.answer("failing"))["message"]
        assert any(e["involvedObject"]["name"] == "run-failing" for e in cluster.api.list("v1", "events", "default"))
    finally:
        git.close()
    assert cluster.api.denied == []
