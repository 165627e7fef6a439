"""Compaction: a chain of layers stored again as one layer holding the tree they make.

A carried cache gains a layer every run (each store adds the task's changes on top of what
it fetched), so without this its fetch would download and apply ever more layers, most of
them holding files later layers replaced or deleted. When a published state would pass its
`max_layers`, the step that publishes (the publisher's store, or the publish task) writes
the whole tree as one layer for the exact target instead (docs/transfer.md, "Compaction").

The squashed layer is made from a real tree, never by merging tar streams: the tree on disk
is exactly what applying the chain in order gives (the same `Extractor` every fetch uses),
so whiteouts, opaque directories, hard links made against older versions of a file, paths
that run through symlinks and directories replaced by files cannot come out differently.
Two sources of that tree:

* the workspace the store step already has on disk, when the task saw all of it (no
  `subPath`): nothing to download, the layer is written as `wrapresolver store --target`
  writes one;
* otherwise the layers themselves, extracted into a scratch directory first.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path

from wrapresolver.backends.base import BlobStore
from wrapresolver.core.values import Layer
from wrapresolver.transfer import snapshot
from wrapresolver.transfer.apply import Extractor
from wrapresolver.transfer.layers import LayerStats, WrittenLayer, store_layer, whole_tree
from wrapresolver.transfer.localdisk import os_errors


def too_many(layers: int, max_layers: int) -> bool:
    """True when a state of `layers` layers must be squashed: past the limit, and more than one."""
    return max_layers > 0 and layers > max_layers and layers > 1


def squash_tree(
    store: BlobStore, root: Path, media_type: str, tick: Callable[[LayerStats], None] = lambda s: None,
    entries: Mapping[str, snapshot.Entry] | None = None,
) -> WrittenLayer:
    """Every entry under `root` as one layer in `store`: a state with nothing below it.

    `entries`: a walk of `root` just taken (the store step's), so it is not walked twice."""
    if entries is None:
        entries = snapshot.take(root)
    return store_layer(store, root, whole_tree(entries), "", media_type, tick, entries)


def squash_layers(
    layers: tuple[Layer, ...], sources: Mapping[str, BlobStore], store: BlobStore, scratch: Path,
    media_type: str, where: str, tick: Callable[[LayerStats], None] = lambda s: None,
) -> WrittenLayer:
    """Apply `layers` in order into an empty directory under `scratch`, then store that tree
    as one layer in `store`. Every blob is verified on the way, as a fetch verifies it.

    As root the owners the layers recorded are restored in the tree and so kept; otherwise
    every entry of the squashed layer belongs to the user this step runs as (what a fetch
    by that user would give anyway).
    """
    tree = scratch / "squashed"
    tree.mkdir()
    extractor = Extractor(tree)
    for layer in layers:
        source = sources[layer.descriptor.digest]
        extractor.apply(source.open_blob(layer.descriptor.digest), layer, where)
    extractor.finish()
    return squash_tree(store, tree, media_type, tick)


def squash_in_temp(
    layers: tuple[Layer, ...], store: BlobStore, media_type: str, workspace: str,
    tick: Callable[[LayerStats], None] = lambda s: None,
) -> WrittenLayer:
    """`squash_layers` of blobs all in `store`, for a step with no workspace of its own (the
    publish task): the tree is built in a temporary directory of the container (`$TMPDIR`),
    which needs room for the whole workspace; a full disk is a message naming it."""
    sources = {layer.descriptor.digest: store for layer in layers}
    with os_errors("squashing", workspace, Path(tempfile.gettempdir())):
        with tempfile.TemporaryDirectory(prefix="wrap-squash-") as scratch:
            return squash_layers(layers, sources, store, Path(scratch), media_type, f"workspace {workspace!r}", tick)
