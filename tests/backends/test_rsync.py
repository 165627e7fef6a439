"""The rsync backend against Debian's real rsync daemon: parsing, layout, merges, errors."""

from __future__ import annotations

import json
import os
import shutil
import stat
import uuid
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from tests.fixtures.rsyncd import RsyncDaemon, free_port
from wrapresolver.backends.registry import backend_for_scheme, get_backend
from wrapresolver.backends.rsync import BACKEND, parse_target
from wrapresolver.backends.rsync.store import RsyncStore
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer
from wrapresolver.errors import AuthError, NetworkError, NotFoundError, ParamError
from wrapresolver.steps.open_target import Steps
from wrapresolver.testing.conformance import BackendConformance, ConformanceTarget, Unusable

RUN = "7d1e9a44-run"


# ---- trees and tasks ----

def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def files(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): (
            "<link>" if p.is_symlink() else p.read_text() if p.is_file() else "<dir>"
        )
        for p in sorted(root.rglob("*"))
    }


@pytest.fixture
def target(rsync_daemon: RsyncDaemon) -> str:
    """A fresh, empty target below the module for each test."""
    return f"{rsync_daemon.url}/ci/{uuid.uuid4().hex[:10]}"


@pytest.fixture
def store(target: str, rsync_daemon: RsyncDaemon, monkeypatch: pytest.MonkeyPatch) -> Steps:
    monkeypatch.setenv("RSYNC_PASSWORD", rsync_daemon.password)
    return Steps(BACKEND.open(target, {}))


def on_disk(daemon: RsyncDaemon, target: str) -> Path:
    """Where the daemon keeps a target's files, to check what it really stored."""
    return daemon.data_dir / parse_target(target).path


def ref_of(daemon: RsyncDaemon, target: str, task: str) -> dict:
    return json.loads((on_disk(daemon, target) / "refs" / f"{producer_ref(RUN, task)}.json").read_text())


def state_dir_of(daemon: RsyncDaemon, target: str, task: str) -> Path:
    return on_disk(daemon, target) / "states" / ref_of(daemon, target, task)["state"]


class Tasks:
    """Runs tasks the way the injected steps do: fetch into a fresh dir, work, store."""

    def __init__(self, store: Steps, tmp: Path, target: str) -> None:
        self.store, self.tmp, self.target = store, tmp, target
        self.count = 0

    def spec(self, task: str, inputs=(), graph=None, **kw) -> WorkspaceTransfer:
        return WorkspaceTransfer(
            workspace="src", target=self.target, run=RUN, task=task, backend="rsync",
            inputs=tuple(inputs), graph=graph or {}, **kw,
        )

    def fresh(self, name: str) -> Path:
        self.count += 1
        return self.tmp / f"{self.count:02}-{name}"

    def run(self, s: WorkspaceTransfer, work: Callable[[Path], object] = lambda d: None) -> Path:
        ws, state = self.fresh(f"ws-{s.task}"), self.fresh(f"state-{s.task}")
        self.store.fetch(s, ws, state)
        work(ws)
        self.store.store(s, ws, state)
        return ws

    def view(self, s: WorkspaceTransfer) -> Path:
        dest = self.fresh("view")
        self.store.fetch(s, dest, self.fresh("state-view"))
        return dest


@pytest.fixture
def tasks(store: Steps, tmp_path: Path, target: str) -> Tasks:
    return Tasks(store, tmp_path, target)


# ---- resolver half: targets, options, step requirements ----

def test_daemon_url_is_parsed_into_host_port_module_and_path() -> None:
    t = parse_target("rsync://ci@rsync.example.com:8873/workspaces/team/run-1")
    assert (t.user, t.host, t.port, t.module, t.path) == ("ci", "rsync.example.com", 8873, "workspaces", "team/run-1")
    assert t.url("refs") == "rsync://ci@rsync.example.com:8873/workspaces/team/run-1/refs"
    assert parse_target("rsync://host/mod").port == 873


