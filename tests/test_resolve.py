import asyncio
import hashlib
import json
from pathlib import Path

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapresolver.core.params import RunContext
from wrapresolver.errors import RewriteError, SourceError, WrapError
from wrapresolver.resolve import MAX_OBJECT_BYTES, REQUEST_ROOM, check_answer_size, resolve
from wrapresolver.serialize import to_json, to_yaml
from wrapresolver.sources import Fetched, FileSource

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
CONTEXT = RunContext(name="run-1", namespace="ci", uid="3f2a")
PARAMS = [
    {"name": "pipelineref", "value": "build-and-test"},
    {"name": "workspaces", "value": "sources,cache"},
    {"name": "target", "value": "oci://registry.example/ci/<<workspace>>"},
]


def example_documents():
    return [d for d in yaml.safe_load_all((EXAMPLES / "pipeline.yaml").read_text()) if d]


def run(coro):
    return asyncio.run(coro)


def task_ref_pipeline(api_version="tekton.dev/v1"):
    """Two pipeline tasks using one cluster Task through taskRef, and one not binding the workspace."""
    return {
        "apiVersion": api_version,
        "kind": "Pipeline",
        "metadata": {"name": "refs"},
        "spec": {
            "workspaces": [{"name": "data"}],
            "tasks": [
                {"name": "one", "taskRef": {"name": "writer"}, "workspaces": [{"name": "out", "workspace": "data"}]},
                {"name": "two", "runAfter": ["one"], "taskRef": {"name": "writer"},
                 "workspaces": [{"name": "out", "workspace": "data"}]},
                {"name": "other", "taskRef": {"name": "unrelated"}},
            ],
        },
    }


def writer_task(api_version="tekton.dev/v1"):
    return {
        "apiVersion": api_version,
        "kind": "Task",
        "metadata": {"name": "writer"},
        "spec": {
            "workspaces": [{"name": "out"}],
            "steps": [{"name": "write", "image": "docker.io/library/alpine", "script": "date > $(workspaces.out.path)/t\n"}],
        },
    }


def step_names(pipeline_task):
    return [s.get("name") for s in pipeline_task["taskSpec"]["steps"]]


def test_resolves_example_pipeline_from_files():
    source = FileSource(example_documents(), ["pipeline.yaml"])
    result = run(resolve(PARAMS, {}, CONTEXT, source))
    rewritten = yaml.safe_load(result.data)
    assert rewritten["apiVersion"] == "tekton.dev/v1" and rewritten["kind"] == "Pipeline"
    assert rewritten["metadata"]["name"] == "build-and-test"
    for task in rewritten["spec"]["tasks"]:
        names = step_names(task)
        assert any(n.startswith("wrap-") for n in names), names
    text = result.data.decode()
    assert "registry.example/ci/sources" in text and "registry.example/ci/cache" in text
    assert result.annotations == {
        "resolution.tekton.dev/content-type": "application/json",
        "wrapresolver.dev/workspaces": "sources,cache",
        "wrapresolver.dev/backend": "oci",
    }
    assert result.ref_source == {
        "uri": "file:pipeline.yaml",
        "digest": {"sha256": hashlib.sha256(result.data).hexdigest()},
        "entryPoint": "Pipeline/build-and-test",
    }


def test_same_inputs_give_the_same_bytes():
    first = run(resolve(PARAMS, {}, CONTEXT, FileSource(example_documents())))
    second = run(resolve(PARAMS, {}, CONTEXT, FileSource(example_documents())))
    assert first.data == second.data
    assert first.ref_source == second.ref_source


def test_untouched_fields_keep_their_order():
    result = run(resolve(PARAMS, {}, CONTEXT, FileSource(example_documents())))
    rewritten = yaml.safe_load(result.data)
    assert list(rewritten) == ["apiVersion", "kind", "metadata", "spec"]
    assert list(rewritten["spec"])[:3] == ["description", "params", "workspaces"]
    assert rewritten["spec"]["params"] == example_documents()[0]["spec"]["params"]


