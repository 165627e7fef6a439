"""A stored state's documents: its image config and manifest, read and written.

What `LayeredStore` and the tools around it (inspect, gc, tests) share: a state is a
manifest naming a config and layers, and a reference is written last, after every blob it
names, so a reader never sees a half state.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from dataclasses import replace

from wrapresolver.backends.base import BlobStore
from wrapresolver.core import oci_image
from wrapresolver.core.values import Descriptor, Layer, State, sha256_digest
from wrapresolver.errors import IntegrityError, NotFoundError

MAX_CONFIG = 4 << 20


def _read_blob_small(store: BlobStore, desc: Descriptor, where: str) -> bytes:
    data = bytearray()
    for chunk in store.open_blob(desc.digest):
        data += chunk
        if len(data) > MAX_CONFIG:
            raise IntegrityError(f"the image config of {where} is larger than {MAX_CONFIG} bytes")
    got = sha256_digest(data)
    if got != desc.digest:
        raise IntegrityError(f"the image config of {where} is corrupt: digest {got}, expected {desc.digest}")
    return bytes(data)


def read_state(store: BlobStore, ref: str, where: str) -> State | None:
    """The state under `ref`, or None when there is no such reference."""
    data = store.get_manifest(ref)
    if data is None:
        return None
    digest = sha256_digest(data)
    manifest = oci_image.parse_manifest(data, where)
    if manifest.get("mediaType") in (oci_image.INDEX, oci_image.DOCKER_LIST) or (
        "manifests" in manifest and "layers" not in manifest
    ):
        digest = oci_image.pick_from_index(manifest, where)
        data = store.get_manifest(digest)
        if data is None:
            raise NotFoundError(f"{where} is an image index whose image {digest} is missing")
        manifest = oci_image.parse_manifest(data, where)
    if "config" not in manifest:
        raise IntegrityError(f"the manifest of {where} has no config")
    config = _read_blob_small(store, Descriptor.from_dict(manifest["config"]), where)
    return replace(oci_image.state_from(manifest, config, where), digest=digest)


def put_state(
    store: BlobStore, layers: tuple[Layer, ...], annotations: Mapping[str, str], refs: list[str]
) -> str:
    """Config blob, then the manifest under each reference: references last. The manifest's digest."""
    return put_manifest(store, put_config(store, layers), layers, annotations, refs)


def put_config(store: BlobStore, layers: tuple[Layer, ...], *, may_exist: bool = True) -> Descriptor:
    """The image config of `layers`, uploaded unless the store has it.

    `may_exist=False` when a layer was just written: its diff_id makes the config new, so
    asking first would cost a round trip that always answers no. Should it exist anyway
    (the same change stored twice), blobs are content-addressed and a second upload of
    the same bytes changes nothing.
    """
    config = oci_image.build_config(layers)
    config_desc = oci_image.config_descriptor(config)
    if not may_exist or not store.blob_exists(config_desc.digest):
        got = store.put_blob(io.BytesIO(config), oci_image.CONFIG)
        if got.digest != config_desc.digest:
            raise IntegrityError(f"the backend stored the image config as {got.digest}, expected {config_desc.digest}")
    return config_desc


def put_manifest(
    store: BlobStore, config: Descriptor, layers: tuple[Layer, ...], annotations: Mapping[str, str],
    refs: list[str],
) -> str:
    """The manifest under each reference, after every blob it names. The manifest's digest."""
    manifest = oci_image.build_manifest(config, layers, annotations)
    for ref in refs:
        store.put_manifest(ref, manifest, oci_image.MANIFEST)
    return sha256_digest(manifest)
