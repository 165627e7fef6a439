"""`wrapresolver fetch | store | publish` as a process: the injected form, by hand, exit codes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from tests.fixtures.cli import wrapresolver as run_cli
from tests.fixtures.registry import Registry, free_port
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer

RUN = "5b1e-cli-run"


def wrapresolver(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return run_cli(*args, env=env, timeout=120)


def spec(tmp: Path, workspace: str, task: str, path: Path, inputs=(), graph=None, **extra) -> str:
    return WorkspaceTransfer(
        workspace=workspace, target=f"file://{tmp}/store-{workspace}", run=RUN, task=task,
        backend="file", path=str(path), inputs=tuple(inputs), graph=graph or {}, **extra,
    ).to_json()


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def test_injected_steps_move_two_workspaces_and_log_one_line_each(tmp_path: Path) -> None:
    src, cache = tmp_path / "a" / "src", tmp_path / "a" / "cache"
    src.mkdir(parents=True)
    cache.mkdir(parents=True)
    specs = [spec(tmp_path, "src", "clone", src), spec(tmp_path, "cache", "clone", cache)]
    args = [a for s in specs for a in ("--workspace", s)]
    state = str(tmp_path / "a" / "state")
    fetched = wrapresolver("fetch", "--state-dir", state, *args)
    assert fetched.returncode == 0, fetched.stderr
    write(src / "main.c", "int main;\n")
    write(cache / "deps" / "lib.a", "lib\n")
    stored = wrapresolver("store", "--state-dir", state, *args)
    assert stored.returncode == 0, stored.stderr
    lines = stored.stdout.strip().splitlines()
    assert sorted(line.split(":")[0] for line in lines) == ["wrap store cache", "wrap store src"]
    assert all("files" in line and "MB/s" in line for line in lines)

    # The next task, in fresh directories, sees both.
    graph = {"clone": ProducerNode()}
    src2, cache2 = tmp_path / "b" / "src", tmp_path / "b" / "cache"
    src2.mkdir(parents=True)
    cache2.mkdir(parents=True)
    specs = [spec(tmp_path, "src", "build", src2, ["clone"], graph), spec(tmp_path, "cache", "build", cache2, ["clone"], graph)]
    done = wrapresolver("fetch", "--state-dir", str(tmp_path / "b" / "state"), *[a for s in specs for a in ("--workspace", s)])
    assert done.returncode == 0, done.stderr
    assert "(from clone)" in done.stdout
    assert (src2 / "main.c").read_text() == "int main;\n" and (cache2 / "deps" / "lib.a").read_text() == "lib\n"


def test_an_unbound_optional_workspace_is_skipped_quietly(tmp_path: Path) -> None:
    done = wrapresolver("fetch", "--state-dir", str(tmp_path / "s"), "--workspace",
                        spec(tmp_path, "src", "t", tmp_path / "absent", bound="false"))
    assert done.returncode == 0, done.stderr
    assert "not bound" in done.stdout


def test_by_hand_store_then_fetch_round_trips_and_refuses_a_non_empty_directory(tmp_path: Path) -> None:
    write(tmp_path / "seed" / "tools" / "cc", "cc\n")
    target = f"file://{tmp_path}/hand:v1"
    stored = wrapresolver("store", "--path", str(tmp_path / "seed"), "--target", target, "--option", "compression=gzip")
    assert stored.returncode == 0, stored.stderr
    fetched = wrapresolver("fetch", "--target", target, "--path", str(tmp_path / "out"))
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "out" / "tools" / "cc").read_text() == "cc\n"
    again = wrapresolver("fetch", "--target", target, "--path", str(tmp_path / "out"))
    assert again.returncode == 2 and "is not empty" in again.stderr


def test_by_hand_a_sub_path_fetches_one_directory(tmp_path: Path) -> None:
    write(tmp_path / "seed" / "a" / "x", "x\n")
    write(tmp_path / "seed" / "b" / "y", "y\n")
    target = f"file://{tmp_path}/hand"
    assert wrapresolver("store", "--path", str(tmp_path / "seed"), "--target", target).returncode == 0
    done = wrapresolver("fetch", "--target", target, "--path", str(tmp_path / "out"), "--sub-path", "b")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["y"]


@pytest.mark.parametrize(
    "args,code,words",
    [
        (["fetch", "--workspace", "{not json"], 2, ["error"]),
        (["fetch"], 2, ["--target and --path"]),
        (["publish"], 2, ["at least one --workspace"]),
        (["store", "--target", "ftp://x/y", "--path", "."], 2, ["no installed backend handles", "ftp"]),
        (["fetch", "--target", "oci://registry.example/a/b", "--path", "x", "--option", "colour=blue"], 2, ["unknown param(s) colour"]),
    ],
)
def test_usage_errors_exit_2_with_a_message(args: list[str], code: int, words: list[str], tmp_path: Path) -> None:
    done = wrapresolver(*args)
    assert done.returncode == code, done.stderr
    for word in words:
        assert word in done.stderr


def test_a_newer_spec_version_tells_to_upgrade_the_step_image(tmp_path: Path) -> None:
    data = json.loads(spec(tmp_path, "src", "t", tmp_path))
    data["v"] = 99
    done = wrapresolver("fetch", "--state-dir", str(tmp_path / "s"), "--workspace", json.dumps(data))
    assert done.returncode == 2 and "step image at least as new as the resolver" in done.stderr


def test_a_missing_target_exits_4(tmp_path: Path) -> None:
    done = wrapresolver("fetch", "--target", f"file://{tmp_path}/never", "--path", str(tmp_path / "out"))
    assert done.returncode == 4, done.stderr
    assert "no stored state" in done.stderr


def test_an_unreachable_registry_exits_5_naming_it(tmp_path: Path) -> None:
    port = free_port()
    done = wrapresolver("fetch", "--target", f"127.0.0.1:{port}/a/b", "--path", str(tmp_path / "out"),
                        env={"DOCKER_CONFIG": str(tmp_path)})
    assert done.returncode == 5, done.stderr
    assert f"127.0.0.1:{port}" in done.stderr


def test_refused_credentials_exit_3(tls_registry: Registry, tmp_path: Path) -> None:
    write(tmp_path / "seed" / "a", "a")
    done = wrapresolver("store", "--path", str(tmp_path / "seed"), "--target", tls_registry.repo("cli"),
                        env={"DOCKER_CONFIG": str(tmp_path), "SSL_CERT_FILE": str(tls_registry.ca_file)})
    assert done.returncode == 3, done.stderr
    assert "requires authentication" in done.stderr


def test_one_failing_workspace_fails_the_step_but_the_other_still_moves(tmp_path: Path) -> None:
    good = tmp_path / "good"
    write(good / "ok.txt", "ok\n")
    bad_spec = WorkspaceTransfer(
        workspace="bad", target=f"file://{tmp_path}/store-bad", run=RUN, task="t", backend="file",
        path=str(tmp_path / "bad"), inputs=("never-ran-and-unknown",), base=f"file://{tmp_path}/no-base",
        base_required=True,
    ).to_json()
    done = wrapresolver("fetch", "--state-dir", str(tmp_path / "s"),
                        "--workspace", spec(tmp_path, "good", "t", tmp_path / "good-out"), "--workspace", bad_spec)
    assert done.returncode == 4, done.stderr
    assert "wrap fetch bad: error:" in done.stderr and "wrap fetch good:" in done.stdout
