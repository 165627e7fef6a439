"""`oci://` targets: workspace states as OCI images in any registry (the default backend).

`oci://registry.example/ci/run-src[:tag]`, or the same without `oci://`, names a repository;
each producer task's state is a tag in it (`wrap-<run>-<task>`), and the exact target tag
(default `latest`) holds the final state of the run. Every state is a real image: `crane
export`, `skopeo copy` or `oras pull` read it.

The resolver half below is pure and imports nothing heavy. The data path (`store`,
`client`, `auth`) is written on httpx against the distribution API rather than on the
`oras` SDK, because the data path must stream with flat memory, honour `$DOCKER_CONFIG`,
request token scopes per repository and fail fast on dead registries; docs/oci.md records
what was measured and why.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass

from wrapresolver.backends.base import TEKTON_VARIABLE, Backend, StepRequirements
from wrapresolver.core.refs import is_valid_tag
from wrapresolver.core.values import is_sha256_digest
from wrapresolver.errors import ParamError

CA_MOUNT = "/etc/wrapresolver/oci-ca"
"""Where the `ca-configmap` ConfigMap is mounted in the injected steps (key `ca.crt`)."""
AUTH_MOUNT = "/etc/wrapresolver/oci-auth"
"""Where the `credentials-secret` docker config Secret is mounted (as `config.json`)."""

_REPO_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"^{_REPO_COMPONENT}(?:/{_REPO_COMPONENT})*$")
_SCHEME_TYPO = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*):/?(?![0-9])(.+)$")
"""`s3:/bucket/x` or `gs:bucket/x`: a scheme missing a slash, not a host with a port."""
_HOST = re.compile(r"^(?:\[[0-9a-fA-F:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?)(?::[0-9]{1,5})?$")


@dataclass(frozen=True)
class Reference:
    """A parsed image reference: where a workspace's states live."""

    registry: str
    """`host[:port]` as written (no scheme)."""
    repository: str
    tag: str = "latest"
    digest: str = ""

    @property
    def hostname(self) -> str:
        host = self.registry
        if host.startswith("["):
            return host[1 : host.index("]")]
        return host.rsplit(":", 1)[0] if ":" in host else host

    @property
    def is_loopback(self) -> bool:
        """Loopback registries speak plain HTTP, as docker and crane assume."""
        if self.hostname == "localhost" or self.hostname.endswith(".localhost"):
            return True
        try:
            return ipaddress.ip_address(self.hostname).is_loopback
        except ValueError:
            return False

    def __str__(self) -> str:
        suffix = f"@{self.digest}" if self.digest else f":{self.tag}"
        return f"{self.registry}/{self.repository}{suffix}"


