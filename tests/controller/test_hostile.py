"""Hostile input reaching the controller: git content through a nested resolver, odd request bodies.

One real `wrapresolver controller` process against the in-process API server; a fake git
resolver answers child requests with the raw text of files, as git would hold them.
"""

from __future__ import annotations

import pytest

from tests.controller.conftest import RR, Controller, FakeGitResolver, decoded, failure
from tests.controller.test_answers import git_ref

BOMB = """apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: bomb}
spec:
  params:
  - name: p
    default:
      a: &a ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]
      b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]
      c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]
      d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]
      e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]
      f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]
  tasks: []
"""

DEEP = "apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata: {name: deep}\nspec: " + "[" * 5000 + "]" * 5000 + "\n"

FINE = {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "fine"},
        "spec": {"workspaces": [{"name": "src"}],
                 "tasks": [{"name": "t", "workspaces": [{"name": "src", "workspace": "src"}],
                            "taskSpec": {"workspaces": [{"name": "src"}],
                                         "steps": [{"name": "s", "image": "busybox", "script": "true"}]}}]}}


@pytest.fixture(scope="module")
def controller(cluster, tmp_path_factory):
    cluster.configure({"default-target": "oci://registry.example/ci/<<workspace>>", "resolution-timeout": "10s"})
    cluster.pipeline("plain-for-hostile")
    cluster.pipeline("bad-task-name", tasks=[{"name": "Build_Step", "taskSpec": {"steps": [
        {"name": "s", "image": "busybox", "script": "true"}]}}])
    git = FakeGitResolver(cluster.api, {"bomb.yaml": BOMB, "deep.yaml": DEEP, "fine.yaml": FINE})
    ctl = Controller(cluster, tmp_path_factory.mktemp("logs") / "controller.log").start()
    yield ctl
    ctl.stop()
    git.close()


def test_a_yaml_alias_bomb_from_git_fails_with_the_limit_and_its_variable(cluster, controller):
    cluster.request("bomb", {"pipelineref": git_ref("bomb.yaml")})
    cond = failure(cluster.answer("bomb"))
    assert cond["reason"] == "InputTooLarge", cond
    assert "yaml-max-nodes" in cond["message"] and "WRAPRESOLVER_YAML_MAX_NODES" in cond["message"]
    # ... and the controller goes on serving: the next request is answered.
    cluster.request("after-bomb", {"pipelineref": git_ref("fine.yaml")})
    assert decoded(cluster.answer("after-bomb"))["metadata"]["name"] == "fine"


def test_yaml_nested_5000_levels_from_git_fails_with_the_depth_limit(cluster, controller):
    cluster.request("deep", {"pipelineref": git_ref("deep.yaml")})
    cond = failure(cluster.answer("deep"))
    assert "yaml-max-depth" in cond["message"], cond


def test_a_pipeline_task_name_tekton_would_reject_is_refused_at_resolution(cluster, controller):
    cluster.request("bad-name", {"pipelineref": "bad-task-name"})
    cond = failure(cluster.answer("bad-name"))
    assert cond["reason"] == "InvalidPipeline"
    assert "Build_Step" in cond["message"] and "DNS label" in cond["message"]


def test_an_unexpected_exception_answers_internal_error_and_later_requests_are_served(cluster, controller):
    """ownerReferences that are not objects: nothing anticipates them, the last resort answers."""
    pr = cluster.api.create("tekton.dev/v1", "pipelineruns", "default", {
        "metadata": {"name": "run-odd-owner"},
        "spec": {"pipelineRef": {"resolver": "wrap"}, "workspaces": [{"name": "src", "emptyDir": {}}]}})
    cluster.api.create(RR, "resolutionrequests", "default", {
        "metadata": {"name": "odd-owner", "labels": {"resolution.tekton.dev/type": "wrap"},
                     "ownerReferences": ["not-an-object", {"controller": True, "kind": "PipelineRun",
                                                           "name": "run-odd-owner", "uid": pr["metadata"]["uid"]}]},
        "spec": {"params": [{"name": "pipelineref", "value": "plain-for-hostile"}]}})
    cond = failure(cluster.answer("odd-owner"))
    assert cond["reason"] == "InternalError"
    assert "unexpectedly" in cond["message"] and len(cond["message"]) < 1000
    cluster.request("after-odd", {"pipelineref": "plain-for-hostile"})
    assert decoded(cluster.answer("after-odd"))["kind"] == "Pipeline"
    assert controller.healthy()