@pytest.mark.parametrize("api_version", ["tekton.dev/v1", "tekton.dev/v1beta1"])
def test_taskrefs_binding_a_wrapped_workspace_are_fetched_and_inlined(api_version):
    source = FileSource([task_ref_pipeline(api_version), writer_task(api_version)])
    params = [{"name": "pipelineref", "value": "refs"}, {"name": "workspaces", "value": "data"},
              {"name": "target", "value": "oci://r/ci/data"}]
    result = run(resolve(params, {}, CONTEXT, source))
    rewritten = yaml.safe_load(result.data)
    assert rewritten["apiVersion"] == api_version
    tasks = {t["name"]: t for t in rewritten["spec"]["tasks"]}
    for name in ("one", "two"):
        assert "taskRef" not in tasks[name]
        assert "write" in step_names(tasks[name])
    assert tasks["other"]["taskRef"] == {"name": "unrelated"}


class RecordingSource:
    """A source that proves Task fetches overlap: each waits until all expected ones started."""

    def __init__(self, pipeline, tasks, expected):
        self.pipeline_obj, self.tasks, self.expected = pipeline, tasks, expected
        self.started: list[str] = []
        self.all_started = asyncio.Event()

    async def pipeline(self, ref, namespace):
        return Fetched(obj=self.pipeline_obj, ref_source={"uri": "test:pipeline"})

    async def task(self, task_ref, namespace):
        self.started.append(task_ref["name"])
        if len(self.started) == self.expected:
            self.all_started.set()
        await asyncio.wait_for(self.all_started.wait(), 10)
        return Fetched(obj=self.tasks[task_ref["name"]])


def test_task_fetches_run_concurrently_and_once_per_distinct_ref():
    pipeline = task_ref_pipeline()
    pipeline["spec"]["tasks"][1]["taskRef"] = {"name": "writer-2"}
    pipeline["spec"]["tasks"].append(
        {"name": "three", "taskRef": {"name": "writer"}, "workspaces": [{"name": "out", "workspace": "data"}]}
    )
    second = writer_task()
    second["metadata"]["name"] = "writer-2"
    source = RecordingSource(pipeline, {"writer": writer_task(), "writer-2": second}, expected=2)
    params = [{"name": "pipelineref", "value": "refs"}, {"name": "workspaces", "value": "data"},
              {"name": "target", "value": "oci://r/ci/data"}]
    run(resolve(params, {}, CONTEXT, source))
    assert sorted(source.started) == ["writer", "writer-2"]


def test_missing_task_names_the_pipeline_task():
    source = FileSource([task_ref_pipeline()])
    params = [{"name": "pipelineref", "value": "refs"}, {"name": "workspaces", "value": "data"},
              {"name": "target", "value": "oci://r/ci/data"}]
    with pytest.raises(SourceError, match=r"pipeline task 'one': Task 'writer' is not in the input files"):
        run(resolve(params, {}, CONTEXT, source))


def test_missing_pipeline_lists_what_was_found():
    with pytest.raises(SourceError, match=r"Pipeline 'nope' is not in the input files \(Pipelines found: build-and-test\)"):
        run(resolve([{"name": "pipelineref", "value": "nope"}, *PARAMS[1:]], {}, CONTEXT, FileSource(example_documents())))


def test_nested_resolver_cannot_be_followed_offline():
    params = [{"name": "pipelineref", "value": "resolver: git\nparams: {url: https://git.example/p.git}"}, *PARAMS[1:]]
    with pytest.raises(SourceError, match=r"render cannot resolve resolver 'git' offline; pass the Pipeline with -f"):
        run(resolve(params, {}, CONTEXT, FileSource(example_documents())))


class FailingSource:
    async def pipeline(self, ref, namespace):
        raise SourceError(f"Pipeline {ref.name!r} not found in namespace {namespace!r}")

    async def task(self, task_ref, namespace):  # pragma: no cover - never reached
        raise AssertionError("no Pipeline, no Tasks")


def test_source_failure_reaches_the_caller_unchanged():
    with pytest.raises(SourceError, match=r"Pipeline 'build-and-test' not found in namespace 'ci'"):
        run(resolve(PARAMS, {}, CONTEXT, FailingSource()))


