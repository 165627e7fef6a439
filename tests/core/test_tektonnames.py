"""Tekton's names for the objects it makes: the vectors of Tekton's own tests, and Knative's rule."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wrapresolver.core.tektonnames import NAME_MAX, deterministic_name, resolution_request_name, task_run_name

GOLDEN_PARAMS = [
    {"name": "string-param", "value": "value1"},
    {"name": "array-param", "value": ["value1", "value2"]},
    {"name": "object-param", "value": {"key": "value"}},
]


@pytest.mark.parametrize(("prefix", "base", "params", "expected"), [
    # tektoncd/pipeline pkg/resolution/resource/name_test.go, TestGenerateDeterministicName
    ("prefix", "", [], "prefix-6c62272e07bb014262b821756295c58d"),
    ("", "base", [], "-6989337ae0757277b806e97e86444ef0"),
    ("", "", GOLDEN_PARAMS, "-52921b17d3c2930a34419c618d6af0e9"),
    ("", "", GOLDEN_PARAMS[::-1], "-52921b17d3c2930a34419c618d6af0e9"),
    ("prefix", "base", GOLDEN_PARAMS, "prefix-ba2f256f318de7f4154da577c283cb9e"),
    ("a" * 31, "default/my-taskrun", [], "a" * 30 + "-2d162955e9c9fcfef736fd389e7fd796"),
])
def test_request_names_are_the_ones_tektons_own_tests_expect(prefix: str, base: str, params: list,
                                                           expected: str) -> None:
    assert deterministic_name(prefix, base, params) == expected


def test_a_request_name_hashes_the_namespace_and_the_run_or_taskrun_name() -> None:
    params = [{"name": "wrap-task", "value": "build"}]
    assert resolution_request_name("wrap", "ci", "run-1-build", params) == deterministic_name(
        "wrap", "ci/run-1-build", params)
    assert resolution_request_name("wrap", "ci", "run-1-build", params) != resolution_request_name(
        "wrap", "ci", "run-2-build", params)


def test_a_task_run_is_named_after_its_run_and_task_when_that_fits() -> None:
    assert task_run_name("build-and-test-run", "compile") == "build-and-test-run-compile"


@given(st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=80),
       st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=62))
def test_a_task_run_name_is_always_a_label_and_keeps_the_task_as_its_end_when_it_can(run: str, task: str) -> None:
    name = task_run_name(run, task)
    assert len(name) <= NAME_MAX
    if len(run) + 1 + len(task) <= NAME_MAX:
        assert name == f"{run}-{task}"
    elif len(task) + 1 < NAME_MAX - 32:
        assert name.endswith(f"-{task}") and name.startswith(run[:NAME_MAX - 32 - len(task) - 1])
