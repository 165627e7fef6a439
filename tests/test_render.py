import io
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wrapresolver.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
PIPELINE = str(EXAMPLES / "pipeline.yaml")
PIPELINERUN = str(EXAMPLES / "pipelinerun.yaml")


def render(capsys, *argv):
    code = main(["render", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def tasks(text):
    doc = yaml.safe_load(text)
    return {t["name"]: t for t in doc["spec"]["tasks"] + doc["spec"].get("finally", [])}


def all_args(pipeline_task):
    return "\n".join(
        str(arg) for step in pipeline_task["taskSpec"]["steps"] for arg in step.get("args", []) or []
    )


def test_examples_render_with_steps_injected(capsys):
    code, out, err = render(capsys, "-f", PIPELINE, "-f", PIPELINERUN)
    assert (code, err) == (0, "")
    doc = yaml.safe_load(out)
    assert doc["kind"] == "Pipeline" and doc["metadata"]["name"] == "build-and-test"
    by_name = tasks(out)
    fetch_sources, build = by_name["fetch-sources"], by_name["build"]
    user_steps = [s["name"] for s in fetch_sources["taskSpec"]["steps"] if not s["name"].startswith("wrap-")]
    assert user_steps == ["checkout", "warm-cache"]
    assert any(s["name"].startswith("wrap-store") for s in fetch_sources["taskSpec"]["steps"])
    assert any(s["name"].startswith("wrap-fetch") for s in build["taskSpec"]["steps"])
    # $(context.pipelineRun.name) came from the PipelineRun's metadata, as Tekton would do.
    assert "registry.example/ci/build-and-test-sources:build-and-test-run" in all_args(build)
    assert "registry.example/ci/build-and-test-cache:build-and-test-run" in all_args(build)


def test_output_json_prints_the_resolvers_exact_answer_and_yaml_the_same_pipeline(capsys):
    import json

    from wrapresolver.render import read_documents
    from wrapresolver.render import render as render_documents

    code, as_json, err = render(capsys, "-f", PIPELINE, "-f", PIPELINERUN, "--output", "json")
    assert (code, err) == (0, "")
    documents, origins = read_documents([PIPELINE, PIPELINERUN])
    assert as_json.encode() == render_documents(documents, origins, output="json")
    assert as_json.startswith('{"apiVersion":"tekton.dev/v1"') and "\n" not in as_json
    _, as_yaml, _ = render(capsys, "-f", PIPELINE, "-f", PIPELINERUN)
    assert yaml.safe_load(as_yaml) == json.loads(as_json)


def test_default_workspaces_are_the_pipelineruns_emptydirs(capsys):
    code, out, _ = render(capsys, "-f", PIPELINE, "-f", PIPELINERUN)
    assert code == 0
    assert "build-and-test-sources:build-and-test-run" in out and "build-and-test-cache:build-and-test-run" in out


def test_param_flag_wins_over_the_pipelinerun(capsys):
    code, out, _ = render(
        capsys, "-f", PIPELINE, "-f", PIPELINERUN,
        "--param", "target=oci://other.example/team/<<workspace>>", "--param", "workspaces=sources",
    )
    assert code == 0
    assert "other.example/team/sources" in out
    assert "registry.example/ci" not in out
    assert "other.example/team/cache" not in out


def test_pipelinerun_params_are_substituted_before_the_request(tmp_path, capsys):
    run = yaml.safe_load(Path(PIPELINERUN).read_text())
    run["metadata"] = {"name": "nightly", "namespace": "team-a"}
    run["spec"]["params"].append({"name": "registry", "value": "mirror.example:5000"})
    run["spec"]["pipelineRef"]["params"][1]["value"] = (
        "$(params.registry)/$(context.pipelineRun.namespace)/$(context.pipelineRun.name)-<<workspace>>"
    )
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    code, out, err = render(capsys, "-f", PIPELINE, "-f", str(path))
    assert (code, err) == (0, "")
    assert "mirror.example:5000/team-a/nightly-sources" in out


def test_array_param_expands_in_place_like_tekton(tmp_path, capsys):
    run = yaml.safe_load(Path(PIPELINERUN).read_text())
    run["spec"]["params"].append({"name": "wrapped", "value": ["cache"]})
    run["spec"]["pipelineRef"]["params"].append({"name": "workspaces", "value": ["$(params.wrapped[*])"]})
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    code, out, err = render(capsys, "-f", PIPELINE, "-f", str(path))
    assert (code, err) == (0, "")
    assert "build-and-test-cache:build-and-test-run" in out and "build-and-test-sources" not in out


def test_unknown_run_name_is_left_for_tekton(tmp_path, capsys):
    run = yaml.safe_load(Path(PIPELINERUN).read_text())
    run["metadata"] = {"generateName": "build-and-test-"}
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump(run))
    code, out, err = render(capsys, "-f", PIPELINE, "-f", str(path))
    assert (code, err) == (0, "")
    assert "registry.example/ci/build-and-test-sources:$(context.pipelineRun.name)" in out


def test_single_pipeline_is_used_without_pipelineref(capsys):
    code, out, err = render(
        capsys, "-f", PIPELINE, "--param", "workspaces=sources", "--param", "target=oci://r.example/ci/src"
    )
    assert (code, err) == (0, "")
    assert "r.example/ci/src" in out


def test_reads_documents_from_stdin(monkeypatch, capsys):
    text = Path(PIPELINE).read_text() + "\n---\n" + Path(PIPELINERUN).read_text()
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))
    code, out, err = render(capsys, "-f", "-")
    assert (code, err) == (0, "")
    assert "build-and-test-sources:build-and-test-run" in out