class StaticSource:
    def __init__(self, obj):
        self.obj = obj

    async def pipeline(self, ref, namespace):
        return Fetched(obj=self.obj, ref_source={"uri": "test:"})

    async def task(self, task_ref, namespace):
        return Fetched(obj=self.obj)


@pytest.mark.parametrize(
    ("obj", "shown"),
    [
        ({"apiVersion": "tekton.dev/v1", "kind": "Task", "metadata": {"name": "x"}, "spec": {}}, "tekton.dev/v1 Task"),
        ({"apiVersion": "tekton.dev/v1alpha1", "kind": "Pipeline", "metadata": {"name": "x"}, "spec": {}},
         "tekton.dev/v1alpha1 Pipeline"),
        ({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}}, "v1 ConfigMap"),
    ],
)
def test_fetched_object_must_be_a_tekton_pipeline(obj, shown):
    with pytest.raises(SourceError, match=rf"resolved to a {shown}; the wrap resolver needs a Pipeline of tekton.dev/v1 or tekton.dev/v1beta1"):
        run(resolve(PARAMS, {}, CONTEXT, StaticSource(obj)))


def test_taskref_resolving_to_something_else_than_a_task_is_rejected():
    pipeline = task_ref_pipeline()

    class Source(StaticSource):
        async def task(self, task_ref, namespace):
            return Fetched(obj=pipeline)

    params = [{"name": "pipelineref", "value": "refs"}, {"name": "workspaces", "value": "data"},
              {"name": "target", "value": "oci://r/ci/data"}]
    with pytest.raises(SourceError, match=r"pipeline task 'one': taskRef 'writer' resolved to a tekton.dev/v1 Pipeline, not a Task"):
        run(resolve(params, {}, CONTEXT, Source(pipeline)))


def test_param_errors_come_before_any_fetch():
    with pytest.raises(WrapError, match=r"missing param `target`"):
        run(resolve(PARAMS[:2], {}, CONTEXT, FailingSource()))


def test_unexpected_rewrite_failure_becomes_an_actionable_error(monkeypatch):
    from wrapresolver.core import rewrite

    def broken(*args, **kwargs):
        raise KeyError("steps")

    monkeypatch.setattr(rewrite, "rewrite_pipeline", broken)
    with pytest.raises(RewriteError, match=r"could not rewrite Pipeline 'build-and-test': unexpected KeyError"):
        run(resolve(PARAMS, {}, CONTEXT, FileSource(example_documents())))


def test_yaml_output_keeps_scripts_readable_and_has_no_anchors():
    shared = {"a": 1}
    text = to_yaml({"x": shared, "y": shared, "script": "#!/bin/sh\necho hi\n", "t": ("p", "q")}).decode()
    assert "&" not in text and "*" not in text
    assert "script: |\n  #!/bin/sh\n  echo hi\n" in text
    assert yaml.safe_load(text) == {"x": {"a": 1}, "y": {"a": 1}, "script": "#!/bin/sh\necho hi\n", "t": ["p", "q"]}


def test_an_answer_too_large_for_a_resolution_request_is_an_error_naming_size_and_fix():
    fits = (MAX_OBJECT_BYTES - REQUEST_ROOM) // 4 * 3
    check_answer_size(b"x" * fits, "big")
    with pytest.raises(WrapError, match=r"'big' is 1\.\d\d MiB of JSON, 1\.\d\d MiB base64.*param `workspaces`") as info:
        check_answer_size(b"x" * (fits + 1), "big")
    assert info.value.reason == "AnswerTooLarge"


def test_resolve_refuses_a_pipeline_whose_inline_answer_would_not_fit_when_inline_is_required():
    tasks = [
        {"name": f"t{i:04d}", "runAfter": [f"t{i - 1:04d}"] if i else [],
         "workspaces": [{"name": "src", "workspace": "src"}],
         "taskSpec": {"workspaces": [{"name": "src"}], "steps": [{"name": "s", "image": "alpine", "script": "true"}]}}
        for i in range(3000)
    ]
    pipeline = {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "huge"},
                "spec": {"workspaces": [{"name": "src"}], "tasks": tasks}}
    params = [{"name": "pipelineref", "value": "huge"}, {"name": "workspaces", "value": "src"},
              {"name": "target", "value": "oci://r.example/ci/x"}]
    with pytest.raises(WrapError, match="'huge' is .* MiB of JSON.*`task-resolution: inline`") as info:
        run(resolve(params, {"task-resolution": "inline"}, CONTEXT, FileSource([pipeline])))
    assert info.value.reason == "AnswerTooLarge"


