"""What a workspace looked like right after fetch, and what the task changed since.

The store step must find the task's changes without the fetched data at hand, so the fetch
step records each entry's metadata (not its content). A file counts as changed when any of
type, mode, size, mtime, ctime, inode, owner or link target differs: ctime and inode change
on every write or replacement, even one that restores the old mtime, so nothing slips by.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

DIR, FILE, SYMLINK, OTHER = "d", "f", "l", "o"


class Entry(NamedTuple):
    """One directory entry's metadata; `path` is relative, '/'-separated, no leading './'.

    A named tuple, not a dataclass: fetch and store make one per file of the workspace, and
    a frozen dataclass costs several times as much to build (each field is set through
    `object.__setattr__`); equality is the tuple's, field by field.
    """

    path: str
    kind: str
    mode: int
    size: int
    mtime_ns: int
    ctime_ns: int
    inode: int
    uid: int
    gid: int
    link: str = ""

    def as_row(self) -> list:
        """The fields in order, for the snapshot file."""
        return list(self)

    def same_as(self, other: Entry) -> bool:
        return self == other


def entry_for(root: Path, rel: str, st: os.stat_result) -> Entry:
    if stat.S_ISDIR(st.st_mode):
        kind = DIR
    elif stat.S_ISREG(st.st_mode):
        kind = FILE
    elif stat.S_ISLNK(st.st_mode):
        kind = SYMLINK
    else:
        kind = OTHER
    link = os.readlink(os.path.join(root, rel)) if kind == SYMLINK else ""
    size = st.st_size if kind == FILE else 0
    return Entry(
        rel, kind, stat.S_IMODE(st.st_mode), size, st.st_mtime_ns, st.st_ctime_ns,
        st.st_ino, st.st_uid, st.st_gid, link,
    )


def walk(root: Path) -> Iterator[Entry]:
    """Every entry under `root` (not `root` itself), parents before children, symlinks not followed."""
    stack = [""]
    while stack:
        rel_dir = stack.pop()
        with os.scandir(os.path.join(root, rel_dir) if rel_dir else root) as it:
            children = sorted(it, key=lambda e: e.name)
        subdirs = []
        for child in children:
            rel = f"{rel_dir}/{child.name}" if rel_dir else child.name
            entry = entry_for(root, rel, child.stat(follow_symlinks=False))
            yield entry
            if entry.kind == DIR:
                subdirs.append(rel)
        stack.extend(reversed(subdirs))


def take(root: Path) -> dict[str, Entry]:
    return {entry.path: entry for entry in walk(root)}


def save(entries: dict[str, Entry], path: Path) -> None:
    """One JSON array per line: streams for large trees, and names with newlines stay intact."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as out:
        for entry in entries.values():
            out.write(json.dumps(entry.as_row(), ensure_ascii=True))
            out.write("\n")
    os.replace(tmp, path)


def load(path: Path) -> dict[str, Entry]:
    entries: dict[str, Entry] = {}
    with open(path, encoding="utf-8") as src:
        for line in src:
            entry = Entry(*json.loads(line))
            entries[entry.path] = entry
    return entries


@dataclass(frozen=True)
class Changes:
    """What a layer must hold: entries to write (parents first) and paths to white out."""

    changed: tuple[str, ...]
    deleted: tuple[str, ...]

    def __bool__(self) -> bool:
        return bool(self.changed or self.deleted)


def _path_key(path: str) -> tuple[str, ...]:
    return tuple(path.split("/"))


def diff(before: dict[str, Entry], after: dict[str, Entry]) -> Changes:
    """Entries new or modified in `after`, and the topmost paths gone from `before`.

    A deleted directory gets one whiteout at its top, not one per file. A path whose parent
    became a non-directory needs none: writing the new parent entry replaces the old tree.
    """
    changed = [
        path for path, entry in after.items()
        if path not in before or not before[path].same_as(entry)
    ]
    deleted = []
    for path in before:
        if path in after:
            continue
        parent = path.rpartition("/")[0]
        if parent and (parent not in after or after[parent].kind != DIR):
            continue
        deleted.append(path)
    return Changes(tuple(sorted(changed, key=_path_key)), tuple(sorted(deleted, key=_path_key)))
