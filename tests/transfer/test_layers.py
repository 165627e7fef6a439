"""Writing layers: every kind of entry survives a store and an apply; whiteouts; streaming."""

from __future__ import annotations

import io
import os
import subprocess
import tarfile
from pathlib import Path

import pytest
import zstandard

from wrapresolver.backends.file import LayoutStore
from wrapresolver.core import oci_image
from wrapresolver.transfer import snapshot
from wrapresolver.transfer.apply import Extractor
from wrapresolver.transfer.layers import store_layer, whole_tree
from wrapresolver.transfer.streams import BoundedPipe


def build_every_kind(root: Path) -> None:
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "run.sh").write_text("#!/bin/sh\necho hi\n")
    os.chmod(root / "bin" / "run.sh", 0o750)
    (root / "private").write_text("secret-ish")
    os.chmod(root / "private", 0o600)
    (root / "empty" / "nested").mkdir(parents=True)
    os.symlink("bin/run.sh", root / "relative-link")
    os.symlink("/usr/share/absolute-target", root / "absolute-link")
    os.symlink("does/not/exist", root / "dangling-link")
    (root / "data.bin").write_bytes(os.urandom(200_000))
    os.link(root / "data.bin", root / "data-hardlink.bin")
    for name in ["with space.txt", "ünïcødé.txt", "new\nline.txt"]:
        (root / name).write_text(name)
    os.utime(root / "private", ns=(1_600_000_000_123_456_789, 1_600_000_000_123_456_789))
    os.utime(root / "relative-link", ns=(1_500_000_000_000_000_001,) * 2, follow_symlinks=False)
    os.utime(root / "empty" / "nested", ns=(1_400_000_000_000_000_000,) * 2)


def comparable(root: Path) -> dict:
    out = {}
    for entry in snapshot.walk(root):
        full = root / entry.path
        content = full.read_bytes() if entry.kind == snapshot.FILE else None
        out[entry.path] = (entry.kind, entry.mode, entry.size, entry.mtime_ns, entry.link, content)
    return out


def store_and_apply(tmp_path: Path, src: Path, changes, media_type: str, dest: Path) -> oci_image.Layer:
    store = LayoutStore(tmp_path / "layout")
    written = store_layer(store, src, changes, "", media_type)
    extractor = Extractor(dest)
    extractor.apply(store.open_blob(written.layer.descriptor.digest), written.layer, "test")
    extractor.finish()
    return written.layer


@pytest.mark.parametrize("media_type", [oci_image.LAYER_ZSTD, oci_image.LAYER_GZIP])
def test_every_preserved_kind_round_trips(tmp_path: Path, media_type: str) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    build_every_kind(src)
    dest.mkdir()
    store_and_apply(tmp_path, src, whole_tree(snapshot.take(src)), media_type, dest)
    assert comparable(dest) == comparable(src)
    assert os.stat(dest / "data.bin").st_ino == os.stat(dest / "data-hardlink.bin").st_ino


def test_hardlink_whose_partner_is_not_in_the_layer_is_stored_as_a_file(tmp_path: Path) -> None:
    src, dest = tmp_path / "src", tmp_path / "dest"
    src.mkdir()
    dest.mkdir()
    (src / "a").write_text("shared")
    os.link(src / "a", src / "b")
    store_and_apply(tmp_path, src, snapshot.Changes(("b",), ()), oci_image.LAYER_ZSTD, dest)
    assert (dest / "b").read_text() == "shared" and not (dest / "a").exists()


def test_layer_is_a_standard_tar_with_oci_whiteouts(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "kept").write_text("k")
    store = LayoutStore(tmp_path / "layout")
    changes = snapshot.Changes(("kept",), ("gone-dir", "sub/gone-file"))
    written = store_layer(store, src, changes, "pre/fix", oci_image.LAYER_ZSTD)
    blob = (store.root / store.blob_key(written.layer.descriptor.digest))
    plain = subprocess.run(["zstd", "-dc", str(blob)], check=True, capture_output=True).stdout
    names = tarfile.open(fileobj=io.BytesIO(plain)).getnames()
    assert names == ["pre/fix/.wh.gone-dir", "pre/fix/sub/.wh.gone-file", "pre/fix/kept"]
    import hashlib

    assert written.layer.diff_id == "sha256:" + hashlib.sha256(plain).hexdigest()


def test_gzip_layers_are_reproducible(tmp_path: Path) -> None:
    src = tmp_path / "src"
    build_every_kind(src)
    store = LayoutStore(tmp_path / "layout")
    changes = whole_tree(snapshot.take(src))
    first = store_layer(store, src, changes, "", oci_image.LAYER_GZIP)
    second = store_layer(store, src, changes, "", oci_image.LAYER_GZIP)
    assert first.layer == second.layer


def test_a_failing_reader_stops_the_tar_writer(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    for i in range(50):
        (src / f"f{i}").write_bytes(os.urandom(100_000))

    class Refusing(LayoutStore):
        def put_blob(self, reader, media_type):
            reader.read(1000)
            raise RuntimeError("backend gave up")

    with pytest.raises(RuntimeError, match="backend gave up"):
        store_layer(Refusing(tmp_path / "layout"), src, whole_tree(snapshot.take(src)), "", oci_image.LAYER_ZSTD)


def test_fifos_and_sockets_in_the_workspace_are_not_stored(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    os.mkfifo(src / "pipe")
    (src / "file").write_text("f")
    store = LayoutStore(tmp_path / "layout")
    written = store_layer(store, src, whole_tree(snapshot.take(src)), "", oci_image.LAYER_ZSTD)
    data = b"".join(store.open_blob(written.layer.descriptor.digest))
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    assert tarfile.open(fileobj=io.BytesIO(plain)).getnames() == ["file"]


def test_bounded_pipe_passes_the_writers_error_to_the_reader() -> None:
    pipe = BoundedPipe(depth=2)
    pipe.write(b"abc")
    pipe.finish(ValueError("tar failed"))
    assert pipe.reader.read(3) == b"abc"
    with pytest.raises(ValueError, match="tar failed"):
        pipe.reader.read(3)


def test_zstd_layer_decodes_with_standard_zstd(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a").write_text("a" * 10_000)
    store = LayoutStore(tmp_path / "layout")
    written = store_layer(store, src, whole_tree(snapshot.take(src)), "", oci_image.LAYER_ZSTD)
    data = b"".join(store.open_blob(written.layer.descriptor.digest))
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(data)).read()
    assert tarfile.open(fileobj=io.BytesIO(plain)).extractfile("a").read() == b"a" * 10_000


def test_the_same_tree_always_gives_the_same_layer_bytes(tmp_path: Path) -> None:
    """Multithreaded zstd must stay deterministic, or unchanged layers would not dedupe."""
    import os as _os

    from wrapresolver.backends.file import LayoutStore
    from wrapresolver.steps import engine, statedocs

    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "random.bin").write_bytes(_os.urandom(6 << 20))  # several zstd jobs
    (tree / "text.txt").write_text("the same line\n" * 200_000)
    digests = []
    for name in ("one", "two"):
        store = LayoutStore(tmp_path / name)
        engine.store_ref(store, tree, "x")
        digests.append(statedocs.read_state(store, "x", name).layers[0].descriptor.digest)
    assert digests[0] == digests[1]
