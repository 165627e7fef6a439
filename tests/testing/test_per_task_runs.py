"""A run answered per-task moves the data exactly as the same run answered inline.

Each PipelineRun is resolved twice, with `task-resolution: inline` and `per-task`, and run by
the local executor; per-task, every wrapped task's `taskRef: {resolver: wrap}` is resolved
through `resolve` with the params Tekton would substitute, and the executor substitutes no
`$(context.pipelineRun.*)` in the Task it gets (Tekton does not, in a referenced Task).
What every task saw in its workspaces, and how it ended, must be the same.
"""

from __future__ import annotations

import asyncio
import json
import tarfile
import uuid
from pathlib import Path

import yaml

from tests.testing.test_executor import FAN_IN, WHEN_SKIPPED
from wrapresolver.answercache import AnswerCache
from wrapresolver.core.params import RunContext
from wrapresolver.resolve import resolve
from wrapresolver.sources import FileSource
from wrapresolver.testing.executor import SKIPPED, SUCCEEDED, LocalExecutor, PipelineRunResult

CONTEXTS = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: contexts}
spec:
  params: [{name: flavour, type: string, default: plain}]
  workspaces: [{name: src}]
  tasks:
    - name: write
      params: [{name: flavour, value: $(params.flavour)}]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        params: [{name: flavour}]
        workspaces: [{name: src}]
        steps:
          - name: write
            image: alpine
            script: |
              echo "$(context.pipelineRun.name) $(context.pipelineRun.namespace) $(context.pipeline.name)" \\
                > $(workspaces.src.path)/who
              echo "$(params.flavour)" > $(workspaces.src.path)/flavour
    - name: read
      runAfter: [write]
      workspaces: [{name: src, workspace: src}]
      taskSpec:
        workspaces: [{name: src}]
        steps:
          - name: read
            image: alpine
            script: |
              test "$(cat $(workspaces.src.path)/who)" = "the-run ci contexts"
              test "$(cat $(workspaces.src.path)/flavour)" = plain
"""


def seen(result: PipelineRunResult) -> dict[str, tuple[str, dict[str, str]]]:
    """Each task's status and every file its workspaces held at its end (the injected steps' own aside)."""
    out = {}
    for name, run in result.tasks.items():
        files = {}
        for ws, root in run.workspaces.items():
            for path in sorted(p for p in root.rglob("*") if p.is_file()):
                # A tar holds its files' mtimes: its member names are what the task saw.
                files[f"{ws}/{path.relative_to(root)}"] = (
                    " ".join(tarfile.open(path).getnames()) if path.suffix == ".tar" else path.read_text())
        out[name] = (run.status, files)
    return out


def run_both(source: str, tmp: Path, **run_params: str) -> tuple[PipelineRunResult, PipelineRunResult, int]:
    documents = [d for d in yaml.safe_load_all(source) if d]
    name = documents[0]["metadata"]["name"]
    results = []
    resolved_tasks = 0
    for mode in ("inline", "per-task"):
        config = {"task-resolution": mode}
        uid = str(uuid.uuid4())
        context = RunContext(name="the-run", namespace="ci", uid=uid)
        files = FileSource(documents)
        params = [{"name": "pipelineref", "value": name},
                  {"name": "workspaces", "value": "src"},
                  {"name": "target", "value": f"file://{tmp}/{mode}/<<workspace>>"}]
        answers = AnswerCache()
        answer = json.loads(asyncio.run(resolve(params, config, context, files, answers=answers)).data)

        def task_resolver(task: str, ref_params: dict, config=config, context=context, files=files,
                          answers=answers) -> dict:
            nonlocal resolved_tasks
            resolved_tasks += 1
            request = [{"name": k, "value": v} for k, v in ref_params.items()]
            return json.loads(asyncio.run(resolve(request, config, context, files, answers=answers)).data)

        executor = LocalExecutor(answer, params=run_params, name="the-run", namespace="ci", uid=uid,
                                 workdir=tmp / f"run-{mode}", task_resolver=task_resolver)
        results.append(executor.run())
    return results[0], results[1], resolved_tasks


def test_fan_in_and_finally_see_the_same_files_per_task_as_inline(tmp_path: Path) -> None:
    inline, per_task, resolved = run_both(FAN_IN, tmp_path)
    assert inline.status == SUCCEEDED, inline.log()
    assert seen(per_task) == seen(inline), per_task.log()
    assert resolved == len(inline.tasks)  # every task, the publishing finally task included, came by taskRef


def test_a_skipped_producer_is_bypassed_per_task_as_inline(tmp_path: Path) -> None:
    inline, per_task, resolved = run_both(WHEN_SKIPPED, tmp_path)
    assert inline.tasks["sign"].status == SKIPPED and inline.tasks["deploy"].status == SUCCEEDED, inline.log()
    assert seen(per_task) == seen(inline), per_task.log()
    # The skipped task is never resolved, as Tekton never creates its TaskRun.
    assert resolved == sum(1 for t in per_task.tasks.values() if t.status != SKIPPED) == len(per_task.tasks) - 1


def test_context_variables_reach_a_referenced_task_through_the_resolver(tmp_path: Path) -> None:
    inline, per_task, resolved = run_both(CONTEXTS, tmp_path)
    assert inline.status == SUCCEEDED, inline.log()
    assert per_task.status == SUCCEEDED, per_task.log()
    assert seen(per_task) == seen(inline)
