"""core/checks.py on its own: pure values in, refusals and notices out."""

from __future__ import annotations

import pytest

from wrapresolver.core import checks
from wrapresolver.core.params import RunContext
from wrapresolver.errors import RewriteError


def pipeline(*tasks: dict, workspaces=("sources",)) -> dict:
    return {"metadata": {"name": "ci"}, "spec": {"workspaces": [{"name": w} for w in workspaces], "tasks": list(tasks)}}


def test_a_binding_without_workspace_uses_its_name_like_tekton():
    checks.check_pipeline_bindings(pipeline({"name": "t", "workspaces": [{"name": "sources"}]}))
    with pytest.raises(RewriteError, match=r"binds workspace 'source', which Pipeline 'ci' does not declare"):
        checks.check_pipeline_bindings(pipeline({"name": "t", "workspaces": [{"name": "source"}]}))


def test_a_task_binding_one_task_workspace_twice_is_refused():
    task = {"name": "t", "workspaces": [{"name": "src", "workspace": "sources"}, {"name": "src", "workspace": "sources"}]}
    with pytest.raises(RewriteError, match=r"pipeline task 't' binds task workspace 'src' twice"):
        checks.check_pipeline_bindings(pipeline(task))


def test_only_fetched_tasks_are_checked_against_their_declarations():
    p = pipeline({"name": "t", "workspaces": [{"name": "sr", "workspace": "sources"}], "taskRef": {"name": "x"}})
    checks.check_task_bindings(p, {})
    task = {"metadata": {"name": "x"}, "spec": {"workspaces": [{"name": "src"}]}}
    with pytest.raises(RewriteError, match=r"Task 'x' does not declare \(did you mean 'src'\?\)"):
        checks.check_task_bindings(p, {"t": task})


def test_no_volume_notice_without_the_run_or_for_an_unwrapped_workspace():
    run = {"spec": {"workspaces": [{"name": "cache", "persistentVolumeClaim": {"claimName": "c"}}]}}
    assert checks.volume_bound_notices(RunContext(), ["cache"]) == []
    assert checks.volume_bound_notices(RunContext(pipelinerun=run), ["sources"]) == []
    (notice,) = checks.volume_bound_notices(RunContext(pipelinerun=run), ["cache"])
    assert notice.reason == "WrappedWorkspaceOnVolume"


def test_config_keys_of_params_and_backend_options_are_known():
    config = {"default-target": "x", "default-retention": "keep", "default-region": "eu", "step-image": "i"}
    assert checks.unknown_config_notices(config, ["region"]) == []
    (notice,) = checks.unknown_config_notices({"default-regoin": "eu"}, ["region"])
    assert notice.reason == "UnknownConfigKey" and "did you mean 'default-region'?" in notice.message


def test_a_key_far_from_every_known_key_gets_no_suggestion():
    (notice,) = checks.unknown_config_notices({"colour": "blue"}, [])
    assert "did you mean" not in notice.message and "`default-<param>`" in notice.message
