"""Applying layers to a workspace directory, safely: what each entry of a layer becomes.

Layers may come from anywhere a `base` points to, so every entry is treated as hostile:
nothing may be written outside the workspace, whatever the names, links and the symlinks
an earlier layer planted say. Refusals raise `UnsafeArchiveError` naming the entry. The
rules that keep a hostile layer inside the workspace are in three modules, to be reviewed
together (docs/security.md): this one (devices, hardlinks, empty symlinks, the digests),
workspacepaths.py (names, parents, symlinks on the way, making room) and whiteouts.py (the
OCI whiteouts). Reading headers, decompressing, the process that creates small files, a
file's last touches and tree removal need no workspace state and are apart (tarreader.py,
inflate.py, writerprocess.py and filewriters.py, filemeta.py, deeptree.py).

Speed, since a fetch is what every task waits for: small files are read whole and handed to
a writer process (the syscalls of 100,000 file creations then run beside the parsing); no path is
looked up where this extraction knows nothing can be yet; directories get their modes and
times once, at the end; and `record()` gives the fetch record from what was written, so the
workspace is not walked a second time.
"""

from __future__ import annotations

import errno
import gzip
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard

from wrapresolver.core import oci_image
from wrapresolver.core.limits import cap_line, shown
from wrapresolver.errors import IntegrityError, UnsafeArchiveError
from wrapresolver.transfer import snapshot
from wrapresolver.transfer.filemeta import finish, finish_file, try_chown
from wrapresolver.transfer.filewriters import FileJob
from wrapresolver.transfer.inflate import Inflater
from wrapresolver.transfer.layers import CHUNK, WHITEOUT_PREFIX
from wrapresolver.transfer.streams import HashingChunks
from wrapresolver.transfer.tarreader import Member, TarFormatError, TarReader
from wrapresolver.transfer.whiteouts import Whiteouts
from wrapresolver.transfer.workspacepaths import clean_name
from wrapresolver.transfer.writerprocess import ProcessFileWriters

_KEEP_MODE = 0o1777  # setuid/setgid bits are dropped: a workspace needs no privilege escalation
INLINE_MAX = 1 << 20
"""Files up to this size are read whole and created by the writer process; larger ones are
streamed to disk by the extracting thread, so memory stays bounded whatever the file sizes."""
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_new = tuple.__new__
"""Builds a named tuple without its __new__, a Python function: one per small file."""


@dataclass
class ApplyStats:
    files: int = 0
    bytes: int = 0
    skipped: int = 0


