"""`wrapresolver render` shows per-task answers: the Pipeline with taskRefs, and one task's Task."""

from pathlib import Path

import yaml

from wrapresolver.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FILES = ["-f", str(EXAMPLES / "pipeline.yaml"), "-f", str(EXAMPLES / "pipelinerun.yaml")]


def test_render_with_per_task_config_prints_the_pipeline_with_one_taskref_per_wrapped_task(capsys):
    assert main(["render", *FILES, "--config", "task-resolution=per-task"]) == 0
    pipeline = yaml.safe_load(capsys.readouterr().out)
    refs = {t["name"]: t["taskRef"]["params"][0]["value"] for t in pipeline["spec"]["tasks"] if "taskRef" in t}
    assert refs == {t["name"]: t["name"] for t in pipeline["spec"]["tasks"]}
    assert [p["name"] for p in pipeline["spec"]["params"]][-2:] == ["wrap-pin", "wrap-request"]


def test_render_task_prints_the_task_its_request_gets_with_the_run_uid_substituted(capsys):
    assert main(["render", *FILES, "--task", "build", "--uid", "u-123"]) == 0
    out = capsys.readouterr()
    task = yaml.safe_load(out.out)
    assert (task["kind"], task["metadata"]["name"]) == ("Task", "build")
    assert task["spec"]["steps"][0]["name"] == "wrap-fetch"
    assert '"run":"u-123"' in task["spec"]["steps"][0]["args"][2]
    assert "context.pipelineRun.uid" not in out.err


def test_render_task_of_an_inline_answer_names_what_can_be_asked(capsys):
    assert main(["render", *FILES, "--task", "build", "--config", "task-resolution=inline"]) == 1
    assert "'build' is not resolved on its own in this answer" in capsys.readouterr().err
