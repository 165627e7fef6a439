"""The rsync backend over SSH against Debian's real sshd: parsing, step wiring, data path, errors."""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from pathlib import Path

import pytest

from tests.fixtures.sshd import SshServer, free_port
from wrapresolver.backends.registry import backend_for_scheme
from wrapresolver.backends.rsync import (
    BACKEND,
    KNOWN_HOSTS_MOUNT,
    SSH_KEY_ENV,
    SSH_KEY_MOUNT,
    SSH_KNOWN_HOSTS_ENV,
    SshSettings,
    parse_target,
)
from wrapresolver.backends.rsync.store import RsyncStore
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer
from wrapresolver.errors import AuthError, NetworkError, NotFoundError, ParamError
from wrapresolver.steps.open_target import Steps
from wrapresolver.testing.conformance import BackendConformance, ConformanceTarget

RUN = "5c2f0b17-run"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


# ---- targets ----

def test_ssh_url_is_parsed_into_user_host_port_and_absolute_path() -> None:
    t = parse_target("ssh://ci@build.example.com:2222/srv/workspaces/run-1")
    assert (t.transport, t.user, t.host, t.port, t.path) == (
        "ssh", "ci", "build.example.com", 2222, "srv/workspaces/run-1",
    )
    assert t.url("refs") == "ci@build.example.com:/srv/workspaces/run-1/refs"
    assert t.display("latest") == "ssh://ci@build.example.com:2222/srv/workspaces/run-1/latest"
    assert parse_target("ssh://host/srv/ws").port == 22


def test_scp_like_location_is_an_ssh_target_on_port_22() -> None:
    t = parse_target("git@build-host:/srv/ws/team")
    assert (t.transport, t.user, t.host, t.port, t.path) == ("ssh", "git", "build-host", 22, "srv/ws/team")
    assert t.url() == "git@build-host:/srv/ws/team"
    assert parse_target("build-host:/srv/ws", "ci").user == "ci"


def test_an_ipv6_host_is_bracketed_in_the_ssh_location() -> None:
    assert parse_target("ssh://ci@[fd00::5]:2200/data/x").url("refs") == "ci@[fd00::5]:/data/x/refs"
    assert parse_target("[fd00::5]:/data/x").host == "fd00::5"


def test_daemon_urls_keep_the_daemon_transport() -> None:
    t = parse_target("rsync://ci@host:8873/mod/path")
    assert t.transport == "rsync" and t.url("refs") == "rsync://ci@host:8873/mod/path/refs"


def test_ssh_is_a_scheme_of_the_rsync_backend() -> None:
    assert backend_for_scheme("ssh") is BACKEND
    assert backend_for_scheme("rsync") is BACKEND


def test_tekton_placeholders_in_ssh_targets_are_accepted_at_resolution_time() -> None:
    BACKEND.validate_target("ssh://ci@build-host/srv/ws/$(context.pipelineRun.name)/src")
    BACKEND.validate_target("ssh://$(params.user)@$(params.host):2222/srv/$(context.pipelineRun.uid)")
    BACKEND.validate_target("ci@build-host:/srv/ws/$(context.pipelineRun.name)")


@pytest.mark.parametrize("bad,hint", [
    ("build-host:ws", "must be absolute"),
    ("build-host:2222/srv/ws", "ssh://host:2222/absolute/path"),
    ("ssh://build-host", "root directory"),
    ("ssh://build-host/", "root directory"),
    ("ssh://build-host/srv/../etc", "'..'"),
    ("ssh://-oProxyCommand=x/srv", "no valid SSH host"),
    ("-oProxyCommand=x:/srv", "no valid SSH host"),
    ("ssh://build-host:notaport/srv", "invalid port"),
    ("ssh://build-host/srv?x=1", "query"),
    ("sftp://build-host/srv", "not an rsync:// URL or ssh:// URL"),
    ("just-a-name", "not an rsync target"),
])
def test_unusable_ssh_targets_are_param_errors_that_say_what_to_write(bad: str, hint: str) -> None:
    with pytest.raises(ParamError, match=hint.replace("?", r"\?").replace(".", r"\.")):
        BACKEND.validate_target(bad)


