"""Applying layers to a workspace directory, safely.

Layers may come from anywhere a `base` points to, so every entry is treated as hostile:
nothing may be written outside the workspace, whatever the names, links and the symlinks
an earlier layer planted say. Refusals raise `UnsafeArchiveError` naming the entry.
Whiteouts follow the OCI image spec (image-spec/layer.md "Whiteouts"): `.wh.<name>` deletes
`<name>` from lower layers, `.wh..wh..opq` empties its directory of lower-layer content.

Over 400 lines on purpose: every rule that keeps a hostile layer inside the workspace is in
this one module, so they can be reviewed together (docs/security.md). Reading headers, the
process that creates small files, and tree removal, which need no workspace state, are apart
(tarreader.py, writerprocess.py and filewriters.py, deeptree.py).

Speed, since a fetch is what every task waits for: small files are read whole and handed to
a writer process (the syscalls of 100,000 file creations then run beside the parsing); no path is
looked up where this extraction knows nothing can be yet; directories get their modes and
times once, at the end; and `record()` gives the fetch record from what was written, so the
workspace is not walked a second time.
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import queue
import stat
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import zstandard

from wrapresolver.core import oci_image
from wrapresolver.core.limits import cap_line, shown
from wrapresolver.errors import IntegrityError, TransferError, UnsafeArchiveError
from wrapresolver.transfer import snapshot
from wrapresolver.transfer.deeptree import remove_tree
from wrapresolver.transfer.filemeta import finish, finish_file, try_chown
from wrapresolver.transfer.filewriters import FileJob
from wrapresolver.transfer.layers import CHUNK, OPAQUE, WHITEOUT_PREFIX
from wrapresolver.transfer.streams import BoundedPipe, HashingChunks, PipeClosed
from wrapresolver.transfer.tarreader import Member, TarFormatError, TarReader
from wrapresolver.transfer.writerprocess import ProcessFileWriters

_KEEP_MODE = 0o1777  # setuid/setgid bits are dropped: a workspace needs no privilege escalation
INLINE_MAX = 1 << 20
"""Files up to this size are read whole and created by the writer threads; larger ones are
streamed to disk by the extracting thread, so memory stays bounded whatever the file sizes."""
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_DIRECTORY = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
_new = tuple.__new__
"""Builds a named tuple without its __new__, a Python function: one per small file."""


def clean_name(name: str, what: str = "entry") -> str:
    """A tar name as a relative '/'-path, or a refusal if it could leave the workspace."""
    if name.startswith("/"):
        raise UnsafeArchiveError(f"layer {what} {shown(name)} has an absolute path; refusing to extract it")
    parts = [part for part in name.split("/") if part not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"layer {what} {shown(name)} contains '..'; refusing to extract it")
    return "/".join(parts)


def empty_directory(path: Path) -> None:
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


@dataclass
class ApplyStats:
    files: int = 0
    bytes: int = 0
    skipped: int = 0


@dataclass
class Extractor:
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
        self._root = os.path.realpath(self.dest)
        self._prefix = clean_name(self.sub_path, "sub-path") if self.sub_path else ""
        self._dir_meta: dict[str, tuple[int, int, tuple[int, int] | None]] = {}
        """Directory entries' (mode, mtime, owner), applied last: writing their children
        changes their times, and a read-only mode would stop the children being written."""
        self._written: set[str] = set()
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
        """The record below is what a walk of the workspace would find: true while the
        workspace started empty and no directory was removed or written through a symlink."""
        self._entries: dict[str, snapshot.Entry] = {}
        self._tar = TarReader(io.BytesIO())
        """The layer being read while `apply` runs: entries' data is read straight off it."""
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

    # ---- layers ----
    def apply(self, chunks: Iterator[bytes], layer: oci_image.Layer, where: str) -> None:
        """Extract one layer blob, then check its digest and diff_id.

        The digest can only be known at the end of the stream; on a mismatch the caller
        must discard what was extracted.
        """
        desc = layer.descriptor
        blob = HashingChunks(chunks)
        inflater = _Inflater(blob, desc.media_type)
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
        """Read the entry's data off the stream; small files go to the writer threads."""
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

    def _whiteout(self, parent: str, base: str, name: str) -> None:
        self._settle()  # a whiteout removes or lists what is there
        if base == OPAQUE:
            if self._covers_view(parent):
                self._clear_view()
                return
            local = self._local(parent)
            if local is None:
                return
            directory = self._real_dir(local, name)
            for child in os.listdir(directory):
                child_local = f"{local}/{child}" if local else child
                if child_local not in self._written:
                    self._remove(os.path.join(directory, child))
            return
        victim_name = base[len(WHITEOUT_PREFIX):]
        if victim_name in ("", ".", ".."):
            raise UnsafeArchiveError(f"layer whiteout {shown(name)} names no valid entry; refusing it")
        victim = f"{parent}/{victim_name}" if parent else victim_name
        if self._covers_view(victim):
            self._clear_view()
            return
        local = self._local(victim)
        if local is None or local in self._written:
            return
        real_parent = self._parent_dir(local, name)
        self._remove(os.path.join(real_parent, victim_name))

    def _clear_view(self) -> None:
        """An ancestor of sub_path was deleted: everything from lower layers goes."""
        keep = {path.split("/", 1)[0] for path in self._written}
        for child in os.listdir(self._root):
            if child not in keep:
                self._remove(os.path.join(self._root, child))


