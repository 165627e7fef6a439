"""Reclaiming states and partial state directories on a real rsync daemon."""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest

from tests.fixtures.chains import store_chain
from tests.fixtures.rsyncd import RsyncDaemon
from wrapresolver.backends import reclaim
from wrapresolver.backends.reclaim import PARTIAL, STATE
from wrapresolver.backends.rsync import BACKEND, parse_target
from wrapresolver.cli import main
from wrapresolver.core.refs import producer_ref

UID_A = "3a2b1c0d-0a51-4d38-9d7d-3c1b0f2a9e01"
UID_B = "4b3c2d1e-1b62-4e49-8e8e-4d2c1a3b0f02"


@pytest.fixture
def target(rsync_daemon: RsyncDaemon, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("RSYNC_PASSWORD", rsync_daemon.password)
    return f"{rsync_daemon.url}/gc/{uuid.uuid4().hex[:10]}"


def _run(target: str, run: str, tasks: dict[str, str], tmp: Path, publish: str = "") -> None:
    store_chain(BACKEND, target, run, {t: (f"{t}.txt", text.encode()) for t, text in tasks.items()}, tmp, publish)


def test_reclaiming_a_run_removes_its_references_and_trees_and_keeps_latest(
    target: str, rsync_daemon: RsyncDaemon, tmp_path: Path,
) -> None:
    _run(target, UID_A, {"clone": "a\n", "build": "b\n"}, tmp_path, publish="build")
    _run(target, UID_B, {"clone": "other\n"}, tmp_path)
    disk = rsync_daemon.data_dir / parse_target(target).path
    with BACKEND.open(target, {}) as store:
        result = reclaim.reclaim_run(store, UID_A)
        assert sorted(result.deleted) == sorted([producer_ref(UID_A, "clone"), producer_ref(UID_A, "build")])
        assert result.bytes == len("a\n") * 2 + len("b\n")  # clone's tree, build's tree (hard links counted)
        assert {i.name for i in reclaim.stored_items(store)} == {producer_ref(UID_B, "clone")}
    assert sorted(p.name for p in (disk / "refs").iterdir()) == ["latest.json", f"{producer_ref(UID_B, 'clone')}.json"]
    assert [p.name for p in (disk / "states").iterdir() if p.is_dir() and UID_A in p.name] == []
    assert sorted(p.name for p in (disk / "latest").iterdir()) == ["build.txt", "clone.txt"]


def test_gc_deletes_old_partial_state_directories_and_old_states_only(
    target: str, rsync_daemon: RsyncDaemon, tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    _run(target, UID_A, {"clone": "old\n"}, tmp_path)
    _run(target, UID_B, {"clone": "young\n"}, tmp_path)
    disk = rsync_daemon.data_dir / parse_target(target).path
    old = time.time() - 9 * 86400
    os.utime(disk / "refs" / f"{producer_ref(UID_A, 'clone')}.json", (old, old))
    for name, when in (("killed", old), ("uploading", time.time())):
        partial = disk / "states" / f"{producer_ref(UID_B, name)}.{uuid.uuid4().hex[:8]}"
        (partial / "sub").mkdir(parents=True)
        (partial / "sub" / "half.bin").write_bytes(b"x" * 1000)
        os.utime(partial, (when, when))
    with BACKEND.open(target, {}) as store:
        kinds = sorted((i.kind, i.name.split(".")[0]) for i in reclaim.stored_items(store))
    assert kinds == sorted([
        (PARTIAL, f"states/{producer_ref(UID_B, 'killed')}"), (PARTIAL, f"states/{producer_ref(UID_B, 'uploading')}"),
        (STATE, producer_ref(UID_A, "clone")), (STATE, producer_ref(UID_B, "clone")),
    ])
    assert main(["gc", "--target", target, "--older-than", "7d"]) == 0
    out = capsys.readouterr().out
    assert "wrap gc: 2 deleted (1004 bytes)" in out  # the partial tree and the old state's "old\n"
    with BACKEND.open(target, {}) as store:
        left = sorted((i.kind, i.name.split(".")[0]) for i in reclaim.stored_items(store))
    assert left == sorted([(PARTIAL, f"states/{producer_ref(UID_B, 'uploading')}"), (STATE, producer_ref(UID_B, "clone"))])