def test_a_password_in_an_ssh_url_is_refused_without_repeating_it() -> None:
    with pytest.raises(ParamError, match="ssh-privatekey") as caught:
        BACKEND.validate_target("ssh://ci:hunter2secret@host/srv/x")
    assert "hunter2secret" not in str(caught.value)


def test_known_hosts_configmap_is_an_option_and_checked_as_a_name() -> None:
    assert BACKEND.validate_options({"known-hosts-configmap": "ssh-known-hosts"}) == {
        "known-hosts-configmap": "ssh-known-hosts",
    }
    with pytest.raises(ParamError, match="not a valid Kubernetes ConfigMap name"):
        BACKEND.validate_options({"known-hosts-configmap": "Bad_Name"})


# ---- step requirements ----

def test_the_key_secret_is_mounted_read_only_and_never_inlined() -> None:
    reqs = BACKEND.step_requirements({"credentials-secret": "ssh-creds"})
    (volume,) = reqs.volumes
    assert volume == {
        "name": volume["name"],
        "secret": {
            "secretName": "ssh-creds",
            "items": [{"key": "ssh-privatekey", "path": "ssh-privatekey"}],
            "defaultMode": 0o400,
            "optional": True,
        },
    }
    assert reqs.volume_mounts == ({"name": volume["name"], "mountPath": SSH_KEY_MOUNT, "readOnly": True},)
    # The same Secret also serves daemon targets: its password by reference, never a value.
    assert reqs.env == ({
        "name": "RSYNC_PASSWORD",
        "valueFrom": {"secretKeyRef": {"name": "ssh-creds", "key": "password", "optional": True}},
    },)
    text = json.dumps([reqs.env, reqs.volumes, reqs.volume_mounts])
    assert "PRIVATE KEY" not in text and "value\": \"-----" not in text


def test_known_hosts_configmap_is_mounted_read_only_and_pointed_to() -> None:
    reqs = BACKEND.step_requirements({"known-hosts-configmap": "ssh-known-hosts"})
    (volume,) = reqs.volumes
    assert volume["configMap"]["name"] == "ssh-known-hosts"
    assert volume["configMap"]["items"] == [{"key": "known_hosts", "path": "known_hosts"}]
    assert reqs.volume_mounts == ({"name": volume["name"], "mountPath": KNOWN_HOSTS_MOUNT, "readOnly": True},)
    assert reqs.env == ()


def test_no_options_need_nothing_from_the_pod() -> None:
    reqs = BACKEND.step_requirements({})
    assert (reqs.env, reqs.volumes, reqs.volume_mounts) == ((), (), ())


