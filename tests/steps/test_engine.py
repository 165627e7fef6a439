"""The layered data path end to end on a real OCI layout directory: fetch, store, publish."""

from __future__ import annotations

import gc
import json
import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from wrapresolver.backends.file import LayoutStore
from wrapresolver.core import oci_image
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer
from wrapresolver.errors import DiskFullError, IntegrityError, NotFoundError
from wrapresolver.steps import engine, runner
from wrapresolver.transfer import snapshot

RUN = "3f2c0d5e-run"


@pytest.fixture
def store(tmp_path: Path) -> LayoutStore:
    return LayoutStore(tmp_path / "layout")


def spec(task: str, inputs=(), graph=None, **kw) -> WorkspaceTransfer:
    return WorkspaceTransfer(
        workspace="src", target="file:///unused", run=RUN, task=task, backend="file",
        inputs=tuple(inputs), graph=graph or {}, **kw,
    )


class Tasks:
    """Runs tasks the way the injected steps do: fetch into a fresh dir, work, store."""

    def __init__(self, store: LayoutStore, tmp: Path) -> None:
        self.store, self.tmp = store, tmp

    def run(self, s: WorkspaceTransfer, work: Callable[[Path], None] = lambda d: None) -> Path:
        ws = self.tmp / f"ws-{s.task}"
        state = self.tmp / f"state-{s.task}"
        engine.fetch(self.store, s, ws, state)
        work(ws)
        engine.store(self.store, s, ws, state)
        return ws

    def view(self, s: WorkspaceTransfer, name: str = "view") -> Path:
        dest = self.tmp / name
        engine.fetch(self.store, s, dest, self.tmp / f"state-{name}")
        return dest


@pytest.fixture
def tasks(store: LayoutStore, tmp_path: Path) -> Tasks:
    return Tasks(store, tmp_path)


def files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): (p.read_text() if p.is_file() and not p.is_symlink() else "<dir>" if p.is_dir() else "<link>")
        for p in sorted(root.rglob("*"))
    }


def layers_of(store: LayoutStore, ref: str) -> list[str]:
    return [layer["digest"] for layer in json.loads(store.get_manifest(ref))["layers"]]


def blob_count(store: LayoutStore) -> int:
    return len(list((store.root / "blobs" / "sha256").iterdir()))


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_first_task_starts_empty_and_the_next_sees_its_files(tasks: Tasks) -> None:
    tasks.run(spec("clone"), lambda d: write(d / "src" / "main.c", "int main;"))
    view = tasks.view(spec("build", ["clone"], {"clone": ProducerNode()}))
    assert files(view) == {"src": "<dir>", "src/main.c": "int main;"}


def test_a_task_that_only_deletes_and_renames_adds_a_layer_of_its_own(tasks: Tasks, store: LayoutStore) -> None:
    """Deletions travel as whiteouts in a layer of the deleting task (the scenario itself, over
    several states, is the conformance kit's: every backend keeps it)."""
    graph = {"t1": ProducerNode(), "t2": ProducerNode(("t1",), 1)}
    tasks.run(spec("t1", graph=graph), lambda d: (write(d / "a" / "deep" / "two.txt", "2"), write(d / "old", "o")))
    tasks.run(spec("t2", ["t1"], graph), lambda d: (shutil.rmtree(d / "a" / "deep"), (d / "old").rename(d / "new")))
    assert len(layers_of(store, producer_ref(RUN, "t2"))) == 2
    assert files(tasks.view(spec("check", ["t2"], graph))) == {"a": "<dir>", "new": "o"}


@pytest.mark.parametrize("b_order,c_order,winner", [(1, 2, "from c"), (2, 1, "from b")])
def test_fan_in_merge_later_producer_wins_and_common_ancestry_appears_once(
    tasks: Tasks, store: LayoutStore, b_order: int, c_order: int, winner: str
) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), b_order), "c": ProducerNode(("a",), c_order)}
    tasks.run(spec("a", graph=graph), lambda d: write(d / "base.txt", "a"))
    tasks.run(spec("b", ["a"], graph), lambda d: (write(d / "same.txt", "from b"), write(d / "b.txt", "b")))
    tasks.run(spec("c", ["a"], graph), lambda d: (write(d / "same.txt", "from c"), write(d / "c.txt", "c")))
    view = tasks.view(spec("d", ["b", "c"], graph))
    assert files(view) == {"base.txt": "a", "b.txt": "b", "c.txt": "c", "same.txt": winner}
    engine.store(store, spec("d", ["b", "c"], graph), view, tasks.tmp / "state-view")
    merged = layers_of(store, producer_ref(RUN, "d"))
    assert len(merged) == 3 and len(set(merged)) == 3
    assert merged[0] == layers_of(store, producer_ref(RUN, "a"))[0]


