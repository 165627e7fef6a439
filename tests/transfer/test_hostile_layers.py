"""Layers built to hurt the fetch: deep trees, out-of-range tar headers, floods of names."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from tests.transfer.test_apply import apply_all, entry, tar_bytes
from wrapresolver.errors import UnsafeArchiveError
from wrapresolver.transfer import workspacepaths
from wrapresolver.transfer.deeptree import empty_directory, remove_tree

DEPTH = 1500  # beyond Python's recursion limit; 1-character names keep the path under PATH_MAX


def deep_names(depth: int = DEPTH) -> list[str]:
    return ["/".join(["d"] * level) for level in range(1, depth + 1)]


def deep_layer(depth: int = DEPTH) -> bytes:
    names = deep_names(depth)
    members = [entry(name, tarfile.DIRTYPE, mode=0o755) for name in names]
    members.append(entry(names[-1] + "/bottom.txt", data=b"deep\n"))
    return tar_bytes(*members)


def make_deep_tree(root: Path, depth: int) -> None:
    """A chain of `depth` directories built relative to directory descriptors (any depth)."""
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    try:
        for _ in range(depth):
            os.mkdir("d", dir_fd=fd)
            child = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = child
        with open(os.open("leaf", os.O_WRONLY | os.O_CREAT, 0o644, dir_fd=fd), "w") as out:
            out.write("leaf\n")
    finally:
        os.close(fd)


@pytest.fixture
def dest(tmp_path: Path) -> Path:
    path = tmp_path / "ws"
    path.mkdir()
    return path


@pytest.fixture(autouse=True)
def remove_deep_trees(tmp_path: Path):
    """pytest's own clean-up uses shutil.rmtree, which cannot remove these trees: we do."""
    yield
    for child in tmp_path.iterdir():
        remove_tree(child)


# ---- deep trees ----

def test_a_layer_1500_directories_deep_extracts_completely(dest: Path) -> None:
    apply_all(dest, deep_layer())
    bottom = dest.joinpath(*["d"] * DEPTH, "bottom.txt")
    assert bottom.read_text() == "deep\n"


def test_a_whiteout_removes_a_1500_level_tree_from_a_lower_layer(dest: Path) -> None:
    apply_all(dest, deep_layer(), tar_bytes(entry(".wh.d")))
    assert list(dest.iterdir()) == []


def test_an_opaque_whiteout_clears_a_1500_level_tree(dest: Path) -> None:
    apply_all(dest, deep_layer(), tar_bytes(entry(".wh..wh..opq"), entry("new.txt", data=b"x")))
    assert sorted(p.name for p in dest.iterdir()) == ["new.txt"]


def test_a_file_replacing_a_deep_directory_removes_the_whole_tree(dest: Path) -> None:
    apply_all(dest, deep_layer(), tar_bytes(entry("d", data=b"now a file\n")))
    assert (dest / "d").read_text() == "now a file\n"


def test_emptying_a_workspace_removes_a_tree_deeper_than_path_max(dest: Path) -> None:
    make_deep_tree(dest, 3000)  # 6,000 characters of path: no path-based call could reach the leaf
    (dest / "top.txt").write_text("x")
    empty_directory(dest)
    assert list(dest.iterdir()) == []


def test_removing_a_tree_never_follows_a_symlink_out_of_it(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    tree = tmp_path / "tree"
    (tree / "a" / "b").mkdir(parents=True)
    (tree / "a" / "b" / "escape").symlink_to(outside)
    (tree / "a" / "link-file").symlink_to(outside / "keep.txt")
    remove_tree(tree)
    assert not tree.exists()
    assert (outside / "keep.txt").read_text() == "keep"


def test_removing_a_symlink_to_a_directory_removes_only_the_link(tmp_path: Path) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "file").write_text("x")
    (tmp_path / "link").symlink_to(target)
    remove_tree(tmp_path / "link")
    assert not (tmp_path / "link").is_symlink()
    assert (target / "file").exists()


def test_each_new_directory_costs_a_constant_number_of_lookups(dest: Path, monkeypatch) -> None:
    """Linear in depth: no realpath over the whole path per entry (that made 1,500 levels take 29 s)."""
    calls = {"lstat": 0, "realpath": 0}
    real_lstat, real_realpath = os.lstat, os.path.realpath

    def counting_lstat(*args, **kwargs):
        calls["lstat"] += 1
        return real_lstat(*args, **kwargs)

    def counting_realpath(*args, **kwargs):
        calls["realpath"] += 1
        return real_realpath(*args, **kwargs)

    blob = deep_layer(400)
    monkeypatch.setattr(workspacepaths.os, "lstat", counting_lstat)
    monkeypatch.setattr(workspacepaths.os.path, "realpath", counting_realpath)
    apply_all(dest, blob)
    monkeypatch.undo()
    entries = 401
    assert calls["realpath"] <= 2  # the root only: no symlink on the way
    assert calls["lstat"] <= 3 * entries


