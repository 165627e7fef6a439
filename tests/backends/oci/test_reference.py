"""The OCI backend's resolver half: target references, options, what the steps need."""

from __future__ import annotations

import pytest

from wrapresolver.backends.oci import AUTH_MOUNT, CA_MOUNT, Reference, parse_reference
from wrapresolver.backends.registry import get_backend
from wrapresolver.errors import ParamError

oci = get_backend("oci")


@pytest.mark.parametrize(
    "target,expected",
    [
        ("oci://registry.example/ci/run-src", Reference("registry.example", "ci/run-src")),
        ("registry.example/ci/run-src:v1", Reference("registry.example", "ci/run-src", "v1")),
        ("oci://127.0.0.1:5000/a/b/c:final", Reference("127.0.0.1:5000", "a/b/c", "final")),
        ("localhost/x", Reference("localhost", "x")),
        ("oci://registry/ci/run-src", Reference("registry", "ci/run-src")),
        ("reg.example:443/x@sha256:" + "a" * 64, Reference("reg.example:443", "x", "latest", "sha256:" + "a" * 64)),
        ("oci://[::1]:5000/ws", Reference("[::1]:5000", "ws")),
    ],
)
def test_targets_parse_into_registry_repository_and_tag(target: str, expected: Reference) -> None:
    assert parse_reference(target) == expected


@pytest.mark.parametrize(
    "target,message",
    [
        ("ci/run-src", "does not start with a registry host"),
        ("oci://registry.example", "names no repository"),
        ("oci://registry.example/CI/Upper", "invalid repository name"),
        ("oci://registry.example/ci/x:-bad", "invalid tag"),
        ("oci://registry.example/ci/x@sha256:abc", "invalid digest"),
        ("s3://bucket/x", "is not an OCI reference"),
    ],
)
def test_bad_targets_say_what_to_write_instead(target: str, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        oci.validate_target(target)


def test_tekton_placeholders_in_the_repository_are_accepted_at_resolution_time() -> None:
    oci.validate_target("oci://registry.example/ci/$(context.pipelineRun.name)-src")


@pytest.mark.parametrize(
    "host,loopback",
    [("localhost:5000", True), ("127.0.0.1:5000", True), ("127.9.9.9", True), ("[::1]:5000", True),
     ("registry.example", False), ("10.0.0.1:5000", False)],
)
def test_loopback_registries_are_recognised(host: str, loopback: bool) -> None:
    assert Reference(host, "x").is_loopback is loopback


def test_options_are_checked_with_actionable_messages() -> None:
    assert oci.validate_options({"compression": "gzip", "insecure": "TRUE"}) == {"compression": "gzip", "insecure": "TRUE"}
    with pytest.raises(ParamError, match="zstd or gzip"):
        oci.validate_options({"compression": "lz4"})
    with pytest.raises(ParamError, match='"true" or "false"'):
        oci.validate_options({"insecure": "yes"})
    with pytest.raises(ParamError, match="must name a Secret"):
        oci.validate_options({"credentials-secret": "Not A Name"})


def test_credentials_secret_is_mounted_as_the_docker_config_never_inlined() -> None:
    needs = oci.step_requirements({"credentials-secret": "registry-push", "ca-configmap": "corp-ca"})
    assert {"name": "DOCKER_CONFIG", "value": AUTH_MOUNT} in needs.env
    secret = next(v for v in needs.volumes if "secret" in v)
    assert secret["secret"] == {
        "secretName": "registry-push", "items": [{"key": ".dockerconfigjson", "path": "config.json"}],
    }
    assert {m["mountPath"] for m in needs.volume_mounts} == {AUTH_MOUNT, CA_MOUNT}
    assert all(m["readOnly"] for m in needs.volume_mounts)


def test_no_options_need_nothing_from_the_pod() -> None:
    needs = oci.step_requirements({})
    assert not needs.env and not needs.volumes and not needs.volume_mounts