def test_missing_producer_falls_back_to_its_own_inputs(tasks: Tasks) -> None:
    graph = {"clone": ProducerNode(), "lint": ProducerNode(("clone",), 1)}
    tasks.run(spec("clone", graph=graph), lambda d: write(d / "f", "clone"))
    # lint was skipped: it never stored
    s = spec("test", ["lint"], graph)
    report = engine.fetch(tasks.store, s, tasks.tmp / "v", tasks.tmp / "sv")
    assert files(tasks.tmp / "v") == {"f": "clone"}
    assert "lint has no stored state" in report.detail


def test_missing_producer_unknown_to_the_graph_counts_as_having_no_inputs(tasks: Tasks) -> None:
    view = tasks.view(spec("test", ["ghost"], {}))
    assert files(view) == {}


def test_base_seeds_the_first_task_and_its_layers_are_copied_into_the_target(
    tmp_path: Path, tasks: Tasks, store: LayoutStore
) -> None:
    seed = tmp_path / "seed"
    write(seed / "template" / "README", "from base")
    base_dir = tmp_path / "base-layout"
    base_store = LayoutStore(base_dir, "v1")
    engine.store_ref(base_store, seed, "v1")
    base_layer = layers_of(base_store, "v1")[0]
    s = spec("init", base=f"file://{base_dir}:v1")
    ws = tasks.run(s, lambda d: write(d / "own.txt", "own"))
    assert (ws / "template" / "README").read_text() == "from base"
    assert store.blob_exists(base_layer)
    assert layers_of(store, producer_ref(RUN, "init"))[0] == base_layer
    view = tasks.view(spec("next", ["init"], {"init": ProducerNode()}))
    assert files(view) == {"own.txt": "own", "template": "<dir>", "template/README": "from base"}


def test_a_required_base_that_is_missing_is_a_not_found_error_naming_it(tmp_path: Path, store: LayoutStore) -> None:
    s = replace(spec("init", base=f"file://{tmp_path}/nothing-here"), base_required=True)
    with pytest.raises(NotFoundError, match="nothing-here.*base-missing"):
        engine.fetch(store, s, tmp_path / "ws", tmp_path / "state")


def test_a_base_that_does_not_exist_yet_starts_the_workspace_empty(tmp_path: Path, store: LayoutStore) -> None:
    s = spec("init", base=f"file://{tmp_path}/not-yet")
    report = engine.fetch(store, s, tmp_path / "ws", tmp_path / "state")
    assert list((tmp_path / "ws").iterdir()) == []
    assert "base file://" in report.detail and "does not exist yet" in report.detail
    write(tmp_path / "ws" / "warm", "1")
    engine.store(store, s, tmp_path / "ws", tmp_path / "state")
    assert len(layers_of(store, producer_ref(RUN, "init"))) == 1


def test_unchanged_task_writes_no_layer(tasks: Tasks, store: LayoutStore) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1)}
    tasks.run(spec("a", graph=graph), lambda d: write(d / "f", "x"))
    before = blob_count(store)
    tasks.run(spec("b", ["a"], graph))
    assert layers_of(store, producer_ref(RUN, "b")) == layers_of(store, producer_ref(RUN, "a"))
    assert blob_count(store) == before + 1  # only the new manifest; the config is shared


def test_changing_one_file_of_many_stores_a_small_layer(tasks: Tasks, store: LayoutStore) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1)}

    def many(d: Path) -> None:
        for i in range(300):
            (d / f"file{i:03}.bin").write_bytes(os.urandom(8192))

    tasks.run(spec("a", graph=graph), many)
    tasks.run(spec("b", ["a"], graph), lambda d: (d / "file123.bin").write_bytes(os.urandom(8192)))
    manifest = json.loads(store.get_manifest(producer_ref(RUN, "b")))
    sizes = [layer["size"] for layer in manifest["layers"]]
    assert len(sizes) == 2 and sizes[0] > 300 * 8192 and sizes[1] < 3 * 8192


