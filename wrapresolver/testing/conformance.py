"""The backend conformance kit: one pytest suite every storage backend must pass.

One file on purpose (it is over 400 lines): a plugin author reads it beside
docs/plugin-authors.md, and every promise a backend makes is tested in one place.

A backend proves it keeps the promises of a wrapped workspace (DESIGN §3, §5) by running
this suite against a live target. In the plugin's own tests::

    import pytest
    from wrapresolver.testing.conformance import BackendConformance, ConformanceTarget

    class TestMyStoreConformance(BackendConformance):
        @pytest.fixture
        def conformance_target(self, my_server) -> ConformanceTarget:
            return ConformanceTarget(
                backend="mystore",                            # the entry-point name
                new_target=lambda: my_server.fresh_url(),     # a new, empty location per call
                options={"endpoint": my_server.url},          # backend options, as params
                env={"MYSTORE_TOKEN": my_server.token},       # what the step's env would hold
            )

pytest collects every `test_*` method below under the subclass. The suite talks to the
backend only through the public interface (`Backend.open` -> `WorkspaceStore.fetch`,
`store`, `publish`, `pull`, `push`), exactly as the injected steps do, so a backend that
passes works with the resolver's rewrite unchanged.

What is checked: round trips of trees with every kind of entry the workspace keeps,
incremental stores, deletions, fan-in merge order, fallbacks past skipped producers,
sub-paths, publishing to the exact target, isolation of two runs sharing one target, a
clear `NotFoundError` for a missing target, and that an interrupted store leaves no
reference behind; and the delete side: reclaiming one run deletes exactly its states while
another run on the same target carries on, and the published target is never listed.
Failures (conformance_errors.py, inherited): each lands in its documented error class and
exit code, and a server that never answers fails the step after `io_timeout()`.

The early check (`probe`, optional): when the backend has one, it must pass on a live
target and leave no state there; given `unreachable` (the backend pointed at an address
nobody answers) it must fail the fetch of a storing task with a `NetworkError`, and given
`denied` (no or wrong credentials) with an `AuthError`, both naming the task and the
target. A backend without a probe skips these tests: its tasks are not checked before
their own steps run. The same two variants drive the failure checks of the real command
(conformance_errors.py); `ConformanceTarget` and `Unusable` are in conformance_target.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from wrapresolver.backends.reclaim import STATE, ReclaimUnsupported, delete_items, reclaim_run, stored_items
from wrapresolver.backends.registry import get_backend
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer
from wrapresolver.errors import AuthError, NetworkError, NotFoundError, TransferError
from wrapresolver.steps.open_target import Steps, open_steps
from wrapresolver.testing.conformance_errors import ErrorConformance, closed_port
from wrapresolver.testing.conformance_target import ConformanceTarget, Unusable

__all__ = ["BackendConformance", "ConformanceTarget", "Unusable", "tree_of", "write_tricky_tree"]


# ---- trees ----

def write_tricky_tree(root: Path) -> None:
    """Every kind of entry a workspace must keep, with names that break naive code."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "main.py").write_text("print('hello')\n")
    tool = root / "bin" / "tool.sh"
    tool.parent.mkdir()
    tool.write_text("#!/bin/sh\necho tool\n")
    tool.chmod(0o755)
    (root / "empty" / "nested").mkdir(parents=True)
    (root / "with space and ünïcödé.txt").write_text("spaces\n")
    (root / "new\nline").write_text("a newline in a name\n")
    (root / "big.bin").write_bytes(os.urandom(3 << 20))
    (root / "link-relative").symlink_to("src/pkg/main.py")
    (root / "link-absolute").symlink_to("/etc/hostname")
    (root / "link-dangling").symlink_to("does/not/exist")
    os.link(root / "src" / "pkg" / "main.py", root / "hardlink.py")
    readonly = root / "readonly.txt"
    readonly.write_text("read only\n")
    readonly.chmod(0o444)
    os.utime(root / "with space and ünïcödé.txt", (1_600_000_000, 1_600_000_000))


