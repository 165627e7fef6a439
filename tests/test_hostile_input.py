"""Bad command lines, undecodable files, YAML bombs, names Tekton would reject, misspelt placeholders.

Every case ends in one line naming the problem and a documented exit code, never a traceback.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from wrapresolver.backends.registry import REGISTRY
from wrapresolver.core import safeyaml
from wrapresolver.core.limits import LimitError
from wrapresolver.core.params import RunContext, parse_request
from wrapresolver.errors import ParamError, RewriteError
from wrapresolver.render import render
from wrapresolver.resolve import resolve
from wrapresolver.sources import FileSource

REPO = Path(__file__).resolve().parent.parent


def wrapresolver(*args: str, env: dict | None = None, stdout=subprocess.PIPE) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wrapresolver", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


def one_error_line(done: subprocess.CompletedProcess) -> str:
    assert "Traceback" not in done.stderr, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "error:" in lines[0]
    return lines[0]


# ---- bad command lines ----

@pytest.mark.parametrize("workspace, words", [
    ("{}", ["lacks", "`workspace`", "`target`"]),
    ("[1]", ["JSON object", "list"]),
    ('{"workspace": "w", "run": "r", "task": "t", "backend": "file"}', ["lacks", "`target`"]),
    ("not json", ["not valid JSON"]),
    ('{"workspace": 1, "target": "file:///x", "run": "r", "task": "t", "backend": "file"}', ["`workspace`", "string"]),
    ('{"workspace": "w", "target": "file:///x", "run": "r", "task": "t", "backend": "file", "graph": []}', ["`graph`"]),
    ('{"workspace": "w", "target": "file:///x", "run": "r", "task": "t", "backend": "file", "v": "1"}', ["`v`"]),
    ("[" * 50_000 + "]" * 50_000, ["nests too deeply"]),
], ids=["empty-object", "array", "missing-target", "not-json", "wrong-type", "graph-array", "version-string", "deep"])
def test_a_malformed_workspace_argument_exits_2_naming_the_problem(workspace: str, words: list[str], tmp_path: Path) -> None:
    done = wrapresolver("fetch", "--state-dir", str(tmp_path), "--workspace", workspace)
    assert done.returncode == 2, done.stderr
    line = one_error_line(done)
    for word in words:
        assert word in line, line


def test_a_workspace_argument_over_the_json_limit_names_the_limit(tmp_path: Path) -> None:
    done = wrapresolver("fetch", "--state-dir", str(tmp_path), "--workspace", '{"a": "' + "x" * 2000 + '"}',
                        env={"WRAPRESOLVER_JSON_MAX_BYTES": "1000"})
    assert done.returncode == 2, done.stderr
    assert "WRAPRESOLVER_JSON_MAX_BYTES" in one_error_line(done)


@pytest.mark.parametrize("action", ["fetch", "store"])
def test_a_path_that_is_a_file_exits_2(action: str, tmp_path: Path) -> None:
    afile = tmp_path / "file"
    afile.write_text("x")
    done = wrapresolver(action, "--path", str(afile), "--target", f"file://{tmp_path}/store")
    assert done.returncode == 2, done.stderr
    assert "is not a directory" in one_error_line(done)


def test_an_injected_workspace_path_that_is_a_file_exits_2(tmp_path: Path) -> None:
    from wrapresolver.core.stepspec import WorkspaceTransfer

    afile = tmp_path / "file"
    afile.write_text("x")
    spec = WorkspaceTransfer(workspace="w", target=f"file://{tmp_path}/s", run="r", task="t", backend="file",
                             path=str(afile)).to_json()
    done = wrapresolver("fetch", "--state-dir", str(tmp_path / "state"), "--workspace", spec)
    assert done.returncode == 2, done.stderr
    assert "is not a directory" in one_error_line(done)


def test_a_placeholder_left_in_a_by_hand_target_exits_2(tmp_path: Path) -> None:
    done = wrapresolver("fetch", "--path", str(tmp_path / "out"), "--target", f"file://{tmp_path}/<<workspace>>")
    assert done.returncode == 2, done.stderr
    assert "<<workspace>>" in one_error_line(done)


# ---- the last resort ----

def test_an_unexpected_error_is_one_capped_line_and_exit_1() -> None:
    """Writing the answer to a full device is nothing render expects: one line, no traceback."""
    with open("/dev/full", "w") as full:
        done = wrapresolver("render", "-f", str(REPO / "examples/pipeline.yaml"),
                            "-f", str(REPO / "examples/pipelinerun.yaml"), stdout=full)
    assert done.returncode == 1
    line = one_error_line(done)
    assert line.startswith("wrapresolver render: error: unexpected OSError")
    assert "--debug" in line


def test_the_debug_switch_adds_the_traceback() -> None:
    with open("/dev/full", "w") as full:
        done = wrapresolver("--debug", "render", "-f", str(REPO / "examples/pipeline.yaml"),
                            "-f", str(REPO / "examples/pipelinerun.yaml"), stdout=full)
    assert done.returncode == 1
    assert "Traceback" in done.stderr and "error: unexpected OSError" in done.stderr


def test_the_controller_command_with_an_unreadable_kubeconfig_ends_in_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "kubeconfig"
    bad.write_text("{{{ not yaml")
    done = wrapresolver("controller", "--kubeconfig", str(bad), "--health-address", "", "--metrics-port", "0")
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "error:" in done.stderr.strip().splitlines()[-1]


# ---- undecodable input ----

def test_render_of_non_utf8_bytes_names_the_byte_and_line(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(b"apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata: {name: caf\xe9}\n")
    done = wrapresolver("render", "-f", str(bad))
    assert done.returncode == 1
    line = one_error_line(done)
    assert "not UTF-8" in line and "0xe9" in line and "line 3" in line


def test_render_of_non_utf8_stdin_is_refused_the_same_way() -> None:
    done = subprocess.run([sys.executable, "-m", "wrapresolver", "render", "-f", "-"], input=b"a: \xff\xfe\n",
                          capture_output=True, timeout=60)
    assert done.returncode == 1
    assert b"not UTF-8" in done.stderr and b"Traceback" not in done.stderr


# ---- YAML bombs ----

def alias_bomb(levels: int) -> str:
    lines = ['a0: &a0 ["x", "x", "x", "x", "x", "x", "x", "x", "x", "x"]']
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_a_684_byte_style_alias_bomb_is_refused_by_render(tmp_path: Path) -> None:
    text = ("apiVersion: tekton.dev/v1\nkind: Pipeline\nmetadata: {name: bomb}\nspec:\n  params:\n  - name: p\n"
            "    default:\n" + "".join("      " + line + "\n" for line in alias_bomb(6).splitlines()) + "  tasks: []\n")
    assert len(text) < 1000
    path = tmp_path / "bomb.yaml"
    path.write_text(text)
    done = wrapresolver("render", "-f", str(path))
    assert done.returncode == 1
    line = one_error_line(done)
    assert "yaml-max-nodes" in line and "WRAPRESOLVER_YAML_MAX_NODES" in line


def test_many_aliases_are_refused_with_the_alias_limit() -> None:
    text = "a: &a x\nb: [" + ", ".join(["*a"] * 2000) + "]\n"
    with pytest.raises(LimitError, match="yaml-max-aliases"):
        safeyaml.load(text)


def test_a_recursive_alias_is_refused() -> None:
    with pytest.raises(LimitError, match="recursive"):
        safeyaml.load("a: &a [*a]\n")


def test_deep_nesting_is_refused_before_the_parser_overflows() -> None:
    with pytest.raises(LimitError, match="yaml-max-depth"):
        safeyaml.load("[" * 50_000 + "]" * 50_000)


def test_a_text_over_the_size_limit_is_refused(monkeypatch) -> None:
    monkeypatch.setenv("WRAPRESOLVER_YAML_MAX_BYTES", "100")
    with pytest.raises(LimitError, match="WRAPRESOLVER_YAML_MAX_BYTES"):
        safeyaml.load("a: " + "x" * 200)


def test_the_node_limit_is_configurable(monkeypatch) -> None:
    text = alias_bomb(3)  # 10 + 100 + 1000 leaves
    assert safeyaml.load(text)["a2"][0][0][0] == "x"
    monkeypatch.setenv("WRAPRESOLVER_YAML_MAX_NODES", "500")
    with pytest.raises(LimitError, match="limit yaml-max-nodes = 500"):
        safeyaml.load(text)


def test_safe_loading_still_refuses_python_tags() -> None:
    with pytest.raises(yaml.YAMLError):
        safeyaml.load("!!python/object/apply:os.system ['true']")


def test_the_pipelineref_param_is_bounded_too() -> None:
    bomb = "resolver: git\nparams: " + "[" * 500 + "]" * 500
    with pytest.raises(LimitError, match="yaml-max-depth"):
        parse_request([{"name": "pipelineref", "value": bomb}, {"name": "target", "value": "oci://r.example/a"}],
                      {}, RunContext(namespace="default"), REGISTRY)


def test_a_cluster_object_nested_beyond_the_depth_limit_is_refused() -> None:
    deep: dict = {}
    node = deep
    for _ in range(300):
        node["x"] = {}
        node = node["x"]
    pipeline = {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "p"},
                "spec": {"tasks": [], "description": deep}}
    with pytest.raises(LimitError, match="yaml-max-depth"):
        asyncio.run(resolve([{"name": "pipelineref", "value": "p"}, {"name": "target", "value": "oci://r.example/a"}],
                            {}, RunContext(namespace="default"), FileSource([pipeline], ["cluster"])))


# ---- names Tekton would reject ----

def pipeline(*tasks: dict, final: tuple[dict, ...] = ()) -> dict:
    return {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "p"},
            "spec": {"workspaces": [{"name": "src"}], "tasks": list(tasks), "finally": list(final)}}


def task(name: str) -> dict:
    return {"name": name, "workspaces": [{"name": "src", "workspace": "src"}],
            "taskSpec": {"workspaces": [{"name": "src"}], "steps": [{"name": "s", "image": "busybox", "script": "true"}]}}


PARAMS = {"target": "oci://registry.example/ci/<<workspace>>", "workspaces": "src"}


@pytest.mark.parametrize("name", ["Build", "build_step", "-build", "build-", "b" * 64, "a.b", ""])
def test_a_pipeline_task_name_that_is_not_a_dns_label_is_rejected(name: str) -> None:
    with pytest.raises(RewriteError) as caught:
        render([pipeline(task(name))], params=PARAMS)
    message = str(caught.value)
    assert ("DNS label" in message) if name else ("no `name`" in message)


def test_two_pipeline_tasks_with_one_name_are_rejected_naming_both_places() -> None:
    with pytest.raises(RewriteError, match=r"two pipeline tasks are named 'build' \(spec.tasks\[0\] and spec.finally\[0\]\)"):
        render([pipeline(task("build"), task("test"), final=(task("build"),))], params=PARAMS)


def test_valid_names_still_render() -> None:
    out = yaml.safe_load(render([pipeline(task("build"), task("b" * 63))], params=PARAMS))
    assert [t["name"] for t in out["spec"]["tasks"]] == ["build", "b" * 63]


# ---- placeholders ----

@pytest.mark.parametrize("target", [
    "s3://bucket/ci/<<wrkspace>>", "file:///srv/<<Workspace>>", "oci://r.example/ci/{{ workspace }}",
    "gs://bucket/<<workspace>>-<<run>>",
])
def test_an_unknown_placeholder_in_any_target_is_rejected(target: str) -> None:
    with pytest.raises(ParamError, match="not a placeholder the wrap resolver knows"):
        parse_request([{"name": "pipelineref", "value": "p"}, {"name": "target", "value": target}],
                      {}, RunContext(namespace="default"), REGISTRY)


def test_the_known_placeholders_are_accepted() -> None:
    for target in ("s3://bucket/ci/<<workspace>>", "oci://r.example/ci/{{workspace}}"):
        request = parse_request([{"name": "pipelineref", "value": "p"}, {"name": "target", "value": target}],
                                {}, RunContext(namespace="default"), REGISTRY)
        assert request.target == target


# ---- found by fuzzing (tests/fuzz) ----

@pytest.mark.parametrize("target", ["gs://]", "rsync://[bad/module/x", "s3://]/x"])
def test_a_target_the_url_parser_rejects_is_a_param_error_not_a_crash(target: str) -> None:
    with pytest.raises(ParamError, match="is not a valid"):
        parse_request([{"name": "pipelineref", "value": "p"}, {"name": "target", "value": target}],
                      {}, RunContext(namespace="default"), REGISTRY)


@pytest.mark.parametrize("workspaces", [True, "src", [1], [{"name": 3}]])
def test_pipeline_workspaces_that_are_not_a_list_of_named_objects_are_rejected(workspaces) -> None:
    doc = pipeline(task("build"))
    doc["spec"]["workspaces"] = workspaces
    with pytest.raises(RewriteError, match="`spec.workspaces` must be a list"):
        render([doc], params=PARAMS)