def test_tekton_placeholders_in_the_path_are_accepted_at_resolution_time() -> None:
    BACKEND.validate_target("rsync://host/workspaces/$(context.pipelineRun.name)/src")
    BACKEND.validate_target("rsync://u@host:1873/workspaces/$(params.team)-$(context.pipelineRun.uid)")


@pytest.mark.parametrize("bad,hint", [
    ("rsync://host", "no rsync module"),
    ("rsync://host/", "no rsync module"),
    ("rsync://host/mod/../etc", "'..'"),
    ("s3://bucket/x", "not an rsync:// URL"),
    ("rsync://host:notaport/mod", "invalid port"),
    ("rsync://host/mod?x=1", "query"),
])
def test_unusable_targets_are_param_errors_that_say_what_to_write(bad: str, hint: str) -> None:
    with pytest.raises(ParamError, match=hint.replace("?", r"\?").replace(".", r"\.")):
        BACKEND.validate_target(bad)


def test_an_scp_like_location_with_a_relative_path_is_refused() -> None:
    with pytest.raises(ParamError, match="absolute"):
        BACKEND.validate_target("build-host:ws")


def test_a_password_in_the_url_is_refused_without_repeating_it() -> None:
    with pytest.raises(ParamError, match="credentials-secret") as caught:
        BACKEND.validate_target("rsync://ci:hunter2secret@host/mod/x")
    assert "hunter2secret" not in str(caught.value)


def test_user_comes_from_the_url_or_the_user_option_but_not_two_different_ones() -> None:
    assert parse_target("rsync://host/mod", "ci").user == "ci"
    assert parse_target("rsync://ci@host/mod", "ci").user == "ci"
    with pytest.raises(ParamError, match="one place"):
        parse_target("rsync://ci@host/mod", "other")


def test_options_are_checked_and_unknown_ones_named() -> None:
    assert BACKEND.validate_options({"credentials-secret": "rsync-creds", "user": "ci"}) == {
        "credentials-secret": "rsync-creds", "user": "ci",
    }
    with pytest.raises(ParamError, match="compression.*credentials-secret, known-hosts-configmap, user"):
        BACKEND.validate_options({"compression": "zstd"})
    with pytest.raises(ParamError, match="not a valid Kubernetes Secret name"):
        BACKEND.validate_options({"credentials-secret": "Bad_Name"})


def test_step_requirements_reference_the_secret_and_never_inline_a_value() -> None:
    reqs = BACKEND.step_requirements({"credentials-secret": "rsync-creds"})
    # Optional: one Secret name serves daemon targets (key `password`) and SSH targets
    # (key `ssh-privatekey`), and a missing key must not stop the pod from starting.
    assert reqs.env == ({
        "name": "RSYNC_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "rsync-creds", "key": "password", "optional": True}},
    },)
    assert all("value" not in env for env in reqs.env)
    assert BACKEND.step_requirements({}).env == ()


def test_backend_is_registered_by_name_and_by_scheme() -> None:
    assert get_backend("rsync") is BACKEND
    assert backend_for_scheme("rsync") is BACKEND


# ---- data path ----

def tricky_tree(root: Path) -> None:
    write(root / "src" / "main.c", "int main;\n")
    tool = root / "bin" / "tool.sh"
    write(tool, "#!/bin/sh\n")
    tool.chmod(0o755)
    (root / "empty" / "deeper").mkdir(parents=True)
    (root / "rel-link").symlink_to("src/main.c")
    (root / "dangling").symlink_to("no/such/file")
    os.link(root / "src" / "main.c", root / "hard.c")
    write(root / "with space\nand newline.txt", "odd name\n")
    os.utime(root / "src" / "main.c", (1_600_000_000, 1_600_000_000))


