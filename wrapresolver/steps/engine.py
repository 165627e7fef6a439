"""The layered data path, written once around any `BlobStore`: `LayeredStore`.

fetch: resolve the task's input producers (a missing one falls back to its own inputs),
merge their layers, extract them safely, and record what the workspace looked like.
store: diff the workspace against that record, stream one layer of the changes, then write
the config and the manifest, the reference last so a reader never sees a half state.
publish: write the merge of the leaf producers' states to the user's exact target,
manifest and config only. A published state past its `max_layers` is squashed into one
layer first, by the publishing store or the publish task (`squash.py`).

`LayeredStore` wraps a store (the store never calls back into this module); the rules every
step follows (unbound workspaces, the fetch record, cleanup, timing, progress) are the
runner's (`wrapresolver.steps.runner`). The module functions `fetch`, `store`, ... run
one action on a bare `BlobStore`, for tools and tests.

The state documents themselves (config, manifest, reading one back) are `statedocs.py`'s.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wrapresolver.backends.base import BlobStore, Input, Moved, Tick, WorkspaceStore
from wrapresolver.backends.registry import get_backend
from wrapresolver.core import oci_image
from wrapresolver.core.refs import producer_ref, state_uri
from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.core.values import Artifact, Descriptor, Layer, State, TransferReport
from wrapresolver.errors import NotFoundError, TransferError
from wrapresolver.steps import runner
from wrapresolver.steps.runner import Progress
from wrapresolver.steps.squash import squash_in_temp, squash_layers, squash_tree, too_many
from wrapresolver.steps.statedocs import put_config, put_manifest, put_state, read_state
from wrapresolver.transfer import snapshot
from wrapresolver.transfer.apply import Extractor
from wrapresolver.transfer.layers import LayerStats, store_layer, whole_tree


@dataclass
class LayeredInput:
    """The merged input of a task and where each layer's blob lives."""

    layers: tuple[Layer, ...] = ()
    sources: dict[str, BlobStore] = field(default_factory=dict)
    base_store: BlobStore | None = None
    detail: str = ""
    artifacts: tuple[Artifact, ...] = ()
    """The states merged, as provenance names them."""
    producers: tuple[str, ...] = ()
    """The producers merged, in merge order; ("base",) for a task started from its base."""


def open_base(spec: WorkspaceTransfer) -> BlobStore:
    base = get_backend(spec.backend).open(spec.base, spec.options)
    if not isinstance(base, BlobStore):
        raise TransferError(
            f"base {spec.base!r} of workspace {spec.workspace!r}: backend {spec.backend!r} "
            f"cannot seed layers from a base; leave `base` empty for this backend"
        )
    return base


def resolve_inputs(store: BlobStore, spec: WorkspaceTransfer) -> LayeredInput:
    """Merge the states of the task's inputs; skipped or failed producers fall back to theirs."""
    inputs = spec.resolve_inputs(
        lambda producer: read_state(store, producer_ref(spec.run, producer), f"producer {producer!r}")
    )
    order = [producer for producer, _ in inputs.states]
    notes = inputs.notes()
    if order:
        layers = oci_image.merge_layers([state for _, state in inputs.states])
        detail = "; ".join([f"from {', '.join(order)}", *notes])
        artifacts = tuple(
            Artifact(state_uri(spec.backend, spec.target, producer_ref(spec.run, producer)), state.digest)
            for producer, state in inputs.states
        )
        return LayeredInput(layers, {layer.descriptor.digest: store for layer in layers}, None, detail, artifacts,
                          tuple(order))
    if spec.base:
        base_store = open_base(spec)
        try:
            state = read_state(base_store, base_store.target_ref, f"base {spec.base!r}")
        except BaseException:
            base_store.close()
            raise
        if state is None:
            base_store.close()
            if spec.base_required:
                raise NotFoundError(
                    f"base {spec.base!r} of workspace {spec.workspace!r} does not exist and "
                    f"`base-missing` is `fail`; push it first, fix the `base` param, or let a "
                    f"first run start empty (`base-missing: empty`)"
                )
            return LayeredInput(detail="; ".join([f"empty: base {spec.base} does not exist yet", *notes]))
        detail = "; ".join([f"from base {spec.base}", *notes])
        return LayeredInput(state.layers, {layer.descriptor.digest: base_store for layer in state.layers}, base_store,
                          detail, (Artifact(spec.base, state.digest),), ("base",))
    return LayeredInput(detail="; ".join(["empty", *notes]))



