"""A carried cache over a hundred runs stays a bounded number of layers and loses nothing.

Each run does what the injected steps of a carried workspace do, through a real backend
(`file://` and Debian's docker-registry): fetch from the published state (the `base`),
change the workspace, store with `publish`. The same changes go to a directory that is
never stored, the shared volume this models; every fetch must give exactly that tree
(kinds, contents, modes, mtimes, link targets, hard-link groups), deletions included,
while the published state never has more than `max_layers` layers.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from tests.steps.test_squash import PATHS, apply_op, tree
from tests.testing.test_carried_cache import CacheRuns, cache_result
from wrapresolver.backends.reclaim import reclaim_run
from wrapresolver.backends.registry import get_backend
from wrapresolver.core import oci_image
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer
from wrapresolver.errors import TransferError
from wrapresolver.render import render
from wrapresolver.steps.open_target import open_steps
from wrapresolver.testing.executor import SUCCEEDED, LocalExecutor

CONTENTS = [b"", b"one", b"two\n", b"three" * 50, os.urandom(3000)]


@dataclass
class Place:
    backend: str
    target: str


@pytest.fixture(params=["file", "oci"])
def place(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Place]:
    if request.param == "oci":
        registry = request.getfixturevalue("registry")
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
        yield Place("oci", f"oci://{registry.host}/compact/{uuid.uuid4().hex[:8]}-cache")
    else:
        yield Place("file", f"file://{tmp_path}/store/carried-cache")


def random_ops(rng: random.Random, paths: list[str]) -> list[tuple]:
    ops: list[tuple] = []
    for _ in range(rng.randint(1, 5)):
        kind = rng.choice(["write", "write", "write", "delete", "mkdir", "symlink", "hardlink", "chmod"])
        path = rng.choice(paths)
        if kind == "write":
            mtime = rng.randint(10**9, 2 * 10**9) * 10**9 + rng.randint(0, 10**9 - 1)
            ops.append((kind, path, rng.choice(CONTENTS), rng.choice([0o644, 0o600, 0o755]), mtime))
        elif kind == "delete":
            ops.append((kind, path))
        elif kind == "mkdir":
            ops.append((kind, path, rng.choice([0o755, 0o700])))
        elif kind == "symlink":
            ops.append((kind, path, rng.choice(["a", "../b", "c/a", "dangling"])))
        elif kind == "hardlink":
            ops.append((kind, path, rng.choice(paths)))
        else:
            ops.append((kind, path, rng.choice([0o600, 0o755])))
    return ops


def settle_times(root: Path, run: int, under: str = "") -> None:
    """Directories and symlinks (only those at or under `under`) get a time of this run: the
    shared volume and the fetched workspace then agree on them although their changes
    happened at different moments."""
    when = (1_500_000_000 + run) * 10**9
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            if under and rel != under and not rel.startswith(under + "/"):
                continue
            if os.path.islink(full) or os.path.isdir(full):
                os.utime(full, ns=(when, when), follow_symlinks=False)


class Carrier:
    """Runs of one carried workspace at one place, with the shared volume they model."""

    def __init__(self, place: Place, tmp: Path, max_layers: int) -> None:
        self.place, self.tmp, self.max_layers = place, tmp, max_layers
        self.volume = tmp / "volume"
        self.volume.mkdir()

    def spec(self, run: str, task: str, **kw) -> WorkspaceTransfer:
        return WorkspaceTransfer(workspace="cache", target=self.place.target, run=run, task=task,
                                 backend=self.place.backend, base=self.place.target, **kw)

    def steps(self):
        return open_steps(get_backend(self.place.backend), self.place.target, {})

    def fetch(self, spec: WorkspaceTransfer, name: str) -> tuple[Path, Path]:
        ws, state = self.tmp / f"ws-{name}", self.tmp / f"state-{name}"
        for d in (ws, state):
            shutil.rmtree(d, ignore_errors=True)
        with self.steps() as steps:
            steps.fetch(spec, ws, state)
        return ws, state

    def published(self) -> dict:
        with get_backend(self.place.backend).open(self.place.target, {}) as blobs:
            data = blobs.get_manifest(blobs.target_ref)
        assert data is not None
        return json.loads(data)


def test_a_hundred_carried_runs_stay_within_max_layers_and_equal_the_shared_volume(place: Place, tmp_path: Path) -> None:
    carrier = Carrier(place, tmp_path, max_layers=8)
    rng = random.Random(27)
    counts: list[int] = []
    for number in range(100):
        run = f"run{number}-{uuid.uuid4().hex[:6]}"
        ws, state = carrier.fetch(carrier.spec(run, "build"), "build")
        assert tree(ws) == tree(carrier.volume), f"run {number}: the fetched cache differs from the volume"
        for op in random_ops(rng, PATHS):
            apply_op(ws, op)
            apply_op(carrier.volume, op)
        settle_times(ws, number)
        settle_times(carrier.volume, number)
        with carrier.steps() as steps:
            report = steps.store(carrier.spec(run, "build", publish=True, max_layers=8), ws, state)
        manifest = carrier.published()
        counts.append(len(manifest["layers"]))
        assert counts[-1] <= 8, f"run {number}: {counts[-1]} layers published"
        compacted = manifest.get("annotations", {}).get(oci_image.ANNOTATION_COMPACTED)
        assert (compacted is not None) == ("compacted" in report.detail), report.detail
    final, _ = carrier.fetch(carrier.spec("last", "look"), "look")
    assert tree(final) == tree(carrier.volume)
    # It really was compacted again and again, not merely a short chain.
    assert counts.count(1) >= 10 and max(counts) == 8


def test_without_compaction_the_same_runs_grow_one_layer_each(place: Place, tmp_path: Path) -> None:
    carrier = Carrier(place, tmp_path, max_layers=0)
    for number in range(20):
        run = f"run{number}"
        ws, state = carrier.fetch(carrier.spec(run, "build"), "build")
        (ws / f"file-{number}").write_text(str(number))
        with carrier.steps() as steps:
            steps.store(carrier.spec(run, "build", publish=True, max_layers=0), ws, state)
    assert len(carrier.published()["layers"]) == 20


def test_fan_in_runs_published_by_the_publish_task_stay_bounded_and_lose_no_branch(place: Place, tmp_path: Path) -> None:
    """Two branches change the cache in parallel; the publish task merges and squashes."""
    carrier = Carrier(place, tmp_path, max_layers=5)
    rng = random.Random(3)
    left = [p for p in PATHS if p.startswith("a")]
    right = [p for p in PATHS if p.startswith("b")]
    graph = {"left": ProducerNode(order=0), "right": ProducerNode(order=1)}
    counts = []
    for number in range(40):
        run = f"fan{number}-{uuid.uuid4().hex[:6]}"
        for task, paths, under in (("left", left, "a"), ("right", right, "b")):
            ws, state = carrier.fetch(carrier.spec(run, task), task)
            ops = random_ops(rng, paths)
            for op in ops:
                apply_op(ws, op)
                apply_op(carrier.volume, op)
            settle_times(ws, number, under)
            with carrier.steps() as steps:
                steps.store(carrier.spec(run, task), ws, state)
        settle_times(carrier.volume, number)
        with carrier.steps() as steps:
            steps.publish(carrier.spec(run, "wrap-publish", inputs=("left", "right"), graph=graph,
                                       publish=True, max_layers=5))
        counts.append(len(carrier.published()["layers"]))
        assert counts[-1] <= 5
        view, _ = carrier.fetch(carrier.spec(f"check{number}", "look"), "look")
        assert tree(view) == tree(carrier.volume), f"run {number}: the published cache lost a change"
    assert counts.count(1) >= 5


def test_a_publishing_store_that_sees_only_its_subpath_squashes_the_whole_state(place: Place, tmp_path: Path) -> None:
    carrier = Carrier(place, tmp_path, max_layers=2)
    with carrier.steps() as steps:  # a first state with content outside the subPath
        outside = tmp_path / "outside"
        (outside / "other").mkdir(parents=True)
        (outside / "other" / "kept").write_text("outside")
        (outside / "sub").mkdir()
        steps.push(outside)
    details = []
    for number in range(5):
        run = f"sub{number}"
        ws, state = carrier.fetch(carrier.spec(run, "build", sub_path="sub"), "build")
        (ws / f"file-{number}").write_text(str(number))
        if number:
            (ws / f"file-{number - 1}").unlink()
        with carrier.steps() as steps:
            report = steps.store(carrier.spec(run, "build", sub_path="sub", publish=True, max_layers=2), ws, state)
        details.append(report.detail)
        assert len(carrier.published()["layers"]) <= 2
    assert sum("compacted: 3 layers squashed into one" in d for d in details) == 2, details
    whole, _ = carrier.fetch(carrier.spec("look", "look"), "look")
    assert (whole / "other" / "kept").read_text() == "outside"
    assert sorted(p.name for p in (whole / "sub").iterdir()) == ["file-4"]


def test_the_cache_example_with_max_layers_2_publishes_a_squashed_cache_on_its_third_run(
    place: Place, tmp_path: Path,
) -> None:
    """From the PipelineRun's param to the store step's log, through render and real steps."""
    prefix = place.target.removesuffix("-cache")
    runs = CacheRuns(f"{prefix}-<<workspace>>", f"{prefix}-cache", place.backend,
                     {"DOCKER_CONFIG": os.environ.get("DOCKER_CONFIG", str(tmp_path / "none"))}, tmp_path)
    layers = []
    for number in (1, 2, 3):
        documents = runs.documents(f"run-{number}")
        documents[1]["spec"]["pipelineRef"]["params"].append({"name": "max-layers", "value": "2"})
        rewritten = yaml.safe_load(render(documents))
        result = LocalExecutor(rewritten, name=f"run-{number}", workdir=tmp_path / f"run-{number}",
                               env=runs.env).run()
        assert result.status == SUCCEEDED, result.log()
        layers.append(len(carrier_manifest(place)["layers"]))
    assert layers == [1, 2, 1]
    assert "compacted: 3 layers squashed into one (max-layers 2)" in result.tasks["build"].log
    assert carrier_manifest(place)["annotations"][oci_image.ANNOTATION_COMPACTED] == "3"
    assert runs.cache() == {"example.com/dep@v1.0.0": "downloaded\n", "warmed-by": "run-1\nrun-2\nrun-3\n"}
    # Provenance: the digest the store reports as published is the squashed manifest's.
    with get_backend(place.backend).open(place.target, {}) as blobs:
        manifest = blobs.get_manifest(blobs.target_ref)
    assert manifest is not None
    assert cache_result(result, "published")["digest"] == "sha256:" + hashlib.sha256(manifest).hexdigest()


def carrier_manifest(place: Place) -> dict:
    with get_backend(place.backend).open(place.target, {}) as blobs:
        data = blobs.get_manifest(blobs.target_ref)
    assert data is not None
    return json.loads(data)


def test_reclaiming_the_run_that_compacted_frees_the_layers_the_squash_replaced(tmp_path: Path) -> None:
    """The run's own state keeps its layers; only the published state is squashed, so the
    usual reclaim of the run's states frees what nothing names any more (file://)."""
    place = Place("file", f"file://{tmp_path}/store/carried-cache")
    carrier = Carrier(place, tmp_path, max_layers=2)
    for number in range(3):
        run = f"r{number}"
        ws, state = carrier.fetch(carrier.spec(run, "build"), "build")
        (ws / f"file-{number}").write_text(str(number))
        with carrier.steps() as steps:
            steps.store(carrier.spec(run, "build", publish=True, max_layers=2), ws, state)
        if number < 2:  # the runs before the compacting one are reclaimed as they end
            with get_backend("file").open(place.target, {}) as blobs:
                reclaim_run(blobs, run, ["build"])
    with get_backend("file").open(place.target, {}) as blobs:
        own = json.loads(blobs.get_manifest(producer_ref("r2", "build")) or b"{}")
        replaced = {layer["digest"] for layer in own["layers"]}
        assert len(replaced) == 3  # the run's state is the chain, not the squash
        reclaim_run(blobs, "r2", ["build"])
        left = {p.name for p in (tmp_path / "store" / "carried-cache" / "blobs" / "sha256").iterdir()}
    assert not {d.removeprefix("sha256:") for d in replaced} & left
    assert [layer["digest"] for layer in carrier.published()["layers"]][0].removeprefix("sha256:") in left
    final, _ = carrier.fetch(carrier.spec("look", "look"), "look")
    assert sorted(p.name for p in final.iterdir()) == ["file-0", "file-1", "file-2"]


def test_a_publish_task_that_cannot_make_its_scratch_directory_fails_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    place = Place("file", f"file://{tmp_path}/store/carried-cache")
    carrier = Carrier(place, tmp_path, max_layers=1)
    for task in ("left", "right"):
        ws, state = carrier.fetch(carrier.spec("r1", task), task)
        (ws / task).write_text(task)
        with carrier.steps() as steps:
            steps.store(carrier.spec("r1", task), ws, state)
    not_a_directory = tmp_path / "tmp-is-a-file"
    not_a_directory.write_text("")
    monkeypatch.setattr(tempfile, "tempdir", str(not_a_directory))
    graph = {"left": ProducerNode(order=0), "right": ProducerNode(order=1)}
    with carrier.steps() as steps, pytest.raises(TransferError) as raised:
        steps.publish(carrier.spec("r1", "wrap-publish", inputs=("left", "right"), graph=graph,
                                   publish=True, max_layers=1))
    assert "squashing workspace 'cache'" in str(raised.value) and str(not_a_directory) in str(raised.value)
    with get_backend("file").open(place.target, {}) as blobs:
        assert blobs.get_manifest(blobs.target_ref) is None  # nothing half published
