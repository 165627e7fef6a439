"""`wrapresolver run` as a person runs it: a process, real storage, the lines it prints, its exit code.

Each task runs in fresh empty directories, so what a task saw (written by its steps to a
directory given as a param) can only have come through the injected steps and the backend.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.fixtures.cli import wrapresolver
from tests.fixtures.identities import shared_dir

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = [str(REPO / "examples" / "pipeline.yaml"), str(REPO / "examples" / "pipelinerun.yaml")]

FLOW = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: flow}
spec:
  params:
    - {name: out, type: string}
    - {name: lint, type: string, default: "false"}
  workspaces: [{name: src}]
  tasks:
    - name: build
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: build
            image: alpine
            script: |
              echo bin > $(workspaces.src.path)/app
              echo $(context.pipelineRun.uid) > $(params.out)/uid
              echo $(context.pipelineRun.name) > $(params.out)/name
    - name: lint
      runAfter: [build]
      when: [{input: "$(params.lint)", operator: in, values: ["true"]}]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: lint, image: alpine, script: "echo lint > $(workspaces.src.path)/lint.txt"}]
    - name: test
      runAfter: [lint]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: test
            image: alpine
            script: |
              ls $(workspaces.src.path) > $(params.out)/test.seen
              echo 'assertion failed: expected 3 got 2' >&2
              exit 3
    - name: deploy
      runAfter: [test]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: deploy, image: alpine, script: "echo deployed > $(params.out)/deployed"}]
  finally:
    - name: report
      params: [{name: status, value: $(tasks.status)}]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        params: [{name: status, type: string}]
        workspaces: [{name: src}]
        steps:
          - name: report
            image: alpine
            script: |
              ls $(workspaces.src.path) > $(params.out)/report.seen
              echo $(params.status) > $(params.out)/report.status
"""

NOTIFY = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: with-ref}
spec:
  params: [{name: out, type: string}]
  workspaces: [{name: src}]
  tasks:
    - name: make
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: make, image: alpine, script: "echo made > $(workspaces.src.path)/made"}]
    - name: notify
      runAfter: [make]
      params: [{name: out, value: $(params.out)}]
      taskRef: {name: notify}
---
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: notify}
spec:
  params: [{name: out, type: string}]
  steps: [{name: send, image: alpine, script: "echo sent > $(params.out)/notified"}]
"""

AS_UID = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: as-uid}
spec:
  params: [{name: out, type: string}]
  workspaces: [{name: src}]
  tasks:
    - name: make
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        stepTemplate: {securityContext: {runAsUser: 4321, runAsGroup: 4321}}
        steps: [{name: make, image: alpine, script: "id -u > $(params.out)/uid; echo x > $(workspaces.src.path)/x"}]
    - name: check
      runAfter: [make]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        stepTemplate: {securityContext: {runAsUser: 4321, runAsGroup: 4321}}
        steps: [{name: check, image: alpine, script: "stat -c %u $(workspaces.src.path)/x > $(params.out)/owner"}]
"""


def pipelinerun(pipeline: str, target: str | None, out: Path, **params: str) -> str:
    resolver = [{"name": "pipelineref", "value": pipeline}]
    if target:
        resolver.append({"name": "target", "value": target})
    run = {
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"generateName": f"{pipeline}-"},
        "spec": {
            "params": [{"name": "out", "value": str(out)}, *({"name": k, "value": v} for k, v in params.items())],
            "pipelineRef": {"resolver": "wrap", "params": resolver},
            "workspaces": [{"name": "src", "emptyDir": {}}],
        },
    }
    return json.dumps(run)


def files(tmp_path: Path, pipeline_yaml: str, run_json: str) -> list[str]:
    (tmp_path / "pipeline.yaml").write_text(pipeline_yaml)
    (tmp_path / "run.yaml").write_text(run_json)
    return ["-f", str(tmp_path / "pipeline.yaml"), "-f", str(tmp_path / "run.yaml")]


def fetched(target: str, dest: Path, env: dict[str, str] | None = None) -> Path:
    done = wrapresolver("fetch", "--target", target, "--path", str(dest), env=env)
    assert done.returncode == 0, done.stderr
    return dest


