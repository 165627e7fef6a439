"""The storage annotations are signed for one run; publish-retention's words and refusals."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wrapresolver.core import lifecycle
from wrapresolver.core.retention import (
    DELETE_WITH_RUN,
    KEEP,
    KEEP_FOR,
    parse_publish_retention,
    publish_retention_of,
)
from wrapresolver.errors import ParamError

KEY = b"k" * 32
UID = "0b5e8f7e-6a51-4d38-9d7d-3c1b0f2a9e01"


def signed(uid: str = UID, key: bytes = KEY) -> dict:
    pipeline: dict = {}
    entries = [{"workspace": "src", "backend": "oci", "target": "oci://r.example/ci/src", "options": {},
                "tasks": ["build"]}]
    lifecycle.mark(pipeline, parse_publish_retention(""), entries, parse_publish_retention("keep-for 7d"), key, uid)
    return pipeline["metadata"]["annotations"]


def test_a_signed_annotation_verifies_for_its_run_only() -> None:
    annotations = signed()
    assert lifecycle.signature_problem(KEY, UID, annotations) == ""
    assert "does not match" in lifecycle.signature_problem(KEY, "another-uid", annotations)
    assert "does not match" in lifecycle.signature_problem(b"x" * 32, UID, annotations)
    assert "no signing key" in lifecycle.signature_problem(b"", UID, annotations)


def test_without_a_key_or_a_uid_nothing_is_signed_and_nothing_verifies() -> None:
    for notes in (signed(key=b""), signed(uid="")):
        assert lifecycle.ANNOTATION_SIGNATURE not in notes
        assert "is missing" in lifecycle.signature_problem(KEY, UID, notes)


@given(st.sampled_from(lifecycle.SIGNED), st.text(min_size=0, max_size=40))
def test_any_change_to_a_signed_annotation_breaks_the_signature(name: str, value: str) -> None:
    annotations = signed()
    if annotations.get(name, "") == value:
        return
    assert lifecycle.signature_problem(KEY, UID, {**annotations, name: value}) != ""


@pytest.mark.parametrize("text, policy", [("", KEEP), ("keep", KEEP), ("keep-for 30d", KEEP_FOR),
                                          ("delete-with-run", DELETE_WITH_RUN)])
def test_publish_retention_words(text: str, policy: str) -> None:
    assert parse_publish_retention(text).policy == policy


def test_publish_retention_refuses_policies_that_would_delete_the_result_at_once() -> None:
    with pytest.raises(ParamError, match="as soon as the run wrote it"):
        parse_publish_retention("delete-on-completion")
    with pytest.raises(ParamError, match="default-publish-retention"):
        publish_retention_of([], {"default-publish-retention": "sometimes"})


def test_delete_with_run_is_due_only_when_the_pipelinerun_is_deleted() -> None:
    policy = parse_publish_retention("delete-with-run")
    assert policy.due("succeeded", deleted=False) is None
    assert policy.due("succeeded", deleted=True) == 0.0
    assert parse_publish_retention("keep").due("succeeded", deleted=True) is None
