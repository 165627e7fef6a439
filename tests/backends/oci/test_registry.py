"""The OCI data path against real registries: plain, TLS + htpasswd, scoped tokens, crashes."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.fixtures.registry import Registry, TokenRegistry, docker_config
from wrapresolver.backends.oci import client as client_module
from wrapresolver.backends.oci.store import RegistryStore
from wrapresolver.backends.registry import get_backend
from wrapresolver.core import oci_image
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.errors import AuthError, NetworkError, NotFoundError, TransferError
from wrapresolver.steps import engine, statedocs
from wrapresolver.testing.conformance import BackendConformance, ConformanceTarget, Unusable, contents


@pytest.fixture(autouse=True)
def no_ambient_credentials(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Each test states its credentials; nothing comes from the machine's own docker config."""
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "no-docker-config"))
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    monkeypatch.setattr(client_module, "_TOKENS", client_module.TokenCache())


def open_store(target: str, **options: str) -> RegistryStore:
    return get_backend("oci").open(target, options)


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


class TestOciConformance(BackendConformance):
    @pytest.fixture
    def conformance_target(self, registry: Registry) -> ConformanceTarget:
        return ConformanceTarget(
            backend="oci", new_target=lambda: "oci://" + registry.repo("conf"),
            unreachable=lambda netloc: Unusable(f"oci://{netloc}/ci/src"),
        )


class TestOciGzipConformance(BackendConformance):
    """Older registries and tools only know gzip layers: the same promises hold."""

    @pytest.fixture
    def conformance_target(self, registry: Registry) -> ConformanceTarget:
        return ConformanceTarget(
            backend="oci", new_target=lambda: "oci://" + registry.repo("gzip"), options={"compression": "gzip"},
        )


def test_a_stored_state_is_a_standard_image_other_clients_read(registry: Registry, tmp_path: Path) -> None:
    import oras.provider

    src = tmp_path / "src"
    write(src / "hello.txt", "hello\n")
    target = registry.repo("image")
    with open_store(target + ":v1", compression="gzip") as store:
        engine.push(store, src)
    # An independent client (oras-py) reads the manifest and the layer.
    other = oras.provider.Registry(hostname=registry.host, insecure=True)
    manifest = other.get_manifest(f"{target}:v1")
    assert manifest["mediaType"] == "application/vnd.oci.image.manifest.v1+json"
    assert manifest["config"]["mediaType"] == "application/vnd.oci.image.config.v1+json"
    (layer,) = manifest["layers"]
    assert layer["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    blob = httpx.get(f"http://{registry.host}/v2/{target.split('/', 1)[1]}/blobs/{layer['digest']}").content
    assert "sha256:" + hashlib.sha256(blob).hexdigest() == layer["digest"]
    import gzip
    import tarfile

    with tarfile.open(fileobj=io.BytesIO(gzip.decompress(blob))) as tar:
        assert tar.extractfile("hello.txt").read() == b"hello\n"


def test_unchanged_blobs_are_not_uploaded_again(registry: Registry, tmp_path: Path, monkeypatch) -> None:
    src = tmp_path / "src"
    write(src / "a.txt", "a\n")
    uploads: list[str] = []
    real = RegistryStore.put_blob
    monkeypatch.setattr(RegistryStore, "put_blob", lambda self, r, m: uploads.append(m) or real(self, r, m))
    target = "oci://" + registry.repo("dedupe")
    spec = WorkspaceTransfer(workspace="src", target=target, run="r1", task="lint", backend="oci", inputs=("clone",))
    with open_store(target) as store:
        engine.store_ref(store, src, producer_ref("r1", "clone"))
        uploaded_for_clone = len(uploads)
        engine.fetch(store, spec, tmp_path / "ws", tmp_path / "state")
        engine.store(store, spec, tmp_path / "ws", tmp_path / "state")
    assert uploaded_for_clone == 2  # one layer, one config
    assert len(uploads) == 2  # lint changed nothing: same layers, same config, no upload


def test_base_from_another_repository_is_mounted_not_copied(registry: Registry, tmp_path: Path, monkeypatch) -> None:
    seed = tmp_path / "seed"
    write(seed / "toolchain" / "cc", "compiler\n")
    base = registry.repo("base") + ":stable"
    with open_store(base) as store:
        engine.push(store, seed)
    streamed: list[str] = []
    real = RegistryStore.put_blob
    monkeypatch.setattr(RegistryStore, "put_blob", lambda self, r, m: streamed.append(m) or real(self, r, m))
    target = "oci://" + registry.repo("mounted")
    spec = WorkspaceTransfer(workspace="src", target=target, run="r2", task="build", backend="oci", base=base)
    with open_store(target) as store:
        engine.fetch(store, spec, tmp_path / "ws", tmp_path / "state")
        write(tmp_path / "ws" / "out", "built\n")
        engine.store(store, spec, tmp_path / "ws", tmp_path / "state")
        state = statedocs.read_state(store, producer_ref("r2", "build"), "build")
        assert all(store.blob_exists(layer.descriptor.digest) for layer in state.layers)
    # The base layer arrived by cross-repository mount: only the new layer and config streamed.
    assert streamed == [oci_image.layer_media_type(""), oci_image.CONFIG]


def test_a_missing_producer_reference_falls_back_and_a_missing_target_is_not_found(registry: Registry, tmp_path: Path) -> None:
    target = "oci://" + registry.repo("missing")
    with open_store(target) as store, pytest.raises(NotFoundError, match="no stored state"):
        engine.pull(store, tmp_path / "out")


# ---- TLS and Basic auth ----

def test_tls_registry_with_basic_auth_from_docker_config(tls_registry: Registry, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.ca_file))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "docker", tls_registry.host, "ci", "s3cret-pass")))
    src = tmp_path / "src"
    write(src / "secret-sauce.txt", "tls\n")
    target = tls_registry.repo("tls")
    with open_store(target) as store:
        engine.push(store, src)
        assert store.client.base.startswith("https://")
        engine.pull(store, tmp_path / "out")
    assert contents(tmp_path / "out") == {"secret-sauce.txt": "tls\n"}