def test_sub_path_binding_fetches_and_stores_only_its_prefix(tasks: Tasks) -> None:
    graph = {"a": ProducerNode(), "docs": ProducerNode(("a",), 1)}
    tasks.run(spec("a", graph=graph), lambda d: (write(d / "docs" / "old.md", "o"), write(d / "src" / "x.c", "x")))
    ws = tasks.run(
        spec("docs", ["a"], graph, sub_path="docs"),
        lambda d: (os.unlink(d / "old.md"), write(d / "new.md", "n")),
    )
    assert not (ws / "src").exists()
    view = tasks.view(spec("check", ["docs"], graph))
    assert files(view) == {"docs": "<dir>", "docs/new.md": "n", "src": "<dir>", "src/x.c": "x"}


def test_store_with_publish_writes_the_same_layers_to_the_target_under_a_manifest_of_its_own(
    tasks: Tasks, store: LayoutStore,
) -> None:
    """Own manifest: deleting the run's state by digest (registries) must not remove the target."""
    tasks.run(spec("only", publish=True), lambda d: write(d / "f", "final"))
    target, state = store.get_manifest("latest"), store.get_manifest(producer_ref(RUN, "only"))
    assert target is not None and state is not None and target != state
    assert json.loads(target)["layers"] == json.loads(state)["layers"]
    out = tasks.tmp / "exported"
    engine.fetch_ref(store, "latest", out)
    assert files(out) == {"f": "final"}


def test_publish_writes_the_merge_of_leaf_producers_without_copying_layers(tasks: Tasks, store: LayoutStore) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1), "c": ProducerNode(("a",), 2)}
    tasks.run(spec("a", graph=graph), lambda d: write(d / "a", "a"))
    tasks.run(spec("b", ["a"], graph), lambda d: write(d / "b", "b"))
    tasks.run(spec("c", ["a"], graph), lambda d: write(d / "c", "c"))
    before = blob_count(store)
    report = engine.publish(store, spec("wrap-publish", ["b", "c"], graph))
    assert report.layers == 3
    assert blob_count(store) == before + 2  # one config, one manifest
    out = tasks.tmp / "final"
    engine.fetch_ref(store, "latest", out)
    assert files(out) == {"a": "a", "b": "b", "c": "c"}
    manifest = json.loads(store.get_manifest("latest"))
    assert manifest["annotations"][oci_image.ANNOTATION_TASK] == "wrap-publish"


def test_corrupt_blob_is_an_integrity_error_and_leaves_the_workspace_empty(tasks: Tasks, store: LayoutStore) -> None:
    tasks.run(spec("a"), lambda d: [write(d / f"f{i}", "x" * 1000) for i in range(20)])
    digest = layers_of(store, producer_ref(RUN, "a"))[0]
    blob = (store.root / store.blob_key(digest))
    data = bytearray(blob.read_bytes())
    data[-10] ^= 0xFF
    blob.write_bytes(bytes(data))
    dest = tasks.tmp / "victim"
    with pytest.raises(IntegrityError):
        engine.fetch(store, spec("b", ["a"], {"a": ProducerNode()}), dest, tasks.tmp / "sv")
    assert list(dest.iterdir()) == []


def test_unbound_optional_workspace_does_nothing(tmp_path: Path, store: LayoutStore) -> None:
    s = spec("a", bound="false")
    assert engine.fetch(store, s, tmp_path / "ws", tmp_path / "st").files == 0
    assert engine.store(store, s, tmp_path / "missing", tmp_path / "st").layers == 0
    assert store.get_manifest(producer_ref(RUN, "a")) is None


def test_store_without_fetch_record_stores_the_whole_tree(tmp_path: Path, store: LayoutStore) -> None:
    write(tmp_path / "src" / "f", "x")
    report = engine.store(store, spec("hand"), tmp_path / "src", tmp_path / "no-state")
    assert report.layers == 1 and "whole tree" in report.detail