def test_round_trip_keeps_modes_symlinks_empty_dirs_hardlinks_and_mtimes(tasks: Tasks) -> None:
    tasks.run(tasks.spec("clone"), tricky_tree)
    view = tasks.view(tasks.spec("build", ["clone"], {"clone": ProducerNode()}))
    assert (view / "empty" / "deeper").is_dir()
    assert stat.S_IMODE((view / "bin" / "tool.sh").stat().st_mode) == 0o755
    assert os.readlink(view / "rel-link") == "src/main.c"
    assert os.readlink(view / "dangling") == "no/such/file"
    assert (view / "hard.c").stat().st_ino == (view / "src" / "main.c").stat().st_ino
    assert (view / "src" / "main.c").stat().st_mtime == 1_600_000_000
    assert (view / "with space\nand newline.txt").read_text() == "odd name\n"


def test_the_first_task_starts_empty(tasks: Tasks) -> None:
    assert files(tasks.view(tasks.spec("first"))) == {}


def test_incremental_store_hard_links_unchanged_files_on_the_daemon(
    tasks: Tasks, rsync_daemon: RsyncDaemon, target: str
) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1)}

    def many(d: Path) -> None:
        for i in range(50):
            (d / f"file{i:02}.bin").write_bytes(os.urandom(4096))

    tasks.run(tasks.spec("a", graph=graph), many)
    ws = tasks.fresh("ws-b")
    state = tasks.fresh("state-b")
    s = tasks.spec("b", ["a"], graph)
    tasks.store.fetch(s, ws, state)
    (ws / "file07.bin").write_bytes(os.urandom(4096))
    report = tasks.store.store(s, ws, state)
    assert report.bytes == 4096 and report.files == 1
    a_dir, b_dir = state_dir_of(rsync_daemon, target, "a"), state_dir_of(rsync_daemon, target, "b")
    assert a_dir != b_dir
    assert (b_dir / "file08.bin").stat().st_ino == (a_dir / "file08.bin").stat().st_ino
    assert (b_dir / "file08.bin").stat().st_nlink == 2
    assert (b_dir / "file07.bin").stat().st_ino != (a_dir / "file07.bin").stat().st_ino
    assert ref_of(rsync_daemon, target, "b")["layers"] == [a_dir.name, b_dir.name]


def test_a_task_that_changes_nothing_passes_its_input_state_on(
    tasks: Tasks, rsync_daemon: RsyncDaemon, target: str
) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1)}
    tasks.run(tasks.spec("a", graph=graph), lambda d: write(d / "f", "x"))
    tasks.run(tasks.spec("b", ["a"], graph))
    assert ref_of(rsync_daemon, target, "b")["state"] == ref_of(rsync_daemon, target, "a")["state"]


@pytest.mark.parametrize("b_order,c_order,winner", [(1, 2, "from c"), (2, 1, "from b")])
def test_fan_in_later_producer_in_merge_order_wins_conflicts(
    tasks: Tasks, b_order: int, c_order: int, winner: str
) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), b_order), "c": ProducerNode(("a",), c_order)}
    tasks.run(tasks.spec("a", graph=graph), lambda d: (write(d / "base.txt", "a"), write(d / "gone-in-c", "x")))
    tasks.run(tasks.spec("b", ["a"], graph), lambda d: (write(d / "same.txt", "from b"), write(d / "b.txt", "b")))
    tasks.run(tasks.spec("c", ["a"], graph), lambda d: (
        write(d / "same.txt", "from c"), write(d / "c.txt", "c"), os.unlink(d / "gone-in-c"),
    ))
    s = tasks.spec("d", ["b", "c"], graph)
    view = tasks.view(s)
    assert files(view) == {"base.txt": "a", "b.txt": "b", "c.txt": "c", "same.txt": winner}