def task_lines(stdout: str) -> list[str]:
    return [line for line in stdout.splitlines() if line.startswith("[")]


@pytest.fixture(params=["file", "oci"])
def storage(request, tmp_path: Path) -> tuple[str, dict[str, str]]:
    """(target template with <<workspace>>, environment) on a directory or a real registry."""
    unique = uuid.uuid4().hex[:8]
    if request.param == "oci":
        registry = request.getfixturevalue("registry")
        return f"oci://{registry.host}/run/{unique}-<<workspace>>", {"DOCKER_CONFIG": str(tmp_path / "none")}
    return f"file://{tmp_path}/states/{unique}-<<workspace>>", {}


def test_run_of_the_readme_example_moves_sources_and_cache_from_task_to_task(storage, tmp_path: Path) -> None:
    target, env = storage
    done = wrapresolver("run", *[a for f in EXAMPLE for a in ("-f", f)], "--target", target,
                        "--local-dir", str(tmp_path / "local"), env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    assert task_lines(done.stdout)[:2] == ["[fetch-sources] started", task_lines(done.stdout)[1]]
    assert re.search(r"^\[fetch-sources\] succeeded in [0-9.]+s, 0 bytes fetched, [1-9][0-9]* bytes stored$",
                     done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^\[build\] succeeded in [0-9.]+s, [1-9][0-9]* bytes fetched, [1-9][0-9]* bytes stored$",
                     done.stdout, re.MULTILINE), done.stdout
    assert re.search(r"^build\s+Succeeded\s", done.stdout, re.MULTILINE), done.stdout
    assert "local run:" in done.stdout and "images" in done.stdout and "sidecars" in done.stdout
    # What build saw and wrote, from the published targets: the PipelineRun's revision, the
    # cache fetch-sources warmed, and build's own log, all through the storage.
    sources = fetched(target.replace("<<workspace>>", "sources"), tmp_path / "sources", env)
    cache = fetched(target.replace("<<workspace>>", "cache"), tmp_path / "cache", env)
    assert (sources / "REVISION").read_text() == "revision v1.2.3\n"
    assert (cache / "deps" / ".warmed").is_file()
    assert "main.c" in (cache / "build.log").read_text()
    assert not (tmp_path / "local" / "runs").exists() or not any((tmp_path / "local" / "runs").iterdir())


def test_run_names_the_failed_task_shows_its_logs_skips_by_when_and_runs_finally(tmp_path: Path) -> None:
    out = shared_dir("wrap-run-out-")
    target = f"file://{tmp_path}/states/<<workspace>>"
    args = files(tmp_path, FLOW, pipelinerun("flow", target, out))
    done = wrapresolver("run", *args, "--local-dir", str(tmp_path / "local"))
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    lines = task_lines(done.stdout)
    assert "[lint] skipped: its when expressions are false" in lines
    assert re.search(r"^\[test\] failed in", done.stdout, re.MULTILINE)
    assert "assertion failed: expected 3 got 2" in done.stdout
    assert "[deploy] skipped: a task it depends on failed or was skipped for that" in lines
    assert re.search(r"^\[report\] succeeded in", done.stdout, re.MULTILINE)
    assert lines.index("[report] started") > max(i for i, line in enumerate(lines) if line.startswith("[test]"))
    for task, status in (("build", "Succeeded"), ("lint", "Skipped"), ("test", "Failed"), ("deploy", "Skipped"),
                         ("report", "Succeeded")):
        assert re.search(rf"^{task}\s+{status}\b", done.stdout, re.MULTILINE), (task, done.stdout)
    assert "task(s) test failed" in done.stderr
    # What each task saw: build's file, never lint's; report after the failure sees build's state.
    assert (out / "test.seen").read_text().split() == ["app"]
    assert (out / "report.seen").read_text().split() == ["app"]
    assert (out / "report.status").read_text().strip() == "Failed"
    assert not (out / "deployed").exists()
    # The run's identity: its generateName, a fresh UID, and its task directories kept for a look.
    uid = (out / "uid").read_text().strip()
    assert uuid.UUID(uid) and (out / "name").read_text().startswith("flow-")
    assert str(tmp_path / "local" / "runs" / uid) in done.stderr
    assert f"  src: wrapresolver inspect --target file://{tmp_path}/states/src --run {uid}" in done.stdout


def test_each_run_gets_a_fresh_uid_so_two_runs_on_one_target_never_share_states_and_p_sets_a_run_param(tmp_path: Path) -> None:
    out = shared_dir("wrap-run-out-")
    target = f"file://{tmp_path}/states/<<workspace>>"
    args = files(tmp_path, FLOW, pipelinerun("flow", target, out, lint="false"))
    uids = []
    for _ in range(2):
        wrapresolver("run", *args, "-p", "lint=true", "--local-dir", str(tmp_path / "local"))
        uids.append((out / "uid").read_text().strip())
        # lint ran (when true), and test, a fresh run, sees this run's states only.
        assert sorted((out / "test.seen").read_text().split()) == ["app", "lint.txt"]
    assert uids[0] != uids[1]


def test_a_task_named_by_taskref_runs_from_the_task_in_the_files(tmp_path: Path) -> None:
    out = shared_dir("wrap-run-out-")
    args = files(tmp_path, NOTIFY, pipelinerun("with-ref", f"file://{tmp_path}/states/<<workspace>>", out))
    done = wrapresolver("run", *args, "--local-dir", str(tmp_path / "local"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert (out / "notified").read_text() == "sent\n"
    assert re.search(r"^\[notify\] succeeded", done.stdout, re.MULTILINE)


def test_a_task_from_another_resolver_is_refused_before_anything_runs_with_the_fix(tmp_path: Path) -> None:
    out = shared_dir("wrap-run-out-")
    pipeline = NOTIFY.replace("taskRef: {name: notify}", "taskRef: {resolver: git, params: [{name: url, value: x}]}")
    args = files(tmp_path, pipeline, pipelinerun("with-ref", f"file://{tmp_path}/states/<<workspace>>", out))
    done = wrapresolver("run", *args, "--local-dir", str(tmp_path / "local"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "notify" in done.stderr and "'git'" in done.stderr and "-f" in done.stderr
    assert "[make]" not in done.stdout


def test_a_run_without_a_target_stores_under_the_local_directory(tmp_path: Path) -> None:
    out = shared_dir("wrap-run-out-")
    args = files(tmp_path, NOTIFY, pipelinerun("with-ref", None, out))
    done = wrapresolver("run", *args, "--local-dir", str(tmp_path / "local"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"target file://{tmp_path}/local/states/<<workspace>>" in done.stdout
    assert (fetched(f"file://{tmp_path}/local/states/src", tmp_path / "got") / "made").read_text() == "made\n"


def test_a_step_whose_command_is_missing_here_fails_its_task_by_name_not_with_a_traceback(tmp_path: Path) -> None:
    out = shared_dir("wrap-run-out-")
    pipeline = NOTIFY.replace('script: "echo sent > $(params.out)/notified"', "command: [no-such-command-here]")
    args = files(tmp_path, pipeline, pipelinerun("with-ref", f"file://{tmp_path}/states/<<workspace>>", out))
    done = wrapresolver("run", *args, "--local-dir", str(tmp_path / "local"))
    assert done.returncode == 1
    assert "Traceback" not in done.stdout + done.stderr
    assert "'send' cannot start here" in done.stdout and "must exist on this machine" in done.stdout
    assert re.search(r"^notify\s+Failed", done.stdout, re.MULTILINE)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to start the command as another user")
def test_not_root_the_steps_run_as_the_current_user_and_the_start_line_says_so(tmp_path: Path, foreign_python) -> None:
    out = shared_dir("wrap-run-out-")
    work = shared_dir("wrap-run-work-")
    args = files(work, AS_UID, pipelinerun("as-uid", f"file://{work}/states/<<workspace>>", out))
    done = foreign_python.run(["run", *args, "--local-dir", str(work / "local")], uid=1000, gid=1000,
                              env={"PATH": os.environ["PATH"]}, cwd=str(work))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "as this user (uid 1000; not root, so runAsUser/runAsGroup are ignored)" in done.stdout
    assert (out / "uid").read_text().strip() == "1000"


def test_the_readme_run_command_works_as_written_from_a_copy_of_the_examples(tmp_path: Path) -> None:
    readme = (REPO / "README.md").read_text()
    blocks = re.findall(r"```sh\n(.*?)\n```", readme, re.DOTALL)
    command = next(block for block in blocks if block.startswith("wrapresolver run "))
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("webdav-plugin"))
    command = command.replace("wrapresolver run", f"{sys.executable} -m wrapresolver run", 1)
    done = subprocess.run(["sh", "-c", command], cwd=tmp_path, capture_output=True, text=True, timeout=180,
                          env={**os.environ, "PWD": str(tmp_path)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert re.search(r"^build\s+Succeeded", done.stdout, re.MULTILINE)
    assert (tmp_path / "wrap-states" / "cache").is_dir()


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to switch users")
def test_as_root_the_steps_switch_to_the_pipelines_uids_and_the_next_task_finds_their_owner(tmp_path: Path) -> None:
    out = shared_dir("wrap-run-out-")
    args = files(tmp_path, AS_UID, pipelinerun("as-uid", f"file://{tmp_path}/states/<<workspace>>", out))
    # The pytest directory is private to root: the step as uid 4321 cannot reach its script there.
    private = wrapresolver("run", *args, "--local-dir", str(tmp_path / "local"))
    assert private.returncode == 1
    assert "permission denied" in private.stdout and "--local-dir" in private.stdout
    done = wrapresolver("run", *args, "--local-dir", str(shared_dir("wrap-run-local-")))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "your steps as the UIDs the Pipeline names, the injected wrapresolver steps as root" in done.stdout
    assert (out / "uid").read_text().strip() == "4321"
    assert (out / "owner").read_text().strip() == "4321"


def test_an_unwritable_local_dir_is_one_error_line_naming_the_option(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    done = wrapresolver("run", *[a for f in EXAMPLE for a in ("-f", f)], "--target", f"file://{tmp_path}/s/<<workspace>>",
                        "--local-dir", str(blocker / "local"))
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert "--local-dir" in done.stderr and str(blocker) in done.stderr


def test_pipeline_params_reach_embedded_task_specs_only_as_tekton_propagates_them(tmp_path: Path) -> None:
    from wrapresolver.localrun import prepare

    pipeline = NOTIFY.replace("params: [{name: out, type: string}]",
                              "params: [{name: out, type: string}, {name: extra, type: string, default: x}]", 1)
    args = files(tmp_path, pipeline, pipelinerun("with-ref", f"file://{tmp_path}/s/<<workspace>>", tmp_path))
    plan = prepare(args[1::2], local_dir=tmp_path / "local")
    params = {t["name"]: [p["name"] for p in t.get("params") or []] for t in plan.pipeline["spec"]["tasks"]}
    assert params["make"] == ["out", "extra"]  # embedded: sees the Pipeline's params without passing them
    assert params["notify"] == ["out"]  # from a taskRef: only what the Pipeline passes
    make = next(t for t in plan.pipeline["spec"]["tasks"] if t["name"] == "make")
    assert make["params"][1] == {"name": "extra", "value": "$(params.extra)"}


def test_a_run_param_given_with_p_is_substituted_in_the_resolver_params_too(tmp_path: Path) -> None:
    out = shared_dir("wrap-run-out-")
    target = f"file://{tmp_path}/states/$(params.dest)-<<workspace>>"
    run = json.loads(pipelinerun("with-ref", target, out, dest="from-file"))
    args = files(tmp_path, NOTIFY, json.dumps(run))
    done = wrapresolver("run", *args, "-p", "dest=from-p", "--local-dir", str(tmp_path / "local"))
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"target file://{tmp_path}/states/from-p-<<workspace>>" in done.stdout
    assert (tmp_path / "states" / "from-p-src").is_dir() and not (tmp_path / "states" / "from-file-src").exists()
