"""End to end without a cluster: rewritten Pipelines run by the local executor, data through real backends.

Each task runs in fresh empty directories, so the only way a file written by one task can
reach the next is the injected fetch/store steps and the backend behind them.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import yaml

from wrapresolver.render import render
from wrapresolver.testing.executor import FAILED, SKIPPED, SUCCEEDED, LocalExecutor, PipelineRunResult

FAN_IN = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: fan-in}
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
              cd $(workspaces.out.path)
              mkdir -p app docs
              echo 'int main;' > app/main.c
              echo readme > docs/README
              echo old > docs/OLD
              echo shared-from-clone > shared.txt
    - name: compile
      runAfter: [clone]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: compile
            image: gcc
            script: |
              cd $(workspaces.src.path)
              test -f app/main.c
              echo object > app/main.o
              rm app/main.c
              echo from-compile > shared.txt
    - name: docs
      runAfter: [clone]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: docs
            image: alpine
            script: |
              cd $(workspaces.src.path)
              test -f docs/README
              rm docs/OLD
              echo html > docs/index.html
              echo from-docs > shared.txt
    - name: package
      runAfter: [compile, docs]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: check-merge
            image: alpine
            script: |
              cd $(workspaces.src.path)
              test -f app/main.o && test ! -e app/main.c
              test -f docs/index.html && test ! -e docs/OLD && test -f docs/README
              test "$(cat shared.txt)" = from-docs
              tar cf release.tar app docs
  finally:
    - name: report
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: report
            image: alpine
            script: |
              cd $(workspaces.src.path)
              test -f release.tar
              ls -R . > listing.txt
"""

WHEN_SKIPPED = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: when-skipped}
spec:
  params: [{name: sign, type: string, default: "false"}]
  workspaces: [{name: src}]
  tasks:
    - name: build
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: build, image: alpine, script: "echo bin > $(workspaces.src.path)/app"}]
    - name: sign
      runAfter: [build]
      when: [{input: "$(params.sign)", operator: in, values: ["true"]}]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: sign, image: alpine, script: "echo sig > $(workspaces.src.path)/app.sig"}]
    - name: deploy
      runAfter: [sign]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: deploy
            image: alpine
            script: |
              test -f $(workspaces.src.path)/app
              files=$(ls $(workspaces.src.path))
              echo $files > $(workspaces.src.path)/deployed
"""

RETRY = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: retry}
spec:
  workspaces: [{name: src}]
  tasks:
    - name: seed
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: seed, image: alpine, script: "echo seed > $(workspaces.src.path)/seed"}]
    - name: flaky
      runAfter: [seed]
      retries: 2
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: work
            image: alpine
            script: |
              cd $(workspaces.src.path)
              test -f seed
              test ! -e partial || { echo "a failed attempt leaked into the retry"; exit 1; }
              echo "attempt $(context.task.retry-count)" > partial
              test "$(context.task.retry-count)" -ge 1
              echo done > result
    - name: check
      runAfter: [flaky]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: check
            image: alpine
            script: |
              cd $(workspaces.src.path)
              test "$(cat partial)" = "attempt 1" && test -f result && test -f seed
"""


def pipelinerun(pipeline: str, target: str, **params: str) -> str:
    extra = "".join(f"\n      - {{name: {k}, value: {v!r}}}" for k, v in params.items())
    return f"""
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {{name: {pipeline}-run}}
spec:
  pipelineRef:
    resolver: wrap
    params:
      - {{name: pipelineref, value: {pipeline}}}
      - {{name: target, value: "{target}"}}{extra}
  workspaces: [{{name: src, emptyDir: {{}}}}]
"""


def run_pipeline(source: str, target: str, tmp: Path, *, env=None, run_params=None, **options: str) -> PipelineRunResult:
    documents = list(yaml.safe_load_all(source)) + [yaml.safe_load(pipelinerun(
        yaml.safe_load(source)["metadata"]["name"], target, **options,
    ))]
    rewritten = yaml.safe_load(render(documents, ["test"] * len(documents)))
    executor = LocalExecutor(
        rewritten, params=run_params, name=rewritten["metadata"]["name"] + "-run",
        uid=str(uuid.uuid4()), workdir=tmp / "run", env=env,
    )
    result = executor.run()
    return result


