"""What the step lines say: the same count of files on both sides, and targets named."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fixtures.cli import wrapresolver
from tests.fixtures.registry import Registry
from wrapresolver.backends.registry import get_backend
from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.errors import NotFoundError
from wrapresolver.steps.open_target import open_steps


def tree_with_directories(root: Path) -> None:
    """Three entries that count (two files and a symlink) in three directories that do not."""
    (root / "a" / "b").mkdir(parents=True)
    (root / "empty").mkdir()
    (root / "a" / "f").write_text("f")
    (root / "a" / "b" / "g").write_text("g")
    os.symlink("a/f", root / "link")


@pytest.fixture(params=["file", "oci", "rsync"])
def place(request, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """(backend, target) on a real server."""
    if request.param == "oci":
        monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
        return "oci", "oci://" + request.getfixturevalue("registry").repo("count")
    if request.param == "rsync":
        daemon = request.getfixturevalue("rsync_daemon")
        monkeypatch.setenv("RSYNC_PASSWORD", daemon.password)
        return "rsync", f"{daemon.url}/count-{os.urandom(4).hex()}"
    return "file", f"file://{tmp_path}/store/src"


def test_store_and_fetch_count_the_same_files_and_neither_counts_directories(tmp_path: Path, place) -> None:
    backend, target = place
    src, state = tmp_path / "src", tmp_path / "state"
    tree_with_directories(src)
    producer = WorkspaceTransfer(workspace="src", target=target, run="r", task="build", backend=backend)
    consumer = WorkspaceTransfer(workspace="src", target=target, run="r", task="test", backend=backend,
                                 inputs=("build",))
    with open_steps(get_backend(backend), target, {}) as steps:
        stored = steps.store(producer, src, state)
        fetched = steps.fetch(consumer, tmp_path / "dest", tmp_path / "state2")
    assert stored.files == 3 and fetched.files == 3, (stored.line(), fetched.line())


def test_an_incremental_store_counts_a_new_directory_as_nothing(tmp_path: Path) -> None:
    target = f"file://{tmp_path}/store/src"
    ws, state = tmp_path / "ws", tmp_path / "state"
    spec = WorkspaceTransfer(workspace="src", target=target, run="r", task="build", backend="file")
    with open_steps(get_backend("file"), target, {}) as steps:
        steps.fetch(spec, ws, state)
        (ws / "new" / "deeper").mkdir(parents=True)
        (ws / "new" / "deeper" / "file").write_text("x")
        assert steps.store(spec, ws, state).files == 1


def test_fetching_a_never_written_target_by_hand_names_the_target(tmp_path: Path) -> None:
    target = f"file://{tmp_path}/never"
    done = wrapresolver("fetch", "--target", target, "--path", str(tmp_path / "out"))
    assert done.returncode == 4, done.stderr
    assert f"no stored state under reference 'latest' at {target}" in done.stderr
    assert "run the Pipeline first" in done.stderr


def test_pulling_an_empty_registry_repository_names_the_repository(registry: Registry, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "none"))
    target = f"oci://{registry.repo('never')}"
    with open_steps(get_backend("oci"), target, {}) as steps, pytest.raises(NotFoundError) as raised:
        steps.pull(tmp_path / "out")
    assert f"under reference 'latest' at {target}" in str(raised.value)
