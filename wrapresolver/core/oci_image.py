"""The OCI image documents a stored state is made of: manifest, config, layer media types.

A state is a plain OCI image so that `crane export` (or any OCI tool) of a stored reference
gives the workspace. Building and parsing these documents is pure; reading and writing them
is the engine's job.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

from wrapresolver.core.values import Descriptor, Layer, State, is_sha256_digest, sha256_digest
from wrapresolver.errors import IntegrityError, NotFoundError, ParamError

MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX = "application/vnd.oci.image.index.v1+json"
CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_GZIP = "application/vnd.oci.image.layer.v1.tar+gzip"
LAYER_ZSTD = "application/vnd.oci.image.layer.v1.tar+zstd"

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
# Docker's layer types carry the same bytes as the OCI ones; a base image pulled from Docker
# Hub uses them, and our own manifests are written with the OCI names.
_SAME_AS = {
    "application/vnd.docker.image.rootfs.diff.tar.gzip": LAYER_GZIP,
    "application/vnd.docker.image.rootfs.diff.tar": LAYER_TAR,
    "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip": LAYER_GZIP,
}
LAYER_TYPES = (LAYER_TAR, LAYER_GZIP, LAYER_ZSTD)

COMPRESSIONS = {"zstd": LAYER_ZSTD, "gzip": LAYER_GZIP}
DEFAULT_COMPRESSION = "zstd"

ANNOTATION_WORKSPACE = "dev.wrapresolver.workspace"
ANNOTATION_RUN = "dev.wrapresolver.run"
ANNOTATION_TASK = "dev.wrapresolver.task"
ANNOTATION_PUBLISHED = "dev.wrapresolver.published"
"""On the published target's manifest only, so it never shares a digest with a run's state."""
ANNOTATION_INPUTS = "dev.wrapresolver.inputs"
"""The producers whose states the task fetched and merged, comma-separated in merge order
(`base` for a task that started from the base): what `wrapresolver inspect` draws."""
ANNOTATION_OWN_LAYER = "dev.wrapresolver.own-layer"
"""The digest of the layer the task itself added (absent when it changed nothing): the
state's layers without it are exactly what the task fetched."""
ANNOTATION_COMPACTED = "dev.wrapresolver.compacted"
"""On a state stored as one squashed layer: how many layers that one replaced (docs/transfer.md)."""
ANNOTATION_CREATED = "org.opencontainers.image.created"
"""When a state was stored (RFC 3339): what `wrapresolver gc --older-than` reads its age from."""


def layer_media_type(compression: str) -> str:
    """The layer media type of a `compression` option value (empty: the default)."""
    try:
        return COMPRESSIONS[compression or DEFAULT_COMPRESSION]
    except KeyError:
        raise ParamError(
            f"compression {compression!r} is not supported; use {' or '.join(COMPRESSIONS)}"
        ) from None


def normalise_layer_type(media_type: str) -> str:
    return _SAME_AS.get(media_type, media_type)


def merge_layers(states: list[State]) -> tuple[Layer, ...]:
    """Concatenate the states' layers in order, each blob once at its first position.

    States that share ancestry start with the same layers, so the shared part appears once
    and each branch's own layers follow in merge order: later layers win on conflicts.
    """
    seen: set[str] = set()
    merged: list[Layer] = []
    for state in states:
        for layer in state.layers:
            if layer.descriptor.digest not in seen:
                seen.add(layer.descriptor.digest)
                merged.append(layer)
    return tuple(merged)


def build_config(layers: tuple[Layer, ...]) -> bytes:
    """A minimal image config whose rootfs lists the layers' diff_ids, as OCI tools expect.

    No `created` time: the same layers always give the same config digest.
    """
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer.diff_id for layer in layers]},
    }
    return json.dumps(config, sort_keys=True, separators=(",", ":")).encode()


def build_manifest(
    config: Descriptor, layers: tuple[Layer, ...], annotations: Mapping[str, str]
) -> bytes:
    manifest: dict = {
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": config.to_dict(),
        "layers": [layer.descriptor.to_dict() for layer in layers],
    }
    if annotations:
        manifest["annotations"] = dict(sorted(annotations.items()))
    return json.dumps(manifest, sort_keys=True, separators=(",", ":")).encode()


def parse_manifest(data: bytes, where: str) -> dict:
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise IntegrityError(f"the manifest of {where} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise IntegrityError(f"the manifest of {where} is not a JSON object")
    return manifest


def pick_from_index(index: dict, where: str) -> str:
    """The digest of the linux/amd64 image in an index (a multi-platform base), else the first."""
    manifests = index.get("manifests") or []
    if not manifests:
        raise NotFoundError(f"{where} is an image index without any image")
    for entry in manifests:
        platform = entry.get("platform") or {}
        if platform.get("os") == "linux" and platform.get("architecture") == "amd64":
            return entry["digest"]
    return manifests[0]["digest"]


def state_from(manifest: dict, config_bytes: bytes, where: str) -> State:
    """Pair each layer descriptor with its diff_id from the config."""
    try:
        diff_ids = json.loads(config_bytes)["rootfs"]["diff_ids"]
    except (ValueError, KeyError, TypeError) as exc:
        raise IntegrityError(f"the image config of {where} has no rootfs.diff_ids") from exc
    raw_layers = manifest.get("layers") or []
    if len(diff_ids) != len(raw_layers):
        raise IntegrityError(
            f"the image config of {where} lists {len(diff_ids)} diff_ids "
            f"for {len(raw_layers)} layers"
        )
    layers = []
    for raw, diff_id in zip(raw_layers, diff_ids, strict=True):
        desc = Descriptor.from_dict(raw)
        desc = Descriptor(normalise_layer_type(desc.media_type), desc.digest, desc.size, desc.annotations)
        if desc.media_type not in LAYER_TYPES:
            raise IntegrityError(
                f"{where} has a layer of media type {desc.media_type!r}, which is not a tar layer"
            )
        layers.append(Layer(desc, diff_id))
    return State(tuple(layers), dict(manifest.get("annotations") or {}))


def config_descriptor(config_bytes: bytes) -> Descriptor:
    return Descriptor(CONFIG, sha256_digest(config_bytes), len(config_bytes))


# ---- lenient readers: the delete side reads what any writer may have left ----

def blobs_of(manifest: bytes) -> dict[str, int]:
    """Digest -> size of every blob a manifest names, the manifest's own blob included."""
    found = {sha256_digest(manifest): len(manifest)}
    try:
        doc = json.loads(manifest)
    except ValueError:
        return found
    if not isinstance(doc, dict):
        return found
    for entry in [doc.get("config"), *(doc.get("layers") or []), *(doc.get("manifests") or [])]:
        if isinstance(entry, dict) and is_sha256_digest(str(entry.get("digest", ""))):
            found[entry["digest"]] = int(entry.get("size") or 0)
    return found


def annotations_of(manifest: bytes) -> dict[str, str]:
    try:
        doc = json.loads(manifest)
    except ValueError:
        return {}
    found = doc.get("annotations") if isinstance(doc, dict) else None
    return {str(k): str(v) for k, v in found.items()} if isinstance(found, dict) else {}


def created_of(annotations: dict[str, str]) -> float | None:
    from datetime import datetime

    text = annotations.get(ANNOTATION_CREATED, "")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None
    except ValueError:
        return None
