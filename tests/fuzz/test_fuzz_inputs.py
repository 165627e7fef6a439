"""Fuzzing what authors and steps hand us: targets and params, `--workspace` JSON, YAML.

Each target may succeed or refuse with our own error class (`WrapError`, or the
`ValueError` the step CLI turns into exit 2); anything else is a crash and becomes a named
regression test in tests/test_hostile_input.py.
"""

from __future__ import annotations

import dataclasses
import json

from hypothesis import given
from hypothesis import strategies as st

from wrapresolver.backends.registry import REGISTRY, get_backend
from wrapresolver.core import safeyaml
from wrapresolver.core.params import RunContext, parse_request, validate_target
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer
from wrapresolver.core.template import expand_target, split_scheme, unknown_placeholders
from wrapresolver.errors import WrapError
from wrapresolver.render import render

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4),
    max_leaves=20,
)
PARAM_NAMES = st.sampled_from(["pipelineref", "target", "workspaces", "base", "backend", "compression",
                               "insecure", "credentials-secret", "region", "endpoint", "nope", ""])
TARGET_TEXT = st.one_of(
    st.text(max_size=60),
    st.builds(lambda scheme, rest: f"{scheme}://{rest}",
              st.sampled_from(["oci", "s3", "gs", "rsync", "file", "http", "OCI", ""]),
              st.text(alphabet="abc/:@.-_<>{}$()[]%?#~ é\x00", max_size=40)),
)


@given(st.lists(st.fixed_dictionaries({"name": PARAM_NAMES, "value": st.one_of(TARGET_TEXT, JSON)}), max_size=6),
       st.dictionaries(st.sampled_from(["default-target", "default-workspaces", "default-backend"]),
                       st.text(max_size=30), max_size=2))
def test_any_params_parse_or_are_refused_with_a_param_error(params: list[dict], config: dict) -> None:
    try:
        parse_request(params, config, RunContext(namespace="default"), REGISTRY)
    except WrapError:
        pass


@given(st.sampled_from(["oci", "s3", "gcs", "rsync", "file"]), TARGET_TEXT)
def test_any_target_is_accepted_or_refused_by_its_backend(backend: str, target: str) -> None:
    try:
        validate_target(get_backend(backend), target)
    except WrapError:
        pass


@given(TARGET_TEXT, st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=20))
def test_target_templating_is_total_and_leaves_no_known_placeholder(template: str, workspace: str) -> None:
    split_scheme(template)
    if not unknown_placeholders(template):
        out = expand_target(template, workspace, RunContext(namespace="default"))
        assert "<<workspace>>" not in out and "{{workspace}}" not in out


@given(st.one_of(st.text(max_size=200), JSON.map(json.dumps)))
def test_any_workspace_argument_parses_or_is_refused_as_bad_input(text: str) -> None:
    try:
        WorkspaceTransfer.from_json(text)
    except (ValueError, WrapError):
        pass


NAMES = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)


@given(st.builds(
    WorkspaceTransfer, workspace=NAMES, target=st.text(max_size=40), run=st.text(max_size=10), task=NAMES,
    backend=NAMES, path=st.text(max_size=20), sub_path=st.text(max_size=10),
    inputs=st.lists(NAMES, max_size=3).map(tuple),
    graph=st.dictionaries(NAMES, st.builds(ProducerNode, inputs=st.lists(NAMES, max_size=2).map(tuple),
                                           order=st.integers(0, 100)), max_size=3),
    options=st.dictionaries(NAMES, st.text(max_size=10), max_size=3), publish=st.booleans(),
))
def test_a_workspace_spec_survives_its_own_json(spec: WorkspaceTransfer) -> None:
    # Version 2 keeps only the merge order of the producers (not their numbers) and gives
    # every producer it names a node, so one parse makes the spec canonical: from then on its
    # JSON is a fixed point, and every field but the fallback graph comes back as it was.
    parsed = WorkspaceTransfer.from_json(spec.to_json())
    assert dataclasses.replace(parsed, graph=spec.graph) == spec
    canonical = parsed.to_json()
    assert WorkspaceTransfer.from_json(canonical).to_json() == canonical
    assert WorkspaceTransfer.from_json(canonical) == parsed


YAML_TEXT = st.text(alphabet="ab: -[]{}&*!|>'\"#\n\t.,?%@`", max_size=200)


@given(YAML_TEXT)
def test_any_yaml_text_loads_or_is_refused_as_yaml(text: str) -> None:
    try:
        safeyaml.load_all(text)
    except (safeyaml.YAMLError, WrapError):
        pass


@given(JSON)
def test_render_of_any_document_answers_or_refuses_with_a_wrap_error(doc) -> None:
    pipeline = {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "p"},
                "spec": {"workspaces": [{"name": "src"}], "tasks": [doc]}}
    try:
        render([pipeline], params={"target": "oci://r.example/ci/<<workspace>>", "workspaces": "src"})
    except WrapError:
        pass


TASK_FIELDS = st.fixed_dictionaries({}, optional={
    "name": st.one_of(NAMES, JSON), "workspaces": st.one_of(JSON, st.just([{"name": "src", "workspace": "src"}])),
    "taskSpec": st.one_of(JSON, st.just({"workspaces": [{"name": "src"}], "steps": [{"name": "s", "image": "i"}]})),
    "taskRef": JSON, "runAfter": st.one_of(JSON, st.lists(NAMES, max_size=2)), "params": JSON, "when": JSON,
    "matrix": JSON,
})


@given(st.lists(TASK_FIELDS, min_size=1, max_size=3), st.one_of(JSON, st.just([{"name": "src"}])))
def test_render_of_any_pipeline_shape_answers_or_refuses_with_a_wrap_error(tasks, workspaces) -> None:
    pipeline = {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "p"},
                "spec": {"workspaces": workspaces, "tasks": tasks}}
    try:
        render([pipeline], params={"target": "oci://r.example/ci/<<workspace>>", "workspaces": "src"})
    except WrapError:
        pass
