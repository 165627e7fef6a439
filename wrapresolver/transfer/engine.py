"""The layered data path, written once on top of any `BlobStore`.

fetch: resolve the task's input producers (a missing one falls back to its own inputs),
merge their layers, extract them safely, and record what the workspace looked like.
store: diff the workspace against that record, stream one layer of the changes, then write
the config and the manifest, the reference last so a reader never sees a half state.
publish: write the merge of the leaf producers' states to the user's exact target,
manifest and config only.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable, Iterator, Mapping

from wrapresolver.backends.base import BlobStore, Descriptor, get_backend
from wrapresolver.errors import IntegrityError, NotFoundError, TransferError
from wrapresolver.refs import producer_ref
from wrapresolver.stepspec import WorkspaceTransfer
from wrapresolver.transfer import oci_image, snapshot
from wrapresolver.transfer.apply import Extractor, empty_directory
from wrapresolver.transfer.localdisk import os_errors, record_stem
from wrapresolver.transfer.layers import LayerStats, store_layer, whole_tree
from wrapresolver.transfer.oci_image import Layer, State
from wrapresolver.transfer.report import TransferReport

Progress = Callable[[TransferReport], None]
PROGRESS_EVERY = 5.0
"""Seconds between two progress callbacks during one long transfer."""
MAX_CONFIG = 4 << 20


# ---- reading states ----

def _read_blob_small(store: BlobStore, desc: Descriptor, where: str) -> bytes:
    data = bytearray()
    for chunk in store.open_blob(desc.digest):
        data += chunk
        if len(data) > MAX_CONFIG:
            raise IntegrityError(f"the image config of {where} is larger than {MAX_CONFIG} bytes")
    got = "sha256:" + hashlib.sha256(data).hexdigest()
    if got != desc.digest:
        raise IntegrityError(f"the image config of {where} is corrupt: digest {got}, expected {desc.digest}")
    return bytes(data)


def read_state(store: BlobStore, ref: str, where: str) -> State | None:
    """The state under `ref`, or None when there is no such reference."""
    data = store.get_manifest(ref)
    if data is None:
        return None
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
    return oci_image.state_from(manifest, config, where)


@dataclass
class Resolution:
    """The merged input of a task and where each layer's blob lives."""

    layers: tuple[Layer, ...] = ()
    sources: dict[str, BlobStore] = field(default_factory=dict)
    base_store: BlobStore | None = None
    detail: str = ""


def open_base(spec: WorkspaceTransfer) -> BlobStore:
    base = get_backend(spec.backend).open(spec.base, spec.options)
    if not isinstance(base, BlobStore):
        raise TransferError(
            f"base {spec.base!r} of workspace {spec.workspace!r}: backend {spec.backend!r} "
            f"cannot seed layers from a base; leave `base` empty for this backend"
        )
    return base


def resolve_inputs(store: BlobStore, spec: WorkspaceTransfer) -> Resolution:
    """Merge the states of the task's inputs; skipped or failed producers fall back to theirs."""
    inputs = spec.resolve_inputs(
        lambda producer: read_state(store, producer_ref(spec.run, producer), f"producer {producer!r}")
    )
    order = [producer for producer, _ in inputs.states]
    notes = inputs.notes()
    if order:
        layers = oci_image.merge_layers([state for _, state in inputs.states])
        detail = "; ".join([f"from {', '.join(order)}", *notes])
        return Resolution(layers, {layer.descriptor.digest: store for layer in layers}, None, detail)
    if spec.base:
        base_store = open_base(spec)
        state = read_state(base_store, base_store.target_ref, f"base {spec.base!r}")
        if state is None:
            raise NotFoundError(
                f"base {spec.base!r} of workspace {spec.workspace!r} does not exist; "
                f"push it first or fix the `base` param"
            )
        detail = "; ".join([f"from base {spec.base}", *notes])
        return Resolution(state.layers, {l.descriptor.digest: base_store for l in state.layers}, base_store, detail)
    return Resolution(detail="; ".join(["empty", *notes]))


# ---- progress and errors ----

class _Ticker:
    def __init__(self, report: TransferReport, progress: Progress | None, start: float) -> None:
        self.report, self.progress, self.start = report, progress, start
        self.last = start
        self.base_files = self.base_bytes = 0

    def __call__(self, files: int, nbytes: int) -> None:
        self.report.files = self.base_files + files
        self.report.bytes = self.base_bytes + nbytes
        now = time.monotonic()
        if self.progress is not None and now - self.last >= PROGRESS_EVERY:
            self.last = now
            self.progress(replace(self.report, seconds=now - self.start))


# ---- the fetch record ----