def test_a_merged_state_stored_by_a_fan_in_task_is_fetched_whole_by_the_next(tasks: Tasks) -> None:
    graph = {
        "a": ProducerNode(), "b": ProducerNode(("a",), 1), "c": ProducerNode(("a",), 2),
        "d": ProducerNode(("b", "c"), 3),
    }
    tasks.run(tasks.spec("a", graph=graph), lambda d: write(d / "a", "a"))
    tasks.run(tasks.spec("b", ["a"], graph), lambda d: write(d / "b", "b"))
    tasks.run(tasks.spec("c", ["a"], graph), lambda d: write(d / "c", "c"))
    tasks.run(tasks.spec("d", ["b", "c"], graph), lambda d: write(d / "d", "d"))
    view = tasks.view(tasks.spec("e", ["d"], graph))
    assert files(view) == {"a": "a", "b": "b", "c": "c", "d": "d"}


def test_a_skipped_producer_falls_back_to_its_own_inputs(tasks: Tasks) -> None:
    graph = {"clone": ProducerNode(), "lint": ProducerNode(("clone",), 1)}
    tasks.run(tasks.spec("clone", graph=graph), lambda d: write(d / "f", "clone"))
    dest = tasks.fresh("v")
    report = tasks.store.fetch(tasks.spec("test", ["lint"], graph), dest, tasks.fresh("sv"))
    assert files(dest) == {"f": "clone"}
    assert "lint has no stored state" in report.detail


def test_sub_path_task_sees_and_stores_only_its_prefix(tasks: Tasks) -> None:
    graph = {"a": ProducerNode(), "docs": ProducerNode(("a",), 1)}
    tasks.run(tasks.spec("a", graph=graph), lambda d: (write(d / "docs" / "old.md", "o"), write(d / "src" / "x.c", "x")))
    ws = tasks.run(
        tasks.spec("docs", ["a"], graph, sub_path="docs"),
        lambda d: (os.unlink(d / "old.md"), write(d / "new.md", "n")),
    )
    assert files(ws) == {"new.md": "n"}
    view = tasks.view(tasks.spec("check", ["docs"], graph))
    assert files(view) == {"docs": "<dir>", "docs/new.md": "n", "src": "<dir>", "src/x.c": "x"}


def test_sub_path_that_does_not_exist_yet_starts_empty(tasks: Tasks) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1)}
    tasks.run(tasks.spec("a", graph=graph), lambda d: write(d / "src" / "x.c", "x"))
    ws = tasks.run(tasks.spec("b", ["a"], graph, sub_path="out/bin"), lambda d: write(d / "app", "bin"))
    assert files(ws) == {"app": "bin"}
    view = tasks.view(tasks.spec("check", ["b"], graph))
    assert files(view) == {"out": "<dir>", "out/bin": "<dir>", "out/bin/app": "bin", "src": "<dir>", "src/x.c": "x"}


def test_store_with_publish_writes_latest_hard_linked_to_the_state(
    tasks: Tasks, rsync_daemon: RsyncDaemon, target: str, tmp_path: Path
) -> None:
    tasks.run(tasks.spec("only", publish=True), lambda d: write(d / "f", "final"))
    latest = on_disk(rsync_daemon, target) / "latest"
    assert files(latest) == {"f": "final"}
    assert (latest / "f").stat().st_ino == (state_dir_of(rsync_daemon, target, "only") / "f").stat().st_ino
    out = tmp_path / "pulled"
    tasks.store.pull(out)
    assert files(out) == {"f": "final"}


def test_publish_writes_the_merge_of_the_inputs_to_latest(
    tasks: Tasks, rsync_daemon: RsyncDaemon, target: str
) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1), "c": ProducerNode(("a",), 2)}
    tasks.run(tasks.spec("a", graph=graph), lambda d: write(d / "a", "a"))
    tasks.run(tasks.spec("b", ["a"], graph), lambda d: write(d / "b", "b"))
    tasks.run(tasks.spec("c", ["a"], graph), lambda d: (write(d / "c", "c"), write(d / "a", "changed by c")))
    report = tasks.store.publish(tasks.spec("wrap-publish", ["b", "c"], graph))
    assert report.layers == 3 and report.bytes == 0  # every file hard-linked, no data uploaded
    root = on_disk(rsync_daemon, target)
    assert files(root / "latest") == {"a": "changed by c", "b": "b", "c": "c"}
    assert json.loads((root / "refs" / "latest.json").read_text())["task"] == "wrap-publish"