@dataclass
class Extractor(Whiteouts):
    """Applies layers in order into `dest`, keeping only entries under `sub_path`."""

    dest: Path
    sub_path: str = ""
    stats: ApplyStats = field(default_factory=ApplyStats)
    restore_owners: bool | None = None
    """Give each entry the uid/gid the layer recorded. Default: when running as root, which
    is what a shared volume would show; otherwise entries belong to whoever extracts them."""

    def __post_init__(self) -> None:
        if self.restore_owners is None:
            self.restore_owners = os.geteuid() == 0
        self._start(os.path.realpath(self.dest), self.sub_path)
        self._dir_meta: dict[str, tuple[int, int, tuple[int, int] | None]] = {}
        """Directory entries' (mode, mtime, owner), applied last: writing their children
        changes their times, and a read-only mode would stop the children being written."""
        self._tar = TarReader(io.BytesIO())
        """The layer being read while `apply` runs: entries' data is read straight off it."""

    # ---- layers ----
    def apply(self, chunks: Iterator[bytes], layer: oci_image.Layer, where: str) -> None:
        """Extract one layer blob, then check its digest and diff_id.

        The digest can only be known at the end of the stream; on a mismatch the caller
        must discard what was extracted.
        """
        desc = layer.descriptor
        blob = HashingChunks(chunks)
        inflater = Inflater(blob, desc.media_type)
        inflater.start()
        self._written = set()
        writers = self._writers = ProcessFileWriters()
        writers.owners = bool(self.restore_owners)
        try:
            # Unbuffered: the tar reader keeps its own buffer of whole chunks off the pipe.
            reader = inflater.pipe.reader
            tar = self._tar = TarReader(reader)
            while (member := tar.next()) is not None:
                try:
                    self._entry(member)
                except OSError as exc:
                    if exc.errno != errno.ENAMETOOLONG:
                        raise
                    raise UnsafeArchiveError(
                        f"layer entry {shown(member.name)} makes a path longer than this file "
                        f"system allows under the workspace; refusing to extract it"
                    ) from None
            while reader.read(CHUNK):
                pass
            writers.drain()
        except (TarFormatError, zstandard.ZstdError, gzip.BadGzipFile, EOFError, ValueError) as exc:
            self._stop_writers()
            inflater.stop()
            while blob.read(CHUNK):
                pass
            self._check_digest(blob, layer, where)
            raise IntegrityError(
                f"layer {desc.digest} of {where} is not a valid tar layer: {cap_line(str(exc), 300)}"
            ) from exc
        except BaseException:
            self._stop_writers()
            inflater.stop()
            raise
        self._stop_writers()
        inflater.stop()
        self._check_digest(blob, layer, where)
        if layer.diff_id and inflater.plain_digest != layer.diff_id:
            raise IntegrityError(
                f"layer {desc.digest} of {where} unpacks to {inflater.plain_digest}, "
                f"but its image config says {layer.diff_id}"
            )

    def _stop_writers(self) -> None:
        writers, self._writers = self._writers, None
        if writers is None:
            return
        writers.close()
        self._entries.update(writers.entries)
        self.restore_owners = self.restore_owners and writers.owners
        self._queued.clear()

    @staticmethod
    def _check_digest(blob: HashingChunks, layer: oci_image.Layer, where: str) -> None:
        desc = layer.descriptor
        if blob.digest != desc.digest or blob.size != desc.size:
            raise IntegrityError(
                f"layer {desc.digest} of {where} is corrupt: received {blob.size} bytes with "
                f"digest {blob.digest}, expected {desc.size} bytes"
            )

    def finish(self) -> None:
        """Directories' owners, modes and times last, deepest first."""
        for real, (mode, mtime_ns, owner) in sorted(self._dir_meta.items(), key=lambda kv: -kv[0].count("/")):
            # Once a directory was removed or a path ran through a link, a recorded path may
            # now lead through a symlink a later layer planted: only a path that is still
            # its own real path is touched, and its last component is never followed.
            if not self._exact and os.path.realpath(real) != real:
                continue
            try:
                fd = os.open(real, _DIRECTORY)
            except OSError as exc:
                if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.ELOOP):
                    continue  # a later layer removed it, or replaced it or an ancestor
                raise
            try:
                self.restore_owners = finish(fd, mode, mtime_ns, owner, bool(self.restore_owners))
            finally:
                os.close(fd)

    def record(self) -> dict[str, snapshot.Entry] | None:
        """After `finish`: the workspace as `snapshot.take` would find it, without walking it
        again; None when that cannot be known from the entries alone (then walk).

        The files' metadata is each descriptor's last fstat; links and directories are
        looked up now, after their last change. An entry recorded too early could only show
        an older ctime than the disk, which makes the next store include it, never miss it.
        """
        if not self._exact:
            return None
        entries = self._entries
        for local, real in self._late.items():
            try:
                st = os.lstat(real)
            except FileNotFoundError:
                return None
            entries[local] = snapshot.entry_for(Path(self._root), local, st)
        return entries

    # ---- entries ----
    def _entry(self, member: Member) -> None:
        path = clean_name(member.name)
        parent, _, base = path.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base, member.name)
            return
        if member.isdev():
            raise UnsafeArchiveError(
                f"layer entry {shown(member.name)} is a device or fifo; workspaces hold files, "
                f"directories and links only"
            )
        local = self._local(path)
        if not local:
            return  # outside the sub_path, or the view's root (the mount point keeps its own mode)
        target = os.path.join(self._parent_dir(local, member.name), local.rpartition("/")[2])
        mode = member.mode & _KEEP_MODE
        mtime_ns = member.mtime_ns
        if member.isreg():
            self._clear(target)
            self._created.add(target)
            self._regular(member, target, local, mode, mtime_ns)
            self._written.add(local)
            self.stats.bytes += member.size
            self.stats.files += 1
            return
        if member.isdir():
            known = target in self._created or target.rpartition("/")[0] not in self._fresh
            if target in self._queued:
                self._settle()
            if not (known and os.path.isdir(target) and not os.path.islink(target)):
                self._clear(target)
                os.mkdir(target, 0o700)
                self._made_dir(target, local)
            owner = (member.uid, member.gid) if self.restore_owners else None
            self._dir_meta[target] = (mode, mtime_ns, owner)
            self._late[local] = target
            self._dirs[local] = target  # resolved: the files inside need no lookup
            self._written.add(local)
            return
        elif member.issym():
            if not member.linkname:
                raise UnsafeArchiveError(
                    f"layer entry {shown(member.name)} is a symlink with an empty target, which no "
                    f"file system can hold; refusing the layer"
                )
            self._clear(target)
            self._dirs.clear()  # a later entry may walk through this link: resolve again
            os.symlink(member.linkname, target)
            os.utime(target, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
            self._created.add(target)
            self._late[local] = target
        elif member.islnk():
            if not self._hardlink(member, target):
                self.stats.skipped += 1
                return
        else:
            self.stats.skipped += 1
            return
        self._written.add(local)
        self._restore_owner(target, member)
        self.stats.files += 1

    def _regular(self, member: Member, target: str, local: str, mode: int, mtime_ns: int) -> None:
        """Read the entry's data off the stream; small files go to the writer process."""
        owner = (member.uid, member.gid) if self.restore_owners else None
        if member.size <= INLINE_MAX and self._writers is not None:
            data = self._tar.read(member.size)
            self._writers.submit(_new(FileJob, (target, local, member.name, data, mode, mtime_ns, owner)))
            self._queued.add(target)
            return
        fd = os.open(target, _CREATE, 0o600)
        try:
            left = member.size
            while left:
                chunk = self._tar.read(min(left, CHUNK))
                view = memoryview(chunk)
                while view:
                    view = view[os.write(fd, view):]
                left -= len(chunk)
            self._entries[local], self.restore_owners = finish_file(
                fd, local, mode, mtime_ns, owner, bool(self.restore_owners))
        finally:
            os.close(fd)


    # ---- ownership ----
    def _restore_owner(self, target: str, member: Member) -> None:
        """As root, the recorded owner (of a link, not what it points to); kept apart from
        extraction, which never depends on it. A refusal turns it off (`filemeta.try_chown`)."""
        if not self.restore_owners or member.islnk():  # a hard link shares its source's inode
            return
        self.restore_owners = try_chown(os.lchown, target, (member.uid, member.gid))

    def _hardlink(self, member: Member, target: str) -> bool:
        if member.linkname.startswith("/") or ".." in member.linkname.split("/"):
            raise UnsafeArchiveError(
                f"layer entry {shown(member.name)} is a hardlink to {shown(member.linkname)}, outside the "
                f"workspace; refusing to extract it"
            )
        local = self._local(clean_name(member.linkname, "hardlink"))
        if not local:
            return False  # its target is outside the sub_path: not part of this view
        source = os.path.join(self._parent_dir(local, member.name), local.rpartition("/")[2])
        if source == target:
            return False  # a hardlink to itself: nothing to link (removing first would lose the file)
        if source in self._queued:
            self._settle()
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        self._clear(target)
        os.link(source, target, follow_symlinks=False)
        self._created.add(target)
        self._late[local] = source  # linking changed the inode's ctime: both names are looked up late
        self._late[self._local_of(target)] = target
        return True
