"""Applying layers to a workspace directory, safely.

Layers may come from anywhere a `base` points to, so every entry is treated as hostile:
nothing may be written outside the workspace, whatever the names, links and the symlinks
an earlier layer planted say. Refusals raise `UnsafeArchiveError` naming the entry.
Whiteouts follow the OCI image spec (image-spec/layer.md "Whiteouts"): `.wh.<name>` deletes
`<name>` from lower layers, `.wh..wh..opq` empties its directory of lower-layer content.

Over 400 lines on purpose: every rule that keeps a hostile layer inside the workspace is in
this one module, so they can be reviewed together (docs/security.md). Header limits and tree
removal, which need no workspace state, are apart (tarlimits.py, deeptree.py).
"""

from __future__ import annotations

import errno
import gzip
import hashlib
import io
import os
import shutil
import stat
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, cast

import zstandard

from wrapresolver.core.limits import cap_line, shown
from wrapresolver.errors import IntegrityError, TransferError, UnsafeArchiveError
from wrapresolver.transfer import oci_image
from wrapresolver.transfer.deeptree import remove_tree
from wrapresolver.transfer.layers import CHUNK, OPAQUE, WHITEOUT_PREFIX
from wrapresolver.transfer.streams import BoundedPipe, ForwardReader, HashingReader, IteratorReader, PipeClosed
from wrapresolver.transfer.tarlimits import CheckedTarInfo

_KEEP_MODE = 0o1777  # setuid/setgid bits are dropped: a workspace needs no privilege escalation


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


