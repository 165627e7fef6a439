"""readOnly workspaces end to end: read-only for the task, as Tekton mounts them, and filled by fetch.

The executor mounts a workspace the Task declares `readOnly` read-only (a bind mount in a
mount namespace of the step's own), so a write fails with EROFS exactly where it would on
a cluster; the data comes through a real registry.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.fixtures.identities import NOBODY_UID, ForeignPython, shared_dir
from wrapresolver.render import render
from wrapresolver.testing.executor import FAILED, SKIPPED, SUCCEEDED, LocalExecutor, PipelineRunResult

PIPELINE = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: lint}
spec:
  workspaces: [{name: src}]
  tasks:
    - name: clone
      workspaces: [{name: out, workspace: src}]
      taskSpec:
        workspaces: [{name: out}]
        steps:
          - name: clone
            image: alpine
            script: |
              mkdir -p $(workspaces.out.path)/app
              echo 'int main;' > $(workspaces.out.path)/app/main.c
    - name: lint
      runAfter: [clone]
      workspaces: [{name: in, workspace: src}]
      taskSpec:
        workspaces: [{name: in, readOnly: true}]
        steps:
          - name: lint
            image: alpine
            securityContext: {runAsUser: 1000, runAsGroup: 1000}
            script: |
              test "$(cat $(workspaces.in.path)/app/main.c)" = 'int main;'
              echo read the sources
    - name: package
      runAfter: [lint]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: package
            image: alpine
            script: |
              test -f $(workspaces.src.path)/app/main.c
              names=$(ls $(workspaces.src.path))
              echo "$names" > $(workspaces.src.path)/listing
"""

WRITE = "echo findings > $(workspaces.in.path)/lint-report"


def pipeline(lint_script: str = "", binding_read_only: bool = False, sub_path: str = "", optional: bool = False) -> str:
    """The pipeline above, the lint step doing `lint_script` too, readOnly said where asked."""
    doc = yaml.safe_load(PIPELINE)
    lint = doc["spec"]["tasks"][1]
    step = lint["taskSpec"]["steps"][0]
    if lint_script:
        step["script"] += lint_script + "\n"
    if binding_read_only:
        lint["taskSpec"]["workspaces"] = [{"name": "in"}]
        lint["workspaces"][0]["readOnly"] = True
    if optional:
        doc["spec"]["workspaces"][0]["optional"] = True
    else:  # read-only as on a shared volume (access(2) says EROFS), with the data fetch put there
        step["script"] = "test ! -w $(workspaces.in.path)\n" + step["script"]
    if sub_path:
        lint["workspaces"][0]["subPath"] = sub_path
        step["script"] = step["script"].replace("/app/main.c", "/main.c")
    return yaml.safe_dump(doc)


def run(source: str, target: str, env: dict, tmp: Path, python: ForeignPython) -> PipelineRunResult:
    """Render for `target` and run; the lint step (and so its fetch) runs as UID 1000."""
    name = yaml.safe_load(source)["metadata"]["name"]
    run_doc = {
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": f"{name}-run"},
        "spec": {
            "pipelineRef": {"resolver": "wrap", "params": [
                {"name": "pipelineref", "value": name}, {"name": "target", "value": target},
            ]},
            "workspaces": [{"name": "src", "emptyDir": {}}],
        },
    }
    rewritten = yaml.safe_load(render([yaml.safe_load(source), run_doc], ["test", "test"]))
    executor = LocalExecutor(rewritten, name=f"{name}-run", uid=str(uuid.uuid4()), workdir=tmp / "run", env=env,
                             python=python.argv)
    return executor.run()