def _record_paths(state_dir: Path, spec: WorkspaceTransfer) -> tuple[Path, Path]:
    stem = record_stem(state_dir, spec)
    return stem.with_name(stem.name + ".fetch.json"), stem.with_name(stem.name + ".snapshot.jsonl")


def _write_record(state_dir: Path, spec: WorkspaceTransfer, layers: tuple[Layer, ...], snap) -> None:
    state_dir.mkdir(parents=True, exist_ok=True)
    record_path, snap_path = _record_paths(state_dir, spec)
    snapshot.save(snap, snap_path)
    record = {
        "workspace": spec.workspace,
        "layers": [{"descriptor": l.descriptor.to_dict(), "diff_id": l.diff_id} for l in layers],
    }
    tmp = record_path.with_name(record_path.name + ".tmp")
    tmp.write_text(json.dumps(record))
    tmp.replace(record_path)


def _read_record(state_dir: Path, spec: WorkspaceTransfer):
    record_path, snap_path = _record_paths(state_dir, spec)
    if not record_path.is_file() or not snap_path.is_file():
        return None
    record = json.loads(record_path.read_text())
    layers = tuple(
        Layer(Descriptor.from_dict(item["descriptor"]), item["diff_id"]) for item in record["layers"]
    )
    return layers, snapshot.load(snap_path)


# ---- extraction ----

def _extract(
    resolution: Resolution, dest: Path, sub_path: str, where: str, ticker: _Ticker
) -> Extractor:
    extractor = Extractor(dest, sub_path)
    for layer in resolution.layers:
        source = resolution.sources[layer.descriptor.digest]

        def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
            for chunk in chunks:
                ticker.base_bytes += len(chunk)
                ticker(extractor.stats.files, 0)
                yield chunk

        extractor.apply(counted(source.open_blob(layer.descriptor.digest)), layer, where)
    extractor.finish()
    return extractor


def fetch(
    store: BlobStore, spec: WorkspaceTransfer, dest: Path, state_dir: Path,
    progress: Progress | None = None,
) -> TransferReport:
    """Reconstruct the task's input state of the workspace in `dest` (see module doc)."""
    report = TransferReport(spec.workspace, "fetch")
    if spec.bound == "false":
        report.detail = "workspace not bound, nothing to do"
        return report
    start = time.monotonic()
    resolution = resolve_inputs(store, spec)
    dest.mkdir(parents=True, exist_ok=True)
    ticker = _Ticker(report, progress, start)
    try:
        with os_errors("fetching", spec.workspace, dest):
            extractor = _extract(resolution, dest, spec.sub_path, f"workspace {spec.workspace!r}", ticker)
            _write_record(state_dir, spec, resolution.layers, snapshot.take(dest))
    except BaseException:
        empty_directory(dest)  # a half-extracted workspace must not look complete
        raise
    finally:
        if resolution.base_store is not None:
            resolution.base_store.close()
    report.files = extractor.stats.files
    report.layers = len(resolution.layers)
    report.seconds = time.monotonic() - start
    report.detail = resolution.detail
    return report


def fetch_ref(
    store: BlobStore, ref: str, dest: Path, sub_path: str = "", progress: Progress | None = None,
) -> TransferReport:
    """Extract the state stored under exactly `ref` (by hand: `wrapresolver fetch --target`)."""
    start = time.monotonic()
    state = read_state(store, ref, f"reference {ref!r}")
    if state is None:
        raise NotFoundError(f"there is no stored state under reference {ref!r}")
    report = TransferReport(state.annotations.get(oci_image.ANNOTATION_WORKSPACE, ref), "fetch")
    resolution = Resolution(state.layers, {l.descriptor.digest: store for l in state.layers})
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with os_errors("fetching", report.workspace, dest):
            extractor = _extract(resolution, dest, sub_path, f"reference {ref!r}", _Ticker(report, progress, start))
    except BaseException:
        empty_directory(dest)
        raise
    report.files, report.layers = extractor.stats.files, len(state.layers)
    report.seconds = time.monotonic() - start
    report.detail = f"from {ref}"
    return report


# ---- writing states ----

def _ensure_blobs(store: BlobStore, spec: WorkspaceTransfer | None, layers: tuple[Layer, ...]) -> None:
    """Input layers that came from a base in another place are copied here before the manifest."""
    base: BlobStore | None = None
    try:
        for layer in layers:
            if store.blob_exists(layer.descriptor.digest):
                continue
            if spec is None or not spec.base:
                raise NotFoundError(
                    f"layer {layer.descriptor.digest} of the input state is missing from the "
                    f"storage; it may have been deleted while the run was going on"
                )
            base = base or open_base(spec)
            store.copy_blob_from(base, layer.descriptor)
    finally:
        if base is not None:
            base.close()


