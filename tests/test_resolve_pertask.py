"""Large Pipelines answered per-task through `resolve`: the Pipeline request, then one request per task."""

import asyncio
import hashlib
import json
import re

import pytest

from wrapresolver.answercache import AnswerCache
from wrapresolver.core.params import RunContext
from wrapresolver.errors import WrapError
from wrapresolver.resolve import resolve
from wrapresolver.sources import FileSource

CONTEXT = RunContext(name="run-1", namespace="ci", uid="3f2a-77")
PARAMS = [{"name": "pipelineref", "value": "chain"}, {"name": "workspaces", "value": "src"},
          {"name": "target", "value": "oci://r.example/ci/<<workspace>>"}]
PER_TASK = {"task-resolution": "per-task"}


def chain(tasks: int = 3, script: str = "echo $(context.pipelineRun.name) > $(workspaces.src.path)/x") -> dict:
    return {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "chain"}, "spec": {
        "params": [{"name": "flags", "type": "array", "default": ["-v"]}],
        "workspaces": [{"name": "src"}],
        "tasks": [
            *({"name": f"t{i:04d}", "runAfter": [f"t{i - 1:04d}"] if i else [],
               "workspaces": [{"name": "src", "workspace": "src"}],
               "taskSpec": {"workspaces": [{"name": "src"}],
                            "steps": [{"name": "s", "image": "alpine", "args": ["$(params.flags[*])"],
                                       "script": script}]}}
              for i in range(tasks)),
            {"name": "lint", "taskSpec": {"steps": [{"name": "l", "image": "alpine", "script": "true"}]}},
        ]}}


def run(coro):
    return asyncio.run(coro)


def task_params(pipeline_answer: dict, task: str) -> list[dict]:
    """The per-task request's params as Tekton makes them: the taskRef's, Pipeline defaults substituted."""
    spec = pipeline_answer["spec"]
    defaults = {p["name"]: p.get("default") for p in spec["params"]}
    ptask = next(t for t in [*spec["tasks"], *spec.get("finally", [])] if t["name"] == task)
    out = []
    for p in ptask["taskRef"]["params"]:
        value = p["value"]
        for name, default in defaults.items():
            value = value.replace(f"$(params.{name})", str(default))
        out.append({"name": p["name"], "value": value})
    return out


class CountingSource(FileSource):
    def __init__(self, documents):
        super().__init__(documents)
        self.fetches = 0

    async def pipeline(self, ref, namespace):
        self.fetches += 1
        return await super().pipeline(ref, namespace)


def test_a_small_pipeline_stays_inline_byte_for_byte():
    auto = run(resolve(PARAMS, {}, CONTEXT, FileSource([chain()])))
    inline = run(resolve(PARAMS, {"task-resolution": "inline"}, CONTEXT, FileSource([chain()])))
    assert auto == inline
    assert "taskRef" not in auto.data.decode()


def test_each_per_task_request_is_answered_with_the_inline_answers_spec_for_that_task():
    inline = json.loads(run(resolve(PARAMS, {"task-resolution": "inline"}, CONTEXT, FileSource([chain()]))).data)
    resolution = run(resolve(PARAMS, PER_TASK, CONTEXT, FileSource([chain()])))
    answer = json.loads(resolution.data)
    assert resolution.annotations["wrapresolver.dev/task-resolution"] == "per-task"
    assert resolution.ref_source["digest"]["sha256"] == hashlib.sha256(resolution.data).hexdigest()
    lint = next(t for t in answer["spec"]["tasks"] if t["name"] == "lint")
    assert lint == next(t for t in inline["spec"]["tasks"] if t["name"] == "lint")
    wrapped = [t["name"] for t in [*answer["spec"]["tasks"], *answer["spec"].get("finally", [])] if "taskRef" in t]
    assert wrapped == ["t0000", "t0001", "t0002"]
    for name in wrapped:
        task = run(resolve(task_params(answer, name), PER_TASK, CONTEXT, FileSource([chain()])))
        obj = json.loads(task.data)
        embedded = next(t for t in inline["spec"]["tasks"] if t["name"] == name)["taskSpec"]
        assert obj["kind"] == "Task" and obj["metadata"]["name"] == name
        assert obj["spec"]["steps"] == json.loads(json.dumps(embedded["steps"]).replace(
            "$(context.pipelineRun.name)", "run-1"))
        assert {"name": "flags", "type": "array"} in obj["spec"]["params"]
        assert task.ref_source["uri"] == resolution.ref_source["uri"]
        assert task.ref_source["digest"]["sha256"] == hashlib.sha256(task.data).hexdigest()
        assert task.annotations["wrapresolver.dev/task-resolution"] == "task"


