"""The registry as a `BlobStore`: the layered engine's six primitives over the distribution API.

Upload follows go-containerregistry's sequence: HEAD (skip what exists), POST to open a
session (or mount from another repository of the same registry), one streamed PATCH
hashing on the fly, PUT `?digest=` to commit. The blob only exists under its digest after
the registry verified it, and the manifest (the tag) is written after every blob it names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping

import httpx

from wrapresolver.backends.base import BlobStore, Descriptor, Reader
from wrapresolver.backends.oci import CA_MOUNT, Reference
from wrapresolver.backends.oci.client import RegistryClient
from wrapresolver.backends.oci.reclaim import RegistryReclaim
from wrapresolver.core import oci_image
from wrapresolver.errors import IntegrityError, TransferError

CHUNK = 1 << 20
MANIFEST_ACCEPT = ", ".join([
    oci_image.MANIFEST, oci_image.INDEX, oci_image.DOCKER_MANIFEST, oci_image.DOCKER_LIST,
])
MAX_MANIFEST = 4 << 20


class RegistryStore(RegistryReclaim, BlobStore):
    """One repository of one registry; the exact target is the reference's tag (or digest)."""

    def __init__(self, client: RegistryClient) -> None:
        self.client = client
        self.ref = client.ref
        self.target_ref = client.ref.digest or client.ref.tag

    @classmethod
    def open(cls, ref: Reference, options: Mapping[str, str]) -> RegistryStore:
        ca_file = f"{CA_MOUNT}/ca.crt" if options.get("ca-configmap") else None
        insecure = options.get("insecure", "false").lower() == "true"
        store = cls(RegistryClient(ref, insecure=insecure, ca_file=ca_file))
        store.options = dict(options)
        return store

    @property
    def location(self) -> str:
        """The repository, as messages name it."""
        return f"oci://{self.ref.registry}/{self.ref.repository}"

    def warm_up(self) -> None:
        # A store reads (HEAD of its input layers) and then pushes: both tokens, if any.
        self.client.connect_in_background([(self._pull(),), (self._push(),)])

    def probe(self, *, read: bool, write: bool) -> bool:
        """The ping (GET /v2/, on the first request), then per access one request that needs it.

        A token service grants what it may and leaves out the rest without an error, so a
        token alone proves nothing: read is a HEAD of the target's tag (200 or 404 both
        prove it), write is opening an upload session, which the registry refuses without
        push access, then cancelling it, so nothing is stored.
        """
        if read:
            response = self.client.request(
                "HEAD", self.client.url(f"manifests/{self.target_ref}"), scopes=[self._pull()],
                headers={"Accept": MANIFEST_ACCEPT},
            )
            if response.status_code not in (200, 404):
                self.client.raise_for(response, f"repository {self.ref.repository}", "read")
        if write:
            session = self._start_upload()
            location = session.headers.get("location", "")
            if location:
                self.client.cancel_upload(self.client.absolute(location), scopes=[self._push()])
        return True

    def close(self) -> None:
        self.client.close()

    # ---- scopes ----
    def _pull(self, repository: str | None = None) -> str:
        return f"repository:{repository or self.ref.repository}:pull"

    def _push(self) -> str:
        return f"repository:{self.ref.repository}:pull,push"

    # ---- blobs ----
    def blob_exists(self, digest: str) -> bool:
        response = self.client.request("HEAD", self.client.url(f"blobs/{digest}"), scopes=[self._pull()])
        if response.status_code == 200:
            return True
        if response.status_code == 404:
            return False
        self.client.raise_for(response, f"blob {digest}", "read")
        return False  # pragma: no cover

    def _start_upload(self, query: str = "", scopes: tuple[str, ...] = ()) -> httpx.Response:
        url = self.client.url("blobs/uploads/") + query
        response = self.client.request("POST", url, scopes=scopes or (self._push(),))
        if response.status_code not in (201, 202):
            self.client.raise_for(response, f"an upload to {self.ref.repository}", "push")
        return response

    def put_blob(self, reader: Reader, media_type: str) -> Descriptor:
        """Upload `reader` as one blob: POST, one streamed PATCH, PUT ?digest=.

        A blob that ends within its first chunk (an image config, the layer of a small
        change) goes up as the distribution spec's monolithic upload instead, POST then PUT
        with the body: one round trip less per blob, and the PUT can be retried.
        """
        first = reader.read(CHUNK)
        # A read may return less than asked before the end (a raw reader over chunks):
        # only an empty read says the blob is over.
        second = reader.read(CHUNK) if first else b""
        if not second:
            return self._put_whole(first, media_type)
        session = self._start_upload()
        location = self.client.absolute(session.headers["location"])
        hasher = hashlib.sha256()
        size = 0

        def body() -> Iterator[bytes]:
            nonlocal size
            for chunk in (first, second):
                hasher.update(chunk)
                size += len(chunk)
                yield chunk
            while True:
                chunk = reader.read(CHUNK)
                if not chunk:
                    return
                hasher.update(chunk)
                size += len(chunk)
                yield chunk

        response = self.client.stream_upload(location, body(), scopes=[self._push()])
        if response.status_code not in (202, 204):
            self.client.raise_for(response, "a blob upload", "push")
        digest = "sha256:" + hasher.hexdigest()
        done = self.client.request("PUT", self._commit_url(response.headers.get("location", location), digest),
                                   scopes=[self._push()], headers={"Content-Length": "0"}, content=b"")
        if done.status_code != 201:
            self.client.raise_for(done, f"blob {digest}", "push")
        return Descriptor(media_type, digest, size)

    def _put_whole(self, data: bytes, media_type: str) -> Descriptor:
        session = self._start_upload()
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        done = self.client.request(
            "PUT", self._commit_url(session.headers["location"], digest), scopes=[self._push()],
            headers={"Content-Type": "application/octet-stream"}, content=data,
        )
        if done.status_code != 201:
            self.client.raise_for(done, f"blob {digest}", "push")
        return Descriptor(media_type, digest, len(data))

    def _commit_url(self, location: str, digest: str) -> str:
        # copy_merge_params keeps the session's own query (`_state=`); params= would drop it.
        return str(httpx.URL(self.client.absolute(location)).copy_merge_params({"digest": digest}))

    def open_blob(self, digest: str) -> Iterator[bytes]:
        return self.client.stream_download(
            self.client.url(f"blobs/{digest}"), scopes=[self._pull()], what=f"blob {digest}",
        )

    def copy_blob_from(self, other: BlobStore, descriptor: Descriptor) -> None:
        """Same registry: a cross-repository mount, no bytes move. Otherwise stream through."""
        if isinstance(other, RegistryStore) and other.ref.registry == self.ref.registry:
            query = f"?mount={descriptor.digest}&from={other.ref.repository}"
            response = self._start_upload(query, (self._push(), self._pull(other.ref.repository)))
            if response.status_code == 201:
                return
            # 202: the registry declined to mount and opened an ordinary session; drop it.
            location = self.client.absolute(response.headers.get("location", ""))
            if location:
                self.client.request("DELETE", location, scopes=[self._push()])
        super().copy_blob_from(other, descriptor)

    # ---- manifests ----
    def get_manifest(self, ref: str) -> bytes | None:
        response = self.client.request(
            "GET", self.client.url(f"manifests/{ref}"), scopes=[self._pull()],
            headers={"Accept": MANIFEST_ACCEPT},
        )
        if response.status_code == 404:
            return None  # no such tag, or the repository does not exist yet
        if response.status_code != 200:
            self.client.raise_for(response, f"reference {ref!r}", "read")
        data = response.content
        if len(data) > MAX_MANIFEST:
            raise IntegrityError(f"the manifest of {self.ref.repository}:{ref} is larger than {MAX_MANIFEST} bytes")
        if ref.startswith("sha256:") and "sha256:" + hashlib.sha256(data).hexdigest() != ref:
            raise IntegrityError(f"the registry returned a manifest whose digest is not {ref}")
        return data

    def put_manifest(self, ref: str, data: bytes, media_type: str) -> None:
        response = self.client.request(
            "PUT", self.client.url(f"manifests/{ref}"), scopes=[self._push()],
            headers={"Content-Type": media_type}, content=data,
        )
        if response.status_code not in (200, 201):
            if response.status_code == 400:
                raise TransferError(
                    f"registry {self.ref.registry} rejected the manifest for {self.ref.repository}:{ref}: "
                    f"{response.text[:300]}; if it does not accept OCI image manifests with zstd "
                    f"layers, set the param `compression: gzip`"
                )
            self.client.raise_for(response, f"tag {ref!r}", "push")
