"""The delete side of the object-store layout, written once for file://, S3, GCS and plugins.

A store lists its references and staging objects (`uploads/`) and deletes them. Deleting
states frees the blobs that only they named: the blobs named by every reference that
stays (the published target, other runs' states) are read first and never deleted, and
that set is read again right before the blobs go, so a state that another run wrote
meanwhile keeps its blobs. (A store that found a blob present and is about to write its
reference in the same instant is the remaining window; `wrapresolver gc --older-than`
never touches states that young, and the controller only reclaims ended runs.)

A subclass adds two transport primitives, `list_keys` and `delete`; the layout's own
reference store (`index.json` for file://) overrides `ref_names`, `ref_info` and `delete_ref`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING

from wrapresolver.backends.base import (
    PUBLISHED,
    STATE,
    UPLOAD,
    KeyInfo,
    KeyListable,
    PublishedListable,
    Reclaimable,
    Reclaimed,
    StoredItem,
    TargetExistence,
)
from wrapresolver.backends.reclaim import unsupported
from wrapresolver.core import oci_image
from wrapresolver.errors import WrapError

__all__ = ["KeyInfo", "ObjectStoreReclaim"]


class ObjectStoreReclaim(Reclaimable, PublishedListable, TargetExistence, KeyListable):
    """Mixed into `ObjectStore`: `stored_items` and `delete_items` over the layout.

    Every object store declares the abilities; one whose subclass adds no `list_keys` and
    `delete` answers each with `ReclaimUnsupported`, naming those two methods.
    """

    target_ref: str

    # ---- transport a subclass adds ----
    def list_keys(self, prefix: str) -> Iterator[KeyInfo]:
        """Every object whose key starts with `prefix` (relative to the target)."""
        raise unsupported(self, "the object-store methods list_keys/delete")

    def delete(self, key: str) -> None:
        """Delete the object `key`; a missing one is not an error."""
        raise unsupported(self, "the object-store methods list_keys/delete")

    # ---- references: overridden by a store that keeps them elsewhere ----
    def ref_times(self) -> dict[str, float | None]:
        """Each reference's name and when it was last written (where the store says)."""
        return {info.key[len("refs/"):]: info.modified for info in self.list_keys("refs/")}

    def ref_names(self) -> list[str]:
        return list(self.ref_times())

    def delete_ref(self, name: str) -> None:
        self.delete(f"refs/{name}")

    staging_prefix = "uploads/"

    def staging_items(self) -> list[StoredItem]:
        return [StoredItem(i.key, UPLOAD, size=i.size, created=i.modified) for i in self.list_keys(self.staging_prefix)]

    if TYPE_CHECKING:  # pragma: no cover - provided by the store it is mixed into
        def read_ref(self, name: str) -> bytes | None:  # provided by ObjectStore
            ...

    if TYPE_CHECKING:  # pragma: no cover - provided by the store it is mixed into
        def blob_key(self, digest: str) -> str:  # provided by ObjectStore
            ...

    # ---- the delete side ----
    def _manifests(self, names: Sequence[str]) -> dict[str, bytes]:
        found = {}
        for name in names:
            data = self.read_ref(name)
            if data is not None:
                found[name] = data
        return found

    def stored_items(self) -> list[StoredItem]:
        """Every state (reference) but the exact target, then the staging leftovers."""
        items = []
        times = self.ref_times()
        for name, data in self._manifests([n for n in times if n != self.target_ref]).items():
            notes = oci_image.annotations_of(data)
            if notes.get(oci_image.ANNOTATION_PUBLISHED):
                continue  # a published result under another reference
            size = sum(oci_image.blobs_of(data).values())
            created = oci_image.created_of(notes) or times.get(name)
            items.append(StoredItem(name, STATE, notes.get(oci_image.ANNOTATION_RUN, ""), size, created))
        return items + self.staging_items()

    def published_items(self) -> list[StoredItem]:
        """Every published result at the target (the target reference and any other)."""
        items = []
        times = self.ref_times()
        for name, data in self._manifests(list(times)).items():
            notes = oci_image.annotations_of(data)
            if notes.get(oci_image.ANNOTATION_PUBLISHED):
                items.append(StoredItem(name, PUBLISHED, notes.get(oci_image.ANNOTATION_RUN, ""), sum(oci_image.blobs_of(data).values()),
                                        oci_image.created_of(notes) or times.get(name)))
        return items

    def target_exists(self) -> bool:
        """Whether a layout is stored at the target: a reference or a blob of its own."""
        return bool(self.ref_names()) or next(iter(self.list_keys("blobs/sha256/")), None) is not None

    def _kept_blobs(self, going: set[str]) -> set[str]:
        stay = [n for n in self.ref_names() if n not in going]
        kept: set[str] = set()
        for data in self._manifests(stay).values():
            kept.update(oci_image.blobs_of(data))
        return kept

    def delete_items(self, items: Sequence[StoredItem]) -> Reclaimed:
        result = Reclaimed()
        states = {i.name for i in items if (i.kind == STATE and i.name != self.target_ref) or i.kind == PUBLISHED}
        named: dict[str, int] = {}
        for name, data in self._manifests(sorted(states)).items():
            named.update(oci_image.blobs_of(data))
            try:
                self.delete_ref(name)
            except WrapError as exc:
                result.failures.append(f"{name}: {exc}")
                continue
            result.deleted.append(name)
            result.bytes += len(data)
        kept = self._kept_blobs(states)
        for digest, size in sorted(named.items()):
            if digest in kept:
                continue
            try:
                self.delete(self.blob_key(digest))
            except WrapError as exc:
                result.failures.append(f"blob {digest}: {exc}")
                continue
            result.bytes += size
        for item in items:
            if item.kind not in (STATE, PUBLISHED):
                if not item.name.startswith(self.staging_prefix):
                    result.kept.append(f"{item.name}: not a staging object of this layout")
                    continue
                try:
                    self.delete(item.name)
                except WrapError as exc:
                    result.failures.append(f"{item.name}: {exc}")
                    continue
                result.deleted.append(item.name)
                result.bytes += item.size or 0
                result.bytes_known = result.bytes_known and item.size is not None
        return result
