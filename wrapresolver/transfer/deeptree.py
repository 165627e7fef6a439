"""Removing a directory tree of any depth, in linear time, without following symlinks.

`shutil.rmtree` of Python 3.11 recurses once per level, so a layer (or a workspace a task
left behind) with a directory chain over ~1,000 levels deep ended a fetch with a
`RecursionError` and a half-emptied workspace. This walks the tree with an explicit stack
and works relative to directory file descriptors: it holds two descriptors at most, never
builds a path longer than one name (so depth is not limited by PATH_MAX either), and never
follows a symlink (each directory is opened with O_NOFOLLOW). `empty_directory` does the
same for what is inside a directory that must stay (a mount point).
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)


@dataclass
class _Level:
    """One directory being emptied: its name in its parent, and its subdirectories still to do."""

    name: str
    parent_id: tuple[int, int]
    pending: list[str] = field(default_factory=list)


def _identity(fd: int) -> tuple[int, int]:
    st = os.fstat(fd)
    return st.st_dev, st.st_ino


def _empty_files(fd: int) -> list[str]:
    """Unlink every non-directory in `fd`; return the names of its subdirectories."""
    subdirs: list[str] = []
    with os.scandir(fd) as entries:
        for entry in entries:
            if entry.is_dir(follow_symlinks=False):
                subdirs.append(entry.name)
                continue
            try:
                os.unlink(entry.name, dir_fd=fd)
            except FileNotFoundError:
                pass
    return subdirs


def remove_tree(path: str | os.PathLike[str]) -> None:
    """Remove the directory `path` and everything below it (a symlink `path` is just unlinked)."""
    path = os.fspath(path)
    head, name = os.path.split(path.rstrip("/") or path)
    parent_fd = os.open(head or ".", _DIR_FLAGS & ~os.O_NOFOLLOW)
    try:
        remove_tree_at(parent_fd, name)
    finally:
        os.close(parent_fd)


def remove_tree_at(parent_fd: int, name: str) -> None:
    """Remove the entry `name` of the directory open as `parent_fd`, whatever it holds."""
    try:
        fd = os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        return
    except OSError as exc:
        if exc.errno in (errno.ENOTDIR, errno.ELOOP):  # a file, or a symlink: not followed
            os.unlink(name, dir_fd=parent_fd)
            return
        raise
    top_parent = _identity(parent_fd)
    stack = [_Level(name, top_parent)]
    try:
        stack[-1].pending = _empty_files(fd)
        while stack:
            level = stack[-1]
            if level.pending:
                child = level.pending.pop()
                here = _identity(fd)
                try:
                    child_fd = os.open(child, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    continue
                except OSError:
                    os.unlink(child, dir_fd=fd)  # replaced by a symlink or file meanwhile
                    continue
                os.close(fd)
                fd = child_fd
                stack.append(_Level(child, here))
                stack[-1].pending = _empty_files(fd)
                continue
            # Empty now: go up and remove it.
            stack.pop()
            if not stack:
                break
            up = os.open("..", _DIR_FLAGS & ~os.O_NOFOLLOW, dir_fd=fd)
            os.close(fd)
            fd = up
            if _identity(fd) != level.parent_id:
                raise OSError(f"directory {name!r} was moved while it was being removed")
            os.rmdir(level.name, dir_fd=fd)
    finally:
        os.close(fd)
    os.rmdir(name, dir_fd=parent_fd)


def empty_directory(path: str | os.PathLike[str]) -> None:
    """Remove everything inside `path` (a mount point we must keep), never following symlinks."""
    try:
        children = list(os.scandir(path))
    except FileNotFoundError:
        return
    for child in children:
        if child.is_dir(follow_symlinks=False):
            try:
                remove_tree(child.path)
            except OSError:
                pass  # best effort, as before: what is left is reported by the caller's error
        else:
            try:
                os.unlink(child.path)
            except FileNotFoundError:
                pass