# ---- backends under test: each yields (target template, options, env) ----

@pytest.fixture(params=["file", "oci", "s3", "gcs", "rsync", "rsync-ssh"])
def backend(request, tmp_path: Path) -> tuple[str, dict, dict]:
    unique = uuid.uuid4().hex[:8]
    if request.param == "file":
        return f"file://{tmp_path}/store/<<workspace>>", {}, {}
    if request.param == "oci":
        registry = request.getfixturevalue("registry")
        return f"oci://{registry.host}/e2e/{unique}-<<workspace>>", {}, {"DOCKER_CONFIG": str(tmp_path / "none")}
    if request.param == "s3":
        s3 = request.getfixturevalue("s3_server")
        return f"s3://{s3.new_bucket()}/e2e/{unique}-<<workspace>>", s3.options(), s3.env()
    if request.param == "gcs":
        gcs = request.getfixturevalue("gcs_server")
        return f"gs://{gcs.new_bucket()}/e2e/{unique}-<<workspace>>", {}, {"STORAGE_EMULATOR_HOST": gcs.url}
    if request.param == "rsync":
        daemon = request.getfixturevalue("rsync_daemon")
        return f"{daemon.url}/e2e/{unique}-<<workspace>>", {}, {"RSYNC_PASSWORD": daemon.password}
    if request.param == "rsync-ssh":
        ssh = request.getfixturevalue("ssh_server")
        target = f"ssh://{ssh.user}@127.0.0.1:{ssh.port}{ssh.data_dir}/e2e/{unique}-<<workspace>>"
        return target, {"credentials-secret": "ssh-key"}, {"WRAPRESOLVER_SSH_KEY": str(ssh.client_key)}
    raise AssertionError(request.param)


def test_fan_in_pipeline_sees_merged_files_and_deletions_from_both_branches(backend, tmp_path: Path) -> None:
    target, options, env = backend
    result = run_pipeline(FAN_IN, target, tmp_path, env=env, **options)
    assert result.status == SUCCEEDED, result.log()
    assert result.tasks["report"].status == SUCCEEDED, result.log()
    # The two branches really started from clone's files in their own empty directories.
    assert (result.tasks["compile"].workspaces["src"] / "app" / "main.o").is_file()
    assert not (result.tasks["compile"].workspaces["src"] / "docs" / "index.html").exists()


def test_fan_in_publishes_the_final_state_to_the_exact_target(tmp_path: Path) -> None:
    from wrapresolver.backends.registry import get_backend
    from wrapresolver.steps.open_target import open_steps

    result = run_pipeline(FAN_IN, f"file://{tmp_path}/store/<<workspace>>", tmp_path)
    assert result.status == SUCCEEDED, result.log()
    out = tmp_path / "pulled"
    with open_steps(get_backend("file"), f"file://{tmp_path}/store/src", {}) as store:
        store.pull(out)
    # The finally task `report` wrote last, after package: its listing is in the final state.
    assert (out / "release.tar").is_file() and (out / "listing.txt").is_file()


def test_a_when_skipped_producer_is_bypassed_and_the_next_task_sees_its_input(backend, tmp_path: Path) -> None:
    target, options, env = backend
    result = run_pipeline(WHEN_SKIPPED, target, tmp_path, env=env, **options)
    assert result.tasks["sign"].status == SKIPPED
    assert result.tasks["deploy"].status == SUCCEEDED, result.log()
    assert (result.tasks["deploy"].workspaces["src"] / "deployed").read_text().split() == ["app"]


def test_when_the_producer_runs_its_output_is_seen(tmp_path: Path) -> None:
    result = run_pipeline(WHEN_SKIPPED, f"file://{tmp_path}/s/<<workspace>>", tmp_path, run_params={"sign": "true"})
    assert result.tasks["sign"].status == SUCCEEDED, result.log()
    assert (result.tasks["deploy"].workspaces["src"] / "deployed").read_text().split() == ["app", "app.sig"]


def test_a_retried_task_starts_again_from_its_input_not_from_the_failed_attempt(tmp_path: Path) -> None:
    result = run_pipeline(RETRY, f"file://{tmp_path}/store/<<workspace>>", tmp_path)
    assert result.tasks["flaky"].attempts == 2
    assert result.status == SUCCEEDED, result.log()


