"""Value types shared by the resolver, the backends and the data path: no I/O, no behaviour.

Digests, OCI descriptors, the layers and states a stored workspace is made of, what the
injected steps need from the pod, and what one transfer did. Everything that moves bytes
(`wrapresolver.transfer`, `wrapresolver.backends`) speaks in these terms, so none of them
has to import another to name a descriptor.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

TEKTON_VARIABLE = re.compile(r"\$\([^)]*\)")
"""`$(context.pipelineRun.name)`, `$(params.x)`: filled in by Tekton after resolution, so
validation accepts them wherever a backend option or target may hold one."""

SHA256_HEX = "[0-9a-f]{64}"
"""The hex part of a sha256 digest, for patterns that embed it (a blob's key in a layout)."""
SHA256_DIGEST = re.compile(rf"^sha256:{SHA256_HEX}$")
"""The only digest algorithm the stores write and accept."""


def sha256_digest(data: bytes | bytearray | memoryview) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def is_sha256_digest(text: str) -> bool:
    return bool(SHA256_DIGEST.match(text))


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a manifest says about a blob."""

    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest, "size": self.size}
        if self.annotations:
            out["annotations"] = dict(self.annotations)
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Descriptor:
        return cls(
            media_type=data["mediaType"],
            digest=data["digest"],
            size=int(data["size"]),
            annotations=dict(data.get("annotations") or {}),
        )


@dataclass(frozen=True)
class Layer:
    """One layer of a state: where its blob is and the digest of its uncompressed tar."""

    descriptor: Descriptor
    diff_id: str


@dataclass(frozen=True)
class State:
    """A stored workspace state: its layers, bottom first."""

    layers: tuple[Layer, ...] = ()
    annotations: Mapping[str, str] = field(default_factory=dict)
    digest: str = ""
    """The digest of the manifest it was read from (what names this state immutably)."""


@dataclass(frozen=True)
class Artifact:
    """A stored state as provenance names it: where it is and its immutable digest.

    Written by the injected steps as a Tekton Chains type-hinted object result
    (`*ARTIFACT_INPUTS` for what a task consumed, `*ARTIFACT_OUTPUTS` for what it stored).
    """

    uri: str
    digest: str
    build_artifact: bool = False
    """The state a Pipeline publishes (its exact target): marked `isBuildArtifact: "true"`, so
    Chains' slsa/v2alpha4 makes it a subject; every other state stays a byproduct."""

    def to_result(self) -> str:
        value = {"digest": self.digest, "uri": self.uri}
        if self.build_artifact:
            value["isBuildArtifact"] = "true"  # a string: Tekton object results hold strings only
        return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class StepRequirements:
    """What the injected steps need from the pod to reach the backend.

    Plain Kubernetes dicts (EnvVar, Volume, VolumeMount) so the rewrite can add them to the
    task spec unchanged. Secrets are referenced, never copied into the Pipeline.
    """

    env: tuple[Mapping[str, Any], ...] = ()
    volumes: tuple[Mapping[str, Any], ...] = ()
    volume_mounts: tuple[Mapping[str, Any], ...] = ()
    args: tuple[str, ...] = ()


@dataclass
class TransferReport:
    """What a transfer did, for the one log line per workspace."""

    workspace: str
    action: str  # "fetch", "store", "publish"
    files: int = 0
    bytes: int = 0
    layers: int = 0
    seconds: float = 0.0
    detail: str = ""
    """e.g. "from build, test (lint skipped: fell back to clone)" or "no changes"."""

    def line(self) -> str:
        rate = self.bytes / self.seconds / 1e6 if self.seconds > 0 else 0.0
        text = (
            f"wrap {self.action} {self.workspace}: {self.files} files, {self.bytes} bytes, "
            f"{self.layers} layers, {self.seconds:.2f}s, {rate:.1f} MB/s"
        )
        return f"{text} ({self.detail})" if self.detail else text
