import pytest

from wrapresolver.core import pertask
from wrapresolver.errors import ParamError, WrapError


def inline_answer():
    """An inline answer as resolve makes it: two wrapped tasks, one plain one, a finally."""
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "big", "annotations": {"wrapresolver.dev/storage": "[]"}},
        "spec": {
            "params": [{"name": "flags", "type": "array", "default": ["-v"]},
                       {"name": "conf", "type": "object", "properties": {"a": {"type": "string"}},
                        "default": {"a": "x"}},
                       {"name": "greeting", "default": "hi"}],
            "workspaces": [{"name": "src"}, {"name": "notes"}],
            "tasks": [
                {"name": "make", "retries": 2, "when": [{"input": "a", "operator": "in", "values": ["a"]}],
                 "params": [{"name": "level", "value": "3"}],
                 "workspaces": [{"name": "src", "workspace": "src"}],
                 "taskSpec": {
                     "metadata": {"labels": {"team": "x"}},
                     "params": [{"name": "level"}],
                     "workspaces": [{"name": "src"}],
                     "steps": [{"name": "wrap-fetch", "image": "w", "args": ["fetch", "$(context.pipelineRun.uid)"]},
                               {"name": "s", "image": "a", "args": ["$(params.flags[*])", "$(params.conf.a)",
                                                                  "$(params.level)", "$(params.greeting)",
                                                                  "$(workspaces.notes.path)",
                                                                  "$(context.pipelineRun.name)",
                                                                  "$(context.pipeline.name)"]}]}},
                {"name": "plain", "runAfter": ["make"], "taskRef": {"name": "other"}},
            ],
            "finally": [
                {"name": "wrap-publish", "when": [{"input": "$(tasks.status)", "operator": "in",
                                                   "values": ["Succeeded"]}],
                 "taskSpec": {"steps": [{"name": "wrap-publish", "image": "w",
                                         "args": ["publish", "$(context.pipelineRun.namespace)"]}]}},
            ],
        },
    }


def test_wrapped_tasks_become_taskrefs_and_everything_else_stays_as_the_inline_answer_has_it():
    before = inline_answer()
    out = pertask.per_task_pipeline(before, ["make", "wrap-publish"], "ab" * 32, '{"pipelineref":"big"}')
    assert before == inline_answer()  # the inline answer is not edited
    make, plain = out["spec"]["tasks"]
    assert plain == inline_answer()["spec"]["tasks"][1]
    assert "taskSpec" not in make and make["retries"] == 2 and make["when"] == before["spec"]["tasks"][0]["when"]
    assert make["taskRef"] == {"resolver": "wrap", "params": [
        {"name": "wrap-task", "value": "make"},
        {"name": "wrap-pin", "value": "$(params.wrap-pin)"},
        {"name": "wrap-request", "value": "$(params.wrap-request)"}]}
    assert out["spec"]["finally"][0]["taskRef"]["params"][0] == {"name": "wrap-task", "value": "wrap-publish"}
    assert out["spec"]["params"][-2:] == [
        {"name": "wrap-pin", "type": "string", "default": "ab" * 32},
        {"name": "wrap-request", "type": "string", "default": '{"pipelineref":"big"}'}]
    assert out["metadata"] == before["metadata"]


def test_pipeline_params_a_task_uses_without_declaring_are_passed_and_declared_with_their_type():
    answer = inline_answer()
    out = pertask.per_task_pipeline(answer, ["make"], "p", "{}")
    passed = {p["name"]: p["value"] for p in out["spec"]["tasks"][0]["params"]}
    assert passed == {"level": "3", "conf": "$(params.conf[*])", "flags": "$(params.flags[*])",
                      "greeting": "$(params.greeting)"}
    task = pertask.task_answer(answer, "make", pertask.TaskContext("run-1", "ci", "u-1"))
    declared = {p["name"]: p for p in task["spec"]["params"]}
    assert declared["flags"]["type"] == "array" and declared["greeting"]["type"] == "string"
    assert declared["conf"] == {"name": "conf", "type": "object", "properties": {"a": {"type": "string"}}}
    assert declared["level"] == {"name": "level"}  # the task's own declaration is kept


def test_a_pipeline_workspace_the_spec_uses_without_binding_is_bound_and_declared():
    answer = inline_answer()
    out = pertask.per_task_pipeline(answer, ["make"], "p", "{}")
    assert {"name": "notes", "workspace": "notes"} in out["spec"]["tasks"][0]["workspaces"]
    task = pertask.task_answer(answer, "make", pertask.TaskContext())
    assert [w["name"] for w in task["spec"]["workspaces"]] == ["src", "notes"]


