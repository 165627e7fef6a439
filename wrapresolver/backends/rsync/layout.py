"""What an rsync target holds and how a task's input is assembled from it, pure.

The reference files, the change lists of each state, a task's merged input, and which part
of the workspace a local directory holds (a `sub_path`). See the package docstring for the
layout on the server.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

from wrapresolver.errors import IntegrityError
from wrapresolver.transfer.deeptree import remove_tree

LATEST = "latest"
"""The directory (and reference) that is the user's exact target."""


@dataclass(frozen=True)
class StoredState:
    """A reference: the tree's directory under states/ and the change sets making it up."""

    state: str
    layers: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: Mapping, where: str) -> StoredState:
        try:
            state = str(data["state"])
            layers = tuple(str(layer) for layer in data.get("layers", ()))
        except (KeyError, TypeError) as exc:
            raise IntegrityError(f"the reference of {where} is malformed: {exc}") from exc
        for name in (state, *layers):
            _check_name(name, where)
        return cls(state, layers)


@dataclass(frozen=True)
class OwnChanges:
    """What one state changed relative to what its task fetched ('/'-separated paths)."""

    changed: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping, where: str) -> OwnChanges:
        changed = tuple(safe_rel(p, where) for p in data.get("changed", ()))
        deleted = tuple(safe_rel(p, where) for p in data.get("deleted", ()))
        return cls(changed, deleted)


def _check_name(name: str, where: str) -> None:
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$", name):
        raise IntegrityError(f"the reference of {where} names an invalid state {name!r}")


def safe_rel(path: str, where: str) -> str:
    """A stored path must stay inside the workspace."""
    parts = str(path).split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise IntegrityError(f"the change list of {where} holds an unsafe path {path!r}")
    return str(path)


@dataclass(frozen=True)
class MergedInput:
    """The merged input of a task: a full tree to start from and change sets to apply on top."""

    first: StoredState | None = None
    extra: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    """State directories to hard-link unchanged files against when storing."""
    inputs: tuple[str, ...] = ()
    base: str = ""
    """An rsync URL whose latest/ seeded the workspace (no producer ran before)."""
    detail: str = ""

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.first.layers if self.first else ()) + self.extra

    def to_dict(self) -> dict:
        return {
            "first": {"state": self.first.state, "layers": list(self.first.layers)} if self.first else None,
            "extra": list(self.extra), "links": list(self.links), "inputs": list(self.inputs),
            "base": self.base, "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> MergedInput:
        first = StoredState.from_dict(data["first"], "the fetch record") if data.get("first") else None
        return cls(
            first, tuple(data.get("extra", ())), tuple(data.get("links", ())),
            tuple(data.get("inputs", ())), data.get("base", ""), data.get("detail", ""),
        )


@dataclass(frozen=True)
class View:
    """Which part of the workspace a local directory holds.

    inside: only `sub_path`, with the prefix stripped (what a sub_path task sees);
    outside: everything but `sub_path` (what a sub_path store must add around it).
    """

    sub_path: str = ""
    inside: bool = True

    @property
    def remote_prefix(self) -> str:
        return self.sub_path if self.inside else ""

    def download_args(self) -> list[str]:
        return [] if self.inside or not self.sub_path else [f"--exclude=/{self.sub_path}"]

    def _under(self, path: str) -> bool:
        return path == self.sub_path or path.startswith(self.sub_path + "/")

    def changed(self, paths: Iterable[str]) -> list[str]:
        """Paths to copy, relative to the remote tree at `remote_prefix`."""
        if not self.sub_path:
            return list(paths)
        if self.inside:
            cut = len(self.sub_path) + 1
            return [p[cut:] for p in paths if p.startswith(self.sub_path + "/")]
        return [p for p in paths if not self._under(p)]

    def deleted(self, paths: Iterable[str]) -> tuple[list[str], bool]:
        """Local paths to remove, and whether the whole local tree goes (sub_path deleted)."""
        if not self.sub_path:
            return list(paths), False
        if self.inside:
            cut = len(self.sub_path) + 1
            clear = any(self.sub_path == p or self.sub_path.startswith(p + "/") for p in paths)
            return [p[cut:] for p in paths if p.startswith(self.sub_path + "/")], clear
        return [p for p in paths if not self._under(p)], False


WHOLE = View()

# ---- local file operations ----


def _pattern(path: str) -> str:
    """An anchored rsync filter pattern matching exactly `path`.

    rsync matches a pattern literally unless it holds a wildcard; then `\\` escapes.
    """
    if any(c in path for c in "*?["):
        path = re.sub(r"([*?\[\\])", r"\\\1", path)
    return "/" + path


def only(paths: Iterable[str]) -> list[str]:
    """Include rules for exactly these paths and the directories leading to them.

    (Filters rather than --files-from: rsync 3.5 daemons report every file of a
    --files-from list as vanished when the source is below the module root.)
    """
    rules: dict[str, None] = {}
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            rules[_pattern("/".join(parts[:i]))] = None
    return list(rules)



def remove_inside(root: Path, rel: str) -> None:
    """Delete `root/rel` without ever following a symlink out of `root`."""
    current = root
    parts = rel.split("/")
    for part in parts[:-1]:
        current = current / part
        if not current.is_dir() or current.is_symlink():
            return  # the parent is gone or not a directory: nothing below it to delete
    victim = current / parts[-1]
    if victim.is_dir() and not victim.is_symlink():
        remove_tree(victim)  # any depth: shutil.rmtree recurses once per level
    elif victim.exists() or victim.is_symlink():
        victim.unlink()


def norm_sub_path(sub_path: str) -> str:
    sub = sub_path.strip("/")
    if sub:
        safe_rel(sub, "the sub_path")
    return sub