def put_state(
    store: BlobStore, layers: tuple[Layer, ...], annotations: Mapping[str, str], refs: list[str]
) -> None:
    """Config blob, then the manifest under each reference: references last."""
    config = oci_image.build_config(layers)
    config_desc = oci_image.config_descriptor(config)
    if not store.blob_exists(config_desc.digest):
        got = store.put_blob(io.BytesIO(config), oci_image.CONFIG)
        if got.digest != config_desc.digest:
            raise IntegrityError(f"the backend stored the image config as {got.digest}, expected {config_desc.digest}")
    manifest = oci_image.build_manifest(config_desc, layers, annotations)
    for ref in refs:
        store.put_manifest(ref, manifest, oci_image.MANIFEST)


def _annotations(spec: WorkspaceTransfer) -> dict[str, str]:
    return {
        oci_image.ANNOTATION_WORKSPACE: spec.workspace,
        oci_image.ANNOTATION_RUN: spec.run,
        oci_image.ANNOTATION_TASK: spec.task,
    }


def _new_layer(store, src, changes, prefix, media_type, ticker) -> tuple[Layer, LayerStats]:
    written = store_layer(store, src, changes, prefix, media_type, lambda s: ticker(s.files, s.bytes))
    return written.layer, written.stats


def store(
    store: BlobStore, spec: WorkspaceTransfer, src: Path, state_dir: Path,
    progress: Progress | None = None,
) -> TransferReport:
    """Record what the task changed since fetch as one new layer on top of its input."""
    report = TransferReport(spec.workspace, "store")
    if spec.bound == "false":
        report.detail = "workspace not bound, nothing to do"
        return report
    start = time.monotonic()
    media_type = oci_image.layer_media_type(spec.options.get("compression", ""))
    ticker = _Ticker(report, progress, start)
    with os_errors("storing", spec.workspace, src):
        record = _read_record(state_dir, spec)
        after = snapshot.take(src)
        if record is None:
            inputs: tuple[Layer, ...] = ()
            changes = whole_tree(after)
            note = "no fetch record: stored the whole tree"
        else:
            inputs, before = record
            changes = snapshot.diff(before, after)
            note = ""
        _ensure_blobs(store, spec, inputs)
        layers = inputs
        if changes:
            layer, stats = _new_layer(store, src, changes, spec.sub_path, media_type, ticker)
            layers = inputs + (layer,)
            report.files, report.bytes = stats.files, layer.descriptor.size
            note = note or f"{len(changes.changed)} changed, {len(changes.deleted)} deleted, {stats.bytes} bytes before compression"
        else:
            note = "no changes, no new layer"
        refs = [producer_ref(spec.run, spec.task)]
        if spec.publish:
            refs.append(store.target_ref)
        put_state(store, layers, _annotations(spec), refs)
    report.layers = len(layers)
    report.seconds = time.monotonic() - start
    report.detail = note + ("; published to the target" if spec.publish else "")
    return report


def store_ref(
    store: BlobStore, src: Path, ref: str, options: Mapping[str, str] = {},
    progress: Progress | None = None,
) -> TransferReport:
    """Store the whole tree `src` as one layer under exactly `ref` (by hand, or to make a base)."""
    start = time.monotonic()
    report = TransferReport(ref, "store")
    media_type = oci_image.layer_media_type(options.get("compression", ""))
    with os_errors("storing", ref, src):
        changes = whole_tree(snapshot.take(src))
        layers: tuple[Layer, ...] = ()
        if changes:
            layer, stats = _new_layer(store, src, changes, "", media_type, _Ticker(report, progress, start))
            layers = (layer,)
            report.files, report.bytes = stats.files, layer.descriptor.size
        put_state(store, layers, {}, [ref])
    report.layers = len(layers)
    report.seconds = time.monotonic() - start
    report.detail = f"to {ref}"
    return report


def publish(store: BlobStore, spec: WorkspaceTransfer, progress: Progress | None = None) -> TransferReport:
    """Write the merged final state to the user's exact target; no layer data is copied."""
    start = time.monotonic()
    report = TransferReport(spec.workspace, "publish")
    resolution = resolve_inputs(store, spec)
    if resolution.base_store is not None:
        resolution.base_store.close()
    _ensure_blobs(store, spec, resolution.layers)
    put_state(store, resolution.layers, _annotations(spec), [store.target_ref])
    report.layers = len(resolution.layers)
    report.seconds = time.monotonic() - start
    report.detail = f"{resolution.detail}; to {store.target_ref}"
    return report