def _reference_yaml(obj) -> bytes:
    """What `to_yaml` must equal: PyYAML's own representer, same emitter and settings."""

    class Reference(getattr(yaml, "CSafeDumper", yaml.SafeDumper)):
        def ignore_aliases(self, data):
            return True

    Reference.add_representer(
        str, lambda d, v: d.represent_scalar("tag:yaml.org,2002:str", v, style="|" if "\n" in v else None)
    )
    return yaml.dump(obj, Dumper=Reference, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=4096).encode("utf-8")


_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.text(), st.sampled_from(["", "yes", "no", "1.0", "null", "~", "a: b", "- x", "x\n", "  lead", "$(params.x)"]),
)
_documents = st.recursive(
    _scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _documents, max_size=5))
def test_yaml_output_is_what_pyyamls_representer_gives(doc):
    assert to_yaml(doc) == _reference_yaml(doc)


def test_yaml_of_the_example_answer_is_what_pyyamls_representer_gives():
    result = run(resolve(PARAMS, {}, CONTEXT, FileSource(example_documents())))
    answer = json.loads(result.data)
    assert to_yaml(answer) == _reference_yaml(answer)


def test_the_answer_is_compact_ascii_json_in_the_rewrites_key_order():
    result = run(resolve(PARAMS, {}, CONTEXT, FileSource(example_documents())))
    text = result.data.decode("ascii")
    assert text.startswith('{"apiVersion":"tekton.dev/v1","kind":"Pipeline","metadata":{')
    assert text == json.dumps(json.loads(text), separators=(",", ":"))
    assert yaml.safe_load(text) == json.loads(text)


_json_documents = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False), st.text()),
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)),
    max_leaves=25,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.text(max_size=8), _json_documents, max_size=5))
def test_json_answer_reads_back_as_the_same_object(doc):
    assert json.loads(to_json(doc)) == doc


def test_json_answer_writes_yaml_dates_as_written_and_refuses_what_json_cannot_hold():
    doc = yaml.safe_load("a: 2024-05-01\nb: caf\u00e9\n")
    assert to_json(doc) == b'{"a":"2024-05-01","b":"caf\\u00e9"}'
    with pytest.raises(RewriteError, match=r"Pipeline 'p' cannot be written as JSON"):
        to_json({"x": float("nan")}, "p")


def test_the_answer_tells_the_pipelinerun_its_storage_and_retention():
    """Tekton merges these into the PipelineRun: the retention controller reads them there."""
    from wrapresolver.core import lifecycle

    params = [*PARAMS, {"name": "retention", "value": "keep-for 3d"}]
    result = run(resolve(params, {"default-retention": "keep"}, CONTEXT, FileSource(example_documents())))
    meta = yaml.safe_load(result.data)["metadata"]
    assert meta["labels"][lifecycle.LABEL_STORAGE] == lifecycle.LABEL_STORAGE_VALUE
    assert meta["annotations"][lifecycle.ANNOTATION_RETENTION] == "keep-for 3d"
    entries = lifecycle.read_storage(meta["annotations"])
    assert [(e["workspace"], e["backend"], e["target"]) for e in entries] == [
        ("sources", "oci", "oci://registry.example/ci/sources"), ("cache", "oci", "oci://registry.example/ci/cache"),
    ]
    pipeline_tasks = [t["name"] for t in example_documents()[0]["spec"]["tasks"]]
    assert all(set(pipeline_tasks) <= set(e["tasks"]) for e in entries)


def test_without_a_retention_param_the_configmap_default_is_carried():
    from wrapresolver.core import lifecycle

    result = run(resolve(PARAMS, {"default-retention": "delete-on-success"}, CONTEXT, FileSource(example_documents())))
    assert yaml.safe_load(result.data)["metadata"]["annotations"][lifecycle.ANNOTATION_RETENTION] == "delete-on-success"
