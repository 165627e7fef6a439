"""Squashing a chain of layers: one layer that extracts to exactly the tree the chain gives.

The property: whatever sequence of changes made the layers (files written, rewritten,
deleted, directories emptied or replaced by files, symlinks, hard links, modes, mtimes),
applying the squashed layer to an empty directory gives the same tree, entry for entry and
with the same hard-link groups, as applying the layers in order.
"""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wrapresolver.backends.file import LayoutStore
from wrapresolver.core import oci_image
from wrapresolver.core.values import Layer
from wrapresolver.steps.squash import squash_layers, squash_tree, too_many
from wrapresolver.transfer import snapshot
from wrapresolver.transfer.apply import Extractor
from wrapresolver.transfer.layers import store_layer

NAMES = ("a", "b", "c")
PATHS = [*NAMES, *(f"{x}/{y}" for x in NAMES for y in NAMES), "a/b/c", "b/a/a"]
MTIMES = st.integers(1_000_000_000, 1_900_000_000).map(lambda s: s * 1_000_000_000 + 123_456_789)

write_op = st.tuples(st.just("write"), st.sampled_from(PATHS), st.binary(max_size=40),
                     st.sampled_from([0o644, 0o600, 0o755, 0o640]), MTIMES)
delete_op = st.tuples(st.just("delete"), st.sampled_from(PATHS))
mkdir_op = st.tuples(st.just("mkdir"), st.sampled_from(PATHS), st.sampled_from([0o755, 0o700, 0o750]))
symlink_op = st.tuples(st.just("symlink"), st.sampled_from(PATHS), st.sampled_from(["a", "../b", "c/a", "x"]))
hardlink_op = st.tuples(st.just("hardlink"), st.sampled_from(PATHS), st.sampled_from(PATHS))
chmod_op = st.tuples(st.just("chmod"), st.sampled_from(PATHS), st.sampled_from([0o600, 0o755]))
OPS = st.one_of(write_op, write_op, delete_op, mkdir_op, symlink_op, hardlink_op, chmod_op)
RUNS = st.lists(st.lists(OPS, min_size=1, max_size=6), min_size=1, max_size=7)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    elif path.exists() or path.is_symlink():
        path.unlink()


def _parent_dirs(root: Path, rel: str) -> Path:
    """The parent of `rel` as real directories: whatever file or link was on the way goes."""
    current = root
    for part in rel.split("/")[:-1]:
        current = current / part
        if current.is_symlink() or (current.exists() and not current.is_dir()):
            current.unlink()
        if not current.exists():
            current.mkdir()
    return current / rel.split("/")[-1]


def apply_op(root: Path, op: tuple) -> None:
    kind, rel = op[0], op[1]
    if kind == "delete":
        _remove(root / rel)
        return
    if kind == "chmod":
        path = root / rel
        if path.is_file() and not path.is_symlink():
            path.chmod(op[2])
        return
    path = _parent_dirs(root, rel)
    if kind == "hardlink":
        source = root / op[2]
        if source.is_symlink() or not source.is_file() or source == path or path in source.parents:
            return
        _remove(path)
        os.link(source, path)
        return
    _remove(path)
    if kind == "write":
        path.write_bytes(op[2])
        path.chmod(op[3])
        os.utime(path, ns=(op[4], op[4]))
    elif kind == "mkdir":
        path.mkdir()
        path.chmod(op[2])
    elif kind == "symlink":
        path.symlink_to(op[2])


def tree(root: Path) -> tuple[dict[str, tuple], list[frozenset[str]]]:
    """Every entry's kind, mode, mtime, content or link target; and the hard-link groups."""
    entries: dict[str, tuple] = {}
    inodes: dict[int, set[str]] = {}
    for entry in snapshot.walk(root):
        full = root / entry.path
        content = full.read_bytes() if entry.kind == snapshot.FILE else b""
        entries[entry.path] = (entry.kind, entry.mode, entry.mtime_ns, content, entry.link)
        if entry.kind == snapshot.FILE:
            inodes.setdefault(entry.inode, set()).add(entry.path)
    return entries, sorted((frozenset(g) for g in inodes.values() if len(g) > 1), key=sorted)