@pytest.mark.parametrize("damage", ["garbage", "old-format", "short-row"])
def test_a_damaged_fetch_record_stores_the_whole_tree_and_says_why(
    tasks: Tasks, store: LayoutStore, tmp_path: Path, damage: str,
) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1)}
    tasks.run(spec("a", graph=graph), lambda d: (write(d / "kept", "a"), write(d / "gone", "a")))
    ws, state = tmp_path / "ws-b", tmp_path / "state-b"
    engine.fetch(store, spec("b", ["a"], graph), ws, state)
    (snap,) = state.rglob("*.snapshot.json")
    text = {
        "garbage": "{not json",
        "old-format": '["kept", "f", 420, 1, 0, 0, 0, 0, 0, ""]\n',  # a line per entry, as before
        "short-row": '{"format": "wrapresolver.snapshot/2", "entries": [["kept", "f"]]}',
    }[damage]
    snap.write_text(text)
    (ws / "gone").unlink()
    write(ws / "new", "b")
    report = engine.store(store, spec("b", ["a"], graph), ws, state)
    assert "fetch record" in report.detail and "unreadable" in report.detail and "whole tree" in report.detail
    assert report.layers == 1  # the whole tree, on no input layer
    assert files(tasks.view(spec("c", ["b"], {**graph, "c": ProducerNode(("b",), 2)}))) == {"kept": "a", "new": "b"}


def test_a_failed_upload_writes_no_reference(tmp_path: Path) -> None:
    class Failing(LayoutStore):
        def put_blob(self, reader, media_type):
            if media_type != oci_image.CONFIG:
                raise OSError(5, "I/O error on the storage")
            return super().put_blob(reader, media_type)

    failing = Failing(tmp_path / "layout")
    write(tmp_path / "src" / "f", "x")
    with pytest.raises(Exception, match="I/O error"):
        engine.store(failing, spec("a"), tmp_path / "src", tmp_path / "st")
    assert failing.get_manifest(producer_ref(RUN, "a")) is None


def test_retry_overwrites_its_own_reference(tasks: Tasks, store: LayoutStore) -> None:
    tasks.run(spec("a"), lambda d: write(d / "f", "first try"))
    tasks.run(spec("a"), lambda d: write(d / "f", "second try"))
    out = tasks.tmp / "out"
    engine.fetch_ref(store, producer_ref(RUN, "a"), out)
    assert files(out) == {"f": "second try"}


def test_fetch_ref_of_a_missing_reference_is_not_found(tmp_path: Path, store: LayoutStore) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        engine.fetch_ref(store, "nope", tmp_path / "out")


def test_progress_callback_receives_running_reports(tmp_path: Path, store: LayoutStore, monkeypatch) -> None:
    monkeypatch.setattr(runner, "PROGRESS_EVERY", 0.0)
    for i in range(5):
        write(tmp_path / "src" / f"f{i}", "x" * 100)
    seen = []
    engine.store(store, spec("a"), tmp_path / "src", tmp_path / "st", progress=seen.append)
    assert seen and seen[-1].action == "store" and seen[-1].files == 5


@pytest.fixture
def small_tmpfs(tmp_path: Path):
    mount = tmp_path / "small"
    mount.mkdir()
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True)
    if result.returncode != 0:
        pytest.skip(f"cannot mount a 2 MiB tmpfs to provoke ENOSPC: {result.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_fetch_into_a_full_disk_is_a_disk_full_error_and_leaves_nothing(
    tasks: Tasks, store: LayoutStore, small_tmpfs: Path
) -> None:
    tasks.run(spec("big"), lambda d: [(d / f"blob{i}").write_bytes(os.urandom(1 << 20)) for i in range(4)])
    dest = small_tmpfs / "ws"
    with pytest.raises(DiskFullError, match=r"no space left on device while fetching workspace 'src' into"):
        engine.fetch(store, spec("user", ["big"], {"big": ProducerNode()}), dest, tasks.tmp / "sv")
    assert list(dest.iterdir()) == []


def test_store_into_a_full_disk_is_a_disk_full_error(tmp_path: Path, small_tmpfs: Path) -> None:
    for i in range(4):
        (tmp_path / "src").mkdir(exist_ok=True)
        (tmp_path / "src" / f"blob{i}").write_bytes(os.urandom(1 << 20))
    full = LayoutStore(small_tmpfs / "layout")
    with pytest.raises(DiskFullError, match="while storing workspace 'src'"):
        engine.store(full, spec("a"), tmp_path / "src", tmp_path / "st")
    assert full.get_manifest(producer_ref(RUN, "a")) is None