def _remove(path: str) -> bool:
    """Remove whatever is at `path`; True if it was a directory or a symlink (a path step)."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return False
    if stat.S_ISDIR(st.st_mode):
        remove_tree(path)
        return True
    os.unlink(path)
    return stat.S_ISLNK(st.st_mode)


def _pax_mtime_ns(member: tarfile.TarInfo) -> int:
    text = member.pax_headers.get("mtime")
    if text:
        seconds, _, frac = text.partition(".")
        try:
            return int(seconds) * 1_000_000_000 + int((frac + "000000000")[:9] or 0) * (
                -1 if seconds.startswith("-") else 1
            )
        except ValueError:
            pass
    return int(member.mtime * 1_000_000_000)


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
        self._dir_times: dict[str, int] = {}
        self._written: set[str] = set()
        self._dirs: dict[str, str] = {}
        """Parents already resolved and checked. Valid until an entry replaces or removes a
        directory or a symlink (anything a later path could walk through): then forgotten."""

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
        try:
            st = os.lstat(candidate)
        except FileNotFoundError:
            os.mkdir(candidate, 0o755)
            return candidate
        if stat.S_ISDIR(st.st_mode):
            return candidate
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

    def _remove(self, target: str) -> None:
        if _remove(target):
            self._dirs.clear()

    # ---- layers ----
    def apply(self, chunks: Iterator[bytes], layer: oci_image.Layer, where: str) -> None:
        """Extract one layer blob, then check its digest and diff_id.

        The digest can only be known at the end of the stream; on a mismatch the caller
        must discard what was extracted.
        """
        desc = layer.descriptor
        blob = HashingReader(IteratorReader(chunks))
        inflater = _Inflater(blob, desc.media_type)
        inflater.start()
        self._written = set()
        try:
            # Buffered, so tarfile's 512-byte header reads stay in this thread's buffer;
            # seeks are forward-only reads.
            reader = io.BufferedReader(ForwardReader(inflater.pipe.reader), CHUNK)
            with tarfile.open(fileobj=reader, mode="r:", tarinfo=CheckedTarInfo) as tar:
                for member in tar:
                    try:
                        self._entry(tar, member)
                    except OSError as exc:
                        if exc.errno != errno.ENAMETOOLONG:
                            raise
                        raise UnsafeArchiveError(
                            f"layer entry {shown(member.name)} makes a path longer than this file "
                            f"system allows under the workspace; refusing to extract it"
                        ) from None
            while reader.read(CHUNK):
                pass
        except (tarfile.TarError, zstandard.ZstdError, gzip.BadGzipFile, EOFError, ValueError) as exc:
            inflater.stop()
            while blob.read(CHUNK):
                pass
            self._check_digest(blob, layer, where)
            raise IntegrityError(
                f"layer {desc.digest} of {where} is not a valid tar layer: {cap_line(str(exc), 300)}"
            ) from exc
        except BaseException:
            inflater.stop()
            raise
        inflater.stop()
        self._check_digest(blob, layer, where)
        if layer.diff_id and inflater.plain_digest != layer.diff_id:
            raise IntegrityError(
                f"layer {desc.digest} of {where} unpacks to {inflater.plain_digest}, "
                f"but its image config says {layer.diff_id}"
            )

    @staticmethod
    def _check_digest(blob: HashingReader, layer: oci_image.Layer, where: str) -> None:
        desc = layer.descriptor
        if blob.digest != desc.digest or blob.size != desc.size:
            raise IntegrityError(
                f"layer {desc.digest} of {where} is corrupt: received {blob.size} bytes with "
                f"digest {blob.digest}, expected {desc.size} bytes"
            )

    def finish(self) -> None:
        """Directory mtimes last: writing their children changed them."""
        for real, mtime_ns in sorted(self._dir_times.items(), key=lambda kv: -kv[0].count("/")):
            try:
                os.utime(real, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
            except (FileNotFoundError, NotADirectoryError):
                pass  # a later layer removed it, or replaced an ancestor with a file

    # ---- entries ----
    def _entry(self, tar: tarfile.TarFile, member: tarfile.TarInfo) -> None:
        path = clean_name(member.name)
        parent, _, base = path.rpartition("/")
        if base.startswith(WHITEOUT_PREFIX):
            self._whiteout(parent, base, member.name)
            return
        if member.ischr() or member.isblk() or member.isfifo():
            raise UnsafeArchiveError(
                f"layer entry {shown(member.name)} is a device or fifo; workspaces hold files, "
                f"directories and links only"
            )
        local = self._local(path)
        if not local:
            return  # outside the sub_path, or the view's root (the mount point keeps its own mode)
        target = os.path.join(self._parent_dir(local, member.name), local.rpartition("/")[2])
        mode = member.mode & _KEEP_MODE
        mtime_ns = _pax_mtime_ns(member)
        if member.isdir():
            if os.path.isdir(target) and not os.path.islink(target):
                os.chmod(target, mode)
            else:
                self._remove(target)
                os.mkdir(target, 0o700)
                os.chmod(target, mode)
            self._dir_times[target] = mtime_ns
        elif member.issym():
            if not member.linkname:
                raise UnsafeArchiveError(
                    f"layer entry {shown(member.name)} is a symlink with an empty target, which no "
                    f"file system can hold; refusing the layer"
                )
            self._remove(target)
            self._dirs.clear()  # a later entry may walk through this link: resolve again
            os.symlink(member.linkname, target)
            os.utime(target, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
        elif member.islnk():
            if not self._hardlink(member, target):
                self.stats.skipped += 1
                return
        elif member.isreg():
            self._remove(target)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
            with os.fdopen(fd, "wb") as out:
                source = tar.extractfile(member)
                if source is not None:
                    shutil.copyfileobj(source, out, CHUNK)
                os.fchmod(out.fileno(), mode)
            os.utime(target, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
            self.stats.bytes += member.size
        else:
            self.stats.skipped += 1
            return
        self._written.add(local)
        self._restore_owner(target, member)
        if not member.isdir():
            self.stats.files += 1

    # ---- ownership ----
    def _restore_owner(self, target: str, member: tarfile.TarInfo) -> None:
        """As root, the recorded owner; kept apart from extraction, which never depends on it.

        A root without CAP_CHOWN (capabilities dropped) or in a user namespace that does not
        map the recorded IDs cannot: then, from that entry on, files stay root's, as a
        non-root fetch's files stay its own.
        """
        if not self.restore_owners or member.islnk():  # a hard link shares its source's inode
            return
        try:
            os.lchown(target, member.uid, member.gid)
        except OSError as exc:
            if exc.errno not in (errno.EPERM, errno.EINVAL):
                raise
            self.restore_owners = False

    def _hardlink(self, member: tarfile.TarInfo, target: str) -> bool:
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
        try:
            st = os.lstat(source)
        except FileNotFoundError:
            return False
        if not stat.S_ISREG(st.st_mode):
            return False
        self._remove(target)
        os.link(source, target, follow_symlinks=False)
        return True

    def _whiteout(self, parent: str, base: str, name: str) -> None:
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
    """

    def __init__(self, blob: HashingReader, media_type: str) -> None:
        self.blob, self.media_type = blob, media_type
        self.pipe = BoundedPipe()
        self._plain = hashlib.sha256()
        self._thread = threading.Thread(target=self._run, name="wrap-layer-reader", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        try:
            source = _decompressor(self.media_type, self.blob)
            while True:
                data = source.read(CHUNK)
                if not data:
                    break
                self._plain.update(data)
                self.pipe.write(data)
            while self.blob.read(CHUNK):  # bytes after the compressed stream count too
                pass
            self.pipe.finish()
        except PipeClosed:
            pass
        except BaseException as exc:  # raised on the reading side
            self.pipe.finish(exc)

    def stop(self) -> None:
        """Wait for the thread; if the reader gave up early, make the thread give up too."""
        self.pipe.close_reader()
        self._thread.join()

    @property
    def plain_digest(self) -> str:
        return "sha256:" + self._plain.hexdigest()


def _decompressor(media_type: str, blob: HashingReader):
    if media_type == oci_image.LAYER_ZSTD:
        # A RawIOBase is the file-like object zstandard reads; its stubs only name IO[bytes].
        return zstandard.ZstdDecompressor().stream_reader(cast(IO[bytes], blob), read_across_frames=True, closefd=False)
    if media_type == oci_image.LAYER_GZIP:
        return gzip.GzipFile(fileobj=blob, mode="rb")
    return blob