def _extract(
    layers: tuple[Layer, ...], sources: Mapping[str, BlobStore], dest: Path, sub_path: str, where: str,
    tick: Tick,
) -> Moved:
    extractor = Extractor(dest, sub_path)
    total = 0
    for layer in layers:
        source = sources[layer.descriptor.digest]

        def counted(chunks: Iterator[bytes]) -> Iterator[bytes]:
            nonlocal total
            for chunk in chunks:
                total += len(chunk)
                tick(extractor.stats.files, total)
                yield chunk

        extractor.apply(counted(source.open_blob(layer.descriptor.digest)), layer, where)
    extractor.finish()
    return Moved(files=extractor.stats.files, bytes=total, layers=len(layers), entries=extractor.record())


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


def _annotations(spec: WorkspaceTransfer, producers: tuple[str, ...] | None = None,
                 own_layer: str = "") -> dict[str, str]:
    annotations = {
        oci_image.ANNOTATION_WORKSPACE: spec.workspace,
        oci_image.ANNOTATION_RUN: spec.run,
        oci_image.ANNOTATION_TASK: spec.task,
        oci_image.ANNOTATION_CREATED: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    if producers is not None:  # unknown without a fetch record (the task did not fetch)
        annotations[oci_image.ANNOTATION_INPUTS] = ",".join(producers)
    if own_layer:
        annotations[oci_image.ANNOTATION_OWN_LAYER] = own_layer
    return annotations


def _layer_record(layers: tuple[Layer, ...], producers: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"layers": [{"descriptor": lay.descriptor.to_dict(), "diff_id": lay.diff_id} for lay in layers],
            "producers": list(producers)}


def _producers_of(record: Mapping[str, Any] | None) -> tuple[str, ...] | None:
    """The producers a fetch record names; None without a record or from an older step image."""
    names = record.get("producers") if record is not None else None
    if not isinstance(names, list):
        return None
    return tuple(str(name) for name in names)


def _layers_of(record: Mapping[str, Any]) -> tuple[Layer, ...]:
    return tuple(Layer(Descriptor.from_dict(item["descriptor"]), item["diff_id"]) for item in record["layers"])


# ---- the layered store ----

class LayeredStore(WorkspaceStore):
    """The workspace store of any `BlobStore`: states as OCI images, one layer per producer."""

    def __init__(self, blobs: BlobStore, target: str = "") -> None:
        self.blobs = blobs
        self.target = target or getattr(blobs, "location", "")
        """The target as the user wrote it, for messages (else the store's own `location`)."""

    def warm_up(self) -> None:
        self.blobs.warm_up()

    def probe(self, *, read: bool, write: bool) -> bool:
        return self.blobs.probe(read=read, write=write)

    def resolve(self, spec: WorkspaceTransfer) -> Input:
        res = resolve_inputs(self.blobs, spec)
        inputs = Input(_layer_record(res.layers, res.producers), len(res.layers), res.detail, res,
                       artifacts=res.artifacts)
        if res.base_store is not None:
            inputs.close = res.base_store.close
        return inputs

    def materialize(self, spec: WorkspaceTransfer, inputs: Input, dest: Path, tick: Tick) -> Moved:
        res: LayeredInput = inputs.value
        return _extract(res.layers, res.sources, dest, spec.sub_path, f"workspace {spec.workspace!r}", tick)

    def save(
        self, spec: WorkspaceTransfer, src: Path, scratch: Path, record: Mapping[str, Any] | None,
        before: Mapping[str, snapshot.Entry], after: Mapping[str, snapshot.Entry], changes: snapshot.Changes,
        tick: Tick,
    ) -> Moved:
        inputs = _layers_of(record) if record is not None else ()
        _ensure_blobs(self.blobs, spec, inputs)
        layers, moved = inputs, Moved(0, 0, detail="no changes, no new layer")
        own_layer = ""
        media_type = oci_image.layer_media_type(spec.options.get("compression", ""))
        if changes:
            written = store_layer(self.blobs, src, changes, spec.sub_path, media_type,
                                  lambda s: tick(s.files, s.bytes), after)
            layers = inputs + (written.layer,)
            own_layer = written.layer.descriptor.digest
            moved = Moved(
                written.stats.files, written.layer.descriptor.size,
                detail=f"{len(changes.changed)} changed, {len(changes.deleted)} deleted, "
                f"{written.stats.bytes} bytes before compression",
            )
        ref = producer_ref(spec.run, spec.task)
        config = put_config(self.blobs, layers, may_exist=not changes)
        annotations = _annotations(spec, _producers_of(record), own_layer)
        digest = put_manifest(self.blobs, config, layers, annotations, [ref])
        moved.artifacts = (Artifact(state_uri(spec.backend, spec.target, ref), digest),)
        moved.layers = len(layers)
        if spec.publish:
            # A manifest of its own (DESIGN §6a): a registry deletes by digest, so the run's
            # state could not be reclaimed if the published target shared its manifest.
            published = {**annotations, oci_image.ANNOTATION_PUBLISHED: "true"}
            if too_many(len(layers), spec.max_layers):
                # Only the published state is squashed: the run's own state above keeps
                # naming the layers it replaces, so reclaiming the run frees them.
                squashed = self._squash(spec, src, scratch, after, layers, media_type, tick)
                published[oci_image.ANNOTATION_COMPACTED] = str(len(layers))
                published.pop(oci_image.ANNOTATION_OWN_LAYER, None)  # no longer a layer of its own
                moved.detail += f"; compacted: {len(layers)} layers squashed into one (max-layers {spec.max_layers})"
                moved.bytes += squashed.descriptor.size
                layers = (squashed,)
                config = put_config(self.blobs, layers, may_exist=False)
            target_digest = put_manifest(self.blobs, config, layers, published, [self.blobs.target_ref])
            moved.artifacts += (Artifact(spec.target, target_digest, build_artifact=True),)
        return moved

    def _squash(
        self, spec: WorkspaceTransfer, src: Path, scratch: Path, after: Mapping[str, snapshot.Entry],
        layers: tuple[Layer, ...], media_type: str, tick: Tick,
    ) -> Layer:
        """The state of `layers` as one layer. A task that saw the whole workspace left the
        state itself on disk: it is stored from there, with nothing downloaded. One that saw
        only its subPath has the rest in the layers: they are extracted into `scratch`."""
        def progress(stats: LayerStats) -> None:
            tick(stats.files, stats.bytes)

        if not spec.sub_path:
            return squash_tree(self.blobs, src, media_type, progress, after).layer
        sources = {lay.descriptor.digest: self.blobs for lay in layers}
        return squash_layers(layers, sources, self.blobs, scratch, media_type,
                             f"workspace {spec.workspace!r}", progress).layer

    def publish(self, spec: WorkspaceTransfer, tick: Tick) -> Moved:
        """The merged final state to the exact target: manifest and config only, unless it is
        past `max_layers`; then one squashed layer too (`squash_in_temp`)."""
        res = resolve_inputs(self.blobs, spec)
        if res.base_store is not None:
            res.base_store.close()
        _ensure_blobs(self.blobs, spec, res.layers)
        layers, annotations, detail = res.layers, _annotations(spec, res.producers), res.detail
        moved = Moved(0, 0)
        if too_many(len(layers), spec.max_layers):
            media_type = oci_image.layer_media_type(spec.options.get("compression", ""))
            written = squash_in_temp(layers, self.blobs, media_type, spec.workspace, lambda s: tick(s.files, s.bytes))
            annotations[oci_image.ANNOTATION_COMPACTED] = str(len(layers))
            detail += f"; compacted: {len(layers)} layers squashed into one (max-layers {spec.max_layers})"
            layers = (written.layer,)
            moved = Moved(written.stats.files, written.layer.descriptor.size)
        digest = put_state(self.blobs, layers, annotations, [self.blobs.target_ref])
        moved.layers, moved.detail = len(layers), f"{detail}; to {self.blobs.target_ref}"
        moved.artifacts = (Artifact(spec.target, digest, build_artifact=True),)
        return moved

    def pull(self, dest: Path, sub_path: str, tick: Tick) -> Moved:
        return self.pull_ref(self.blobs.target_ref, dest, sub_path, tick)

    def pull_ref(self, ref: str, dest: Path, sub_path: str, tick: Tick) -> Moved:
        state = read_state(self.blobs, ref, f"reference {ref!r}")
        if state is None:
            where = f" at {self.target}" if self.target else ""
            raise NotFoundError(
                f"there is no stored state under reference {ref!r}{where}: nothing was stored or "
                f"published there yet, or it was deleted; check the target, or run the Pipeline first"
            )
        sources = {lay.descriptor.digest: self.blobs for lay in state.layers}
        moved = _extract(state.layers, sources, dest, sub_path, f"reference {ref!r}", tick)
        moved.name = state.annotations.get(oci_image.ANNOTATION_WORKSPACE, ref)
        moved.detail = f"from {ref}"
        return moved

    def push(self, src: Path, options: Mapping[str, str] | None, tick: Tick) -> Moved:
        return self.push_ref(src, self.blobs.target_ref, self.blobs.options if options is None else options, tick)

    def push_ref(self, src: Path, ref: str, options: Mapping[str, str], tick: Tick) -> Moved:
        media_type = oci_image.layer_media_type(options.get("compression", ""))
        entries = snapshot.take(src)
        changes = whole_tree(entries)
        layers: tuple[Layer, ...] = ()
        moved = Moved(0, 0, name=ref, detail=f"to {ref}")
        if changes:
            written = store_layer(self.blobs, src, changes, "", media_type, lambda s: tick(s.files, s.bytes), entries)
            layers = (written.layer,)
            moved.files, moved.bytes = written.stats.files, written.layer.descriptor.size
        put_state(self.blobs, layers, {}, [ref])
        moved.layers = len(layers)
        return moved

    def close(self) -> None:
        self.blobs.close()


# ---- one action on a bare BlobStore (tools, tests) ----

def fetch(
    store: BlobStore, spec: WorkspaceTransfer, dest: Path, state_dir: Path, progress: Progress | None = None,
) -> TransferReport:
    """Reconstruct the task's input state of the workspace in `dest` (see module doc)."""
    return runner.fetch(LayeredStore(store), spec, dest, state_dir, progress)


def store(
    store: BlobStore, spec: WorkspaceTransfer, src: Path, state_dir: Path, progress: Progress | None = None,
) -> TransferReport:
    """Record what the task changed since fetch as one new layer on top of its input."""
    return runner.store(LayeredStore(store), spec, src, state_dir, progress)


def publish(store: BlobStore, spec: WorkspaceTransfer, progress: Progress | None = None) -> TransferReport:
    """Write the merged final state to the user's exact target; no layer data is copied."""
    return runner.publish(LayeredStore(store), spec, progress)


def fetch_ref(
    store: BlobStore, ref: str, dest: Path, sub_path: str = "", progress: Progress | None = None,
) -> TransferReport:
    """Extract the state stored under exactly `ref` (by hand: `wrapresolver fetch --target`)."""
    layered = LayeredStore(store)
    return runner.pull_with(lambda tick: layered.pull_ref(ref, dest, sub_path, tick), dest, progress)


def store_ref(
    store: BlobStore, src: Path, ref: str, options: Mapping[str, str] | None = None,
    progress: Progress | None = None,
) -> TransferReport:
    """Store the whole tree `src` as one layer under exactly `ref` (by hand, or to make a base)."""
    layered = LayeredStore(store)
    return runner.push_with(lambda tick: layered.push_ref(src, ref, options or {}, tick), src, progress)


def pull(store: BlobStore, dest: Path, sub_path: str = "", progress: Progress | None = None) -> TransferReport:
    """The state at the store's exact target into `dest`."""
    return runner.pull(LayeredStore(store), dest, sub_path, progress)


def push(
    store: BlobStore, src: Path, options: Mapping[str, str] | None = None, progress: Progress | None = None,
) -> TransferReport:
    """The whole tree `src` to the store's exact target, with the options it was opened with."""
    return runner.push(LayeredStore(store), src, options, progress)


def fetch_state(
    store: BlobStore, state: State, dest: Path, where: str, sub_path: str = "", progress: Progress | None = None,
) -> TransferReport:
    """Extract a state already read (or a state made of some of its layers) into `dest`, by hand."""
    sources = {lay.descriptor.digest: store for lay in state.layers}
    return runner.pull_with(lambda tick: _extract(state.layers, sources, dest, sub_path, where, tick), dest, progress)