def test_the_step_finds_the_mounted_key_and_known_hosts_from_the_options(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(SSH_KEY_ENV, raising=False)
    monkeypatch.delenv(SSH_KNOWN_HOSTS_ENV, raising=False)
    settings = SshSettings.from_step({"credentials-secret": "k", "known-hosts-configmap": "h"})
    assert settings.key == f"{SSH_KEY_MOUNT}/ssh-privatekey"
    assert settings.known_hosts == f"{KNOWN_HOSTS_MOUNT}/known_hosts"
    assert SshSettings.from_step({}) == SshSettings()


def test_env_vars_point_the_step_at_other_key_and_known_hosts_files(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(SSH_KEY_ENV, "/keys/id")
    monkeypatch.setenv(SSH_KNOWN_HOSTS_ENV, "/keys/known_hosts")
    settings = SshSettings.from_step({"credentials-secret": "k"})
    assert (settings.key, settings.known_hosts) == ("/keys/id", "/keys/known_hosts")


# ---- against the real sshd ----

@pytest.fixture
def ssh_env(ssh_server: SshServer, monkeypatch: pytest.MonkeyPatch) -> SshServer:
    """The step's env as step_requirements makes it, pointing at the fixture's client key."""
    monkeypatch.setenv(SSH_KEY_ENV, str(ssh_server.client_key))
    monkeypatch.delenv(SSH_KNOWN_HOSTS_ENV, raising=False)
    monkeypatch.delenv("RSYNC_PASSWORD", raising=False)
    return ssh_server


@pytest.fixture
def target(ssh_env: SshServer) -> str:
    return f"ssh://{ssh_env.user}@127.0.0.1:{ssh_env.port}{ssh_env.data_dir}/ssh/{uuid.uuid4().hex[:10]}"


def spec(target: str, task: str, inputs=(), graph=None, **kw) -> WorkspaceTransfer:
    return WorkspaceTransfer(
        workspace="src", target=target, run=RUN, task=task, backend="rsync",
        inputs=tuple(inputs), graph=graph or {}, **kw,
    )


def run_task(store: Steps, s: WorkspaceTransfer, tmp: Path, work=lambda d: None) -> Path:
    ws, state = tmp / f"ws-{s.task}", tmp / f"state-{s.task}"
    store.fetch(s, ws, state)
    work(ws)
    store.store(s, ws, state)
    return ws


def test_states_are_stored_in_the_same_layout_and_hard_linked_over_ssh(
    target: str, ssh_env: SshServer, tmp_path: Path
) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1)}
    with Steps(BACKEND.open(target, {})) as store:
        run_task(store, spec(target, "a", graph=graph), tmp_path, lambda d: (
            write(d / "keep.txt", "k"), write(d / "edit.txt", "old"),
        ))
        run_task(store, spec(target, "b", ["a"], graph, publish=True), tmp_path, lambda d: write(d / "edit.txt", "new"))
    root = Path("/" + parse_target(target).path)
    ref_a = json.loads((root / "refs" / f"{producer_ref(RUN, 'a')}.json").read_text())
    ref_b = json.loads((root / "refs" / f"{producer_ref(RUN, 'b')}.json").read_text())
    a_dir, b_dir = root / "states" / ref_a["state"], root / "states" / ref_b["state"]
    assert ref_b["layers"] == [ref_a["state"], ref_b["state"]]
    assert (b_dir / "keep.txt").stat().st_ino == (a_dir / "keep.txt").stat().st_ino
    assert (b_dir / "edit.txt").read_text() == "new"
    assert files(root / "latest") == {"edit.txt": "new", "keep.txt": "k"}
    assert json.loads((root / "refs" / "latest.json").read_text())["source"] == ref_b["state"]


def test_a_scp_like_target_reaches_the_same_files(target: str, ssh_env: SshServer, tmp_path: Path) -> None:
    t = parse_target(target)
    scp = f"{t.user}@127.0.0.1:/{t.path}"
    write(tmp_path / "seed" / "f", "seeded")
    with Steps(BACKEND.open(target, {})) as store:
        store.push(tmp_path / "seed")
    # scp-like targets carry no port (22): give the parsed target the fixture's port.
    where = dataclasses.replace(parse_target(scp), port=t.port)
    with Steps(RsyncStore(where, None, SshSettings(key=str(ssh_env.client_key)))) as store:
        store.pull(tmp_path / "out")
    assert files(tmp_path / "out") == {"f": "seeded"}


def test_the_throwaway_key_copy_and_known_hosts_are_removed_on_close(target: str, tmp_path: Path) -> None:
    store = Steps(BACKEND.open(target, {}))
    with pytest.raises(NotFoundError):
        store.pull(tmp_path / "out")
    session_dir = Path(store.inner.runner._session.dir)
    assert (session_dir / "known_hosts").is_file()
    assert oct((session_dir / "id").stat().st_mode & 0o777) == oct(0o600)
    store.close()
    assert not session_dir.exists()


def test_a_pinned_matching_host_key_is_accepted(
    target: str, ssh_env: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SSH_KNOWN_HOSTS_ENV, str(ssh_env.known_hosts(tmp_path / "kh" / "known_hosts")))
    write(tmp_path / "seed" / "f", "pinned")
    with Steps(BACKEND.open(target, {"known-hosts-configmap": "ssh-known-hosts"})) as store:
        store.push(tmp_path / "seed")
        store.pull(tmp_path / "out")
    assert files(tmp_path / "out") == {"f": "pinned"}


# ---- errors ----