def test_memory_stays_flat_storing_and_fetching_hundreds_of_megabytes(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import os, sys
        from pathlib import Path
        from wrapresolver.backends.file import LayoutStore
        from wrapresolver.steps import engine
        tmp = Path(sys.argv[1])
        src = tmp / "src"
        src.mkdir()
        for name, mib in [("big-1", 96), ("big-2", 96)] + [(f"small-{i}", 1) for i in range(64)]:
            with open(src / name, "wb") as out:
                for _ in range(mib):
                    out.write(os.urandom(1 << 20))
        store = LayoutStore(tmp / "layout")
        stored = engine.store_ref(store, src, "big")
        fetched = engine.fetch_ref(store, "big", tmp / "dest")
        # VmHWM, not ru_maxrss: a forked child's ru_maxrss starts at its parent's peak
        # (the kernel carries the old address space's high-water mark over the exec).
        hwm = next(l for l in open("/proc/self/status") if l.startswith("VmHWM:")).split()[1]
        print(hwm, stored.files, fetched.files)
        """
    )
    result = subprocess.run([sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, check=True)
    peak_kib, stored, fetched = map(int, result.stdout.split())
    assert stored == fetched == 66
    assert sum(p.stat().st_size for p in (tmp_path / "dest").iterdir()) == 256 << 20
    assert peak_kib < 200 * 1024, f"peak RSS {peak_kib} KiB for 256 MiB of data"


class RecordingStore(LayoutStore):
    """The real layout store, noting the calls the engine makes of it in one list."""

    def __init__(self, root: Path, calls: list[str]) -> None:
        super().__init__(root)
        self.calls = calls

    def warm_up(self) -> None:
        self.calls.append("warm_up")

    def blob_exists(self, digest: str) -> bool:
        self.calls.append(f"exists {digest}")
        return super().blob_exists(digest)

    def open_blob(self, digest: str):
        self.calls.append(f"read {digest} with the collector {'on' if gc.isenabled() else 'off'}")
        return super().open_blob(digest)


@pytest.fixture
def recorded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Tasks, RecordingStore]:
    calls: list[str] = []
    real_take = snapshot.take
    monkeypatch.setattr(snapshot, "take", lambda root: calls.append("walk") or real_take(root))
    recording = RecordingStore(tmp_path / "layout", calls)
    return Tasks(recording, tmp_path), recording


GRAPH_AB = {"a": ProducerNode(), "b": ProducerNode(("a",), 1)}


def _a_stored(tasks: Tasks, store: RecordingStore) -> None:
    """Task a stores one file; the calls it made are forgotten."""
    tasks.run(spec("a", graph=GRAPH_AB), lambda d: write(d / "f", "x"))
    store.calls.clear()


def test_a_store_warms_the_backend_up_once_before_it_walks_the_workspace(
    recorded: tuple[Tasks, RecordingStore],
) -> None:
    tasks, store = recorded
    tasks.run(spec("a"), lambda d: write(d / "f", "x"))
    assert store.calls.count("warm_up") == 1
    assert store.calls.index("warm_up") < store.calls.index("walk")
    store.calls.clear()
    engine.store(store, spec("a", bound="false"), tasks.tmp / "missing", tasks.tmp / "st")
    assert store.calls == []  # an unbound workspace contacts nothing


def test_a_store_that_wrote_a_layer_uploads_its_config_without_asking_whether_it_exists(
    recorded: tuple[Tasks, RecordingStore],
) -> None:
    tasks, store = recorded
    _a_stored(tasks, store)
    tasks.run(spec("b", ["a"], GRAPH_AB), lambda d: write(d / "f", "changed"))
    config = json.loads(store.get_manifest(producer_ref(RUN, "b")))["config"]["digest"]
    assert f"exists {config}" not in store.calls
    assert store.blob_exists(config)
    assert files(tasks.view(spec("c", ["b"], {**GRAPH_AB, "c": ProducerNode(("b",), 2)}))) == {"f": "changed"}


def test_the_collector_is_paused_while_a_fetch_writes_the_workspace_and_back_after(
    recorded: tuple[Tasks, RecordingStore],
) -> None:
    tasks, store = recorded
    _a_stored(tasks, store)
    assert gc.isenabled()
    tasks.view(spec("b", ["a"], GRAPH_AB))
    (layer,) = layers_of(store, producer_ref(RUN, "a"))
    assert f"read {layer} with the collector off" in store.calls  # the layer, while it is written out
    assert gc.isenabled()