class _Inflater:
    """Reads, hashes and decompresses a layer blob in its own thread.

    zstd, gzip and sha256 release the GIL, so this runs on a second core while the calling
    thread parses tar headers and writes files: on two cores a fetch takes about the
    time of the slower half instead of the sum. The pipe between them holds a few MiB.
    The digest of the uncompressed tar (the diff_id) is computed on a third thread: with it
    here, this thread was the slower half of a fetch of large files.
    """

    def __init__(self, blob: HashingChunks, media_type: str) -> None:
        self.blob, self.media_type = blob, media_type
        self.pipe = BoundedPipe()
        self._plain = hashlib.sha256()
        self._to_hash: queue.Queue[bytes | None] = queue.Queue(maxsize=8)
        self._thread = threading.Thread(target=self._run, name="wrap-layer-reader", daemon=True)
        self._hasher = threading.Thread(target=self._hash, name="wrap-layer-hasher", daemon=True)

    def start(self) -> None:
        self._hasher.start()
        self._thread.start()

    def _hash(self) -> None:
        while (data := self._to_hash.get()) is not None:
            self._plain.update(data)

    def _run(self) -> None:
        try:
            source = _decompressor(self.media_type, self.blob)
            while True:
                data = source.read(CHUNK)
                if not data:
                    break
                self._to_hash.put(data)
                self.pipe.write(data)
            while self.blob.read(CHUNK):  # bytes after the compressed stream count too
                pass
            self.pipe.finish()
        except PipeClosed:
            pass
        except BaseException as exc:  # raised on the reading side
            self.pipe.finish(exc)
        finally:
            self._to_hash.put(None)

    def stop(self) -> None:
        """Wait for the threads; if the reader gave up early, make the thread give up too."""
        self.pipe.close_reader()
        self._thread.join()
        self._hasher.join()

    @property
    def plain_digest(self) -> str:
        return "sha256:" + self._plain.hexdigest()


def _decompressor(media_type: str, blob: HashingChunks):
    if media_type == oci_image.LAYER_ZSTD:
        # A RawIOBase is the file-like object zstandard reads; its stubs only name IO[bytes].
        return zstandard.ZstdDecompressor().stream_reader(
            cast(IO[bytes], blob), read_size=CHUNK, read_across_frames=True, closefd=False)
    if media_type == oci_image.LAYER_GZIP:
        return gzip.GzipFile(fileobj=blob, mode="rb")
    return blob
