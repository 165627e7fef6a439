"""The delete side of a registry target: tags listed, manifests deleted by digest, safely.

The distribution API deletes a manifest by digest, and that removes every tag pointing to
it (DESIGN §6a). A run's last producer stores the same manifest under its own tag and the
published target's, so before a digest is deleted every other tag of the repository is
read: a digest that a tag that stays (the published target, another run's state) also
names is never deleted by digest. Such a tag is removed by tag where the registry allows
(OCI distribution 1.1 tag deletion), else kept and reported.

Blobs are freed only by the registry's own garbage collection (`registry garbage-collect`
for distribution, the GC jobs of Harbor, Quay, GitLab...); the bytes reported are those of
blobs that no remaining tag names, i.e. what that collection can now free.

A registry that refuses deletion (405, `UNSUPPORTED`; distribution without
`storage.delete.enabled`) is said once, and nothing else is tried against it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING
from urllib.parse import urljoin

from wrapresolver.backends.base import (
    PUBLISHED,
    STATE,
    PublishedListable,
    Reclaimable,
    Reclaimed,
    StoredItem,
    TargetExistence,
)
from wrapresolver.core import oci_image
from wrapresolver.core.values import sha256_digest
from wrapresolver.errors import NotFoundError

if TYPE_CHECKING:  # pragma: no cover
    from wrapresolver.backends.oci.client import RegistryClient

MAX_PAGES = 1000


class RegistryReclaim(Reclaimable, PublishedListable, TargetExistence):
    """Mixed into `RegistryStore`: `stored_items` and `delete_items` over the distribution API."""

    client: RegistryClient
    target_ref: str

    if TYPE_CHECKING:  # pragma: no cover - provided by the store it is mixed into
        def get_manifest(self, ref: str) -> bytes | None:  # provided by RegistryStore
            ...

    def _scopes(self) -> list[str]:
        repo = self.client.ref.repository
        return [f"repository:{repo}:pull,push,delete"]

    def tags(self) -> list[str]:
        """Every tag of the repository (paginated by `Link`); none when it does not exist."""
        return self._tags(missing_ok=True)

    def target_exists(self) -> bool:
        """Whether the repository exists (a registry answers 404 NAME_UNKNOWN otherwise)."""
        return self._tags(missing_ok=False) is not None

    def _tags(self, missing_ok: bool) -> list[str]:
        url: str | None = self.client.url("tags/list") + "?n=1000"
        found: list[str] = []
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = self.client.request("GET", url, scopes=self._scopes())
            if response.status_code == 404:
                if missing_ok:
                    return []
                raise NotFoundError(
                    f"repository {self.client.ref.repository!r} does not exist at registry "
                    f"{self.client.ref.registry} (tags/list answered 404): check the target's spelling")
            if response.status_code != 200:
                self.client.raise_for(response, f"the tags of {self.client.ref.repository}", "list")
            found += response.json().get("tags") or []
            url = next_page(self.client.base, response.headers.get("link", ""))
        return found

    def _manifests(self) -> dict[str, bytes]:
        found = {}
        for tag in self.tags():
            data = self.get_manifest(tag)
            if data is not None:
                found[tag] = data
        return found

    def _listed(self) -> dict[str, bytes]:
        """Every tag's manifest, kept for the `delete_items` that follows a listing.

        Listing and deleting each read every manifest of the repository, one request per tag:
        with many tags (a repository per Pipeline keeps every run's published result) that
        doubled the cost of a reclaim (docs/performance.md, "Reclaiming one run"). The
        delete judges shared digests on this snapshot, taken just before it.
        """
        self._snapshot: dict[str, bytes] | None = self._manifests()
        return self._snapshot

    def stored_items(self) -> list[StoredItem]:
        items = []
        for tag, data in self._listed().items():
            if tag == self.target_ref:
                continue
            notes = oci_image.annotations_of(data)
            if oci_image.ANNOTATION_RUN not in notes and not tag.startswith("wrap-"):
                continue  # not written by wrapresolver: someone else's image in the repository
            if notes.get(oci_image.ANNOTATION_PUBLISHED):
                continue  # a published result under another tag (a run-unique target tag)
            items.append(StoredItem(
                tag, STATE, notes.get(oci_image.ANNOTATION_RUN, ""), sum(oci_image.blobs_of(data).values()),
                oci_image.created_of(notes),
            ))
        return items

    def published_items(self) -> list[StoredItem]:
        """Every published result in the repository (the target tag and other run-unique ones)."""
        items = []
        for tag, data in self._listed().items():
            notes = oci_image.annotations_of(data)
            if notes.get(oci_image.ANNOTATION_PUBLISHED):
                items.append(StoredItem(tag, PUBLISHED, notes.get(oci_image.ANNOTATION_RUN, ""),
                                        sum(oci_image.blobs_of(data).values()), oci_image.created_of(notes)))
        return items

    def delete_items(self, items: Sequence[StoredItem]) -> Reclaimed:
        result = Reclaimed()
        manifests = getattr(self, "_snapshot", None) or self._manifests()
        self._snapshot = None
        going = {i.name for i in items if i.name in manifests and (
            (i.kind == STATE and i.name != self.target_ref) or i.kind == PUBLISHED)}
        for item in items:
            if item.kind not in (STATE, PUBLISHED):
                result.kept.append(f"{item.name}: a registry's upload sessions expire on their own")
        staying = {tag: data for tag, data in manifests.items() if tag not in going}
        staying_digests = {sha256_digest(data): tag for tag, data in staying.items()}
        kept_blobs: set[str] = set()
        for data in staying.values():
            kept_blobs.update(oci_image.blobs_of(data))
        freed: dict[str, int] = {}
        deleted_digests: set[str] = set()
        refused = False
        for tag in sorted(going):
            data = manifests[tag]
            digest = sha256_digest(data)
            if refused:
                result.kept.append(f"{tag}: the registry refuses manifest deletion")
                continue
            if digest in staying_digests:
                status = self._delete(tag)
                if status in (200, 202, 404):
                    self._restore(staying, digest, data)
                    result.deleted.append(tag)
                else:
                    result.kept.append(
                        f"{tag}: its manifest {digest} is also {staying_digests[digest]!r}, which stays, "
                        f"and the registry cannot delete a tag alone ({status})"
                    )
                continue
            if digest not in deleted_digests:
                status = self._delete(digest)
                if status in (405, 400) or status == "unsupported":
                    refused = True
                    result.notes.append(
                        f"registry {self.client.ref.registry} refuses to delete manifests ({status}): "
                        f"states are left in {self.client.ref.repository}; enable deletes "
                        f"(distribution: REGISTRY_STORAGE_DELETE_ENABLED=true) or set the registry's "
                        f"own retention/expiry policy for tags named wrap-*"
                    )
                    result.kept.append(f"{tag}: the registry refuses manifest deletion")
                    continue
                if status not in (200, 202, 404):
                    result.failures.append(f"{tag}: the registry answered {status} to DELETE {digest}")
                    continue
                deleted_digests.add(digest)
            result.deleted.append(tag)
            freed.update({d: s for d, s in oci_image.blobs_of(data).items() if d not in kept_blobs})
        result.bytes = sum(freed.values())
        return result

    if TYPE_CHECKING:  # pragma: no cover - provided by the store it is mixed into
        def put_manifest(self, ref: str, data: bytes, media_type: str) -> None:  # provided by RegistryStore
            ...

    def _restore(self, staying: dict[str, bytes], digest: str, data: bytes) -> None:
        """Some registries delete a whole artifact when asked to delete one tag: put back
        every staying tag of that manifest (its blobs are still there: only GC frees them)."""
        media_type = str(json.loads(data).get("mediaType") or oci_image.MANIFEST)
        for tag, bytes_ in staying.items():
            if sha256_digest(bytes_) == digest and self.get_manifest(tag) is None:
                self.put_manifest(tag, bytes_, media_type)

    def _delete(self, reference: str) -> int | str:
        response = self.client.request("DELETE", self.client.url(f"manifests/{reference}"), scopes=self._scopes())
        if response.status_code in (400, 405) or "UNSUPPORTED" in response.text[:2000]:
            return response.status_code if response.status_code != 400 else "unsupported"
        return response.status_code


def next_page(base: str, link: str) -> str | None:
    """The `Link: </v2/...?last=x&n=1000>; rel="next"` header's URL, absolute."""
    if 'rel="next"' not in link:
        return None
    start, end = link.find("<"), link.find(">")
    if start < 0 or end < start:
        return None
    return urljoin(base + "/", link[start + 1:end])