def test_a_key_the_server_does_not_accept_is_an_auth_error_naming_the_secret(
    target: str, ssh_env: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SSH_KEY_ENV, str(ssh_env.other_key))
    store = Steps(BACKEND.open(target, {"credentials-secret": "ssh-creds"}))
    with pytest.raises(AuthError, match="credentials-secret.*ssh-privatekey") as caught:
        store.fetch(spec(target, "t", ["a"]), tmp_path / "w", tmp_path / "s")
    store.close()
    assert "PRIVATE KEY" not in str(caught.value)
    assert ssh_env.other_key.read_text().splitlines()[1] not in str(caught.value)
    assert caught.value.exit_code == 3


def test_a_missing_key_file_is_an_auth_error_naming_the_secret_key(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SSH_KEY_ENV, str(tmp_path / "no-such-key"))
    with Steps(BACKEND.open(target, {"credentials-secret": "ssh-creds"})) as store:
        with pytest.raises(AuthError, match="ssh-creds.*kubernetes.io/ssh-auth.*ssh-privatekey"):
            store.pull(tmp_path / "out")


def test_a_host_key_that_does_not_match_the_pinned_one_is_an_auth_error_naming_the_configmap(
    target: str, ssh_env: SshServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(SSH_KNOWN_HOSTS_ENV, str(ssh_env.known_hosts(tmp_path / "kh" / "known_hosts", pinned=False)))
    with Steps(BACKEND.open(target, {"known-hosts-configmap": "ssh-known-hosts"})) as store:
        with pytest.raises(AuthError, match="known-hosts-configmap") as caught:
            store.pull(tmp_path / "out")
    assert "ssh-known-hosts" in str(caught.value)
    assert caught.value.exit_code == 3


def test_a_server_missing_from_the_pinned_known_hosts_is_an_auth_error_naming_the_configmap(
    target: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv(SSH_KNOWN_HOSTS_ENV, str(empty))
    with Steps(BACKEND.open(target, {"known-hosts-configmap": "ssh-known-hosts"})) as store:
        with pytest.raises(AuthError, match="known-hosts-configmap"):
            store.pull(tmp_path / "out")


def test_a_closed_port_is_a_network_error_naming_host_and_port(ssh_env: SshServer, tmp_path: Path) -> None:
    port = free_port()
    with Steps(BACKEND.open(f"ssh://{ssh_env.user}@127.0.0.1:{port}{ssh_env.data_dir}/x", {})) as store:
        with pytest.raises(NetworkError, match=f"SSH server at 127.0.0.1:{port}") as caught:
            store.pull(tmp_path / "out")
    assert caught.value.exit_code == 5


def test_pulling_an_ssh_target_never_written_is_not_found(target: str, tmp_path: Path) -> None:
    with Steps(BACKEND.open(target, {})) as store, pytest.raises(NotFoundError, match="nothing was published to ssh://"):
        store.pull(tmp_path / "out")


def test_a_state_deleted_behind_the_run_is_not_found_on_the_ssh_server(
    target: str, tmp_path: Path
) -> None:
    with Steps(BACKEND.open(target, {})) as store:
        run_task(store, spec(target, "a"), tmp_path, lambda d: write(d / "f", "x"))
        root = Path("/" + parse_target(target).path)
        ref = json.loads((root / "refs" / f"{producer_ref(RUN, 'a')}.json").read_text())
        for path in sorted((root / "states" / ref["state"]).rglob("*"), reverse=True):
            path.unlink()
        os.rmdir(root / "states" / ref["state"])
        with pytest.raises(NotFoundError, match="missing on the SSH server"):
            store.fetch(spec(target, "b", ["a"], {"a": ProducerNode()}), tmp_path / "v", tmp_path / "sv")


# ---- the shared conformance suite ----

class TestRsyncOverSshConformance(BackendConformance):
    @pytest.fixture
    def conformance_target(self, ssh_server: SshServer, monkeypatch: pytest.MonkeyPatch) -> ConformanceTarget:
        monkeypatch.delenv("RSYNC_PASSWORD", raising=False)
        return ConformanceTarget(
            backend="rsync",
            new_target=lambda: (
                f"ssh://{ssh_server.user}@127.0.0.1:{ssh_server.port}"
                f"{ssh_server.data_dir}/conformance/{uuid.uuid4().hex[:12]}"
            ),
            options={"credentials-secret": "ssh-creds"},
            env={SSH_KEY_ENV: str(ssh_server.client_key)},
        )