def test_wrong_password_is_an_auth_error_that_names_where_credentials_come_from(tls_registry: Registry, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.ca_file))
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "docker", tls_registry.host, "ci", "Tr0ub4dor-x")))
    src = tmp_path / "src"
    write(src / "a", "a")
    with open_store(tls_registry.repo("denied")) as store, pytest.raises(AuthError) as caught:
        engine.push(store, src)
    assert "docker config" in str(caught.value) and "credentials-secret" in str(caught.value)
    assert "Tr0ub4dor" not in str(caught.value)  # never print a secret


def test_no_credentials_at_all_is_an_auth_error(tls_registry: Registry, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("SSL_CERT_FILE", str(tls_registry.ca_file))
    with open_store(tls_registry.repo("anon")) as store, pytest.raises(AuthError, match="no credentials were found"):
        engine.pull(store, tmp_path / "out")


def test_an_untrusted_certificate_says_how_to_trust_it(tls_registry: Registry, tmp_path: Path) -> None:
    with open_store(tls_registry.repo("untrusted")) as store, pytest.raises(TransferError, match="ca-configmap"):
        engine.pull(store, tmp_path / "out")


def test_insecure_option_skips_verification(tls_registry: Registry, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "docker", tls_registry.host, "ci", "s3cret-pass")))
    src = tmp_path / "src"
    write(src / "a", "a\n")
    with open_store(tls_registry.repo("insecure"), insecure="true") as store:
        engine.push(store, src)
        engine.pull(store, tmp_path / "out")
    assert contents(tmp_path / "out") == {"a": "a\n"}


# ---- Bearer tokens with scopes ----

def test_push_asks_for_a_push_scope_and_does_not_reuse_the_pull_token(token_registry: TokenRegistry, tmp_path: Path, monkeypatch) -> None:
    registry = token_registry.registry
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "docker", registry.host, "pusher", "push-pass")))
    target = registry.repo("scoped")
    src = tmp_path / "src"
    write(src / "a.txt", "a\n")
    token_registry.tokens.requests.clear()
    with open_store(target) as store:
        assert store.get_manifest("absent") is None  # a pull-scoped token first
        engine.push(store, src)
        engine.pull(store, tmp_path / "out")
    repo = target.split("/", 1)[1]
    scopes = [s for r in token_registry.tokens.requests for s in r["scopes"]]
    assert f"repository:{repo}:pull" in scopes and f"repository:{repo}:pull,push" in scopes
    assert contents(tmp_path / "out") == {"a.txt": "a\n"}


