"""`file://` targets: an OCI image layout directory on a local or shared filesystem.

`file:///srv/ci/run-src` is a directory holding `oci-layout`, `index.json` and
`blobs/sha256/...` (image-spec/image-layout.md), so `skopeo copy oci:/srv/ci/run-src:latest`
or `crane` read the states unchanged. References are `org.opencontainers.image.ref.name`
annotations in `index.json`. Writers on several nodes may share the directory (NFS): blobs
appear under their digest only once complete, and `index.json` is replaced by rename under
an `fcntl` lock.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO, Iterator, Mapping
from urllib.parse import urlsplit

from wrapresolver.backends.base import Backend, BlobStore, Descriptor
from wrapresolver.errors import IntegrityError, NotFoundError, ParamError

REF_NAME = "org.opencontainers.image.ref.name"
INDEX_MEDIA_TYPE = "application/vnd.oci.image.index.v1+json"
CHUNK = 1 << 20
_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")


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
    if sep and "/" not in tail and _TAG.match(tail):
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

    def open(self, target: str, options: Mapping[str, str]) -> "LayoutStore":
        root, tag = parse_target(target)
        store = LayoutStore(root, tag)
        store.options = dict(options)
        return store


class LayoutStore(BlobStore):
    """Blobs and references in one OCI image layout directory."""

    def __init__(self, root: Path, target_ref: str = "latest") -> None:
        self.root = root
        self.target_ref = target_ref

    # ---- layout ----
    def _blob_path(self, digest: str) -> Path:
        if not _DIGEST.match(digest):
            raise IntegrityError(f"{digest!r} is not a sha256 digest")
        return self.root / "blobs" / "sha256" / digest.split(":", 1)[1]

    def _ensure_layout(self) -> None:
        (self.root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        marker = self.root / "oci-layout"
        if not marker.exists():
            self._write_atomic(marker, b'{"imageLayoutVersion":"1.0.0"}')

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
        # fcntl locks exclude other processes (other pods on a shared filesystem) but not
        # other threads of this one, which share the process's locks: take both.
        with _thread_lock(self.root), open(self.root / ".index.lock", "a+b") as lock:
            fcntl.lockf(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.lockf(lock, fcntl.LOCK_UN)

    def _read_index(self) -> dict:
        try:
            data = (self.root / "index.json").read_bytes()
        except FileNotFoundError:
            return {"schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": []}
        return json.loads(data)

    # ---- BlobStore ----
    def blob_exists(self, digest: str) -> bool:
        return self._blob_path(digest).is_file()

    def put_blob(self, reader: BinaryIO, media_type: str) -> Descriptor:
        self._ensure_layout()
        directory = self.root / "blobs" / "sha256"
        fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-")
        os.fchmod(fd, _FILE_MODE)
        digest = hashlib.sha256()
        size = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while True:
                    chunk = reader.read(CHUNK)
                    if not chunk:
                        break
                    digest.update(chunk)
                    size += len(chunk)
                    out.write(chunk)
                out.flush()
                os.fsync(out.fileno())
            final = directory / digest.hexdigest()
            if final.exists():
                _unlink_quietly(tmp)
            else:
                os.replace(tmp, final)
        except BaseException:
            _unlink_quietly(tmp)
            raise
        return Descriptor(media_type, "sha256:" + digest.hexdigest(), size)

    def open_blob(self, digest: str) -> Iterator[bytes]:
        path = self._blob_path(digest)
        try:
            handle = open(path, "rb")
        except FileNotFoundError:
            raise NotFoundError(f"blob {digest} is missing from {self.root}") from None
        return _chunks(handle)

    def get_manifest(self, ref: str) -> bytes | None:
        if _DIGEST.match(ref):
            path = self._blob_path(ref)
            return path.read_bytes() if path.is_file() else None
        for entry in self._read_index().get("manifests", []):
            if (entry.get("annotations") or {}).get(REF_NAME) == ref:
                try:
                    return self._blob_path(entry["digest"]).read_bytes()
                except FileNotFoundError:
                    raise NotFoundError(
                        f"reference {ref!r} in {self.root} points to missing manifest {entry['digest']}"
                    ) from None
        return None

    def put_manifest(self, ref: str, data: bytes, media_type: str) -> None:
        self._ensure_layout()
        desc = Descriptor(media_type, "sha256:" + hashlib.sha256(data).hexdigest(), len(data))
        path = self._blob_path(desc.digest)
        if not path.is_file():
            self._write_atomic(path, data)
        entry = {**desc.to_dict(), "annotations": {REF_NAME: ref}}
        with self._locked():
            index = self._read_index()
            manifests = [
                m for m in index.get("manifests", [])
                if (m.get("annotations") or {}).get(REF_NAME) != ref
            ]
            manifests.append(entry)
            index["manifests"] = manifests
            index.setdefault("schemaVersion", 2)
            index.setdefault("mediaType", INDEX_MEDIA_TYPE)
            self._write_atomic(self.root / "index.json", json.dumps(index, indent=1).encode())


_THREAD_LOCKS: dict[Path, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


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