def test_an_unbound_optional_workspace_is_left_alone(
    tasks: Tasks, rsync_daemon: RsyncDaemon, target: str, tmp_path: Path
) -> None:
    s = tasks.spec("a", bound="false")
    assert tasks.store.fetch(s, tmp_path / "ws", tmp_path / "st").files == 0
    assert tasks.store.store(s, tmp_path / "missing", tmp_path / "st").layers == 0
    assert not (on_disk(rsync_daemon, target) / "refs").exists()


def test_store_without_a_fetch_record_stores_the_whole_tree(tasks: Tasks, tmp_path: Path) -> None:
    write(tmp_path / "src" / "f", "x")
    report = tasks.store.store(tasks.spec("hand"), tmp_path / "src", tmp_path / "no-state")
    assert "whole tree" in report.detail
    assert files(tasks.view(tasks.spec("next", ["hand"], {"hand": ProducerNode()}))) == {"f": "x"}


def test_a_retry_overwrites_its_own_reference(tasks: Tasks) -> None:
    tasks.run(tasks.spec("a"), lambda d: write(d / "f", "first try"))
    tasks.run(tasks.spec("a"), lambda d: write(d / "f", "second try"))
    assert files(tasks.view(tasks.spec("b", ["a"], {"a": ProducerNode()}))) == {"f": "second try"}


def test_base_seeds_the_first_task_from_another_target(
    tasks: Tasks, rsync_daemon: RsyncDaemon, tmp_path: Path
) -> None:
    base = f"{rsync_daemon.url}/bases/{uuid.uuid4().hex[:8]}"
    write(tmp_path / "seed" / "template" / "README", "from base")
    Steps(RsyncStore(parse_target(base), rsync_daemon.password)).push(tmp_path / "seed")
    ws = tasks.run(tasks.spec("init", base=base), lambda d: write(d / "own.txt", "own"))
    assert files(ws)["template/README"] == "from base"
    view = tasks.view(tasks.spec("next", ["init"], {"init": ProducerNode()}))
    assert files(view) == {"own.txt": "own", "template": "<dir>", "template/README": "from base"}


def test_a_base_that_does_not_exist_yet_starts_empty_or_fails_when_required(
    tasks: Tasks, rsync_daemon: RsyncDaemon, tmp_path: Path
) -> None:
    base = f"{rsync_daemon.url}/bases/{uuid.uuid4().hex[:8]}"
    ws = tasks.run(tasks.spec("init", base=base), lambda d: write(d / "own.txt", "own"))
    assert files(ws) == {"own.txt": "own"}
    view = tasks.view(tasks.spec("next", ["init"], {"init": ProducerNode()}))
    assert files(view) == {"own.txt": "own"}
    required = replace(tasks.spec("again", base=base), base_required=True)
    with pytest.raises(NotFoundError, match="base-missing"):
        tasks.store.fetch(required, tmp_path / "w", tmp_path / "s")


# ---- errors ----

def test_a_wrong_password_is_an_auth_error_naming_the_secret_not_the_password(
    target: str, tmp_path: Path
) -> None:
    bad = Steps(RsyncStore(parse_target(target), "not-the-password-42"))
    with pytest.raises(AuthError, match="credentials-secret.*RSYNC_PASSWORD") as caught:
        bad.fetch(WorkspaceTransfer("src", target, RUN, "t", "rsync", inputs=("a",)), tmp_path / "w", tmp_path / "s")
    assert "not-the-password-42" not in str(caught.value)
    assert caught.value.exit_code == 3


def test_pulling_a_target_never_written_is_not_found(store: Steps, tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="nothing was published"):
        store.pull(tmp_path / "out")