def test_a_user_without_push_rights_gets_a_clear_denial(token_registry: TokenRegistry, tmp_path: Path, monkeypatch) -> None:
    registry = token_registry.registry
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "docker", registry.host, "reader", "read-pass")))
    src = tmp_path / "src"
    write(src / "a.txt", "a\n")
    with open_store(registry.repo("readonly")) as store, pytest.raises(AuthError, match="refused to let us push"):
        engine.push(store, src)


def _store_task(store: RegistryStore, target: str, tmp_path: Path) -> None:
    """A task's store step on a fresh workspace (no fetch record), as the injected step runs it."""
    spec = WorkspaceTransfer(workspace="src", target="oci://" + target, run="r1", task="build", backend="oci")
    src = tmp_path / "ws"
    write(src / "a.txt", "a\n")
    engine.store(store, spec, src, tmp_path / "state")


def test_a_store_fetches_its_tokens_on_the_connecting_thread_while_it_walks(
    token_registry: TokenRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = token_registry.registry
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "docker", registry.host, "pusher", "push-pass")))
    fetched: list[tuple[str, str]] = []
    real = client_module.RegistryClient._fetch_token

    def noting(self, realm, service, scope, creds):
        fetched.append((scope, threading.current_thread().name))
        return real(self, realm, service, scope, creds)

    monkeypatch.setattr(client_module.RegistryClient, "_fetch_token", noting)
    target = registry.repo("prefetched")
    with open_store(target) as store:
        _store_task(store, target, tmp_path)
        assert engine.fetch_ref(store, producer_ref("r1", "build"), tmp_path / "out").files == 1
    repo = target.split("/", 1)[1]
    assert (f"repository:{repo}:pull,push", "registry-connect") in fetched
    assert (f"repository:{repo}:pull", "registry-connect") in fetched
    assert len(fetched) == len(set(scope for scope, _ in fetched))  # none fetched twice
    assert contents(tmp_path / "out") == {"a.txt": "a\n"}