@pytest.fixture
def run_dir() -> Iterator[Path]:
    """A directory every UID can walk into, as the steps' emptyDirs need."""
    root = shared_dir("wrap-read-only-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def oci(registry, run_dir: Path, foreign_python: ForeignPython) -> tuple[str, dict, Path, ForeignPython]:
    target = f"oci://{registry.host}/ro/{uuid.uuid4().hex[:8]}-<<workspace>>"
    return target, {"DOCKER_CONFIG": str(run_dir / "none")}, run_dir, foreign_python


@pytest.mark.parametrize("form", ["task declaration", "pipeline task binding"])
def test_a_task_reading_its_read_only_workspace_sees_the_data_in_a_read_only_mount_and_succeeds(form, oci) -> None:
    result = run(pipeline(binding_read_only=form == "pipeline task binding"), *oci)
    assert result.status == SUCCEEDED, result.log()
    assert "read the sources" in result.tasks["lint"].log
    assert (result.tasks["package"].workspaces["src"] / "listing").read_text().split() == ["app"]


@pytest.mark.parametrize("form", ["task declaration", "pipeline task binding"])
def test_a_task_writing_into_its_read_only_workspace_fails_naming_task_workspace_and_path(
    form, oci,
) -> None:
    result = run(pipeline(WRITE, binding_read_only=form == "pipeline task binding"), *oci)
    assert result.status == FAILED
    lint = result.tasks["lint"]
    assert lint.status == FAILED
    assert "[wrap-fetch] exit 0" in lint.log and "read the sources" in lint.log  # the fetch worked, the write did not
    assert "[lint] exit 0" not in lint.log
    assert "Read-only file system" in lint.log and "workspaces/in/lint-report" in lint.log, lint.log
    assert result.tasks["package"].status == SKIPPED  # nothing downstream runs on a silently lost file


def test_a_sub_path_read_only_workspace_is_filled_in_the_directory_the_task_sees(oci) -> None:
    target, env, run_dir, python = oci
    result = run(pipeline(sub_path="app"), target, env, run_dir, python)
    assert result.status == SUCCEEDED, result.log()
    result = run(pipeline(WRITE, sub_path="app"), target, env, run_dir / "again", python)
    assert result.tasks["lint"].status == FAILED and "Read-only file system" in result.tasks["lint"].log


def test_a_write_into_a_read_only_optional_workspace_fails_the_task_at_its_store_step(oci) -> None:
    target, env, run_dir, python = oci
    result = run(pipeline(optional=True), target, env, run_dir, python)
    assert result.status == SUCCEEDED, result.log()
    assert "readOnly: unchanged, nothing stored" in result.tasks["lint"].log
    result = run(pipeline(WRITE, optional=True), target, env, run_dir / "again", python)
    lint = result.tasks["lint"]
    assert lint.status == FAILED and "[lint] exit 0" in lint.log
    assert "task 'lint' wrote into workspace 'src', which it declares readOnly: lint-report" in lint.log, lint.log
    assert result.tasks["package"].status == SKIPPED


# ---- the executor mounts workspaces as Tekton does ----

PLAIN = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: plain}
spec:
  workspaces: [{name: src}]
  tasks:
    - name: only
      workspaces: [{name: in, workspace: src, subPath: part}]
      taskSpec:
        workspaces: [{name: in, readOnly: true}]
        steps:
          - name: through-the-volume
            image: alpine
            volumeMounts: [{name: $(workspaces.in.volume), mountPath: /whole}]
            script: echo via-volume > /whole/part/seen
          - name: read
            image: alpine
            workingDir: $(workspaces.in.path)
            script: |
              test "$(cat seen)" = via-volume
              echo nope > written-here
"""


def test_executor_mounts_a_read_only_workspace_read_only_and_its_volume_where_a_step_names_it(tmp_path: Path) -> None:
    result = LocalExecutor(yaml.safe_load(PLAIN), workdir=tmp_path / "run").run()
    only = result.tasks["only"]
    assert only.status == FAILED
    assert "[through-the-volume] exit 0" in only.log
    assert "[read] exit 0" not in only.log and "written-here: Read-only file system" in only.log, only.log
    assert (only.workspaces["in"] / "seen").read_text() == "via-volume\n"
    assert not (only.workspaces["in"] / "written-here").exists()


def test_executor_not_running_as_root_still_mounts_read_only_in_a_user_namespace(
        run_dir: Path, foreign_python: ForeignPython) -> None:
    probe = subprocess.run(["unshare", "--map-root-user", "--mount", "true"], user=NOBODY_UID, group=NOBODY_UID,
                           extra_groups=[], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip(f"unprivileged user namespaces are not available here: {probe.stderr.strip()}")
    (run_dir / "pipeline.yaml").write_text(PLAIN)
    code = (
        "import sys, yaml; from pathlib import Path; from wrapresolver.testing.executor import LocalExecutor\n"
        "root = Path(sys.argv[1])\n"
        "r = LocalExecutor(yaml.safe_load((root / 'pipeline.yaml').read_text()), workdir=root / 'run').run()\n"
        "print(r.tasks['only'].log)\n"
    )
    done = subprocess.run([*foreign_python.argv, "-c", code, str(run_dir)], user=NOBODY_UID, group=NOBODY_UID,
                          extra_groups=[], env={"PATH": os.environ["PATH"]}, cwd="/", capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "[through-the-volume] exit 0" in done.stdout, done.stdout
    assert "written-here: Read-only file system" in done.stdout, done.stdout