def test_config_flag_supplies_defaults(capsys):
    code, out, _ = render(
        capsys, "-f", PIPELINE, "--param", "workspaces=cache",
        "--config", "default-target=oci://defaults.example/ci/<<workspace>>",
    )
    assert code == 0
    assert "defaults.example/ci/cache" in out


def test_unknown_workspace_fails_with_the_controllers_message(capsys):
    code, out, err = render(capsys, "-f", PIPELINE, "-f", PIPELINERUN, "--param", "workspaces=source")
    assert code == 1 and out == ""
    assert err.startswith("error: param `workspaces` names 'source', which Pipeline 'build-and-test' does not declare")
    assert "its workspaces are: sources, cache" in err


def test_missing_target_tells_how_to_set_it(capsys):
    code, _, err = render(capsys, "-f", PIPELINE, "--param", "workspaces=sources")
    assert code == 1
    assert "error: missing param `target`" in err and "`default-target`" in err


def test_unreadable_file_is_an_error_not_a_traceback(tmp_path, capsys):
    code, _, err = render(capsys, "-f", str(tmp_path / "absent.yaml"))
    assert code == 1 and err.startswith("error: cannot read ")
    bad = tmp_path / "bad.yaml"
    bad.write_text("kind: [unclosed\n")
    code, _, err = render(capsys, "-f", str(bad))
    assert code == 1 and "is not valid YAML" in err


def test_two_wrap_pipelineruns_are_ambiguous(capsys):
    code, _, err = render(capsys, "-f", PIPELINE, "-f", PIPELINERUN, "-f", PIPELINERUN)
    assert code == 1 and "2 PipelineRuns using `resolver: wrap`" in err


def test_malformed_param_flag_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["render", "-f", PIPELINE, "--param", "no-equals-sign"])
    assert exit_.value.code == 2
    assert "expected NAME=VALUE" in capsys.readouterr().err


def wrapresolver_command():
    found = shutil.which("wrapresolver")
    return [found] if found else [sys.executable, "-m", "wrapresolver"]


def test_command_renders_the_examples():
    proc = subprocess.run(
        [*wrapresolver_command(), "render", "-f", PIPELINE, "-f", PIPELINERUN],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    by_name = tasks(proc.stdout)
    assert set(by_name) >= {"fetch-sources", "build"}
    assert any(s["name"].startswith("wrap-fetch") for s in by_name["build"]["taskSpec"]["steps"])


def test_command_reports_errors_on_stderr_with_exit_code_1():
    proc = subprocess.run(
        [*wrapresolver_command(), "render", "-f", "-", "--param", "target=oci://r/x"],
        input=Path(PIPELINE).read_text(), capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: param `workspaces` is not set and the PipelineRun is not known")
