"""Reclaiming states on a real docker-registry: deletes by digest, the §6a trap, refusals, GC."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.fixtures.chains import store_chain
from tests.fixtures.registry import Registry
from wrapresolver.backends import reclaim
from wrapresolver.backends.oci import BACKEND as OCI
from wrapresolver.backends.reclaim import STATE
from wrapresolver.core import oci_image
from wrapresolver.core.oci_image import blobs_of
from wrapresolver.core.refs import producer_ref
from wrapresolver.steps.open_target import open_steps

UID_A = "1f0c7e6a-0a51-4d38-9d7d-3c1b0f2a9e01"
UID_B = "2e1d8f7b-1b62-4e49-8e8e-4d2c1a3b0f02"


def _run(target: str, run: str, tasks: dict[str, bytes], tmp: Path, publish: str = "") -> None:
    """Each task writes one file of its own and stores it, the way the injected steps do."""
    store_chain(OCI, target, run, {t: (f"{t}.bin", data) for t, data in tasks.items()}, tmp, publish)


def _tags(target: str) -> set[str]:
    with OCI.open(target, {}) as store:
        return set(store.tags())  # type: ignore[attr-defined]


def _blob_files(registry: Registry) -> set[str]:
    root = registry.root / "data" / "docker" / "registry" / "v2" / "blobs" / "sha256"
    return {f"sha256:{p.parent.name}" for p in root.glob("*/*/data")}


def test_a_run_is_reclaimed_by_digest_and_the_registry_gc_then_frees_its_own_blobs(
    registry_factory: Callable[..., Registry], tmp_path: Path,
) -> None:
    registry = registry_factory()
    target = f"oci://{registry.host}/t/gc-{uuid.uuid4().hex[:8]}:latest"
    _run(target, UID_A, {"clone": b"a-clone" * 4000, "build": b"a-build" * 4000}, tmp_path, publish="build")
    _run(target, UID_B, {"clone": b"b-clone" * 4000}, tmp_path)
    assert _tags(target) == {"latest", producer_ref(UID_A, "clone"), producer_ref(UID_A, "build"), producer_ref(UID_B, "clone")}

    with OCI.open(target, {}) as store:
        own = {d for tag in (producer_ref(UID_A, "clone"), producer_ref(UID_A, "build"))
               for d in blobs_of(store.get_manifest(tag) or b"")}
        kept = {d for tag in ("latest", producer_ref(UID_B, "clone")) for d in blobs_of(store.get_manifest(tag) or b"")}
        result = reclaim.reclaim_run(store, UID_A)
    assert sorted(result.deleted) == sorted([producer_ref(UID_A, "clone"), producer_ref(UID_A, "build")])
    assert result.bytes > 0 and not result.failures and not result.kept
    assert _tags(target) == {"latest", producer_ref(UID_B, "clone")}
    freeable = own - kept
    assert freeable  # the run's own state manifests at least
    assert freeable <= _blob_files(registry)  # deleted manifests leave their blobs until GC

    registry.stop()
    gc = subprocess.run(["docker-registry", "garbage-collect", str(registry.config)], capture_output=True, text=True)
    assert gc.returncode == 0, gc.stderr
    registry.start()
    left = _blob_files(registry)
    assert not (freeable & left)
    assert kept <= left
    out = tmp_path / "pulled"
    with open_steps(OCI, target, {}) as steps:
        steps.pull(out)
    assert sorted(p.name for p in out.iterdir()) == ["build.bin", "clone.bin"]


def test_a_state_sharing_its_manifest_with_the_target_is_kept_and_the_target_stays(
    registry: Registry, tmp_path: Path,
) -> None:
    """States written before the target had a manifest of its own: deleting by digest would
    remove the target too (DESIGN §6a), and distribution cannot delete a tag alone."""
    target = f"oci://{registry.repo('shared')}:latest"
    _run(target, UID_A, {"only": b"only" * 1000}, tmp_path, publish="only")
    with OCI.open(target, {}) as store:
        state = store.get_manifest(producer_ref(UID_A, "only"))
        assert state is not None
        store.put_manifest("latest", state, oci_image.MANIFEST)  # the old way: one manifest, two tags
        result = reclaim.reclaim_run(store, UID_A, ("only",))
        assert result.deleted == []
        assert len(result.kept) == 1 and "'latest', which stays" in result.kept[0]
        assert store.get_manifest("latest") == state


def test_a_registry_that_refuses_deletes_is_said_once_and_everything_stays(
    registry_factory: Callable[..., Registry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REGISTRY_STORAGE_DELETE_ENABLED", "false")
    registry = registry_factory()
    target = f"oci://{registry.host}/t/refuse:latest"
    _run(target, UID_A, {"clone": b"c" * 1000, "build": b"b" * 1000}, tmp_path)
    with OCI.open(target, {}) as store:
        result = reclaim.reclaim_run(store, UID_A)
        assert result.deleted == []
        assert len(result.notes) == 1 and "refuses to delete manifests" in result.notes[0]
        assert "REGISTRY_STORAGE_DELETE_ENABLED" in result.notes[0]
        assert len(result.kept) == 2
        assert {i.name for i in reclaim.stored_items(store) if i.kind == STATE} == {
            producer_ref(UID_A, "clone"), producer_ref(UID_A, "build"),
        }
