"""The fetch-time snapshot and the diff that decides what a store writes."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from wrapresolver.transfer import snapshot


def make_tree(root: Path) -> None:
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "mod.py").write_text("print(1)\n")
    (root / "README").write_text("readme\n")
    (root / "empty").mkdir()
    os.symlink("README", root / "link")


def test_walk_lists_parents_before_children_and_does_not_follow_symlinks(tmp_path: Path) -> None:
    make_tree(tmp_path)
    os.symlink("/", tmp_path / "escape")
    paths = [entry.path for entry in snapshot.walk(tmp_path)]
    assert paths.index("src") < paths.index("src/pkg") < paths.index("src/pkg/mod.py")
    assert "escape" in paths and not any(p.startswith("escape/") for p in paths)
    kinds = {e.path: e.kind for e in snapshot.walk(tmp_path)}
    assert kinds["link"] == snapshot.SYMLINK and kinds["empty"] == snapshot.DIR


def test_saved_snapshot_loads_back_identically_with_awkward_names(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ["with space", "ünïcødé", "new\nline", "tab\tname"]:
        (tree / name).write_text(name)
    taken = snapshot.take(tree)
    snapshot.save(taken, tmp_path / "snap")
    assert snapshot.load(tmp_path / "snap") == taken
    assert "new\nline" in taken


def test_unchanged_tree_has_no_changes(tmp_path: Path) -> None:
    make_tree(tmp_path)
    assert not snapshot.diff(snapshot.take(tmp_path), snapshot.take(tmp_path))


def test_rewriting_a_file_with_its_old_mtime_is_still_a_change(tmp_path: Path) -> None:
    make_tree(tmp_path)
    before = snapshot.take(tmp_path)
    target = tmp_path / "README"
    old = os.stat(target)
    target.write_text("README\n")  # same size
    os.utime(target, ns=(old.st_atime_ns, old.st_mtime_ns))
    changes = snapshot.diff(before, snapshot.take(tmp_path))
    assert changes.changed == ("README",)


def test_deleted_directory_gives_one_whiteout_at_its_top(tmp_path: Path) -> None:
    make_tree(tmp_path)
    before = snapshot.take(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "src")
    changes = snapshot.diff(before, snapshot.take(tmp_path))
    assert changes.deleted == ("src",)


def test_directory_replaced_by_a_file_needs_no_whiteouts_for_its_children(tmp_path: Path) -> None:
    make_tree(tmp_path)
    before = snapshot.take(tmp_path)
    import shutil

    shutil.rmtree(tmp_path / "src")
    (tmp_path / "src").write_text("now a file")
    changes = snapshot.diff(before, snapshot.take(tmp_path))
    assert changes.deleted == ()
    assert changes.changed == ("src",)


def test_new_entries_come_parent_first(tmp_path: Path) -> None:
    before = snapshot.take(tmp_path)
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "c").write_text("c")
    (tmp_path / "a-b").write_text("x")
    changes = snapshot.diff(before, snapshot.take(tmp_path))
    assert changes.changed.index("a") < changes.changed.index("a/b") < changes.changed.index("a/b/c")


def test_a_saved_entry_row_holds_every_field_in_order(tmp_path: Path) -> None:
    import json

    from wrapresolver.transfer.snapshot import Entry

    entry = Entry("a/b", "l", 0o777, 3, 10, 11, 12, 13, 14, "target")
    snapshot.save({entry.path: entry}, tmp_path / "snap")
    (row,) = json.loads((tmp_path / "snap").read_text())["entries"]
    assert len(row) == len(Entry._fields)
    assert Entry(*row) == entry


def test_a_snapshot_in_another_format_is_refused_not_misread(tmp_path: Path) -> None:
    make_tree(tmp_path / "tree")
    snapshot.save(snapshot.take(tmp_path / "tree"), tmp_path / "snap")
    document = (tmp_path / "snap").read_text().replace("wrapresolver.snapshot/2", "wrapresolver.snapshot/9")
    (tmp_path / "snap").write_text(document)
    with pytest.raises(snapshot.SnapshotError, match="not a wrapresolver.snapshot/2"):
        snapshot.load(tmp_path / "snap")


def test_walk_records_the_same_metadata_as_lstat(tmp_path: Path) -> None:
    make_tree(tmp_path)
    for entry in snapshot.walk(tmp_path):
        st = os.lstat(tmp_path / entry.path)
        assert (entry.mode, entry.mtime_ns, entry.ctime_ns, entry.inode, entry.uid, entry.gid) == (
            st.st_mode & 0o7777, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_uid, st.st_gid)
        assert entry.size == (st.st_size if entry.kind == snapshot.FILE else 0)
        assert entry.link == (os.readlink(tmp_path / entry.path) if entry.kind == snapshot.SYMLINK else "")