def extract(store: LayoutStore, layers: tuple[Layer, ...], dest: Path) -> Path:
    dest.mkdir()
    extractor = Extractor(dest)
    for layer in layers:
        extractor.apply(store.open_blob(layer.descriptor.digest), layer, "test")
    extractor.finish()
    return dest


def layers_from(store: LayoutStore, work: Path, runs: list[list[tuple]]) -> tuple[Layer, ...]:
    """One layer per run of changes, made as a store step makes it: a diff of two walks."""
    layers: list[Layer] = []
    for ops in runs:
        before = snapshot.take(work)
        for op in ops:
            apply_op(work, op)
        after = snapshot.take(work)
        changes = snapshot.diff(before, after)
        if changes:
            layers.append(store_layer(store, work, changes, "", oci_image.LAYER_ZSTD, entries=after).layer)
    return tuple(layers)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(RUNS)
def test_a_squashed_layer_extracts_to_the_tree_its_layers_give_in_order(runs: list[list[tuple]]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = LayoutStore(root / "layout")
        work = root / "work"
        work.mkdir()
        layers = layers_from(store, work, runs)
        in_order = extract(store, layers, root / "in-order")

        squashed = squash_layers(layers, {lay.descriptor.digest: store for lay in layers}, store,
                                 Path(tempfile.mkdtemp(dir=root)), oci_image.LAYER_ZSTD, "test")
        once = extract(store, (squashed.layer,), root / "squashed")

        assert tree(once) == tree(in_order)
        # And both are what the task left on its disk (contents and kinds: the layers
        # were made from it).
        assert {p: (e[0], e[3], e[4]) for p, e in tree(once)[0].items()} == {
            p: (e[0], e[3], e[4]) for p, e in tree(work)[0].items()
        }


def test_deleted_files_stay_deleted_after_a_squash(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "layout")
    work = tmp_path / "work"
    work.mkdir()
    layers = layers_from(store, work, [
        [("write", "a/b", b"one", 0o644, 10**18), ("write", "c", b"keep", 0o644, 10**18)],
        [("delete", "a"), ("write", "b/a", b"new", 0o600, 10**18)],
    ])
    squashed = squash_layers(layers, {lay.descriptor.digest: store for lay in layers}, store,
                             tmp_path, oci_image.LAYER_ZSTD, "test")
    once = extract(store, (squashed.layer,), tmp_path / "once")
    assert sorted(p for p, _ in tree(once)[0].items()) == ["b", "b/a", "c"]
    # One layer with no whiteout in it: nothing below it to white out.
    names = [m for m in _tar_names(store, squashed.layer)]
    assert not any(n.rpartition("/")[2].startswith(".wh.") for n in names)
    assert stat.S_IMODE((once / "b" / "a").stat().st_mode) == 0o600


def _tar_names(store: LayoutStore, layer: Layer) -> list[str]:
    import io
    import tarfile

    import zstandard

    data = b"".join(store.open_blob(layer.descriptor.digest))
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        return tar.getnames()


def test_squash_tree_stores_a_workspace_as_one_layer_with_its_empty_directories(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "layout")
    work = tmp_path / "work"
    (work / "empty").mkdir(parents=True)
    (work / "f").write_text("x")
    (work / "link").symlink_to("f")
    written = squash_tree(store, work, oci_image.LAYER_GZIP)
    once = extract(store, (written.layer,), tmp_path / "once")
    assert tree(once) == tree(work)


def test_only_a_state_past_the_limit_and_of_more_than_one_layer_is_squashed() -> None:
    assert not too_many(16, 16)
    assert too_many(17, 16)
    assert not too_many(500, 0)  # 0: never
    assert not too_many(1, 0) and not too_many(1, 1)
    assert too_many(2, 1)
