"""`allowed-targets`: prefixes compared on parsed locations, never on raw text."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wrapresolver.core.locations import AllowedTargets, LocationError, parse_allowed_targets, parse_location

ALLOWED = "oci://registry.internal/ci,s3://ci-states/,file:///srv/states/"


def allowed() -> AllowedTargets:
    result, problems = parse_allowed_targets(ALLOWED)
    assert problems == []
    return result


@pytest.mark.parametrize("target", [
    "oci://registry.internal/ci/build-src",
    "oci://registry.internal/ci/build-src:run-1",
    "oci://registry.internal/ci/team/build-src@sha256:" + "a" * 64,
    "registry.internal/ci/build-src",  # no scheme: the OCI backend's
    "oci://REGISTRY.internal/ci/x",  # host names are case-insensitive
    "oci://user@registry.internal/ci/x",  # a user name is not the host
    "s3://ci-states/any/key",
    "file:///srv/states/run-1-src",
    "oci://registry.internal/ci/$(context.pipelineRun.name)-src",
])
def test_locations_under_an_allowed_prefix_are_admitted(target: str) -> None:
    assert allowed().refusal(target) == ""


@pytest.mark.parametrize("target", [
    "oci://registry.internal/ci-evil/x",  # a longer segment, not the same one
    "oci://registry.internal.evil.com/ci/x",  # a longer host
    "oci://registry.internal@evil.com/ci/x",  # the host is after the @
    "oci://registry.internal:5000/ci/x",  # another port is another server
    "oci://registry.internal/other/ci/x",
    "oci://registry.internal/",
    "s3://ci-states-evil/x",
    "gs://ci-states/x",  # another scheme
    "file:///srv/states-evil/x",
    "file:///srv/x",
])
def test_locations_outside_every_prefix_are_refused_naming_the_key(target: str) -> None:
    message = allowed().refusal(target)
    assert "outside `allowed-targets`" in message and "oci://registry.internal/ci" in message


@pytest.mark.parametrize("target, why", [
    ("file:///srv/states/../etc", "could leave its prefix"),
    ("file:///srv/states/%2e%2e/etc", "could leave its prefix"),
    ("s3://ci-states/a%2F..%2Fb", "could leave its prefix"),
    ("oci://registry.internal/ci/$(params.repo)", "Tekton variable"),
    ("oci://$(params.host)/ci/x", "Tekton variable"),
    ("rsync-host:module/path", "not a valid URL"),
])
def test_locations_that_cannot_be_checked_are_refused_with_the_reason(target: str, why: str) -> None:
    message = allowed().refusal(target, "rsync")
    assert why in message and "allowed-targets" in message


def test_an_unset_list_admits_everything_and_an_all_invalid_list_admits_nothing() -> None:
    unset, problems = parse_allowed_targets("  ")
    assert unset.refusal("oci://anywhere.example/x") == "" and problems == []
    broken, problems = parse_allowed_targets("registry.internal/ci, oci://")
    assert [p.split(":")[0] for p in problems] == ["`allowed-targets`", "`allowed-targets`"]
    assert "has no scheme" in problems[0] and "names no host" in problems[1]
    assert "outside `allowed-targets`" in broken.refusal("oci://registry.internal/ci/x")


def test_the_tag_of_an_oci_location_is_not_a_path_segment() -> None:
    assert parse_location("oci://r.example:5000/ci/src:v1").segments == ("ci", "src")
    assert parse_location("oci://r.example:5000/ci/src:v1").host == "r.example:5000"
    with pytest.raises(LocationError):
        parse_location("oci://r.example:notaport/ci")


_SEGMENT = st.from_regex(r"[a-z0-9][a-z0-9._-]{0,8}", fullmatch=True).filter(lambda s: s not in (".", ".."))


@given(st.lists(_SEGMENT, min_size=1, max_size=3), st.lists(_SEGMENT, min_size=1, max_size=3), _SEGMENT)
def test_admission_is_segment_prefix_equality(prefix: list[str], rest: list[str], host: str) -> None:
    """Whatever the names: admitted exactly when the prefix's segments lead the target's, on the same host."""
    allow, _ = parse_allowed_targets(f"s3://{host}/{'/'.join(prefix)}/")
    target = f"s3://{host}/{'/'.join(rest)}"
    assert (allow.refusal(target) == "") == (rest[:len(prefix)] == prefix)
    assert allow.refusal(f"s3://{host}x/{'/'.join(prefix)}/k") != ""
