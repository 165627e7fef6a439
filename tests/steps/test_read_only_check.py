"""The store step of a readOnly workspace Tekton could not mount read-only: it stores nothing, and refuses writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.errors import TransferError
from wrapresolver.steps import runner
from wrapresolver.transfer import snapshot


class NoStore:
    """A store that must not be used: a readOnly check moves nothing."""

    def __getattr__(self, name: str):
        raise AssertionError(f"the read-only check called the store's {name}")


def fetched(tmp_path: Path, files: dict[str, str]) -> tuple[WorkspaceTransfer, Path, Path]:
    ws, state = tmp_path / "ws", tmp_path / "state"
    ws.mkdir()
    for name, text in files.items():
        (ws / name).parent.mkdir(parents=True, exist_ok=True)
        (ws / name).write_text(text)
    spec = WorkspaceTransfer(workspace="src", target="file:///s", run="r", task="lint", backend="file",
                             path=str(ws), read_only=True)
    runner.write_record(state, spec, {}, snapshot.take(ws))
    return spec, ws, state


def test_an_unchanged_read_only_workspace_stores_nothing_and_says_so(tmp_path: Path) -> None:
    spec, ws, state = fetched(tmp_path, {"app/main.c": "int main;"})
    (ws / "app" / "main.c").read_text()
    report = runner.store(NoStore(), spec, ws, state)
    assert report.detail == "readOnly: unchanged, nothing stored"


def test_a_write_into_a_read_only_workspace_fails_naming_the_task_workspace_and_paths(tmp_path: Path) -> None:
    spec, ws, state = fetched(tmp_path, {"app/main.c": "int main;", "old": "x"})
    (ws / "lint-report").write_text("findings")
    (ws / "old").unlink()
    with pytest.raises(TransferError, match=r"task 'lint' wrote into workspace 'src', which it declares readOnly: "
                                            r"lint-report, old \(deleted\) \(under .*ws\)\. On a shared volume"):
        runner.store(NoStore(), spec, ws, state)


def test_many_writes_are_named_up_to_a_bound_and_counted_beyond(tmp_path: Path) -> None:
    spec, ws, state = fetched(tmp_path, {})
    for i in range(runner.SHOWN_CHANGES + 3):
        (ws / f"f{i:02}").write_text("x")
    with pytest.raises(TransferError, match=r"f09 and 3 more \(under"):
        runner.store(NoStore(), spec, ws, state)
