"""The blob-and-reference layout over any object store, written once.

Under the target's prefix (an S3 key prefix, a GCS object prefix, a WebDAV collection, a
directory)::

    oci-layout              {"imageLayoutVersion":"1.0.0"}, written before the first reference
    blobs/sha256/<hex>      layers, configs and manifests, immutable, named by their digest
    refs/<name>             the manifest bytes of a reference (`latest` is the exact target)
    uploads/<id>            a blob in flight; never visible under a digest

A blob is streamed to a staging name while it is hashed and only then moved under its
digest, so a reader (or a step killed mid-upload) never sees half a blob under its final
name. A reference is written last and whole, so a reader sees the previous state or the
complete new one. Reference names are checked here (the OCI tag grammar), so none can
escape `refs/`. Every lookup of the data path is by exact name: only the delete side
(`objectstore_reclaim`) lists.

A subclass is its transport and its error translation: the seven primitives below, each
raising the `wrapresolver.errors` error a pipeline author can act on. Two more,
`list_keys` and `delete`, give it the delete side (`objectstore_reclaim`).
"""

from __future__ import annotations

import io
import uuid
from abc import abstractmethod
from collections.abc import Iterator

from wrapresolver.backends.base import BlobStore, Reader
from wrapresolver.backends.objectstore_reclaim import ObjectStoreReclaim
from wrapresolver.core.refs import is_valid_tag
from wrapresolver.core.values import Descriptor, is_sha256_digest, sha256_digest
from wrapresolver.errors import IntegrityError, NotFoundError, TransferError
from wrapresolver.transfer.streams import HashingReader, IteratorReader

LAYOUT_MARKER_KEY = "oci-layout"
LAYOUT_MARKER = b'{"imageLayoutVersion":"1.0.0"}'


class ObjectStore(ObjectStoreReclaim, BlobStore):
    """A `BlobStore` over named objects; keys are '/'-separated and relative to the target."""

    _layout_marked = False

    # ---- the transport: what a subclass implements ----
    @property
    @abstractmethod
    def location(self) -> str:
        """The target as messages name it (`s3://bucket/prefix at https://minio...`)."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether the object `key` exists."""

    @abstractmethod
    def read(self, key: str) -> bytes | None:
        """The whole (small) object `key`, or None when there is none."""

    @abstractmethod
    def stream(self, key: str) -> Iterator[bytes] | None:
        """The object's bytes in chunks; None when it is known to be missing up front."""

    @abstractmethod
    def write(self, key: str, data: bytes, media_type: str) -> None:
        """Store `data` under `key`, replacing any previous object atomically."""

    @abstractmethod
    def upload(self, key: str, reader: io.RawIOBase, media_type: str) -> None:
        """Stream `reader` to the staging object `key` without holding it in memory."""

    @abstractmethod
    def move(self, source: str, dest: str) -> None:
        """Make `dest` hold the content of `source`, which is gone afterwards."""

    @abstractmethod
    def delete_quietly(self, key: str) -> None:
        """Best-effort removal of a staging object; never raises (it must not hide the real error)."""

    def prepare(self) -> None:
        """Called before every write: create collections or directories if the store needs them."""

    def staging_key(self) -> str:
        """A fresh name to upload a blob to before its digest is known."""
        return f"uploads/{uuid.uuid4().hex}"

    # ---- references: a store may keep them elsewhere (an OCI layout's index.json) ----
    def read_ref(self, name: str) -> bytes | None:
        return self.read(f"refs/{name}")

    def write_ref(self, name: str, data: bytes, media_type: str) -> None:
        self.write(f"refs/{name}", data, media_type)

    # ---- the layout ----
    def blob_key(self, digest: str) -> str:
        if not is_sha256_digest(digest):
            raise IntegrityError(f"{digest!r} is not a sha256 digest")
        return "blobs/sha256/" + digest.split(":", 1)[1]

    def _ref_name(self, ref: str) -> str:
        if not is_valid_tag(ref):
            raise TransferError(f"{ref!r} is not a valid reference name for {self.location}")
        return ref

    # ---- the early check (`BlobStore.probe`) from the primitives ----
    def probe(self, *, read: bool, write: bool) -> bool:
        if read:
            self.check_read()
        if write:
            self.check_write()
        return True

    def check_read(self) -> None:
        """One lookup by name (the layout marker); a store with a cheaper bucket-level call overrides it."""
        self.exists(LAYOUT_MARKER_KEY)

    def check_write(self) -> None:
        """Upload the layout marker's bytes under a fresh staging name, then delete it.

        A name of its own, because runs sharing a target check at the same moment: replacing
        one shared key from each of them made a WebDAV server (wsgidav) answer 500 to the
        loser of the race. A staging object is what every blob upload writes first, so this
        needs no permission a store does not; if the delete is refused, gc reclaims the
        leftover with the other staging objects. Not zero bytes: an empty object made
        SeaweedFS stall the next upload under the prefix for 30 s.
        """
        self.prepare()
        staging = self.staging_key()
        self.upload(staging, IteratorReader(iter([LAYOUT_MARKER])), "application/json")
        self.delete_quietly(staging)

    # ---- BlobStore ----
    def blob_exists(self, digest: str) -> bool:
        return self.exists(self.blob_key(digest))

    def put_blob(self, reader: Reader, media_type: str) -> Descriptor:
        """Upload under a staging name while hashing, then move it under its digest."""
        self.prepare()
        hashing = HashingReader(reader)
        staging = self.staging_key()
        try:
            self.upload(staging, hashing, media_type)
            final = self.blob_key(hashing.digest)
            if self.exists(final):
                self.delete_quietly(staging)  # the same content is there already
            else:
                self.move(staging, final)
        except BaseException:
            self.delete_quietly(staging)
            raise
        return Descriptor(media_type, hashing.digest, hashing.size)

    def open_blob(self, digest: str) -> Iterator[bytes]:
        chunks = self.stream(self.blob_key(digest))
        if chunks is None:
            raise NotFoundError(f"blob {digest} is missing from {self.location}")
        return chunks

    def get_manifest(self, ref: str) -> bytes | None:
        if is_sha256_digest(ref):
            return self.read(self.blob_key(ref))
        return self.read_ref(self._ref_name(ref))

    def put_manifest(self, ref: str, data: bytes, media_type: str) -> None:
        """The manifest as a blob first (readable by digest), then the marker, then the reference."""
        self.prepare()
        key = self.blob_key(sha256_digest(data))
        if not self.exists(key):
            self.write(key, data, media_type)
        if is_sha256_digest(ref):
            return
        name = self._ref_name(ref)
        if not self._layout_marked and not self.exists(LAYOUT_MARKER_KEY):
            self.write(LAYOUT_MARKER_KEY, LAYOUT_MARKER, "application/json")
        self._layout_marked = True
        self.write_ref(name, data, media_type)
