"""The fetch step fails before the task's own steps when the task cannot use its target.

Each backend against its real server: a port nobody listens on, credentials that are wrong
or missing, credentials that may read but not write (for a task that stores), and the
same fetch going through when the access is there. Every failure must name the task and
the target, carry the backend's own words, and keep the backend's error class (exit code).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.fixtures.identities import NOBODY_UID, ForeignPython, shared_dir
from tests.fixtures.ports import free_port
from tests.fixtures.registry import Registry, TokenRegistry, docker_config
from tests.fixtures.rsyncd import READ_ONLY_MODULE, RsyncDaemon
from tests.fixtures.s3server import NO_LIST_KEY, NO_LIST_SECRET, READER_KEY, READER_SECRET, S3Server
from wrapresolver.backends.base import BlobStore
from wrapresolver.backends.oci import client as client_module
from wrapresolver.backends.registry import get_backend
from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.errors import AuthError, NetworkError, NotFoundError, TransferError
from wrapresolver.steps import runner
from wrapresolver.steps.engine import LayeredStore
from wrapresolver.steps.open_target import open_steps

RUN = "early-run"


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test states its credentials; nothing comes from the machine's own configuration."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setattr(client_module, "_TOKENS", client_module.TokenCache())
    monkeypatch.setattr(client_module, "DEFAULT_ATTEMPTS", 2)  # a dead port: fail in a second, not eight
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE", "RSYNC_PASSWORD"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))


def spec(backend: str, target: str, *, stores: bool = True, inputs: tuple[str, ...] = (), **options: str) -> WorkspaceTransfer:
    return WorkspaceTransfer(
        workspace="src", target=target, run=RUN, task="clone", backend=backend, inputs=inputs,
        stores=stores, options=options,
    )


def fetch(ws: WorkspaceTransfer, tmp_path: Path):
    with open_steps(get_backend(ws.backend), ws.target, ws.options) as steps:
        return steps.fetch(ws, tmp_path / "ws", tmp_path / "state")


def fails(ws: WorkspaceTransfer, tmp_path: Path, error: type[TransferError]) -> str:
    with pytest.raises(error) as raised:
        fetch(ws, tmp_path)
    message = str(raised.value)
    # Always: which task, which target, and that the task's own steps did not start.
    assert "task 'clone'" in message and ws.target in message and "before its own steps run" in message, message
    assert not any((tmp_path / "ws").iterdir()) if (tmp_path / "ws").exists() else True
    return message


# ---- oci ----

def test_oci_unreachable_registry_fails_the_fetch_of_a_first_task(tmp_path: Path) -> None:
    target = f"oci://127.0.0.1:{free_port()}/ci/src"
    message = fails(spec("oci", target), tmp_path, NetworkError)
    assert "needs to read and write" in message and "cannot reach registry" in message


def test_oci_registry_without_credentials_is_denied_before_the_work(tls_registry: Registry, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.ca_file))
    message = fails(spec("oci", "oci://" + tls_registry.repo("early")), tmp_path, AuthError)
    assert "requires authentication and no credentials were found" in message and "DOCKER_CONFIG" in message


def test_oci_wrong_password_is_denied_before_the_work(tls_registry: Registry, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.ca_file))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "docker", tls_registry.host, "ci", "wrong")))
    message = fails(spec("oci", "oci://" + tls_registry.repo("early")), tmp_path, AuthError)
    assert "refused to let us read" in message and "401" in message


def test_oci_read_only_credentials_fail_a_storing_task_but_serve_a_reading_one(
    token_registry: TokenRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = token_registry.registry
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "docker", registry.host, "reader", "read-pass")))
    target = "oci://" + registry.repo("early")
    message = fails(spec("oci", target), tmp_path / "stores", AuthError)
    assert "needs to read and write" in message and "push" in message
    # A task that only reads the workspace needs no push right: the same credentials do.
    report = fetch(spec("oci", target, stores=False), tmp_path / "reads")
    assert report.files == 0


def test_oci_write_check_stores_nothing_in_the_registry(registry: Registry, tmp_path: Path) -> None:
    repo = registry.repo("early")
    report = fetch(spec("oci", "oci://" + repo), tmp_path)
    assert report.detail == "empty"
    name = repo.split("/", 1)[1]
    tags = httpx.get(f"http://{registry.host}/v2/{name}/tags/list")
    assert tags.status_code == 404 or not tags.json().get("tags"), tags.text


def test_oci_unreachable_registry_fails_a_reading_task_naming_the_target(tmp_path: Path) -> None:
    """No check is added where the fetch reads anyway; its own failure names the target too."""
    target = f"oci://127.0.0.1:{free_port()}/ci/src"
    message = fails(spec("oci", target, stores=False, inputs=("clone",)), tmp_path, NetworkError)
    assert "needs to read target" in message and "cannot reach registry" in message


# ---- s3 ----

def test_s3_unreachable_endpoint_fails_the_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    ws = spec("s3", "s3://bucket/ci/src", endpoint=f"http://127.0.0.1:{free_port()}", **{"path-style": "true"})
    message = fails(ws, tmp_path, NetworkError)
    assert "cannot reach" in message and "endpoint" in message


def test_s3_missing_bucket_is_named_before_the_work(s3_server: S3Server, tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    ws = spec("s3", "s3://no-such-bucket-early/ci/src", **s3_server.options())
    message = fails(ws, tmp_path, NotFoundError)
    assert "bucket 'no-such-bucket-early' does not exist" in message


def test_s3_wrong_credentials_are_denied_before_the_work(s3_server: S3Server, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    bucket = s3_server.new_bucket()
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-value")
    with s3_server.checking_signatures():
        message = fails(spec("s3", f"s3://{bucket}/ci/src", **s3_server.options()), tmp_path, AuthError)
    assert "access denied" in message and "credentials-secret" in message
    assert "not-the-secret-value" not in message


def test_s3_read_only_identity_fails_a_storing_task_but_serves_a_reading_one(
    seaweedfs: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", READER_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", READER_SECRET)
    target = f"s3://{seaweedfs.shared_bucket}/early-{os.urandom(4).hex()}/src"
    message = fails(spec("s3", target, **seaweedfs.options()), tmp_path / "stores", AuthError)
    assert "needs to read and write" in message and "access denied" in message and "uploading" in message
    assert fetch(spec("s3", target, stores=False, **seaweedfs.options()), tmp_path / "reads").files == 0


def test_s3_identity_that_may_not_list_passes_the_check_and_stores(
    seaweedfs: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The check asks no more than the steps need: without s3:ListBucket it looks up by name."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", NO_LIST_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", NO_LIST_SECRET)
    from botocore.exceptions import ClientError

    with pytest.raises(ClientError, match="AccessDenied"):  # the premise: this identity really may not list
        seaweedfs.client(NO_LIST_KEY, NO_LIST_SECRET).list_objects_v2(Bucket=seaweedfs.shared_bucket, MaxKeys=1)
    ws = spec("s3", f"s3://{seaweedfs.shared_bucket}/early-{os.urandom(4).hex()}/src", **seaweedfs.options())
    assert fetch(ws, tmp_path).detail == "empty"


def test_s3_write_check_leaves_nothing_behind(seaweedfs: S3Server, tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    prefix = f"early-{os.urandom(4).hex()}/src"
    fetch(spec("s3", f"s3://{seaweedfs.shared_bucket}/{prefix}", **seaweedfs.options()), tmp_path)
    listed = seaweedfs.client().list_objects_v2(Bucket=seaweedfs.shared_bucket, Prefix=prefix)
    keys = [obj["Key"][len(prefix) + 1:] for obj in listed.get("Contents", [])]
    assert keys == []  # its object had a name of its own (runs sharing a target check at once)


# ---- gcs (the emulator checks no credentials: reachability and the bucket) ----

def test_gcs_unreachable_endpoint_fails_the_fetch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("WRAPRESOLVER_IO_TIMEOUT", "2")
    message = fails(spec("gcs", "gs://some-bucket/ci/src"), tmp_path, NetworkError)
    assert "cannot reach GCS" in message or "kept failing" in message


def test_gcs_missing_bucket_is_named_before_the_work(gcs_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gcs_server.use(monkeypatch)
    message = fails(spec("gcs", "gs://no-such-bucket-early/ci/src"), tmp_path, NotFoundError)
    assert "bucket 'no-such-bucket-early' does not exist" in message


def test_gcs_reachable_bucket_passes_the_check(gcs_server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    gcs_server.use(monkeypatch)
    assert fetch(spec("gcs", f"gs://{gcs_server.new_bucket()}/ci/src"), tmp_path).detail == "empty"


# ---- rsync ----

def test_rsync_unreachable_daemon_fails_the_fetch(tmp_path: Path) -> None:
    message = fails(spec("rsync", f"rsync://wsuser@127.0.0.1:{free_port()}/workspaces/src"), tmp_path, NetworkError)
    assert "cannot reach the rsync daemon" in message


def test_rsync_wrong_password_is_denied_before_the_work(rsync_daemon: RsyncDaemon, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSYNC_PASSWORD", "not-the-password")
    message = fails(spec("rsync", f"{rsync_daemon.url}/early/src"), tmp_path, AuthError)
    assert "refused user 'wsuser'" in message and "not-the-password" not in message


def test_rsync_unknown_module_is_named_before_the_work(rsync_daemon: RsyncDaemon, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSYNC_PASSWORD", rsync_daemon.password)
    target = f"rsync://wsuser@127.0.0.1:{rsync_daemon.port}/no-such-module/src"
    message = fails(spec("rsync", target), tmp_path, NotFoundError)
    assert "has no module 'no-such-module'" in message


def test_rsync_read_only_module_fails_a_storing_task_but_serves_a_reading_one(
    rsync_daemon: RsyncDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("RSYNC_PASSWORD", rsync_daemon.password)
    target = f"rsync://wsuser@127.0.0.1:{rsync_daemon.port}/{READ_ONLY_MODULE}/early-{os.urandom(4).hex()}"
    message = fails(spec("rsync", target), tmp_path / "stores", AuthError)
    assert "read-only" in message and "read only = no" in message
    assert fetch(spec("rsync", target, stores=False), tmp_path / "reads").detail == "empty"


def test_rsync_write_check_creates_nothing_on_the_daemon(rsync_daemon: RsyncDaemon, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RSYNC_PASSWORD", rsync_daemon.password)
    name = f"early-{os.urandom(4).hex()}"
    fetch(spec("rsync", f"{rsync_daemon.url}/{name}/src"), tmp_path)
    assert not (rsync_daemon.data_dir / name).exists()


# ---- file ----

def test_file_target_that_is_a_file_fails_the_fetch(tmp_path: Path) -> None:
    (tmp_path / "store").write_text("not a directory")
    message = fails(spec("file", f"file://{tmp_path}/store"), tmp_path / "t", TransferError)
    assert "is not a directory" in message


def test_file_directory_this_identity_cannot_write_fails_the_fetch(foreign_python: ForeignPython, tmp_path: Path) -> None:
    work = shared_dir("wrap-early-")
    store = work / "store"
    store.mkdir()
    store.chmod(0o755)  # root's; the step runs as 65532
    ws = spec("file", f"file://{store}/src")
    ws = WorkspaceTransfer(**{**ws.__dict__, "path": str(work / "ws")})
    try:
        done = foreign_python.run(["fetch", "--state-dir", str(work / "state"), "--workspace", ws.to_json()],
                                  uid=NOBODY_UID, gid=NOBODY_UID)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert done.returncode == 3, done.stderr
    assert f"target file://{store}/src" in done.stderr and "cannot be written" in done.stderr
    assert f"uid {NOBODY_UID}" in done.stderr and "belongs to uid 0" in done.stderr


def test_file_target_not_created_yet_passes_the_check_and_is_not_created(tmp_path: Path) -> None:
    assert fetch(spec("file", f"file://{tmp_path}/later/src"), tmp_path / "t").detail == "empty"
    assert not (tmp_path / "later").exists()


# ---- the rule: no round trip where the fetch already reads ----

class Recording(LayeredStore):
    def __init__(self, blobs: BlobStore) -> None:
        super().__init__(blobs)
        self.calls: list[tuple[bool, bool]] = []

    def probe(self, *, read: bool, write: bool) -> bool:
        self.calls.append((read, write))
        return super().probe(read=read, write=write)


@pytest.mark.parametrize(("inputs", "stores", "expected"), [
    ((), True, [(True, True)]),           # the first producer: nothing else reads or writes first
    (("clone",), True, [(False, True)]),  # resolving its inputs reads: only the write is checked
    ((), False, [(True, False)]),         # reads nothing else from the target: a read check
    (("clone",), False, []),              # its fetch reads the target anyway: nothing added
])
def test_the_fetch_checks_only_what_nothing_else_of_it_proves(tmp_path: Path, inputs, stores, expected) -> None:
    target = f"file://{tmp_path}/store/src"
    store = Recording(get_backend("file").open(target, {}))
    ws = spec("file", target, stores=stores, inputs=inputs)
    ws = WorkspaceTransfer(**{**ws.__dict__, "graph": {}})
    try:
        runner.fetch(store, ws, tmp_path / "ws", tmp_path / "state")
    except NotFoundError:
        pass  # `clone` never stored here: the fetch after the check says so
    assert store.calls == expected


def test_a_store_step_does_not_run_the_check(tmp_path: Path) -> None:
    target = f"file://{tmp_path}/store/src"
    store = Recording(get_backend("file").open(target, {}))
    (tmp_path / "ws").mkdir()
    runner.store(store, spec("file", target), tmp_path / "ws", tmp_path / "state")
    assert store.calls == []


def test_the_stores_flag_round_trips_and_is_left_out_by_default() -> None:
    ws = spec("file", "file:///s/src")
    assert WorkspaceTransfer.from_json(ws.to_json()).stores is True
    assert "stores" not in json.loads(spec("file", "file:///s/src", stores=False).to_json())


def test_a_stores_flag_that_is_not_a_boolean_is_refused_naming_the_field() -> None:
    data = json.loads(spec("file", "file:///s/src").to_json())
    data["stores"] = "yes"
    with pytest.raises(ValueError, match="field `stores` must be true or false"):
        WorkspaceTransfer.from_json(json.dumps(data))
