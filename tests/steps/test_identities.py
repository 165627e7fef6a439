"""`wrapresolver fetch` and `store` as the step containers run them: any UID, nothing else.

The injected steps run as a task's `runAsUser` (65532 here, a UID without passwd entry), as
an OpenShift random UID with GID 0, or as the image's default user; Tekton sets no `HOME`, the UID has no passwd entry,
and only the volumes are writable. The steps must find no need for any of that.
"""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

import pytest

from tests.fixtures.identities import NOBODY_UID, OPENSHIFT_UID, ForeignPython, has_passwd_entry, shared_dir
from tests.fixtures.registry import Registry
from tests.fixtures.rsyncd import RsyncDaemon
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer

IDENTITIES = [
    pytest.param(NOBODY_UID, NOBODY_UID, id="image-user-65532-without-passwd-entry"),
    pytest.param(OPENSHIFT_UID, 0, id="openshift-random-uid-with-gid-0"),
]


@pytest.fixture
def pod():
    """Directories standing in for a task's emptyDir volumes: writable by every UID."""
    root = shared_dir("wrap-pod-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


def transfer(target: str, backend: str, task: str, path: Path, inputs=()) -> list[str]:
    spec = WorkspaceTransfer(workspace="src", target=target, run="any-uid-run", task=task, backend=backend,
                             path=str(path), inputs=tuple(inputs), graph={t: ProducerNode() for t in inputs})
    return ["--workspace", spec.to_json()]


def emptydir(path: Path) -> Path:
    path.mkdir(parents=True)
    path.chmod(0o777)
    return path


def round_trip(python: ForeignPython, pod: Path, target: str, backend: str, uid: int, gid: int) -> None:
    """Task `make` writes, stores; task `test` (a new Pod) fetches it: all as uid:gid, empty env."""
    first = emptydir(pod / "make" / "ws")
    state = str(emptydir(pod / "make" / "state") / "wrap")
    done = python.run(["fetch", "--state-dir", state, *transfer(target, backend, "make", first)], uid=uid, gid=gid)
    assert done.returncode == 0, done.stderr
    (first / "bin").mkdir()
    (first / "bin" / "tool").write_text("built\n")
    shutil.chown(first / "bin", uid, gid)
    shutil.chown(first / "bin" / "tool", uid, gid)
    done = python.run(["store", "--state-dir", state, *transfer(target, backend, "make", first)], uid=uid, gid=gid)
    assert done.returncode == 0, done.stderr

    second = emptydir(pod / "test" / "ws")
    state = str(emptydir(pod / "test" / "state") / "wrap")
    done = python.run(["fetch", "--state-dir", state, *transfer(target, backend, "test", second, ["make"])],
                      uid=uid, gid=gid)
    assert done.returncode == 0, done.stderr
    assert (second / "bin" / "tool").read_text() == "built\n"
    assert (second / "bin" / "tool").stat().st_uid == uid, "a non-root fetch gives the files to its own user"


@pytest.mark.parametrize(("uid", "gid"), IDENTITIES)
def test_fetch_and_store_as_an_arbitrary_uid_with_an_empty_environment_through_file_target(
        foreign_python, pod, uid, gid):
    assert not has_passwd_entry(uid)
    store = emptydir(pod / "storage")
    round_trip(foreign_python, pod, f"file://{store}/src", "file", uid, gid)


@pytest.mark.parametrize(("uid", "gid"), IDENTITIES)
def test_fetch_and_store_as_an_arbitrary_uid_with_an_empty_environment_through_oci_registry(
        foreign_python, pod, registry: Registry, uid, gid):
    assert not has_passwd_entry(uid)
    round_trip(foreign_python, pod, registry.repo("any-uid"), "oci", uid, gid)


@pytest.mark.parametrize(("uid", "gid"), IDENTITIES)
def test_rsync_fetch_as_a_non_root_uid_into_a_root_owned_emptydir_succeeds(
        foreign_python, pod, rsync_daemon: RsyncDaemon, uid, gid):
    # A Pod's emptyDir is root's (mode 0777): a non-root step may fill it but not set the
    # times or mode of the directory itself, which rsync -a tries (exit 23).
    target = f"{rsync_daemon.url}/ci/{uuid.uuid4().hex[:10]}"
    env = {"RSYNC_PASSWORD": rsync_daemon.password}
    first = emptydir(pod / "make" / "ws")
    state = str(emptydir(pod / "make" / "state") / "wrap")
    args = transfer(target, "rsync", "make", first)
    assert (done := foreign_python.run(["fetch", "--state-dir", state, *args], uid=uid, gid=gid, env=env)).returncode == 0, done.stderr
    (first / "bin").mkdir()
    (first / "bin" / "tool").write_text("built\n")
    for path in (first / "bin", first / "bin" / "tool"):
        shutil.chown(path, uid, gid)
    assert (done := foreign_python.run(["store", "--state-dir", state, *args], uid=uid, gid=gid, env=env)).returncode == 0, done.stderr

    second = emptydir(pod / "test" / "ws")
    state = str(emptydir(pod / "test" / "state") / "wrap")
    args = transfer(target, "rsync", "test", second, ["make"])
    done = foreign_python.run(["fetch", "--state-dir", state, *args], uid=uid, gid=gid, env=env)
    assert done.returncode == 0, done.stderr
    assert (second / "bin" / "tool").read_text() == "built\n"
    assert (second / "bin" / "tool").stat().st_uid == uid


def test_store_to_a_registry_needing_credentials_without_home_or_docker_config_is_refused_in_words(
        foreign_python, pod, token_registry):
    """No HOME and no passwd entry: there is no `~/.docker/config.json` to read, which means
    no credentials, not a crash."""
    ws = emptydir(pod / "ws")
    (ws / "a.txt").write_text("a\n")
    target = token_registry.registry.repo("no-home")
    state = str(emptydir(pod / "state") / "wrap")
    args = transfer(target, "oci", "make", ws)
    assert foreign_python.run(["fetch", "--state-dir", state, *args], uid=NOBODY_UID, gid=NOBODY_UID).returncode == 0
    (ws / "b.txt").write_text("b\n")
    done = foreign_python.run(["store", "--state-dir", state, *args], uid=NOBODY_UID, gid=NOBODY_UID)
    assert done.returncode == 3, done.stderr
    assert "Traceback" not in done.stderr and "unexpected" not in done.stderr, done.stderr
    assert "DOCKER_CONFIG" in done.stderr, done.stderr


def test_store_as_an_arbitrary_uid_reads_its_docker_config_from_docker_config(foreign_python, pod, token_registry):
    from tests.fixtures.registry import docker_config

    registry = token_registry.registry
    config = docker_config(emptydir(pod / "docker"), registry.host, "pusher", "push-pass")
    (config / "config.json").chmod(0o644)
    ws = emptydir(pod / "ws")
    target = registry.repo("docker-config")
    state = str(emptydir(pod / "state") / "wrap")
    env = {"DOCKER_CONFIG": str(config)}
    args = transfer(target, "oci", "make", ws)
    assert foreign_python.run(["fetch", "--state-dir", state, *args], uid=NOBODY_UID, gid=NOBODY_UID,
                              env=env).returncode == 0
    (ws / "b.txt").write_text("b\n")
    done = foreign_python.run(["store", "--state-dir", state, *args], uid=NOBODY_UID, gid=NOBODY_UID, env=env)
    assert done.returncode == 0, done.stderr


def test_fetch_as_root_restores_the_recorded_owners_and_a_non_root_fetch_keeps_its_own(foreign_python, pod):
    """Root sees what a shared volume would show: each file's writer. Anyone else owns what it fetched."""
    store = f"file://{emptydir(pod / 'storage')}/src"
    made = emptydir(pod / "make" / "ws")
    state = str(emptydir(pod / "make" / "state") / "wrap")
    import subprocess
    import sys

    def as_root(action: str, path: Path, state: str, task: str, inputs=()) -> None:
        done = subprocess.run([sys.executable, "-m", "wrapresolver", action, "--state-dir", state,
                               *transfer(store, "file", task, path, inputs)], capture_output=True, text=True)
        assert done.returncode == 0, done.stderr

    as_root("fetch", made, state, "make")
    (made / "dir").mkdir(mode=0o700)
    (made / "dir" / "private").write_text("p\n")
    (made / "dir" / "private").chmod(0o600)
    (made / "team").write_text("t\n")
    os.chown(made / "dir", 1000, 1000)
    os.chown(made / "dir" / "private", 1000, 1000)
    os.chown(made / "team", OPENSHIFT_UID, 0)  # beyond ustar's 8 octal digits: a pax header
    os.symlink("team", made / "link")
    os.lchown(made / "link", 2000, 2000)
    as_root("store", made, state, "make")

    restored = emptydir(pod / "root" / "ws")
    as_root("fetch", restored, str(emptydir(pod / "root" / "state") / "wrap"), "test", ["make"])
    owners = {p.name: (p.lstat().st_uid, p.lstat().st_gid) for p in restored.rglob("*")}
    assert owners == {"dir": (1000, 1000), "private": (1000, 1000), "team": (OPENSHIFT_UID, 0), "link": (2000, 2000)}
    assert (restored / "dir").stat().st_mode & 0o777 == 0o700

    mine = emptydir(pod / "user" / "ws")
    done = foreign_python.run(["fetch", "--state-dir", str(emptydir(pod / "user" / "state") / "wrap"),
                               *transfer(store, "file", "test", mine, ["make"])], uid=3000, gid=3000)
    assert done.returncode == 0, done.stderr
    assert {(p.lstat().st_uid, p.lstat().st_gid) for p in mine.rglob("*")} == {(3000, 3000)}
    assert (mine / "dir" / "private").read_text() == "p\n"


def test_store_that_cannot_read_a_file_names_it_its_owner_and_the_fix(foreign_python, pod):
    store = f"file://{emptydir(pod / 'storage')}/src"
    ws = emptydir(pod / "ws")
    state = str(emptydir(pod / "state") / "wrap")
    args = transfer(store, "file", "make", ws)
    assert foreign_python.run(["fetch", "--state-dir", state, *args], uid=NOBODY_UID, gid=NOBODY_UID).returncode == 0
    (ws / "secret").write_text("s\n")
    (ws / "secret").chmod(0o600)  # a root step's private file
    done = foreign_python.run(["store", "--state-dir", state, *args], uid=NOBODY_UID, gid=NOBODY_UID)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    for words in ("secret", f"uid {NOBODY_UID}", "runAsUser"):
        assert words in done.stderr, done.stderr


def test_an_ssh_target_as_a_uid_without_passwd_entry_fails_in_words_not_in_ssh(foreign_python, pod, ssh_server):
    """OpenSSH's client will not run without a passwd entry for its UID; say so, and what to do."""
    ws = emptydir(pod / "ws")
    target = f"ssh://{ssh_server.user}@127.0.0.1:{ssh_server.port}{ssh_server.data_dir}/no-passwd"
    state = str(emptydir(pod / "state") / "wrap")
    args = transfer(target, "rsync", "make", ws)
    # The fetch's early check already runs ssh, so the task fails before its own steps.
    fetched = foreign_python.run(["fetch", "--state-dir", state, *args], uid=NOBODY_UID, gid=NOBODY_UID)
    assert fetched.returncode != 0 and "before its own steps run" in fetched.stderr, fetched.stderr
    (ws / "a").write_text("a\n")
    done = foreign_python.run(["store", "--state-dir", state, *args], uid=NOBODY_UID, gid=NOBODY_UID)
    assert done.returncode != 0
    for failed in (fetched, done):
        assert "Traceback" not in failed.stderr, failed.stderr
        assert f"uid {NOBODY_UID}, which has no passwd entry" in failed.stderr, failed.stderr
        assert "runAsUser" in failed.stderr