def test_store_then_fetch_round_trips_a_1500_level_tree(tmp_path: Path) -> None:
    """The project's own store can write such a tree; its fetch must read it back."""
    src, back = tmp_path / "src", tmp_path / "back"
    src.mkdir()
    make_deep_tree(src, DEPTH)
    target = f"file://{tmp_path}/store/deep"
    env = {**os.environ}
    stored = subprocess.run([sys.executable, "-m", "wrapresolver", "store", "--path", str(src), "--target", target],
                            capture_output=True, text=True, timeout=300, env=env)
    assert stored.returncode == 0, stored.stderr
    fetched = subprocess.run([sys.executable, "-m", "wrapresolver", "fetch", "--path", str(back), "--target", target],
                             capture_output=True, text=True, timeout=300, env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert back.joinpath(*["d"] * DEPTH, "leaf").read_text() == "leaf\n"


# ---- tar headers out of range ----

def raw_header(name: str, size_field: bytes, kind: bytes = tarfile.REGTYPE) -> bytes:
    """A ustar header with a hand-written 12-byte size field and a correct checksum."""
    info = tarfile.TarInfo(name)
    info.type = kind
    block = bytearray(info.tobuf(tarfile.USTAR_FORMAT))
    block[124:136] = size_field
    block[148:156] = b" " * 8
    checksum = sum(block)
    block[148:156] = b"%06o\0 " % checksum
    return bytes(block)


def test_a_pax_header_with_a_negative_size_is_refused(dest: Path) -> None:
    info, data = entry("file.txt", data=b"")
    info.pax_headers = {"size": "-1024"}
    with pytest.raises(UnsafeArchiveError, match="negative size"):
        apply_all(dest, tar_bytes((info, data)))


def test_a_base256_negative_size_field_is_refused(dest: Path) -> None:
    blob = raw_header("file.txt", b"\xff" * 12) + b"\0" * 1024
    with pytest.raises(UnsafeArchiveError, match="negative size"):
        apply_all(dest, blob)


def test_a_one_mebibyte_path_is_refused_with_a_short_message(dest: Path) -> None:
    with pytest.raises(UnsafeArchiveError) as caught:
        apply_all(dest, tar_bytes(entry("a" * (1 << 20), data=b"x")))
    message = str(caught.value)
    assert len(message) < 400
    assert "WRAPRESOLVER_TAR_MAX" in message


def test_a_path_over_the_name_limit_names_the_limit_and_its_variable(dest: Path) -> None:
    with pytest.raises(UnsafeArchiveError) as caught:
        apply_all(dest, tar_bytes(entry("x/" * 3000 + "f", data=b"x")))
    assert "tar-max-name" in str(caught.value) and "WRAPRESOLVER_TAR_MAX_NAME" in str(caught.value)
    assert len(str(caught.value)) < 400


def test_a_link_target_over_the_limit_is_refused(dest: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="WRAPRESOLVER_TAR_MAX_LINK"):
        apply_all(dest, tar_bytes(entry("link", tarfile.SYMTYPE, link="t" * 5000)))


def test_the_name_limit_is_configured_by_its_environment_variable(dest: Path, monkeypatch) -> None:
    monkeypatch.setenv("WRAPRESOLVER_TAR_MAX_NAME", "10")
    with pytest.raises(UnsafeArchiveError, match="limit tar-max-name = 10"):
        apply_all(dest, tar_bytes(entry("twenty-characters.tx", data=b"x")))
    monkeypatch.delenv("WRAPRESOLVER_TAR_MAX_NAME")
    apply_all(dest, tar_bytes(entry("twenty-characters.tx", data=b"x")))
    assert (dest / "twenty-characters.tx").read_bytes() == b"x"


def test_an_extended_header_record_over_the_limit_is_refused_before_it_is_read(dest: Path, monkeypatch) -> None:
    monkeypatch.setenv("WRAPRESOLVER_TAR_MAX_PAX", "4096")
    info, data = entry("f", data=b"x")
    info.pax_headers = {"comment": "c" * 10_000}
    with pytest.raises(UnsafeArchiveError, match="tar-max-pax"):
        apply_all(dest, tar_bytes((info, data)))


def test_a_long_chain_of_extended_headers_is_refused_not_a_recursion_error(dest: Path) -> None:
    record = b"abc\0"  # GNU long names: several in a row are legal, the last one counts
    buffer = io.BytesIO()
    for _ in range(2000):
        info = tarfile.TarInfo("././@LongLink")
        info.type = tarfile.GNUTYPE_LONGNAME
        info.size = len(record)
        buffer.write(info.tobuf(tarfile.USTAR_FORMAT))
        buffer.write(record + b"\0" * (512 - len(record)))
    final = tarfile.TarInfo("f")
    buffer.write(final.tobuf(tarfile.USTAR_FORMAT) + b"\0" * 1024)
    with pytest.raises(UnsafeArchiveError, match="extended headers in a row"):
        apply_all(dest, buffer.getvalue())


def test_a_sparse_member_is_refused(dest: Path) -> None:
    blob = raw_header("sparse.bin", b"%011o\0" % 0, tarfile.GNUTYPE_SPARSE) + b"\0" * 1024
    with pytest.raises(UnsafeArchiveError, match="sparse"):
        apply_all(dest, blob)


def test_a_refused_entry_name_is_echoed_capped(dest: Path) -> None:
    with pytest.raises(UnsafeArchiveError) as caught:
        apply_all(dest, tar_bytes(entry("/" + "a" * 3000, data=b"x")))
    assert "absolute path" in str(caught.value)
    assert len(str(caught.value)) < 400


# ---- found by fuzzing (tests/fuzz/test_fuzz_tar.py) ----

def test_a_hardlink_to_itself_keeps_the_file_and_is_skipped(dest: Path) -> None:
    extractor = apply_all(dest, tar_bytes(entry("a", data=b"kept"), entry("a", tarfile.LNKTYPE, link="a")))
    assert (dest / "a").read_bytes() == b"kept"
    assert extractor.stats.skipped == 1


def test_a_symlink_with_an_empty_target_is_refused(dest: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="empty target"):
        apply_all(dest, tar_bytes(entry("a", tarfile.SYMTYPE, link="")))


def test_a_write_through_a_loop_of_symlinks_is_refused(dest: Path) -> None:
    with pytest.raises(UnsafeArchiveError, match="loop of symlinks"):
        apply_all(dest, tar_bytes(entry("b", tarfile.SYMTYPE, link="b/a"), entry("b/a/f", data=b"x")))