def test_the_task_comes_with_the_context_variables_tekton_substitutes_only_in_embedded_specs():
    task = pertask.task_answer(inline_answer(), "make", pertask.TaskContext("run-1", "ci", "u-1"))
    assert task["apiVersion"] == "tekton.dev/v1" and task["kind"] == "Task"
    assert task["metadata"] == {"name": "make", "labels": {"team": "x"}}
    assert "metadata" not in task["spec"]  # a Task's spec has none: strict decoding would refuse it
    assert task["spec"]["steps"][0]["args"] == ["fetch", "u-1"]
    assert task["spec"]["steps"][1]["args"][-2:] == ["run-1", "big"]
    publish = pertask.task_answer(inline_answer(), "wrap-publish", pertask.TaskContext("run-1", "ci", "u-1"))
    assert publish["spec"]["steps"][0]["args"] == ["publish", "ci"]


def test_an_unknown_context_value_stays_a_variable():
    task = pertask.task_answer(inline_answer(), "make", pertask.TaskContext(pipelinerun="run-1"))
    assert task["spec"]["steps"][0]["args"] == ["fetch", "$(context.pipelineRun.uid)"]


def test_a_task_the_answer_does_not_wrap_is_refused():
    for name in ("plain", "nope"):
        with pytest.raises(WrapError, match=f"{name!r} is not a wrapped task of Pipeline 'big'") as info:
            pertask.task_answer(inline_answer(), name, pertask.TaskContext())
        assert info.value.reason == pertask.REASON_UNKNOWN_TASK


def test_the_request_text_never_holds_a_variable_tekton_would_substitute_and_reads_back_the_same():
    params = [{"name": "target", "value": "oci://r/$(context.pipelineRun.name)/x"},
              {"name": "workspaces", "value": ["a", "b"]}, {"name": "pipelineref", "value": "p"}]
    text = pertask.request_text(params)
    assert "$(" not in text
    assert sorted(pertask.request_params(text), key=lambda p: p["name"]) == sorted(params, key=lambda p: p["name"])
    with pytest.raises(ParamError, match="wrap-request"):
        pertask.request_params("[1]")


def test_the_pin_is_the_sha256_of_the_inline_bytes():
    assert pertask.pin_of(b"{}") == "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"


@pytest.mark.parametrize(("mode", "size", "wrapped", "per_task"), [
    ("auto", pertask.INLINE_BUDGET, ["a"], False),
    ("auto", pertask.INLINE_BUDGET + 1, ["a"], True),
    ("auto", 10 * pertask.INLINE_BUDGET, [], False),
    ("inline", 10 * pertask.INLINE_BUDGET, ["a"], False),
    ("per-task", 10, ["a"], True),
])
def test_per_task_only_past_the_budget_or_when_asked_and_only_with_wrapped_tasks(mode, size, wrapped, per_task):
    assert pertask.wants_per_task(mode, size, wrapped) is per_task


def test_task_resolution_takes_three_values():
    assert pertask.mode_of({}) == "auto"
    assert pertask.mode_of({"task-resolution": "per-task"}) == "per-task"
    with pytest.raises(ParamError, match="`task-resolution` of the ConfigMap is 'pertask'; it is one of auto"):
        pertask.mode_of({"task-resolution": "pertask"})


def test_a_pipeline_declaring_a_reserved_param_is_refused():
    pipeline = {"spec": {"params": [{"name": "wrap-pin"}, {"name": "x"}]}}
    with pytest.raises(ParamError, match=r"'p' declares param\(s\) 'wrap-pin'; the wrap resolver reserves"):
        pertask.check_reserved(pipeline, "p")
    pertask.check_reserved({"spec": {"params": [{"name": "wrap-pins"}]}}, "p")


def test_what_a_pipelinerun_stores_counts_the_substituted_taskref_params_and_a_child_reference_per_task():
    answer = pertask.per_task_pipeline(inline_answer(), ["make", "wrap-publish"], "p" * 64, '{"a":"b"}')
    substituted = 64 + len('{\\"a\\":\\"b\\"}') - len("$(params.wrap-pin)") - len("$(params.wrap-request)")
    assert pertask.stored_estimate(answer, 1000, ["make", "wrap-publish"], '{"a":"b"}', "p" * 64) == (
        1000 + 2 * substituted + 3 * pertask.CHILD_REFERENCE_BYTES)
