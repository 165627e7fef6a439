"""Where each path of a layer lands in the workspace, checked to stay inside it.

Layers may come from anywhere a `base` points to, so every name is treated as hostile:
nothing may be written outside the workspace, whatever the names, links and the symlinks an
earlier layer planted say. `clean_name` refuses names that could leave it; `WorkspacePaths`
resolves an entry's parent one component at a time, refusing a symlink that leads outside,
and makes room for an entry. It is the base of `apply.Extractor`, which decides what each
entry is; the whiteout rules (whiteouts.py) use it to remove.

It also keeps what the extraction knows without looking: the directories it made (a name in
one needs no lookup before it is created), the files queued to the writers and maybe not
written yet (`_settle` waits for them before anything depends on them), and the fetch record
built from what was written, which a removal or a write through a link makes inexact.
"""

from __future__ import annotations

import errno
import os
import stat

from wrapresolver.core.limits import shown
from wrapresolver.errors import TransferError, UnsafeArchiveError
from wrapresolver.transfer import snapshot
from wrapresolver.transfer.deeptree import remove_tree
from wrapresolver.transfer.writerprocess import ProcessFileWriters


def clean_name(name: str, what: str = "entry") -> str:
    """A tar name as a relative '/'-path, or a refusal if it could leave the workspace."""
    if name.startswith("/"):
        raise UnsafeArchiveError(f"layer {what} {shown(name)} has an absolute path; refusing to extract it")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"layer {what} {shown(name)} contains '..'; refusing to extract it")
    return "/".join(parts)


class WorkspacePaths:
    """The workspace (its real root, the sub_path view) as one extraction sees it; `_start` sets it up."""

    def _start(self, root: str, sub_path: str) -> None:
        self._root = root
        self._prefix = clean_name(sub_path, "sub-path") if sub_path else ""
        self._written: set[str] = set()
        """Local paths the current layer wrote: its own whiteouts do not remove them."""
        self._dirs: dict[str, str] = {}
        """Parents already resolved and checked. Valid until an entry replaces or removes a
        directory or a symlink (anything a later path could walk through): then forgotten."""
        empty = not any(True for _ in os.scandir(self._root))
        self._fresh: set[str] = {self._root} if empty else set()
        """Directories this extraction created (and the root, if it started empty): a name in
        one of them that is not in `_created` needs no lookup before it is created."""
        self._created: set[str] = set()
        self._queued: set[str] = set()
        """Files of the current layer handed to the writers and maybe not written yet."""
        self._writers: ProcessFileWriters | None = None
        self._exact = empty
        """The fetch record (`_entries`, `_late`) is what a walk of the workspace would find: true while the
        workspace started empty and no directory was removed or written through a symlink."""
        self._entries: dict[str, snapshot.Entry] = {}
        self._late: dict[str, str] = {}
        """Entries recorded at the end (local path -> real path): directories, whose times and
        contents change until then, links, and the sources of hard links."""

    # ---- names ----
    def _local(self, path: str) -> str | None:
        """`path` relative to the workspace view, '' for its root, None when outside sub_path."""
        if not self._prefix:
            return path
        if path == self._prefix:
            return ""
        if path.startswith(self._prefix + "/"):
            return path[len(self._prefix) + 1:]
        return None

    def _covers_view(self, path: str) -> bool:
        """True when `path` is the sub_path or one of its ancestors."""
        return self._prefix == path or self._prefix.startswith(path + "/") or (path == "" and bool(self._prefix))

    def _inside(self, real: str) -> bool:
        return real == self._root or real.startswith(self._root + "/")

    def _parent_dir(self, local: str, name: str) -> str:
        return self._real_dir(local.rpartition("/")[0], name)

    def _real_dir(self, parent: str, name: str) -> str:
        """The real directory `parent` resolves to, created if missing; refused if it leaves dest.

        Resolved from the nearest ancestor already known, one component at a time, so an
        entry costs one lstat per new directory instead of a realpath of its whole path:
        extraction stays linear in the depth of the tree.
        """
        known = self._dirs.get(parent)
        if known is not None:
            return known
        if not parent:
            return self._root
        parts = parent.split("/")
        start = len(parts) - 1
        while start > 0 and "/".join(parts[:start]) not in self._dirs:
            start -= 1
        real = self._dirs.get("/".join(parts[:start]), self._root) if start else self._root
        for index in range(start, len(parts)):
            real = self._step_into(real, parts[index], "/".join(parts[: index + 1]), name)
            self._dirs["/".join(parts[: index + 1])] = real
        return real

    def _step_into(self, real_parent: str, part: str, prefix: str, name: str) -> str:
        candidate = f"{real_parent}/{part}"
        if real_parent in self._fresh and candidate not in self._created:
            st = None
        else:
            if candidate in self._queued:
                self._settle()  # a file of this layer, maybe not created yet
            try:
                st = os.lstat(candidate)
            except FileNotFoundError:
                st = None
        if st is None:
            os.mkdir(candidate, 0o755)
            self._made_dir(candidate, prefix)
            return candidate
        if stat.S_ISDIR(st.st_mode):
            return candidate
        self._exact = False  # the path runs through a link: a walk sees it elsewhere
        if not stat.S_ISLNK(st.st_mode):
            raise TransferError(
                f"layer entry {shown(name)} needs {shown(prefix)} to be a directory, but it is a file"
            )
        real = os.path.realpath(candidate)
        if not self._inside(real):
            raise UnsafeArchiveError(
                f"layer entry {shown(name)} would be written through a symlink that points outside "
                f"the workspace (to {shown(real)}); refusing to extract it"
            )
        if real != self._root:
            try:
                os.makedirs(real, mode=0o755, exist_ok=True)
            except (FileExistsError, NotADirectoryError) as exc:
                raise TransferError(
                    f"layer entry {shown(name)} needs {shown(prefix)} to be a directory, but it is a file"
                ) from exc
            except OSError as exc:
                if exc.errno != errno.ELOOP:
                    raise
                raise UnsafeArchiveError(
                    f"layer entry {shown(name)} would be written through a loop of symlinks at "
                    f"{shown(prefix)}; refusing to extract it"
                ) from None
        return real

    def _made_dir(self, real: str, local: str) -> None:
        self._fresh.add(real)
        self._created.add(real)
        self._late[local] = real

    def _local_of(self, real: str) -> str:
        """The record's key of a real path (meaningful only while the record is exact)."""
        return real[len(self._root) + 1:]

    def _settle(self) -> None:
        """Wait for the files queued in this layer: an entry is about to depend on them."""
        if self._queued and self._writers is not None:
            self._writers.drain()
            self._queued.clear()

    def _clear(self, target: str) -> None:
        """Make room for a new entry at `target`, unless nothing can be there yet."""
        if target in self._queued:
            self._settle()
        if target in self._created or target.rpartition("/")[0] not in self._fresh:
            self._remove(target)

    def _remove(self, target: str) -> None:
        try:
            st = os.lstat(target)
        except FileNotFoundError:
            return
        if stat.S_ISDIR(st.st_mode):
            self._settle()  # queued files may be inside
            remove_tree(target)
            self._dirs.clear()
            self._exact = False
            return
        os.unlink(target)
        if stat.S_ISLNK(st.st_mode):
            self._dirs.clear()
        local = self._local_of(target)
        self._entries.pop(local, None)
        self._late.pop(local, None)