def test_a_failed_task_stores_nothing_and_its_dependents_do_not_run(tmp_path: Path) -> None:
    failing = RETRY.replace("retries: 2", "retries: 0")
    result = run_pipeline(failing, f"file://{tmp_path}/store/<<workspace>>", tmp_path)
    assert result.status == FAILED
    assert result.tasks["flaky"].status == FAILED
    assert result.tasks["check"].status == SKIPPED
    assert "wrap-store" not in result.tasks["flaky"].log


WHEN_IN_A_CHAIN = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: when-chain}
spec:
  params: [{name: lint, type: string, default: "false"}]
  workspaces: [{name: src}]
  tasks:
""" + "".join(
    f"""
    - name: {name}
      {'runAfter: [' + previous + ']' if previous else ''}
      {'when: [{input: "$(params.lint)", operator: in, values: ["true"]}]' if name == "lint" else ''}
      workspaces: [{{name: src, workspace: src}}]
      taskSpec:
        workspaces: [{{name: src}}]
        steps:
          - name: work
            image: alpine
            script: |
              cd $(workspaces.src.path)
              ls > seen-by-{name}
              echo {name} > {name}
"""
    for previous, name in zip(["", "clone", "build", "lint", "test"], ["clone", "build", "lint", "test", "package"], strict=True)
)


def test_a_when_in_the_middle_of_a_chain_is_bypassed_and_the_chain_goes_on(backend, tmp_path: Path) -> None:
    target, options, env = backend
    result = run_pipeline(WHEN_IN_A_CHAIN, target, tmp_path, env=env, **options)
    assert result.status == SUCCEEDED, result.log()
    assert result.tasks["lint"].status == SKIPPED
    # test fell back past lint to build; package read test's state, which holds build's.
    assert set((result.tasks["test"].workspaces["src"] / "seen-by-test").read_text().split()) == {
        "clone", "build", "seen-by-clone", "seen-by-build", "seen-by-test"}
    seen = set((result.tasks["package"].workspaces["src"] / "seen-by-package").read_text().split())
    assert {"clone", "build", "test"} <= seen and "lint" not in seen


def test_the_chain_sees_the_guarded_task_when_it_runs(tmp_path: Path) -> None:
    result = run_pipeline(WHEN_IN_A_CHAIN, f"file://{tmp_path}/s/<<workspace>>", tmp_path, run_params={"lint": "true"})
    assert result.tasks["lint"].status == SUCCEEDED, result.log()
    seen = set((result.tasks["package"].workspaces["src"] / "seen-by-package").read_text().split())
    assert {"clone", "build", "lint", "test"} <= seen


FINALLY_AFTER_FAILURE = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: finally-after-failure}
spec:
  workspaces: [{name: src}]
  tasks:
    - name: seed
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: seed, image: alpine, script: "echo seed > $(workspaces.src.path)/seed"}]
    - name: broken
      runAfter: [seed]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: work, image: alpine, script: "echo half > $(workspaces.src.path)/partial; exit 1"}]
    - name: after
      runAfter: [broken]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps: [{name: work, image: alpine, script: "echo after > $(workspaces.src.path)/after"}]
  finally:
    - name: report
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: report
            image: alpine
            script: |
              cd $(workspaces.src.path)
              ls > seen-by-report
"""


def test_a_finally_task_after_a_failed_producer_starts_from_the_last_state_stored(backend, tmp_path: Path) -> None:
    target, options, env = backend
    result = run_pipeline(FINALLY_AFTER_FAILURE, target, tmp_path, env=env, **options)
    assert result.status == FAILED
    assert result.tasks["broken"].status == FAILED and result.tasks["after"].status == SKIPPED
    assert result.tasks["report"].status == SUCCEEDED, result.log()
    # report's input is the leaf `after`, which never ran; it falls back past the failed
    # `broken` (whose half-written file was never stored) to `seed`.
    assert (result.tasks["report"].workspaces["src"] / "seen-by-report").read_text().split() == ["seed", "seen-by-report"]
    assert "after has no stored state" in result.tasks["report"].log and "broken has no stored state" in result.tasks["report"].log
