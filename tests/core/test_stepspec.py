"""The step argument format and the run-time fallback rule (wrapresolver/core/stepspec.py)."""

import json

import pytest

from wrapresolver.core.stepspec import SPEC_VERSION, ProducerNode, WorkspaceTransfer
from wrapresolver.errors import NotFoundError

V1_FETCH = (
    '{"backend":"oci","base":"","bound":"true","graph":{"build":{"inputs":[],"order":0},'
    '"deploy":{"inputs":["sign"],"order":2},"sign":{"inputs":["build"],"order":1}},"inputs":["deploy"],'
    '"options":{},"path":"","publish":true,"run":"0d9c","sub_path":"","target":"oci://r.example/ci/src",'
    '"task":"wrap-publish","v":1,"workspace":"src"}'
)


def spec(**fields) -> WorkspaceTransfer:
    base = dict(workspace="src", target="oci://r.example/ci/src", run="$(context.pipelineRun.uid)",
                task="deploy", backend="oci", path="$(workspaces.src.path)")
    return WorkspaceTransfer(**{**base, **fields})


def test_json_leaves_out_defaults_and_round_trips():
    s = spec(inputs=("sign",), graph={"sign": ProducerNode(("build",), 1), "build": ProducerNode(order=0, skippable=False)})
    data = json.loads(s.to_json())
    assert data == {
        "backend": "oci", "fallback": {"sign": ["build"]}, "inputs": ["sign"], "order": ["build", "sign"],
        "path": "$(workspaces.src.path)", "run": "$(context.pipelineRun.uid)", "target": "oci://r.example/ci/src",
        "task": "deploy", "v": SPEC_VERSION, "workspace": "src",
    }
    assert WorkspaceTransfer.from_json(s.to_json()) == s


def test_every_field_that_differs_from_its_default_survives_the_round_trip():
    s = spec(bound="$(workspaces.src.bound)", sub_path="out", base="oci://r.example/base:v1",
             options={"compression": "gzip"}, publish=True)
    assert WorkspaceTransfer.from_json(s.to_json()) == s


def test_inputs_without_fallback_must_have_a_state_after_the_round_trip():
    s = WorkspaceTransfer.from_json(spec(inputs=("unit", "lint")).to_json())
    assert s.graph == {"unit": ProducerNode(order=0, skippable=False), "lint": ProducerNode(order=1, skippable=False)}
    with pytest.raises(NotFoundError, match="producer 'lint' has no stored state.*always stores before task 'deploy'"):
        s.resolve_inputs({"unit": "U"}.get)


def test_version_1_args_still_fall_back_through_every_producer():
    s = WorkspaceTransfer.from_json(V1_FETCH)
    assert s.graph["deploy"] == ProducerNode(("sign",), 2) and s.graph["deploy"].skippable
    got = s.resolve_inputs({"build": "B"}.get)
    assert got.states == (("build", "B"),) and got.fell_back == ("deploy", "sign")


def test_a_newer_version_is_refused_with_the_fix():
    text = spec().to_json().replace(f'"v":{SPEC_VERSION}', f'"v":{SPEC_VERSION + 1}')
    with pytest.raises(ValueError, match="newer than this step image.*at least as new as the resolver"):
        WorkspaceTransfer.from_json(text)


def test_fallbacks_merge_in_pipeline_order_whatever_order_they_are_found_in():
    # inputs (c, b): b was skipped and falls back to a, which comes before c in the Pipeline.
    s = spec(inputs=("c", "b"), graph={
        "a": ProducerNode(order=0, skippable=False), "b": ProducerNode(("a",), 2),
        "c": ProducerNode(order=1, skippable=False),
    })
    s = WorkspaceTransfer.from_json(s.to_json())
    got = s.resolve_inputs({"a": "A", "c": "C"}.get)
    assert got.states == (("a", "A"), ("c", "C")) and got.fell_back == ("b",)


def test_a_long_chain_of_skipped_producers_is_followed_without_recursion():
    n = 5000
    graph = {f"t{i}": ProducerNode((f"t{i - 1}",) if i else (), i) for i in range(n)}
    got = spec(inputs=(f"t{n - 1}",), graph=graph).resolve_inputs({"t0": "first"}.get)
    assert got.states == (("t0", "first"),) and len(got.fell_back) == n - 1


def test_results_and_base_required_round_trip_and_are_left_out_when_unset():
    plain = WorkspaceTransfer(workspace="src", target="oci://r/x", run="u", task="t", backend="oci")
    assert "results" not in plain.to_json() and "base_required" not in plain.to_json()
    full = WorkspaceTransfer(workspace="src", target="oci://r/x", run="u", task="t", backend="oci",
                             base="oci://r/base", base_required=True,
                             results=("$(results.wrap-src-ARTIFACT_INPUTS.path)",))
    assert WorkspaceTransfer.from_json(full.to_json()) == full


@pytest.mark.parametrize("backend, target, uri", [
    ("oci", "oci://reg.example:5000/ci/src", "oci://reg.example:5000/ci/src:wrap-u-build"),
    ("oci", "oci://reg.example:5000/ci/src:main", "oci://reg.example:5000/ci/src:wrap-u-build"),
    ("oci", "reg.example/ci/src@sha256:" + "a" * 64, "reg.example/ci/src:wrap-u-build"),
    ("s3", "s3://bucket/ci/src", "s3://bucket/ci/src#wrap-u-build"),
])
def test_a_state_uri_names_the_reference_the_way_its_backend_pulls_it(backend, target, uri):
    from wrapresolver.core.refs import state_uri

    assert state_uri(backend, target, "wrap-u-build") == uri


def test_fill_and_read_only_round_trip_are_left_out_when_unset_and_a_wrong_type_is_refused():
    plain = spec()
    assert "fill" not in plain.to_json() and "read_only" not in plain.to_json()
    fetch = spec(fill="/wrap-fill/src")
    check = spec(read_only=True)
    assert WorkspaceTransfer.from_json(fetch.to_json()) == fetch
    assert WorkspaceTransfer.from_json(check.to_json()) == check
    with pytest.raises(ValueError, match="`read_only` must be true or false"):
        WorkspaceTransfer.from_json(check.to_json().replace("true", '"yes"'))
    with pytest.raises(ValueError, match="`fill` must be a string"):
        WorkspaceTransfer.from_json(fetch.to_json().replace('"/wrap-fill/src"', "1"))


def test_max_layers_round_trips_and_is_left_out_at_its_default():
    assert '"max_layers"' not in spec(publish=True).to_json()
    assert WorkspaceTransfer.from_json(spec(publish=True).to_json()).max_layers == 16
    assert WorkspaceTransfer.from_json(spec(publish=True, max_layers=0).to_json()).max_layers == 0


@pytest.mark.parametrize("value", ["3", -1, True, 2.5])
def test_a_max_layers_that_is_not_a_whole_number_is_refused_naming_the_field(value):
    data = json.loads(spec(publish=True).to_json())
    data["max_layers"] = value
    with pytest.raises(ValueError, match="max_layers"):
        WorkspaceTransfer.from_json(json.dumps(data))