def test_a_changed_pipeline_fails_the_per_task_request_telling_to_rerun():
    answer = json.loads(run(resolve(PARAMS, PER_TASK, CONTEXT, FileSource([chain()]))).data)
    changed = chain(script="echo changed > $(workspaces.src.path)/x")
    with pytest.raises(WrapError, match=r"'t0001' of Pipeline 'chain'.*changed since this PipelineRun started"
                                        r".*mix of two versions.*re-run") as info:
        run(resolve(task_params(answer, "t0001"), PER_TASK, CONTEXT, FileSource([changed])))
    assert info.value.reason == "PipelineChanged"
    with pytest.raises(WrapError, match="changed since this PipelineRun started"):  # the settings count too
        run(resolve(task_params(answer, "t0001"), {**PER_TASK, "chains-results": "false"}, CONTEXT,
                    FileSource([chain()])))


def test_the_cache_answers_a_runs_tasks_without_fetching_and_never_across_pins():
    answers = AnswerCache()
    source = CountingSource([chain()])
    answer = json.loads(run(resolve(PARAMS, PER_TASK, CONTEXT, source, answers=answers)).data)
    uncached = run(resolve(task_params(answer, "t0002"), PER_TASK, CONTEXT, FileSource([chain()])))
    cached = run(resolve(task_params(answer, "t0002"), PER_TASK, CONTEXT, source, answers=answers))
    assert source.fetches == 1 and answers.hits == 1
    assert cached == uncached
    # Another pin (the Pipeline changed, a new run started from it) is a miss: made again, and checked.
    other = task_params(answer, "t0002")
    other[1]["value"] = "0" * 64
    with pytest.raises(WrapError, match="changed since this PipelineRun started"):
        run(resolve(other, PER_TASK, CONTEXT, source, answers=answers))
    assert source.fetches == 2
    # Another run's request with the same pin does not get this run's answer either.
    with pytest.raises(WrapError, match="changed since this PipelineRun started"):
        run(resolve(task_params(answer, "t0002"), PER_TASK, RunContext(name="run-2", namespace="ci", uid="9"),
                    source, answers=answers))


def test_a_2000_task_chain_is_answered_per_task_and_fits():
    resolution = run(resolve(PARAMS, {}, CONTEXT, FileSource([chain(2000)])))
    assert resolution.annotations["wrapresolver.dev/task-resolution"] == "per-task"
    assert len(resolution.data) < 1024 * 1024


def test_a_per_task_answer_that_still_does_not_fit_is_refused_naming_sizes_and_what_to_do():
    huge = chain(2500)
    for t in huge["spec"]["tasks"]:
        t["params"] = [{"name": f"p{i}", "value": "v" * 40} for i in range(8)]
    with pytest.raises(WrapError, match=r"'chain', even with each of its 2500 wrapped tasks resolved on its own"
                                        r".* is \d\.\d\d MiB base64-encoded.*split the Pipeline") as info:
        run(resolve(PARAMS, {}, CONTEXT, FileSource([huge])))
    assert info.value.reason == "AnswerTooLarge"


def test_a_pipeline_declaring_wrap_pin_is_refused_even_when_small():
    pipeline = chain()
    pipeline["spec"]["params"].append({"name": "wrap-pin", "default": "x"})
    with pytest.raises(WrapError, match="reserves these names"):
        run(resolve(PARAMS, {}, CONTEXT, FileSource([pipeline])))


def test_chains_results_false_drops_the_declared_results_and_their_paths():
    with_results = json.loads(run(resolve(PARAMS, {}, CONTEXT, FileSource([chain()]))).data)
    without = json.loads(run(resolve(PARAMS, {"chains-results": "false"}, CONTEXT, FileSource([chain()]))).data)
    assert "ARTIFACT_" in json.dumps(with_results)
    assert "ARTIFACT_" not in json.dumps(without)
    assert without["spec"]["tasks"][-1] == with_results["spec"]["tasks"][-1]  # the unwrapped task: untouched
    with pytest.raises(WrapError, match="`chains-results`.*`true`.*or `false`"):
        run(resolve(PARAMS, {"chains-results": "no"}, CONTEXT, FileSource([chain()])))


def test_a_per_task_request_without_its_params_is_refused():
    with pytest.raises(WrapError, match="needs the string params `wrap-task`, `wrap-pin` and `wrap-request`"):
        run(resolve([{"name": "wrap-task", "value": "t0000"}], PER_TASK, CONTEXT, FileSource([chain()])))


