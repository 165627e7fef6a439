"""Safe extraction: hand-crafted hostile layers are refused, and nothing lands outside dest."""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

import pytest

from wrapresolver.core import oci_image
from wrapresolver.core.values import Descriptor
from wrapresolver.errors import IntegrityError, UnsafeArchiveError
from wrapresolver.transfer.apply import Extractor
from wrapresolver.transfer.workspacepaths import clean_name


def tar_bytes(*members: tuple[tarfile.TarInfo, bytes | None]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


def entry(name: str, kind: bytes = tarfile.REGTYPE, data: bytes | None = None, link: str = "", mode: int = 0o644):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = link
    info.mode = mode
    info.mtime = 1_600_000_000
    if kind == tarfile.REGTYPE and data is None:
        data = b""
    return info, data


def layer_of(data: bytes) -> oci_image.Layer:
    digest = "sha256:" + hashlib.sha256(data).hexdigest()
    return oci_image.Layer(Descriptor(oci_image.LAYER_TAR, digest, len(data)), digest)


def apply_all(dest: Path, *blobs: bytes, sub_path: str = "") -> Extractor:
    extractor = Extractor(dest, sub_path)
    for blob in blobs:
        extractor.apply(iter([blob]), layer_of(blob), "test layer")
    extractor.finish()
    return extractor


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


def outside_untouched(tmp_path: Path) -> None:
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ws"]


@pytest.mark.parametrize(
    "name", ["/etc/evil", "../evil", "a/../../evil", "a/b/../../../evil"]
)
def test_absolute_and_dotdot_names_are_refused(dest: Path, tmp_path: Path, name: str) -> None:
    with pytest.raises(UnsafeArchiveError, match="refusing"):
        apply_all(dest, tar_bytes(entry(name, data=b"x")))
    outside_untouched(tmp_path)


def test_writing_through_a_symlink_to_outside_is_refused(dest: Path, tmp_path: Path) -> None:
    blob = tar_bytes(entry("out", tarfile.SYMTYPE, link=str(tmp_path)), entry("out/evil", data=b"x"))
    with pytest.raises(UnsafeArchiveError, match="symlink"):
        apply_all(dest, blob)
    outside_untouched(tmp_path)


def test_symlinked_parent_planted_by_an_earlier_layer_is_refused(dest: Path, tmp_path: Path) -> None:
    first = tar_bytes(entry("dir", tarfile.SYMTYPE, link="../.."))
    second = tar_bytes(entry("dir/evil", data=b"x"))
    with pytest.raises(UnsafeArchiveError, match="outside the workspace"):
        apply_all(dest, first, second)
    outside_untouched(tmp_path)


def test_a_directory_already_written_to_then_replaced_by_an_escaping_symlink_is_refused(
    dest: Path, tmp_path: Path
) -> None:
    # The extractor remembers checked parents; replacing one by a symlink must forget it.
    blob = tar_bytes(
        entry("a", tarfile.DIRTYPE, mode=0o755),
        entry("a/ok", data=b"fine"),
        entry("a", tarfile.SYMTYPE, link=str(tmp_path)),
        entry("a/evil", data=b"x"),
    )
    with pytest.raises(UnsafeArchiveError, match="outside the workspace"):
        apply_all(dest, blob)
    outside_untouched(tmp_path)


def test_a_directory_whited_out_then_replaced_by_an_escaping_symlink_is_refused(
    dest: Path, tmp_path: Path
) -> None:
    first = tar_bytes(entry("a", tarfile.DIRTYPE, mode=0o755), entry("a/ok", data=b"fine"))
    second = tar_bytes(
        entry(".wh.a", data=b""),
        entry("a", tarfile.SYMTYPE, link="../.."),
        entry("a/evil", data=b"x"),
    )
    with pytest.raises(UnsafeArchiveError, match="outside the workspace"):
        apply_all(dest, first, second)
    outside_untouched(tmp_path)


def test_relative_symlink_escaping_via_a_chain_is_refused(dest: Path, tmp_path: Path) -> None:
    blob = tar_bytes(
        entry("a", tarfile.DIRTYPE, mode=0o755),
        entry("a/up", tarfile.SYMTYPE, link=".."),
        entry("a/up2", tarfile.SYMTYPE, link="up/.."),
        entry("a/up2/evil", data=b"x"),
    )
    with pytest.raises(UnsafeArchiveError):
        apply_all(dest, blob)
    outside_untouched(tmp_path)


def test_file_over_an_existing_symlink_replaces_the_link_not_its_target(dest: Path, tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep")
    blob = tar_bytes(entry("f", tarfile.SYMTYPE, link=str(victim)), entry("f", data=b"new"))
    apply_all(dest, blob)
    assert victim.read_text() == "keep"
    assert not (dest / "f").is_symlink() and (dest / "f").read_bytes() == b"new"


@pytest.mark.parametrize("kind", [tarfile.CHRTYPE, tarfile.BLKTYPE, tarfile.FIFOTYPE])
def test_device_and_fifo_entries_are_refused(dest: Path, kind: bytes) -> None:
    with pytest.raises(UnsafeArchiveError, match="device or fifo"):
        apply_all(dest, tar_bytes(entry("dev", kind)))


@pytest.mark.parametrize("link", ["/etc/passwd", "../outside", "a/../../x"])
def test_hardlinks_pointing_outside_are_refused(dest: Path, tmp_path: Path, link: str) -> None:
    with pytest.raises(UnsafeArchiveError, match="hardlink|refusing"):
        apply_all(dest, tar_bytes(entry("h", tarfile.LNKTYPE, link=link)))
    outside_untouched(tmp_path)


def test_hardlink_through_a_symlinked_parent_to_outside_is_refused(dest: Path, tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s")
    blob = tar_bytes(entry("up", tarfile.SYMTYPE, link=str(tmp_path)), entry("h", tarfile.LNKTYPE, link="up/secret"))
    with pytest.raises(UnsafeArchiveError):
        apply_all(dest, blob)
    assert os.stat(secret).st_nlink == 1


def test_whiteout_through_a_symlink_cannot_delete_outside(dest: Path, tmp_path: Path) -> None:
    keep = tmp_path / "keep"
    keep.write_text("k")
    first = tar_bytes(entry("up", tarfile.SYMTYPE, link=str(tmp_path)))
    second = tar_bytes(entry("up/.wh.keep"))
    with pytest.raises(UnsafeArchiveError):
        apply_all(dest, first, second)
    assert keep.exists()


def test_digest_mismatch_is_an_integrity_error(dest: Path) -> None:
    blob = tar_bytes(entry("f", data=b"hello"))
    tampered = blob.replace(b"hello", b"HELLO")
    with pytest.raises(IntegrityError, match="corrupt"):
        Extractor(dest).apply(iter([tampered]), layer_of(blob), "test layer")


def test_wrong_diff_id_is_an_integrity_error(dest: Path) -> None:
    blob = tar_bytes(entry("f", data=b"hello"))
    layer = layer_of(blob)
    layer = oci_image.Layer(layer.descriptor, "sha256:" + "0" * 64)
    with pytest.raises(IntegrityError, match="image config"):
        Extractor(dest).apply(iter([blob]), layer, "test layer")


def test_garbage_blob_with_right_digest_is_an_integrity_error(dest: Path) -> None:
    garbage = b"not a tar at all" * 100
    with pytest.raises(IntegrityError, match="not a valid tar"):
        Extractor(dest).apply(iter([garbage]), layer_of(garbage), "test layer")


def test_setuid_bits_are_dropped_and_other_mode_bits_kept(dest: Path) -> None:
    apply_all(dest, tar_bytes(entry("tool", data=b"#!/bin/sh\n", mode=0o4755), entry("tmp", tarfile.DIRTYPE, mode=0o1777)))
    assert os.stat(dest / "tool").st_mode & 0o7777 == 0o755
    assert os.stat(dest / "tmp").st_mode & 0o7777 == 0o1777


def test_sub_path_keeps_only_its_entries_with_the_prefix_stripped(dest: Path) -> None:
    blob = tar_bytes(
        entry("docs/guide.md", data=b"g"),
        entry("docs/img/a.png", data=b"a"),
        entry("src/main.c", data=b"m"),
        entry("docsextra", data=b"no"),
    )
    apply_all(dest, blob, sub_path="docs")
    assert sorted(str(p.relative_to(dest)) for p in dest.rglob("*")) == ["guide.md", "img", "img/a.png"]


def test_whiteout_of_an_ancestor_of_the_sub_path_empties_the_view(dest: Path) -> None:
    first = tar_bytes(entry("docs/old.md", data=b"o"))
    second = tar_bytes(entry(".wh.docs"), entry("docs/new.md", data=b"n"))
    apply_all(dest, first, second, sub_path="docs")
    assert sorted(p.name for p in dest.iterdir()) == ["new.md"]


def test_opaque_whiteout_removes_lower_content_only(dest: Path) -> None:
    first = tar_bytes(entry("d/old", data=b"o"), entry("d/keep-not", data=b"k"))
    second = tar_bytes(entry("d/new", data=b"n"), entry("d/.wh..wh..opq"))
    apply_all(dest, first, second)
    assert sorted(p.name for p in (dest / "d").iterdir()) == ["new"]


def test_clean_name_normalises_dot_segments() -> None:
    assert clean_name("./a//b/./c") == "a/b/c"


# ---- the fetch record: what extraction wrote, without walking the workspace again ----

def test_the_record_of_a_stack_of_layers_is_what_a_walk_finds(dest: Path) -> None:
    from wrapresolver.transfer import snapshot

    lower = tar_bytes(
        entry("src", tarfile.DIRTYPE, mode=0o755), entry("src/a.txt", data=b"a"), entry("src/b.txt", data=b"b"),
        entry("docs", tarfile.DIRTYPE, mode=0o555), entry("docs/read-only.md", data=b"r"),
        entry("link", tarfile.SYMTYPE, link="src/a.txt"),
        entry("big.bin", data=os.urandom(3 << 20)),
    )
    upper = tar_bytes(
        entry("src/a.txt", data=b"a changed"), entry("src/new", tarfile.DIRTYPE), entry("src/new/c.txt", data=b"c"),
        entry("src/hard", tarfile.LNKTYPE, link="src/b.txt"),
    )
    record = apply_all(dest, lower, upper).record()
    assert record is not None
    assert record == snapshot.take(dest)
    assert (dest / "docs").stat().st_mode & 0o777 == 0o555


def test_a_removed_directory_makes_the_record_fall_back_to_a_walk(dest: Path) -> None:
    lower = tar_bytes(entry("gone", tarfile.DIRTYPE), entry("gone/file", data=b"x"))
    upper = tar_bytes(entry(".wh.gone"))
    assert apply_all(dest, lower, upper).record() is None
    assert not (dest / "gone").exists()


def test_a_workspace_that_was_not_empty_gets_no_record(dest: Path) -> None:
    (dest / "left-behind").write_text("x")
    assert apply_all(dest, tar_bytes(entry("f", data=b"y"))).record() is None


def test_a_file_entry_repeated_in_one_layer_keeps_the_last(dest: Path) -> None:
    from wrapresolver.transfer import snapshot

    blob = tar_bytes(entry("f", data=b"first"), entry("f", data=b"second"), entry("./g", data=b"g"))
    record = apply_all(dest, blob).record()
    assert (dest / "f").read_bytes() == b"second"
    assert record == snapshot.take(dest)


def test_a_file_still_being_written_is_seen_by_a_later_entry_of_the_same_layer(dest: Path) -> None:
    # The writer process may not have created "a" yet when "a/inside" is read: the extractor
    # waits for it, so the answer is the same as when files are written one by one.
    from wrapresolver.errors import TransferError

    blob = tar_bytes(entry("a", data=b"a file"), entry("a/inside", data=b"needs a directory"))
    with pytest.raises(TransferError, match="needs 'a' to be a directory, but it is a file"):
        apply_all(dest, blob)
    assert (dest / "a").read_bytes() == b"a file"
