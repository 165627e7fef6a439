"""The delete side's choices (one run's states, by age) and `wrapresolver gc` on a file:// target."""

from __future__ import annotations

import io
import os
import time
import uuid
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from wrapresolver.backends import reclaim
from wrapresolver.backends.base import (
    BlobStore,
    Descriptor,
    KeyListable,
    Listable,
    PublishedListable,
    Reader,
    Reclaimable,
    TargetExistence,
)
from wrapresolver.backends.file import LayoutStore
from wrapresolver.backends.reclaim import PARTIAL, STATE, UPLOAD, StoredItem
from wrapresolver.cli import main
from wrapresolver.core import oci_image
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.values import Layer
from wrapresolver.steps.statedocs import put_state

UID_A = "0b5e8f7e-6a51-4d38-9d7d-3c1b0f2a9e01"
UID_B = "7d2c1a40-91f3-4b2e-8c55-1e6f0a3b4c02"


def _write_run(store: LayoutStore, run: str, task: str, data: bytes, created: datetime) -> None:
    """A state as the store step writes it: a layer blob, then the manifest under the producer ref."""
    layer = store.put_blob(io.BytesIO(data), oci_image.layer_media_type("gzip"))
    notes = {
        oci_image.ANNOTATION_RUN: run, oci_image.ANNOTATION_TASK: task, oci_image.ANNOTATION_WORKSPACE: "src",
        oci_image.ANNOTATION_CREATED: created.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    put_state(store, (Layer(layer, layer.digest),), notes, [producer_ref(run, task)])


def test_a_run_is_chosen_by_its_exact_references_when_its_tasks_are_known() -> None:
    items = [StoredItem(producer_ref("r1", "build")), StoredItem(producer_ref("r1-x", "build")), StoredItem("uploads/u", UPLOAD)]
    assert [i.name for i in reclaim.run_items(items, "r1", ("build",))] == ["wrap-r1-build"]


def test_a_run_id_that_is_a_prefix_of_another_never_selects_the_others_states() -> None:
    items = [StoredItem(producer_ref("r1", "build")), StoredItem(producer_ref("r1-x", "build"))]
    assert [i.name for i in reclaim.run_items(items, "r1", ("build",))] == ["wrap-r1-build"]
    with pytest.raises(ValueError, match="not a UID"):
        reclaim.run_items(items, "r1")


def test_a_uid_run_is_chosen_by_prefix_or_by_its_recorded_run() -> None:
    items = [
        StoredItem(producer_ref(UID_A, "build")), StoredItem("renamed", STATE, run=UID_A),
        StoredItem(producer_ref(UID_B, "build")), StoredItem(f"states/wrap-{UID_A}-x.1", PARTIAL),
    ]
    assert sorted(i.name for i in reclaim.run_items(items, UID_A)) == sorted([producer_ref(UID_A, "build"), "renamed"])


def test_items_are_split_into_old_and_of_unknown_age() -> None:
    now = 1_000_000.0
    items = [StoredItem("old", created=now - 100), StoredItem("young", created=now - 5), StoredItem("unknown")]
    old, unknown = reclaim.older_than(items, 50, now)
    assert [i.name for i in old] == ["old"] and [i.name for i in unknown] == ["unknown"]


class _OldPlugin(BlobStore):
    """A plugin written before the delete side existed: the six primitives only."""

    def blob_exists(self, digest: str) -> bool:
        return False

    def put_blob(self, reader: Reader, media_type: str) -> Descriptor:
        raise NotImplementedError

    def open_blob(self, digest: str) -> Iterator[bytes]:
        return iter(())

    def get_manifest(self, ref: str) -> bytes | None:
        return None

    def put_manifest(self, ref: str, data: bytes, media_type: str) -> None:
        return None


def test_a_plugin_without_the_delete_side_gets_a_message_naming_it() -> None:
    with pytest.raises(reclaim.ReclaimUnsupported, match="_OldPlugin has no delete side.*plugin-authors.md"):
        reclaim.reclaim_run(_OldPlugin(), UID_A)


@pytest.fixture
def layout(tmp_path: Path) -> tuple[str, LayoutStore]:
    root = tmp_path / "store"
    store = LayoutStore(root)
    now = datetime.now(UTC)
    _write_run(store, UID_A, "clone", b"old clone " * 100, now - timedelta(days=9))
    _write_run(store, UID_A, "build", b"old build " * 100, now - timedelta(days=9))
    _write_run(store, UID_B, "clone", b"fresh clone " * 100, now)
    # The published target shares the old run's layer: it must keep it.
    manifest = store.get_manifest(producer_ref(UID_A, "build"))
    assert manifest is not None
    store.put_manifest("latest", manifest.replace(b'"annotations":{', b'"annotations":{"dev.wrapresolver.published":"true",'), oci_image.MANIFEST)
    aborted = root / "blobs" / "sha256" / f".tmp-{uuid.uuid4().hex}"
    aborted.write_bytes(b"x" * 4096)
    old = time.time() - 10 * 86400
    os.utime(aborted, (old, old))
    (root / "blobs" / "sha256" / f".tmp-{uuid.uuid4().hex}").write_bytes(b"in flight")
    return f"file://{root}", store


def test_gc_dry_run_lists_old_states_and_aborted_uploads_and_deletes_nothing(
    layout: tuple[str, LayoutStore], capsys: pytest.CaptureFixture[str],
) -> None:
    target, store = layout
    before = sorted(p.name for p in (store.root / "blobs" / "sha256").iterdir())
    assert main(["gc", "--target", target, "--older-than", "7d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert f"would delete state {producer_ref(UID_A, 'clone')}" in out
    assert f"would delete state {producer_ref(UID_A, 'build')}" in out
    assert "would delete upload blobs/sha256/.tmp-" in out and "4096 bytes" in out
    assert UID_B not in out and "latest" not in out
    assert "wrap gc: 3 would be deleted" in out
    assert sorted(p.name for p in (store.root / "blobs" / "sha256").iterdir()) == before


def test_gc_deletes_old_states_and_uploads_and_keeps_young_ones_and_the_target(
    layout: tuple[str, LayoutStore], capsys: pytest.CaptureFixture[str], tmp_path: Path,
) -> None:
    target, store = layout
    assert main(["gc", "--target", target, "--older-than", "7d"]) == 0
    out = capsys.readouterr().out
    assert "wrap gc: 3 deleted (" in out
    assert {i.name for i in reclaim.stored_items(store) if i.kind == STATE} == {producer_ref(UID_B, "clone")}
    uploads = [i for i in reclaim.stored_items(store) if i.kind == UPLOAD]
    assert [i.size for i in uploads] == [len(b"in flight")]  # the young one stays
    # What remains is whole: every blob the remaining references name is there.
    from wrapresolver.core.oci_image import blobs_of

    for ref in ("latest", producer_ref(UID_B, "clone")):
        manifest = store.get_manifest(ref)
        assert manifest is not None
        assert all(store.blob_exists(d) for d in blobs_of(manifest))
    # ...and the old run's own clone layer (named by nothing else) is gone.
    from wrapresolver.core.values import sha256_digest

    assert sha256_digest(b"old clone " * 100) not in {f"sha256:{p.name}" for p in (store.root / "blobs" / "sha256").iterdir()}


def test_gc_of_one_run_deletes_its_states_whatever_their_age(
    layout: tuple[str, LayoutStore], capsys: pytest.CaptureFixture[str],
) -> None:
    target, store = layout
    assert main(["gc", "--target", target, "--run", UID_B]) == 0
    assert "wrap gc: 1 deleted" in capsys.readouterr().out
    assert {i.name for i in reclaim.stored_items(store) if i.kind == STATE} == {
        producer_ref(UID_A, "clone"), producer_ref(UID_A, "build"),
    }


def test_gc_needs_an_age_or_a_run(layout: tuple[str, LayoutStore], capsys: pytest.CaptureFixture[str]) -> None:
    target, _ = layout
    assert main(["gc", "--target", target]) == 2
    assert "exactly one of --older-than" in capsys.readouterr().err
    assert main(["gc", "--target", target, "--older-than", "a week"]) == 2
    assert "is not a duration" in capsys.readouterr().err


class _DeclaresNothing:
    """A plugin's store that has the two methods but inherits no ability: checked by shape."""

    def __init__(self, items: list[StoredItem]) -> None:
        self.items = items

    def stored_items(self) -> list[StoredItem]:
        return list(self.items)

    def delete_items(self, items: Sequence[StoredItem]) -> reclaim.Reclaimed:
        self.items = [i for i in self.items if i not in items]
        return reclaim.Reclaimed(deleted=[i.name for i in items])


def test_a_store_with_the_two_methods_is_reclaimable_without_declaring_it() -> None:
    store = _DeclaresNothing([StoredItem(producer_ref(UID_A, "build")), StoredItem(producer_ref(UID_B, "build"))])
    assert isinstance(store, Reclaimable) and not isinstance(store, PublishedListable)
    assert reclaim.reclaim_run(store, UID_A).deleted == [producer_ref(UID_A, "build")]
    assert [i.name for i in store.items] == [producer_ref(UID_B, "build")]
    with pytest.raises(reclaim.ReclaimUnsupported, match="_DeclaresNothing has no delete side .published_items."):
        reclaim.reclaim_published(store, UID_A)
    assert reclaim.target_exists(store) is None  # no existence check: gc goes on


def test_each_builtin_store_declares_the_abilities_it_has_and_a_bare_plugin_none() -> None:
    from wrapresolver.backends.gcs import GCSStore
    from wrapresolver.backends.oci.store import RegistryStore
    from wrapresolver.backends.rsync.store import RsyncStore
    from wrapresolver.backends.s3 import S3Store

    abilities = (Listable, Reclaimable, PublishedListable, TargetExistence, KeyListable)
    for layered in (LayoutStore, S3Store, GCSStore):
        assert all(issubclass(layered, a) for a in abilities), layered
    assert [issubclass(RegistryStore, a) for a in abilities] == [True, True, True, True, False]
    assert [issubclass(RsyncStore, a) for a in abilities] == [True, True, False, False, False]
    assert not any(isinstance(_OldPlugin(), a) for a in abilities)