def test_a_per_task_answer_whose_pipelinerun_would_not_fit_is_refused_naming_what_it_stores():
    # Each taskRef carries the request's params once Tekton substitutes them into status.pipelineSpec.
    deep = "file:///srv/" + "/".join(["d" * 100] * 9) + "/<<workspace>>"
    long_target = [{**p, "value": deep} if p["name"] == "target" else p for p in PARAMS]
    with pytest.raises(WrapError, match=r"fits its ResolutionRequest .* but the PipelineRun would store about "
                                        r"\d\.\d\d MiB .*shorten the PipelineRun's resolver params") as info:
        run(resolve(long_target, {}, CONTEXT, FileSource([chain(2000)])))
    assert info.value.reason == "AnswerTooLarge"


def rich_pipeline() -> dict:
    """Fan-in, a result reference, `when`, `finally`, propagated params and a propagated workspace."""
    def task(name, script, **extra):
        return {"name": name, **extra, "workspaces": [{"name": "src", "workspace": "src"}],
                "taskSpec": {"workspaces": [{"name": "src"}], "results": [{"name": "out"}],
                             "steps": [{"name": "s", "image": "alpine", "script": script}]}}
    return {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "rich"}, "spec": {
        "params": [{"name": "flags", "type": "array", "default": ["-v"]}, {"name": "mode", "default": "fast"}],
        "workspaces": [{"name": "src"}, {"name": "notes"}],
        "tasks": [
            task("a", "echo $(params.mode) > $(results.out.path)"),
            task("b", "cat $(workspaces.notes.path)/n", runAfter=["a"]),
            task("c", "echo $(params.flags[*]) $(params.level)", params=[
                {"name": "level", "value": "$(tasks.a.results.out)"}],
                when=[{"input": "$(params.mode)", "operator": "in", "values": ["fast"]}]),
            task("d", "ls", runAfter=["b", "c"]),
        ],
        "finally": [task("f", "echo $(context.pipelineRun.name)")]}}


def test_per_task_answers_of_a_rich_pipeline_keep_tektons_rules_for_pipelines_and_referenced_tasks():
    from tests.tekton_rules import problems, task_spec_problems

    params = [{"name": "pipelineref", "value": "rich"}, {"name": "workspaces", "value": "src"},
              {"name": "target", "value": "oci://r.example/ci/<<workspace>>"}]
    answer = json.loads(run(resolve(params, PER_TASK, CONTEXT, FileSource([rich_pipeline()]))).data)
    assert problems(answer) == []
    spec = answer["spec"]
    pipeline_params = {p["name"] for p in spec["params"]}
    for ptask in [*spec["tasks"], *spec["finally"]]:
        assert "taskRef" in ptask, ptask["name"]
        for p in ptask.get("params", []):  # what the pipeline task passes is the Pipeline's
            for name in re.findall(r"\$\(params\.([\w-]+)", json.dumps(p["value"])):
                assert name in pipeline_params
        task = json.loads(run(resolve(task_params(answer, ptask["name"]), PER_TASK, CONTEXT,
                                      FileSource([rich_pipeline()]))).data)
        # A referenced Task gets nothing propagated: everything it uses, it declares.
        assert task_spec_problems(task["spec"], ptask, set()) == [], ptask["name"]
        declared = {p["name"] for p in task["spec"].get("params", [])}
        used = set(re.findall(r"\$\(params\.([\w-]+)", json.dumps(task["spec"])))
        assert used <= declared, (ptask["name"], used - declared)
        passed = {p["name"] for p in ptask.get("params", [])}
        assert {p["name"] for p in task["spec"].get("params", []) if "default" not in p} <= passed
        assert "$(context." not in json.dumps(task["spec"])
    c = next(t for t in spec["tasks"] if t["name"] == "c")
    assert {"name": "flags", "value": "$(params.flags[*])"} in c["params"]
    b = next(t for t in spec["tasks"] if t["name"] == "b")
    assert {"name": "notes", "workspace": "notes"} in b["workspaces"]


def test_a_per_task_answer_lists_each_task_request_as_tekton_will_make_it_with_its_answer() -> None:
    """What the controller creates answered (controller.taskrequests): the params Tekton will
    send for each taskRef, in the Pipeline's order, and the answer that request gets."""
    source = FileSource([chain(4)])
    answer = run(resolve(PARAMS, PER_TASK, CONTEXT, source))
    pipeline = json.loads(answer.data)
    wrapped = [t["name"] for t in pipeline["spec"]["tasks"] if "taskRef" in t]
    assert [r.task for r in answer.task_requests] == wrapped == ["t0000", "t0001", "t0002", "t0003"]
    for request in answer.task_requests:
        params = task_params(pipeline, request.task)
        assert list(request.params) == params
        asked = run(resolve(params, PER_TASK, CONTEXT, source))
        assert (request.answer.data, request.answer.ref_source) == (asked.data, asked.ref_source)


def test_an_inline_answer_has_no_task_requests() -> None:
    assert run(resolve(PARAMS, {}, CONTEXT, FileSource([chain(2)]))).task_requests == ()