def parse_reference(target: str) -> Reference:
    """`oci://host/repo[:tag|@digest]` or `host/repo[:tag|@digest]` -> Reference.

    After `oci://` the first component is the registry host, whatever it looks like (an
    in-cluster Service called `registry` is common). Without the scheme it must look like a
    host (a dot or a port, or `localhost`): a bare `library/ubuntu` would silently mean
    Docker Hub, which is never what a CI storage target means.
    """
    text = target[len("oci://"):] if target.startswith("oci://") else target
    if "://" in text:
        raise ParamError(f"target {target!r} is not an OCI reference; write oci://registry/repository[:tag]")
    host, sep, rest = text.partition("/")
    if not sep or not rest:
        raise ParamError(
            f"target {target!r} names no repository; write oci://registry.example/ci/<<workspace>>"
        )
    explicit = target.startswith("oci://")  # then `registry/...` is a host, e.g. a Service
    typo = _SCHEME_TYPO.match(text)
    if typo and not _HOST.match(host):  # `s3:/bucket/x`: a target of another scheme, mistyped
        scheme, rest_ = typo.group(1).lower(), typo.group(2).lstrip("/")
        raise ParamError(
            f"target {target!r} looks like a `{scheme}://` target with a slash too few: "
            f"write {scheme}://{rest_}"
        )
    if explicit and not _HOST.match(host):
        raise ParamError(
            f"target {target!r} starts with {host!r}, which is not a registry host: letters, "
            f"digits, '.' and '-', and an optional :port, e.g. oci://registry.example:5000/ci/cache"
        )
    if not _HOST.match(host) or not (explicit or "." in host or ":" in host or host == "localhost"):
        raise ParamError(
            f"target {target!r} does not start with a registry host: write the registry "
            f"explicitly, e.g. oci://registry.example/{text} (a host has a dot or a port)"
        )
    digest = ""
    if "@" in rest:
        rest, digest = rest.split("@", 1)
        if not is_sha256_digest(digest):
            raise ParamError(f"target {target!r} has an invalid digest {digest!r}; expected sha256:<64 hex>")
    tag = "latest"
    last = rest.rsplit("/", 1)[-1]
    if ":" in last:
        rest, tag = rest.rsplit(":", 1)
        if not is_valid_tag(tag):
            raise ParamError(
                f"target {target!r} has an invalid tag {tag!r}: up to 128 letters, digits, "
                f"'_', '.' and '-', not starting with '.' or '-'"
            )
    if not _REPOSITORY.match(rest):
        raise ParamError(
            f"target {target!r} has an invalid repository name {rest!r}: lowercase letters, "
            f"digits and single separators (., _, __, -) between path components"
        )
    if len(f"{host}/{rest}") > 255:
        raise ParamError(f"target {target!r} is longer than the 255 characters registries accept")
    return Reference(host, rest, tag, digest)


class OciBackend(Backend):
    name = "oci"
    schemes = ("oci",)
    options = {
        "compression": "layer compression: zstd (default; smaller, faster) or gzip (for old registries and tools)",
        "insecure": "\"true\": talk to this registry over plain HTTP or unverified TLS (loopback registries always use HTTP)",
        "ca-configmap": "a ConfigMap whose `ca.crt` is trusted in addition to the public CAs (private registry CA)",
        "credentials-secret": "a docker config Secret (kubernetes.io/dockerconfigjson) used instead of the ServiceAccount's",
    }

    def validate_target(self, target: str) -> None:
        # Tekton fills $(context.pipelineRun.name) and $(params.x) later: check the shape
        # with a lowercase stand-in, since run names are DNS labels.
        parse_reference(TEKTON_VARIABLE.sub("x", target))

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        checked = super().validate_options(options)
        if checked.get("insecure", "false").lower() not in ("true", "false"):
            raise ParamError(f"param `insecure` must be \"true\" or \"false\", not {checked['insecure']!r}")
        return checked

    def step_requirements(self, options: Mapping[str, str]) -> StepRequirements:
        volumes: list[dict] = []
        mounts: list[dict] = []
        env: list[dict] = []
        if "ca-configmap" in options:
            volumes.append({"name": "wrap-oci-ca", "configMap": {"name": options["ca-configmap"], "items": [{"key": "ca.crt", "path": "ca.crt"}]}})
            mounts.append({"name": "wrap-oci-ca", "mountPath": CA_MOUNT, "readOnly": True})
        if "credentials-secret" in options:
            volumes.append({
                "name": "wrap-oci-auth",
                "secret": {"secretName": options["credentials-secret"], "items": [{"key": ".dockerconfigjson", "path": "config.json"}]},
            })
            mounts.append({"name": "wrap-oci-auth", "mountPath": AUTH_MOUNT, "readOnly": True})
            env.append({"name": "DOCKER_CONFIG", "value": AUTH_MOUNT})
        return StepRequirements(env=tuple(env), volumes=tuple(volumes), volume_mounts=tuple(mounts))

    def open(self, target: str, options: Mapping[str, str]):
        from wrapresolver.backends.oci.store import RegistryStore

        return RegistryStore.open(parse_reference(target), options)


BACKEND = OciBackend()