def test_a_referenced_state_deleted_behind_the_run_is_not_found(
    tasks: Tasks, rsync_daemon: RsyncDaemon, target: str
) -> None:
    tasks.run(tasks.spec("a"), lambda d: write(d / "f", "x"))
    shutil.rmtree(state_dir_of(rsync_daemon, target, "a"))
    dest = tasks.fresh("victim")
    with pytest.raises(NotFoundError, match="missing on the rsync daemon"):
        tasks.store.fetch(tasks.spec("b", ["a"], {"a": ProducerNode()}), dest, tasks.fresh("sv"))
    assert list(dest.iterdir()) == []


def test_an_unknown_module_is_not_found_naming_the_module(rsync_daemon: RsyncDaemon, tmp_path: Path) -> None:
    url = rsync_daemon.url.replace("/workspaces", "/nosuchmodule") + "/x"
    with pytest.raises(NotFoundError, match="nosuchmodule"):
        Steps(RsyncStore(parse_target(url), rsync_daemon.password)).pull(tmp_path / "out")


def test_a_closed_port_is_a_network_error_naming_host_and_port(tmp_path: Path) -> None:
    port = free_port()
    store = Steps(RsyncStore(parse_target(f"rsync://u@127.0.0.1:{port}/workspaces/x"), "pw"))
    with pytest.raises(NetworkError, match=f"127.0.0.1:{port}"):
        store.pull(tmp_path / "out")


def test_a_rewrite_that_keeps_size_and_mtime_is_still_stored(tasks: Tasks) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1)}
    tasks.run(tasks.spec("a", graph=graph), lambda d: write(d / "f", "old!"))

    def sneaky(d: Path) -> None:
        before = (d / "f").stat()
        (d / "f").unlink()
        write(d / "f", "new!")
        os.utime(d / "f", ns=(before.st_atime_ns, before.st_mtime_ns))

    tasks.run(tasks.spec("b", ["a"], graph), sneaky)
    assert files(tasks.view(tasks.spec("c", ["b"], graph))) == {"f": "new!"}


# ---- the shared conformance suite ----

class TestRsyncConformance(BackendConformance):
    @pytest.fixture
    def conformance_target(self, rsync_daemon: RsyncDaemon) -> ConformanceTarget:
        return ConformanceTarget(
            backend="rsync",
            new_target=lambda: f"{rsync_daemon.url}/conformance/{uuid.uuid4().hex[:12]}",
            options={},
            env={"RSYNC_PASSWORD": rsync_daemon.password},
            unreachable=lambda netloc: Unusable(f"rsync://wsuser@{netloc}/workspaces/x"),
            denied=lambda: Unusable(f"{rsync_daemon.url}/conformance/denied", env={"RSYNC_PASSWORD": "wrong"}),
        )


def test_a_download_tolerates_only_the_volume_directorys_own_times_and_mode() -> None:
    from wrapresolver.backends.rsync.process import RunResult, _only_top_attrs

    summary = "rsync error: some files/attrs were not transferred (see previous errors) (code 23) at main.c(1338)"
    top = 'rsync: [generator] failed to set times on "/workspace/src/.": Operation not permitted (1)'
    mode = 'rsync: [generator] failed to set permissions on "/workspace/src/.": Operation not permitted (1)'
    inner = 'rsync: [generator] failed to set times on "/workspace/src/pkg": Operation not permitted (1)'
    into = Path("/workspace/src")
    assert _only_top_attrs(RunResult(23, f"{top}\n{mode}\n{summary}\n"), into)
    assert not _only_top_attrs(RunResult(23, f"{top}\n{inner}\n{summary}\n"), into), "an entry inside failed"
    assert not _only_top_attrs(RunResult(23, f"{summary}\n"), into), "no complaint named: not ours to excuse"
    assert not _only_top_attrs(RunResult(12, f"{top}\n"), into), "only a partial transfer (23) is excused"
    assert not _only_top_attrs(RunResult(23, f"{top}\n"), None), "uploads are never excused"
