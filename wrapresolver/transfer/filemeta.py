"""The last touches of what a layer's extraction writes: its owner, as far as the kernel
allows, its mode and its times.

Regular files are created in two places (streamed to disk by the extractor, handed whole to
the writer process or threads) and directories are finished last by the extractor; all end
the same way, so the order and the ownership rule are written once, here. The owner comes
first because chown clears the set-id bits the mode then sets again, and the times last
because chown and chmod move only the ctime.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from typing import TypeVar

from wrapresolver.transfer.snapshot import FILE, Entry

_REFUSED = (errno.EPERM, errno.EINVAL)
_new = tuple.__new__
T = TypeVar("T", int, str)


def try_chown(chown: Callable[[T, int, int], None], target: T, owner: tuple[int, int]) -> bool:
    """Give `target` (a descriptor for `os.fchown`, a path for `os.lchown`) its recorded owner;
    False when the kernel refuses, and then the caller stops trying for the entries after.

    A root without CAP_CHOWN (capabilities dropped) or in a user namespace that does not map
    the recorded IDs cannot give them (EPERM, EINVAL): from that entry on files stay root's,
    as a non-root fetch's files stay its own. Any other error is raised.
    """
    try:
        chown(target, *owner)
    except OSError as exc:
        if exc.errno not in _REFUSED:
            raise
        return False
    return True


def finish(fd: int, mode: int, mtime_ns: int, owner: tuple[int, int] | None, owners: bool,
           chmod: bool = True) -> bool:
    """Give the open file or directory `fd` its owner, mode and times; return whether chown
    still works.

    `owners` False (a chown was refused before, or owners are not restored) or `owner` None
    skip the chown; `chmod` False keeps the mode `open` gave, when it is already right.
    """
    if owner is not None and owners:
        owners = try_chown(os.fchown, fd, owner)
    if chmod:
        os.fchmod(fd, mode)
    os.utime(fd, ns=(mtime_ns, mtime_ns))
    return owners


def finish_file(fd: int, local: str, mode: int, mtime_ns: int, owner: tuple[int, int] | None, owners: bool,
                chmod: bool = True) -> tuple[Entry, bool]:
    """`finish` a regular file just written, then its entry of the fetch record (from the
    descriptor's fstat, so the workspace need not be walked again) and whether chown still works."""
    owners = finish(fd, mode, mtime_ns, owner, owners, chmod)
    st = os.fstat(fd)
    # tuple.__new__, not Entry(...): the named tuple's own __new__ is a Python function.
    return _new(Entry, (
        local, FILE, st.st_mode & 0o7777, st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino,
        st.st_uid, st.st_gid, "",
    )), owners