def tree_of(root: Path) -> dict[str, tuple]:
    """A comparable description of a tree: kind, mode, content or link target, mtime."""
    out: dict[str, tuple] = {}
    for path in sorted(root.rglob("*")):
        rel = str(path.relative_to(root))
        info = path.lstat()
        if stat.S_ISLNK(info.st_mode):
            out[rel] = ("link", os.readlink(path))
        elif stat.S_ISDIR(info.st_mode):
            out[rel] = ("dir", stat.S_IMODE(info.st_mode))
        else:
            out[rel] = ("file", stat.S_IMODE(info.st_mode), path.read_bytes(), int(info.st_mtime))
    return out


def contents(root: Path) -> dict[str, str]:
    """Regular files only, as text: enough to state merge results readably."""
    return {
        str(p.relative_to(root)): p.read_text()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# ---- running tasks the way the injected steps do ----

class _Pipeline:
    """One run of a pipeline against one target: fetch into fresh dirs, work, store."""

    def __init__(self, setup: ConformanceTarget, target: str, tmp: Path, run: str) -> None:
        self.setup, self.target, self.tmp, self.run_id = setup, target, tmp, run
        self.graph: dict[str, ProducerNode] = {}

    def spec(self, task: str, inputs: tuple[str, ...] = (), **extra) -> WorkspaceTransfer:
        return WorkspaceTransfer(
            workspace="src", target=self.target, run=self.run_id, task=task,
            backend=self.setup.backend, inputs=inputs, graph=dict(self.graph),
            options=dict(self.setup.options), **extra,
        )

    def open(self) -> Steps:
        return open_steps(get_backend(self.setup.backend), self.target, dict(self.setup.options))

    def task(
        self, name: str, inputs: tuple[str, ...] = (), work: Callable[[Path], object] = lambda d: None,
        *, store: bool = True, **extra,
    ) -> Path:
        """Fetch, run `work` on the workspace, store. Returns the workspace directory."""
        self.graph[name] = ProducerNode(inputs=inputs, order=len(self.graph))
        spec = self.spec(name, inputs, stores=store, **extra)
        ws = self.tmp / f"{self.run_id}-{name}-ws"
        state = self.tmp / f"{self.run_id}-{name}-state"
        ws.mkdir(parents=True)
        state.mkdir(parents=True)
        with self.open() as handle:
            handle.fetch(spec, ws, state)
            work(ws)
            if store:
                handle.store(spec, ws, state)
        return ws

    def look(self, inputs: tuple[str, ...], name: str = "observer", **extra) -> Path:
        """What a task reading `inputs` would see, without storing anything."""
        return self.task(name, inputs, store=False, **extra)


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


class BackendConformance(ErrorConformance):
    """Subclass and provide the `conformance_target` fixture; see the module docstring."""

    @pytest.fixture
    def conformance_target(self) -> ConformanceTarget:  # pragma: no cover - overridden
        raise NotImplementedError("subclasses provide the conformance_target fixture")

    @pytest.fixture
    def setup(self, conformance_target: ConformanceTarget, monkeypatch: pytest.MonkeyPatch) -> ConformanceTarget:
        for name, value in conformance_target.env.items():
            monkeypatch.setenv(name, value)
        return conformance_target

    @pytest.fixture
    def pipeline(self, setup: ConformanceTarget, tmp_path: Path) -> _Pipeline:
        return _Pipeline(setup, setup.new_target(), tmp_path, f"run-{uuid.uuid4().hex[:12]}")

    # ---- round trips ----

    def test_tricky_tree_round_trips_through_a_producer_and_a_consumer(self, pipeline: _Pipeline) -> None:
        pipeline.task("clone", work=write_tricky_tree)
        expected_dir = pipeline.tmp / "expected"
        write_tricky_tree(expected_dir)
        seen = pipeline.look(("clone",))
        got, want = tree_of(seen), tree_of(expected_dir)
        assert set(got) == set(want)
        for name in want:
            if name == "big.bin":  # random content: compare kind and mode only
                assert got[name][:2] == want[name][:2]
            elif want[name][0] == "file" and name != "with space and ünïcödé.txt":
                assert got[name][:3] == want[name][:3], name  # mtimes of fresh files differ
            else:
                assert got[name] == want[name], name
        assert (seen / "hardlink.py").stat().st_ino == (seen / "src" / "pkg" / "main.py").stat().st_ino

    def test_the_first_task_of_a_run_starts_empty(self, pipeline: _Pipeline) -> None:
        assert list(pipeline.look(()).iterdir()) == []

    def test_incremental_store_keeps_unchanged_files_and_honors_deletions(self, pipeline: _Pipeline) -> None:
        def clone(ws: Path) -> None:
            for i in range(20):
                _write(ws / "files" / f"{i}.txt", f"file {i}\n")
            _write(ws / "gone" / "inside.txt", "bye\n")

        def build(ws: Path) -> None:
            (ws / "files" / "3.txt").unlink()
            (ws / "files" / "4.txt").write_text("changed\n")
            (ws / "files" / "7.txt").rename(ws / "files" / "seven.txt")
            for child in (ws / "gone").iterdir():
                child.unlink()
            (ws / "gone").rmdir()
            _write(ws / "out" / "app", "binary\n")

        pipeline.task("clone", work=clone)
        pipeline.task("build", ("clone",), work=build)
        seen = contents(pipeline.look(("build",)))
        assert "files/3.txt" not in seen and "files/7.txt" not in seen
        assert seen["files/4.txt"] == "changed\n" and seen["files/seven.txt"] == "file 7\n"
        assert seen["out/app"] == "binary\n" and seen["files/19.txt"] == "file 19\n"
        assert not any(name.startswith("gone") for name in seen)

    def test_deletions_and_renames_hold_across_several_states(self, pipeline: _Pipeline) -> None:
        def first(ws: Path) -> None:
            _write(ws / "a" / "one.txt", "1")
            _write(ws / "a" / "deep" / "two.txt", "2")
            _write(ws / "keep.txt", "k")
            _write(ws / "old-name.txt", "moved")

        def second(ws: Path) -> None:
            shutil.rmtree(ws / "a" / "deep")
            (ws / "old-name.txt").rename(ws / "new-name.txt")
            (ws / "keep.txt").unlink()

        def third(ws: Path) -> None:
            _write(ws / "a" / "deep" / "three.txt", "3")  # a deleted directory comes back...
            _write(ws / "keep.txt", "back")  # ...and a deleted file
            shutil.rmtree(ws / "a")  # then their parent goes, and a new one of that name comes
            _write(ws / "a" / "fresh.txt", "f")

        pipeline.task("t1", work=first)
        pipeline.task("t2", ("t1",), work=second)
        last = contents(pipeline.task("t3", ("t2",), work=third))
        seen = contents(pipeline.look(("t3",)))
        assert seen == last == {"a/fresh.txt": "f", "keep.txt": "back", "new-name.txt": "moved"}

    def test_a_task_that_changes_nothing_passes_its_input_on(self, pipeline: _Pipeline) -> None:
        pipeline.task("clone", work=lambda ws: _write(ws / "a.txt", "a\n"))
        pipeline.task("lint", ("clone",))
        assert contents(pipeline.look(("lint",))) == {"a.txt": "a\n"}

    # ---- the DAG ----

    def test_fan_in_merges_in_order_and_the_later_producer_wins(self, pipeline: _Pipeline) -> None:
        pipeline.task("clone", work=lambda ws: (_write(ws / "shared.txt", "clone\n"), _write(ws / "keep.txt", "k\n")))

        def left(ws: Path) -> None:
            _write(ws / "left.txt", "left\n")
            (ws / "shared.txt").write_text("left\n")

        def right(ws: Path) -> None:
            _write(ws / "right.txt", "right\n")
            (ws / "shared.txt").write_text("right\n")
            (ws / "keep.txt").unlink()

        pipeline.task("left", ("clone",), work=left)
        pipeline.task("right", ("clone",), work=right)
        merged = contents(pipeline.look(("left", "right")))
        assert merged == {"left.txt": "left\n", "right.txt": "right\n", "shared.txt": "right\n"}

    def test_a_skipped_producer_falls_back_to_its_own_inputs(self, pipeline: _Pipeline) -> None:
        pipeline.task("clone", work=lambda ws: _write(ws / "a.txt", "from clone\n"))
        pipeline.graph["maybe"] = ProducerNode(inputs=("clone",), order=len(pipeline.graph))  # never ran
        assert contents(pipeline.look(("maybe",))) == {"a.txt": "from clone\n"}

    def test_sub_path_shows_and_stores_only_that_prefix(self, pipeline: _Pipeline) -> None:
        pipeline.task("clone", work=lambda ws: (_write(ws / "app" / "main.c", "int main;\n"), _write(ws / "docs" / "r.md", "r\n")))
        pipeline.task("build", ("clone",), work=lambda ws: (
            _write(ws / "out.o", "obj\n"),
            None if sorted(os.listdir(ws)) == ["main.c", "out.o"] else pytest.fail(f"sub_path view holds {os.listdir(ws)}"),
        ), sub_path="app")
        assert contents(pipeline.look(("build",))) == {
            "app/main.c": "int main;\n", "app/out.o": "obj\n", "docs/r.md": "r\n",
        }

    def test_an_unbound_optional_workspace_is_left_alone(self, pipeline: _Pipeline) -> None:
        ws = pipeline.task("optional", work=lambda ws: _write(ws / "x", "x\n"), bound="false")
        assert contents(ws) == {"x": "x\n"}
        pipeline.task("after", ("optional",))
        assert contents(pipeline.look(("after",))) == {}

    # ---- the exact target ----

    def test_publish_writes_the_merged_final_state_to_the_exact_target(self, pipeline: _Pipeline) -> None:
        pipeline.task("a", work=lambda ws: _write(ws / "a", "a\n"))
        pipeline.task("b", ("a",), work=lambda ws: _write(ws / "b", "b\n"))
        pipeline.task("c", ("a",), work=lambda ws: _write(ws / "c", "c\n"))
        with pipeline.open() as handle:
            handle.publish(pipeline.spec("wrap-publish", ("b", "c"), publish=True))
            out = pipeline.tmp / "pulled"
            handle.pull(out)
        assert contents(out) == {"a": "a\n", "b": "b\n", "c": "c\n"}

    def test_the_last_producer_publishes_while_storing(self, pipeline: _Pipeline) -> None:
        pipeline.task("only", work=lambda ws: _write(ws / "result", "done\n"), publish=True)
        out = pipeline.tmp / "pulled"
        with pipeline.open() as handle:
            handle.pull(out)
        assert contents(out) == {"result": "done\n"}

    def test_push_then_pull_by_hand_round_trips(self, pipeline: _Pipeline) -> None:
        src = pipeline.tmp / "by-hand"
        _write(src / "seed" / "data.txt", "seed\n")
        out = pipeline.tmp / "pulled"
        with pipeline.open() as handle:
            handle.push(src)  # with the options the store was opened with
            handle.pull(out)
        assert contents(out) == {"seed/data.txt": "seed\n"}

    def test_pulling_a_target_that_was_never_written_is_a_not_found_error(self, pipeline: _Pipeline) -> None:
        with pipeline.open() as handle, pytest.raises(NotFoundError):
            handle.pull(pipeline.tmp / "nothing")

    # ---- isolation and failure ----

    def test_two_runs_sharing_one_target_never_see_each_other(self, setup: ConformanceTarget, tmp_path: Path) -> None:
        target = setup.new_target()
        runs = [_Pipeline(setup, target, tmp_path / str(i), f"run-{i}-{uuid.uuid4().hex[:8]}") for i in range(2)]
        errors: list[BaseException] = []

        def go(i: int, run: _Pipeline) -> None:
            try:
                run.task("clone", work=lambda ws: _write(ws / "who", f"run {i}\n"))
                run.task("build", ("clone",), work=lambda ws: _write(ws / f"only-{i}", "x\n"))
            except BaseException as exc:  # re-raised below
                errors.append(exc)

        threads = [threading.Thread(target=go, args=(i, run)) for i, run in enumerate(runs)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not errors, errors
        for i, run in enumerate(runs):
            assert contents(run.look(("build",))) == {"who": f"run {i}\n", f"only-{i}": "x\n"}

    def test_a_store_killed_midway_leaves_no_reference(self, pipeline: _Pipeline) -> None:
        """The reference is written last: a step killed mid-upload must not publish a state."""
        pipeline.task("clone", work=lambda ws: _write(ws / "a.txt", "a\n"))
        pipeline.graph["killed"] = ProducerNode(inputs=("clone",), order=len(pipeline.graph))
        spec = pipeline.spec("killed", ("clone",))
        ws, state = pipeline.tmp / "killed-ws", pipeline.tmp / "killed-state"
        ws.mkdir()
        state.mkdir()
        with pipeline.open() as handle:
            handle.fetch(spec, ws, state)
        for i in range(4):  # enough that no backend stores it within the wait below
            (ws / f"noise-{i}.bin").write_bytes(os.urandom(48 << 20))
        child = subprocess.Popen(
            [sys.executable, "-c", _STORE_IN_A_CHILD, spec.to_json(), str(ws), str(state)],
            stdout=subprocess.PIPE, text=True,
        )
        assert child.stdout is not None and child.stdout.readline().strip() == "storing"
        time.sleep(0.3)
        child.send_signal(signal.SIGKILL)
        code = child.wait()
        child.stdout.close()
        if code == 0:
            pytest.skip("the store finished before it could be interrupted")
        # The killed producer has no state: a consumer falls back to its input.
        seen = pipeline.look(("killed",))
        assert sorted(p.name for p in seen.iterdir()) == ["a.txt"]


    # ---- the delete side (wrapresolver.backends.reclaim) ----

    def test_reclaiming_a_finished_run_deletes_its_states_only_and_the_other_run_carries_on(
        self, setup: ConformanceTarget, tmp_path: Path,
    ) -> None:
        target = setup.new_target()
        done = _Pipeline(setup, target, tmp_path / "done", f"run-done-{uuid.uuid4().hex[:8]}")
        going = _Pipeline(setup, target, tmp_path / "going", f"run-going-{uuid.uuid4().hex[:8]}")
        done.task("clone", work=lambda ws: _write(ws / "who", "done\n"))
        going.task("clone", work=lambda ws: _write(ws / "who", "going\n"))
        done.task("build", ("clone",), work=lambda ws: _write(ws / "out", "built\n"), publish=True)
        with _raw_store(setup, target) as store:
            try:
                before = _state_names(store)
            except ReclaimUnsupported as exc:
                pytest.skip(f"the backend has no delete side: {exc}")
            mine = {producer_ref(done.run_id, "clone"), producer_ref(done.run_id, "build")}
            theirs = {producer_ref(going.run_id, "clone")}
            assert before == mine | theirs
            reclaimed = reclaim_run(store, done.run_id, ("clone", "build"))
            assert sorted(reclaimed.deleted) == sorted(mine)
            assert not reclaimed.failures, reclaimed.failures
            assert reclaimed.bytes > 0
            assert _state_names(store) == theirs
            again = reclaim_run(store, done.run_id, ("clone", "build"))
            assert again.deleted == []
        # The run still going stores and reads on with all its data...
        going.task("build", ("clone",), work=lambda ws: _write(ws / "out", "going built\n"))
        assert contents(going.look(("build",))) == {"who": "going\n", "out": "going built\n"}
        # ...and the published target of the reclaimed run is whole.
        out = tmp_path / "published"
        with done.open() as handle:
            handle.pull(out)
        assert contents(out) == {"who": "done\n", "out": "built\n"}

    def test_the_published_target_is_never_listed_for_deletion(self, pipeline: _Pipeline) -> None:
        pipeline.task("only", work=lambda ws: _write(ws / "result", "done\n"), publish=True)
        with _raw_store(pipeline.setup, pipeline.target) as store:
            try:
                items = stored_items(store)
            except ReclaimUnsupported as exc:
                pytest.skip(f"the backend has no delete side: {exc}")
            target_ref = getattr(store, "target_ref", "latest")
            assert target_ref not in {i.name for i in items if i.kind == STATE}
            delete_items(store, items)
        out = pipeline.tmp / "pulled"
        with pipeline.open() as handle:
            handle.pull(out)
        assert contents(out) == {"result": "done\n"}

    # ---- the early check: fail in the fetch, before the task's own steps ----

    def _probes(self, pipeline: _Pipeline) -> None:
        with _raw_store(pipeline.setup, pipeline.target) as store:
            if not store.probe(read=True, write=True):
                pytest.skip("the backend has no early check (`probe`): the store step reports access problems")

    def _refused(self, setup: ConformanceTarget, case: Unusable, tmp: Path,
                 monkeypatch: pytest.MonkeyPatch) -> TransferError:
        for name, value in case.env.items():
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        options = setup.options_for(case)
        spec = WorkspaceTransfer(workspace="src", target=case.target, run="probe", task="first",
                                 backend=setup.backend, options=options, stores=True)
        with pytest.raises(TransferError) as raised:
            with open_steps(get_backend(setup.backend), case.target, options) as handle:
                handle.fetch(spec, tmp / "ws", tmp / "state")
        assert case.target in str(raised.value) and "task 'first'" in str(raised.value)
        return raised.value

    def test_the_early_check_passes_and_leaves_no_state(self, pipeline: _Pipeline) -> None:
        self._probes(pipeline)
        assert not any(pipeline.look(()).iterdir())
        with pytest.raises(NotFoundError), pipeline.open() as handle:
            handle.pull(pipeline.tmp / "pulled")

    def test_the_early_check_of_an_unreachable_target_is_a_network_error(
        self, pipeline: _Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        if pipeline.setup.unreachable is None:
            pytest.skip("ConformanceTarget.unreachable is not set: the backend cannot be pointed at another address")
        self._probes(pipeline)
        case = pipeline.setup.unreachable(f"127.0.0.1:{closed_port()}")
        error = self._refused(pipeline.setup, case, tmp_path / "early", monkeypatch)
        assert isinstance(error, NetworkError), f"{type(error).__name__}: {error}"

    def test_the_early_check_without_credentials_is_an_auth_error(
        self, pipeline: _Pipeline, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        if pipeline.setup.denied is None:
            pytest.skip("ConformanceTarget.denied is not set: no credentials the server refuses")
        self._probes(pipeline)
        error = self._refused(pipeline.setup, pipeline.setup.denied(), tmp_path / "early", monkeypatch)
        assert isinstance(error, AuthError), f"{type(error).__name__}: {error}"


def _raw_store(setup: ConformanceTarget, target: str) -> Any:
    """The backend's own step half (BlobStore or WorkspaceStore), where the delete side lives."""
    return get_backend(setup.backend).open(target, dict(setup.options))


def _state_names(store: object) -> set[str]:
    return {item.name for item in stored_items(store) if item.kind == STATE}


_STORE_IN_A_CHILD = """
import pathlib, sys
from wrapresolver.backends.registry import get_backend
from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.steps.open_target import open_steps
spec = WorkspaceTransfer.from_json(sys.argv[1])
handle = open_steps(get_backend(spec.backend), spec.target, spec.options)
print("storing", flush=True)
handle.store(spec, pathlib.Path(sys.argv[2]), pathlib.Path(sys.argv[3]))
"""