def test_a_store_by_a_user_without_push_rights_is_denied_as_clearly_with_tokens_fetched_ahead(
    token_registry: TokenRegistry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    registry = token_registry.registry
    monkeypatch.setenv("DOCKER_CONFIG", str(docker_config(tmp_path / "docker", registry.host, "reader", "read-pass")))
    target = registry.repo("readonly-store")
    with open_store(target) as store, pytest.raises(AuthError, match="refused to let us push"):
        _store_task(store, target, tmp_path)


# ---- failures ----

def test_a_registry_killed_mid_upload_fails_cleanly_and_a_retry_succeeds(registry_factory, tmp_path: Path, monkeypatch) -> None:
    registry = registry_factory()
    target = "oci://" + registry.repo("crash")
    ws = tmp_path / "ws"
    write(ws / "small.txt", "small\n")
    (ws / "big.bin").write_bytes(os.urandom(24 << 20))
    spec = WorkspaceTransfer(workspace="src", target=target, run="r3", task="build", backend="oci", publish=True)
    real = RegistryStore.put_blob
    sent = {"bytes": 0}

    def crashing_put_blob(self, reader, media_type):
        class Killer(io.RawIOBase):
            def readable(self) -> bool:
                return True

            def readinto(self, buffer) -> int:
                n = reader.readinto(buffer) if hasattr(reader, "readinto") else 0
                sent["bytes"] += n
                if sent["bytes"] > (4 << 20):
                    registry.kill()
                return n

        return real(self, io.BufferedReader(Killer()), media_type)

    monkeypatch.setattr(client_module, "DEFAULT_ATTEMPTS", 2)
    monkeypatch.setattr(RegistryStore, "put_blob", crashing_put_blob)
    with open_store(target) as store, pytest.raises(NetworkError, match="registry"):
        engine.store(store, spec, ws, tmp_path / "state-1")
    monkeypatch.setattr(RegistryStore, "put_blob", real)
    registry.start()  # back on the same port with the same storage
    with open_store(target) as store:
        assert store.get_manifest(producer_ref("r3", "build")) is None  # nothing half-written is referenced
        assert store.get_manifest("latest") is None
        engine.store(store, spec, ws, tmp_path / "state-2")  # the task's retry
        engine.pull(store, tmp_path / "out")
    assert (tmp_path / "out" / "big.bin").read_bytes() == (ws / "big.bin").read_bytes()


def test_an_unreachable_registry_is_a_network_error_after_bounded_retries(tmp_path: Path, monkeypatch) -> None:
    from tests.fixtures.registry import free_port

    monkeypatch.setattr(client_module, "DEFAULT_ATTEMPTS", 2)
    with open_store(f"127.0.0.1:{free_port()}/nobody/home") as store, pytest.raises(NetworkError, match="cannot reach registry"):
        engine.pull(store, tmp_path / "out")


def _attempts_to_reach(target: str, dest: Path, monkeypatch: pytest.MonkeyPatch, *, warm: bool) -> tuple[int, str]:
    """(connection attempts, error message) of a pull from `target`, warmed up first or not."""
    sent: list[str] = []
    real = httpx.Client.request
    monkeypatch.setattr(httpx.Client, "request", lambda self, method, url, **kw: sent.append(url) or real(self, method, url, **kw))
    with open_store(target) as store:
        if warm:
            store.warm_up()  # returns at once; the error belongs to the first request
        with pytest.raises(NetworkError, match="cannot reach registry") as failed:
            engine.pull(store, dest)
    monkeypatch.setattr(httpx.Client, "request", real)
    return len(sent), str(failed.value)


def test_a_warmed_up_store_of_an_unreachable_registry_fails_once_with_the_usual_message(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.fixtures.registry import free_port

    monkeypatch.setattr(client_module, "DEFAULT_ATTEMPTS", 2)
    monkeypatch.setattr(client_module.RegistryClient, "_sleep", lambda self, attempt: None)
    target = f"127.0.0.1:{free_port()}/nobody/home"
    cold = _attempts_to_reach(target, tmp_path / "cold", monkeypatch, warm=False)
    warm = _attempts_to_reach(target, tmp_path / "warm", monkeypatch, warm=True)
    assert warm == cold  # one round of retries, not a second one after the background's
    assert cold[0] >= 2


def test_closing_a_warmed_up_store_waits_for_its_connection_and_closes_it(
    registry: Registry, monkeypatch: pytest.MonkeyPatch,
) -> None:
    answered = threading.Event()
    real = client_module.RegistryClient._send_with_retries

    def slow_ping(self, *args, **kwargs):  # the registry answers the ping after close() began
        time.sleep(0.2)
        try:
            return real(self, *args, **kwargs)
        finally:
            answered.set()

    monkeypatch.setattr(client_module.RegistryClient, "_send_with_retries", slow_ping)
    store = open_store("oci://" + registry.repo("warm"))
    store.warm_up()
    store.close()
    assert answered.is_set()
    assert store.client._http is None  # the background connection did not outlive close()
    monkeypatch.setattr(client_module.RegistryClient, "_send_with_retries", real)
    assert store.get_manifest("absent") is None  # and the store still answers afterwards
    store.close()


def test_a_corrupted_blob_is_an_integrity_error_and_leaves_no_workspace(registry: Registry, tmp_path: Path) -> None:
    from wrapresolver.errors import IntegrityError

    src = tmp_path / "src"
    write(src / "a.txt", "original\n")
    target = registry.repo("corrupt")
    with open_store(target) as store:
        engine.push(store, src)
        manifest = json.loads(store.get_manifest("latest"))
        # Point a new tag at a manifest whose layer digest names different content.
        other = store.put_blob(io.BytesIO(b"not the layer"), "application/octet-stream")
        manifest["layers"][0]["digest"] = other.digest
        manifest["layers"][0]["size"] = other.size
        store.put_manifest("tampered", json.dumps(manifest).encode(), oci_image.MANIFEST)
        store.target_ref = "tampered"
        with pytest.raises(IntegrityError):
            engine.pull(store, tmp_path / "out")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
