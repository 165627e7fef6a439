"""`file://` targets: an OCI image layout directory on a local or shared filesystem.

`file:///srv/ci/run-src` is a directory holding `oci-layout`, `index.json` and
`blobs/sha256/...` (image-spec/image-layout.md), so `skopeo copy oci:/srv/ci/run-src:latest`
or `crane` read the states unchanged. References are `org.opencontainers.image.ref.name`
annotations in `index.json`. Writers on several nodes may share the directory (NFS): blobs
appear under their digest only once complete, and `index.json` is replaced by rename under
an `fcntl` lock.
"""

from __future__ import annotations

import errno
import fcntl
import io
import json
import os
import struct
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO
from urllib.parse import urlsplit

from wrapresolver.backends.base import Backend, KeyInfo
from wrapresolver.backends.objectstore import ObjectStore
from wrapresolver.core import oci_image
from wrapresolver.core.refs import is_valid_tag
from wrapresolver.core.values import Descriptor, sha256_digest
from wrapresolver.errors import AuthError, NotFoundError, ParamError, TransferError, WrapError

REF_NAME = "org.opencontainers.image.ref.name"
CHUNK = 1 << 20


def _umask() -> int:
    """The process umask, read without changing it (other threads may be creating files)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    return 0o022


_FILE_MODE = 0o666 & ~_umask()
"""Blobs and the index get the mode a plain open() would give (mkstemp's is 0600), so a
task running as another UID can read what an earlier task stored."""


def parse_target(target: str) -> tuple[Path, str]:
    """`file:///abs/dir` or `file:///abs/dir:tag` -> (directory, target reference)."""
    parts = urlsplit(target)
    if parts.scheme != "file":
        raise ParamError(f"target {target!r} is not a file:// URL; write file:///absolute/directory")
    if parts.netloc not in ("", "localhost"):
        raise ParamError(
            f"target {target!r} names host {parts.netloc!r}; file:// targets are local paths: "
            f"write file:///absolute/directory (three slashes)"
        )
    path, tag = parts.path, "latest"
    head, sep, tail = path.rpartition(":")
    if sep and "/" not in tail and is_valid_tag(tail):
        path, tag = head, tail
    if not path.startswith("/") or ".." in path.split("/"):
        raise ParamError(f"target {target!r} must name an absolute directory without '..'")
    return Path(path), tag


class FileBackend(Backend):
    name = "file"
    schemes = ("file",)
    options = {"compression": "layer compression: zstd (default) or gzip"}

    def validate_target(self, target: str) -> None:
        parse_target(target)

    def open(self, target: str, options: Mapping[str, str]) -> LayoutStore:
        root, tag = parse_target(target)
        store = LayoutStore(root, tag)
        store.options = dict(options)
        return store


class LayoutStore(ObjectStore):
    """Blobs and references in one OCI image layout directory.

    The object-store layout, except that references are `index.json` entries (as the
    image-layout spec has them) and blobs are staged next to their final name.
    """

    def __init__(self, root: Path, target_ref: str = "latest") -> None:
        self.root = root
        self.target_ref = target_ref

    # ---- ObjectStore: the transport ----
    @property
    def location(self) -> str:
        return str(self.root)

    def prepare(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)

    def staging_key(self) -> str:
        return f"blobs/sha256/.tmp-{uuid.uuid4().hex}"

    def exists(self, key: str) -> bool:
        return (self.root / key).is_file()

    def read(self, key: str) -> bytes | None:
        try:
            return (self.root / key).read_bytes()
        except FileNotFoundError:
            return None

    def stream(self, key: str) -> Iterator[bytes] | None:
        try:
            handle = open(self.root / key, "rb")
        except FileNotFoundError:
            return None
        return _chunks(handle)

    def write(self, key: str, data: bytes, media_type: str) -> None:
        self._write_atomic(self.root / key, data)

    def upload(self, key: str, reader: io.RawIOBase, media_type: str) -> None:
        with open(self.root / key, "xb") as out:
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    break
                out.write(chunk)
            out.flush()
            os.fsync(out.fileno())

    def move(self, source: str, dest: str) -> None:
        os.replace(self.root / source, self.root / dest)

    def delete_quietly(self, key: str) -> None:
        _unlink_quietly(str(self.root / key))

    # ---- the early check: the directory, asked of the kernel, nothing written ----
    def check_read(self) -> None:
        if not _exists(self.root):
            if self.root.is_symlink():
                raise NotFoundError(f"{self.root} is a dangling symlink; point it at a directory or fix the target")
            return  # nothing stored yet: a fetch starts empty
        if not self.root.is_dir():
            raise TransferError(f"{self.root} is not a directory; a file:// target names a directory")
        _require_access(self.root, os.R_OK | os.X_OK, "read")

    def check_write(self) -> None:
        existing = self.root
        while not _exists(existing):
            if existing.parent == existing:
                break
            existing = existing.parent
        if not existing.is_dir():
            raise TransferError(f"{existing} is not a directory, so {self.root} cannot be created there")
        _require_access(existing, os.W_OK | os.X_OK, "write")
        blobs = self.root / "blobs" / "sha256"
        if existing == self.root and blobs.is_dir():
            _require_access(blobs, os.W_OK | os.X_OK, "write")

    # ---- references in index.json ----
    def read_ref(self, name: str) -> bytes | None:
        for entry in self._read_index().get("manifests", []):
            if (entry.get("annotations") or {}).get(REF_NAME) == name:
                data = self.read(self.blob_key(entry["digest"]))
                if data is None:
                    raise NotFoundError(
                        f"reference {name!r} in {self.root} points to missing manifest {entry['digest']}"
                    )
                return data
        return None

    def write_ref(self, name: str, data: bytes, media_type: str) -> None:
        entry = {**Descriptor(media_type, sha256_digest(data), len(data)).to_dict(), "annotations": {REF_NAME: name}}
        with self._locked():
            index = self._read_index()
            manifests = [
                m for m in index.get("manifests", [])
                if (m.get("annotations") or {}).get(REF_NAME) != name
            ]
            manifests.append(entry)
            index["manifests"] = manifests
            index.setdefault("schemaVersion", 2)
            index.setdefault("mediaType", oci_image.INDEX)
            self._write_atomic(self.root / "index.json", json.dumps(index, indent=1).encode())

    # ---- the delete side (objectstore_reclaim) ----
    staging_prefix = "blobs/sha256/.tmp-"

    def list_keys(self, prefix: str) -> Iterator[KeyInfo]:
        directory, _, start = prefix.rpartition("/")
        try:
            names = sorted(os.listdir(self.root / directory)) if directory else sorted(os.listdir(self.root))
        except FileNotFoundError:
            return
        for name in names:
            key = f"{directory}/{name}" if directory else name
            if name.startswith(start) and (self.root / key).is_file():
                info = (self.root / key).stat()
                yield KeyInfo(key, info.st_size, info.st_mtime)

    def delete(self, key: str) -> None:
        _unlink_quietly(str(self.root / key))

    def ref_times(self) -> dict[str, float | None]:
        found: dict[str, float | None] = {}
        for entry in self._read_index().get("manifests", []):
            name = (entry.get("annotations") or {}).get(REF_NAME)
            if name:
                try:
                    found[str(name)] = (self.root / self.blob_key(entry["digest"])).stat().st_mtime
                except (OSError, KeyError, WrapError):
                    found[str(name)] = None
        return found

    def delete_ref(self, name: str) -> None:
        with self._locked():
            index = self._read_index()
            index["manifests"] = [
                m for m in index.get("manifests", []) if (m.get("annotations") or {}).get(REF_NAME) != name
            ]
            self._write_atomic(self.root / "index.json", json.dumps(index, indent=1).encode())

    # ---- files ----
    def _write_atomic(self, path: Path, data: bytes) -> None:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        os.fchmod(fd, _FILE_MODE)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            _unlink_quietly(tmp)
            raise

    @contextmanager
    def _locked(self) -> Iterator[None]:
        # The file lock excludes other processes (other pods on a shared filesystem), the
        # thread lock other threads of this one, which may share the process's file locks.
        with _thread_lock(self.root), open(self.root / ".index.lock", "a+b") as lock:
            _lock_file(lock.fileno())
            try:
                yield
            finally:
                _unlock_file(lock.fileno())

    def _read_index(self) -> dict:
        try:
            data = (self.root / "index.json").read_bytes()
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": oci_image.INDEX, "manifests": []}
        return dict(json.loads(data))


_OFD_SETLK, _OFD_SETLKW = getattr(fcntl, "F_OFD_SETLK", None), getattr(fcntl, "F_OFD_SETLKW", None)
_FLOCK = struct.Struct("hhqqi4x")
"""struct flock on Linux: type, whence, start, len (0: to the end), pid (0 for an OFD lock)."""


def _lock_file(fd: int) -> None:
    """An exclusive lock on the whole file, held by this open file, not by the process.

    A store step stores its workspaces on threads, so one process can hold the lock of one
    layout while another of its threads waits for a second layout's. With process-owned
    locks (`lockf`) the kernel's deadlock check saw two such steps as a cycle and failed one
    with EDEADLK ("Resource deadlock avoided"), although no thread ever holds two of these
    locks. Open-file-description locks (Linux 3.15) have no such check. Where they are
    missing, `lockf`, retried on that false EDEADLK.
    """
    if _OFD_SETLKW is not None:
        try:
            fcntl.fcntl(fd, _OFD_SETLKW, _FLOCK.pack(fcntl.F_WRLCK, os.SEEK_SET, 0, 0, 0))
            return
        except OSError as exc:
            if exc.errno != errno.EINVAL:  # EINVAL: this kernel or file system has none
                raise
    while True:
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX)
            return
        except OSError as exc:
            if exc.errno != errno.EDEADLK:
                raise
            time.sleep(0.01)  # the lock is never held with another: the cycle resolves


def _unlock_file(fd: int) -> None:
    if _OFD_SETLK is not None:
        try:
            fcntl.fcntl(fd, _OFD_SETLK, _FLOCK.pack(fcntl.F_UNLCK, os.SEEK_SET, 0, 0, 0))
            return
        except OSError as exc:
            if exc.errno != errno.EINVAL:
                raise
    fcntl.lockf(fd, fcntl.LOCK_UN)


_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


def _exists(path: Path) -> bool:
    """Whether `path` exists; a directory on the way this identity may not enter is an error."""
    try:
        path.stat()
        return True
    except (FileNotFoundError, NotADirectoryError):
        return False
    except OSError as exc:
        raise AuthError(
            f"{path} cannot be looked up by this step, which runs as uid {os.geteuid()} gid {os.getegid()}: "
            f"{exc.strerror}; give that user access to the directories on the way"
        ) from None


def _require_access(path: Path, mode: int, access: str) -> None:
    """The kernel's answer for this identity (and a read-only mount), as a message naming both."""
    if os.access(path, mode):
        return
    try:
        st = path.stat()
        owner = f"; it belongs to uid {st.st_uid} gid {st.st_gid} with mode {st.st_mode & 0o7777:04o}"
    except OSError:
        owner = ""
    raise AuthError(
        f"directory {path} cannot be {'read' if access == 'read' else 'written'} by this step, which runs as "
        f"uid {os.geteuid()} gid {os.getegid()}{owner} (or the file system is mounted read-only): give "
        f"that user {access} access to it, or run the injected steps as its owner"
    )


def _thread_lock(root: Path) -> threading.Lock:
    with _THREAD_LOCKS_GUARD:
        return _THREAD_LOCKS.setdefault(root.resolve(), threading.Lock())


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while True:
            chunk = handle.read(CHUNK)
            if not chunk:
                return
            yield chunk


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


BACKEND = FileBackend()
