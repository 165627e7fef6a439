"""Tar headers checked against bounds before `tarfile` acts on them.

`tarfile` trusts headers: it reads a PAX or GNU long-name record of any declared size into
memory, follows a chain of extended headers with one recursion per header (a long chain is
a `RecursionError`), and accepts a negative size (from a PAX `size` record or a base-256
field) that GNU tar refuses, so two tools would see different content. `CheckedTarInfo`,
passed as `tarinfo=` to `tarfile.open`, refuses all of these with `UnsafeArchiveError`
naming the limit (`wrapresolver.limits`: tar-max-name, tar-max-link, tar-max-pax), and
refuses sparse members, which a workspace layer never holds.
"""

from __future__ import annotations

import tarfile
import weakref
from typing import Any

from wrapresolver.core.limits import TAR_MAX_LINK, TAR_MAX_NAME, TAR_MAX_PAX, shown
from wrapresolver.errors import UnsafeArchiveError

MAX_HEADER_CHAIN = 16
"""Extended headers (PAX, GNU long name/link) in front of one member; real archives use 1-3."""

_EXTENDED = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE,
             tarfile.GNUTYPE_LONGNAME, tarfile.GNUTYPE_LONGLINK)


_TARINFO: Any = tarfile.TarInfo
"""tarfile's per-member parsing hooks (`_proc_member`, ...) are CPython's private API, which
the type stubs do not declare: the overrides below call them through this untyped alias."""


_COUNTS: weakref.WeakKeyDictionary[tarfile.TarFile, list[int]] = weakref.WeakKeyDictionary()
"""Per archive being read: [extended headers in a row so far, bytes of global PAX headers]."""


class CheckedTarInfo(tarfile.TarInfo):
    """A TarInfo whose parsing refuses out-of-range headers."""

    def _proc_member(self, tarfile_: tarfile.TarFile):
        if self.size < 0:
            raise UnsafeArchiveError(
                f"layer entry {shown(self.name)} declares a negative size ({self.size}); refusing the layer"
            )
        if self.type == tarfile.GNUTYPE_SPARSE:
            raise UnsafeArchiveError(f"layer entry {shown(self.name)} is a sparse file; workspace layers hold none")
        if self.type in _EXTENDED:
            chain = _COUNTS.setdefault(tarfile_, [0, 0])[0] + 1
            if chain > MAX_HEADER_CHAIN:
                raise UnsafeArchiveError(
                    f"layer has more than {MAX_HEADER_CHAIN} extended headers in a row; refusing the layer"
                )
            limit = TAR_MAX_PAX.int_value()
            if self.size > limit:
                raise UnsafeArchiveError(
                    f"layer has an extended header record of {self.size} bytes, more than {limit} "
                    f"({TAR_MAX_PAX.where()})"
                )
            if self.type == tarfile.XGLTYPE:
                total = _COUNTS[tarfile_][1] + self.size
                if total > limit:
                    raise UnsafeArchiveError(
                        f"layer has {total} bytes of global PAX headers, more than {limit} ({TAR_MAX_PAX.where()})"
                    )
                _COUNTS[tarfile_][1] = total
            _COUNTS[tarfile_][0] = chain
            try:
                member = _TARINFO._proc_member(self, tarfile_)
            finally:
                _COUNTS[tarfile_][0] = chain - 1
        else:
            member = _TARINFO._proc_member(self, tarfile_)
        if self.type not in _EXTENDED:
            return member
        _check_member(member)
        return member

    def _proc_builtin(self, tarfile_: tarfile.TarFile):
        member = _TARINFO._proc_builtin(self, tarfile_)
        _check_member(member)
        return member

    # Sparse maps (GNU 0.0, 0.1, 1.0 in PAX records): refused before they are read.
    def _proc_gnusparse_00(self, member, pax_headers, buf):
        raise UnsafeArchiveError(f"layer entry {shown(member.name)} is a sparse file; workspace layers hold none")

    def _proc_gnusparse_01(self, member, pax_headers):
        raise UnsafeArchiveError(f"layer entry {shown(member.name)} is a sparse file; workspace layers hold none")

    def _proc_gnusparse_10(self, member, pax_headers, tarfile_):
        raise UnsafeArchiveError(f"layer entry {shown(member.name)} is a sparse file; workspace layers hold none")


def _check_member(member: tarfile.TarInfo) -> None:
    """The member as extended headers left it: sizes and name lengths in range."""
    if member.size < 0:
        raise UnsafeArchiveError(
            f"layer entry {shown(member.name)} declares a negative size ({member.size}); refusing the layer"
        )
    name_limit = TAR_MAX_NAME.int_value()
    name_bytes = len(member.name.encode("utf-8", "surrogateescape"))
    if name_bytes > name_limit:
        raise UnsafeArchiveError(
            f"layer entry {shown(member.name)} has a path of {name_bytes} bytes, more than {name_limit} "
            f"({TAR_MAX_NAME.where()})"
        )
    link_limit = TAR_MAX_LINK.int_value()
    link_bytes = len(member.linkname.encode("utf-8", "surrogateescape"))
    if link_bytes > link_limit:
        raise UnsafeArchiveError(
            f"layer entry {shown(member.name)} links to a target of {link_bytes} bytes, more than "
            f"{link_limit} ({TAR_MAX_LINK.where()})"
        )
