"""Reference names: one tag grammar and one digest rule for every backend, and a state's run and task read back."""

from __future__ import annotations

import pytest

from wrapresolver.backends.file import parse_target
from wrapresolver.backends.oci import parse_reference
from wrapresolver.core.refs import is_valid_tag, producer_ref, uid_run_and_task
from wrapresolver.errors import ParamError

UID = "0b5e8f7e-6a51-4d38-9d7d-3c1b0f2a9e01"
TAGS = ["latest", "v1.2", "_x", "A-b_c.d", "x" * 128, "x" * 129, ".hidden", "-dash", "a+b", ""]


@pytest.mark.parametrize("tag", TAGS)
def test_an_oci_target_and_a_file_target_accept_exactly_the_tags_the_grammar_does(tag: str) -> None:
    valid = is_valid_tag(tag)
    try:
        parsed = parse_reference(f"oci://registry.example/ci/src:{tag}")
    except ParamError:
        parsed = None
    assert (parsed is not None and parsed.tag == tag) == valid
    path, file_tag = parse_target(f"file:///srv/ci/src:{tag}")
    assert (file_tag == tag and str(path) == "/srv/ci/src") == valid


@pytest.mark.parametrize(("digest", "valid"), [
    ("sha256:" + "a" * 64, True), ("sha256:" + "A" * 64, False), ("sha256:" + "a" * 63, False),
    ("sha512:" + "a" * 128, False),
])
def test_an_oci_target_accepts_only_a_sha256_digest(digest: str, valid: bool) -> None:
    try:
        parsed = parse_reference(f"oci://registry.example/ci/src@{digest}")
    except ParamError:
        parsed = None
    assert (parsed is not None and parsed.digest == digest) == valid


def test_a_state_of_a_uid_run_names_its_run_and_task_and_a_hashed_or_plain_name_does_not() -> None:
    assert uid_run_and_task(producer_ref(UID, "build-image")) == (UID, "build-image")
    assert uid_run_and_task(producer_ref("not-a-uid", "build")) is None
    assert uid_run_and_task(producer_ref(UID, "t" * 200)) is None  # hashed: too long for a tag
    assert uid_run_and_task("latest") is None
