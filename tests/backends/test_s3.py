"""The s3:// backend against a real S3 API (moto in server mode): layout, streaming, errors."""

from __future__ import annotations

import hashlib
import io
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fixtures.s3server import S3Server
from wrapresolver.backends.registry import get_backend
from wrapresolver.backends.s3 import PART_SIZE, S3Store, S3Target, parse_target
from wrapresolver.core import oci_image
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer
from wrapresolver.errors import AuthError, NetworkError, NotFoundError, ParamError
from wrapresolver.steps import engine
from wrapresolver.testing.conformance import BackendConformance, ConformanceTarget, Unusable

RUN = "7d1e-run"


@pytest.fixture
def credentials(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """The step's credential env, set only for the test that asks for it."""
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return s3_server


@pytest.fixture
def bucket(credentials: S3Server) -> str:
    return credentials.new_bucket()


@pytest.fixture
def open_store(credentials: S3Server) -> Callable[[str], S3Store]:
    def opener(target: str) -> S3Store:
        return get_backend("s3").open(target, credentials.options())

    return opener


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def spec(task: str, target: str, options: dict, inputs=(), graph=None) -> WorkspaceTransfer:
    return WorkspaceTransfer(
        workspace="src", target=target, run=RUN, task=task, backend="s3",
        inputs=tuple(inputs), graph=graph or {}, options=options,
    )


# ---- resolver half ----

def test_backend_is_registered_under_its_name_and_scheme() -> None:
    backend = get_backend("s3")
    assert backend.name == "s3" and backend.schemes == ("s3",)


@pytest.mark.parametrize(
    "target,expected",
    [
        ("s3://ci-cache/runs/src", S3Target("ci-cache", "runs/src")),
        ("s3://ci-cache", S3Target("ci-cache", "")),
        ("s3://ci.cache-1/", S3Target("ci.cache-1", "")),
        ("s3://ci-cache/$(context.pipelineRun.name)/src/", S3Target("ci-cache", "$(context.pipelineRun.name)/src")),
        ("s3://$(params.bucket)/x", S3Target("$(params.bucket)", "x")),
    ],
)
def test_targets_parse_to_a_bucket_and_a_prefix(target: str, expected: S3Target) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize(
    "target,message",
    [
        ("s3:///prefix", "names no bucket"),
        ("s3://CI-Cache/x", "not a valid S3 bucket name"),
        ("s3://ab/x", "not a valid S3 bucket name"),
        ("s3://bucket-/x", "not a valid S3 bucket name"),
        ("s3://a..b/x", "not a valid S3 bucket name"),
        ("s3://192.168.1.10/x", "not a valid S3 bucket name"),
        ("s3://" + "b" * 64 + "/x", "not a valid S3 bucket name"),
        ("s3://ci_$(params.x)/y", "not a valid S3 bucket name"),
        ("s3://ci-cache/a//b", "segments"),
        ("s3://ci-cache/a/../b", "segments"),
        ("gs://ci-cache/x", "not an s3:// URL"),
    ],
)
def test_bad_targets_are_param_errors_that_say_what_is_wrong(target: str, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        get_backend("s3").validate_target(target)


def test_options_are_checked_and_normalised() -> None:
    backend = get_backend("s3")
    options = {
        "endpoint": "https://minio.example.com:9000", "region": "eu-west-1", "path-style": "True",
        "credentials-secret": "s3-creds", "compression": "gzip",
    }
    assert backend.validate_options(options) == {**options, "path-style": "true"}


@pytest.mark.parametrize(
    "options,message",
    [
        ({"endpoint": "minio:9000"}, "http:// or https://"),
        ({"region": "EU West"}, "region name"),
        ({"path-style": "yes"}, "\"true\" or \"false\""),
        ({"credentials-secret": "My_Secret"}, "not a valid Kubernetes Secret name"),
        ({"compression": "lz4"}, "zstd or gzip"),
        ({"bucket": "x"}, "unknown param"),
    ],
)
def test_bad_options_are_param_errors(options: dict, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        get_backend("s3").validate_options(options)


def test_credentials_secret_becomes_env_from_secret_refs_and_never_values() -> None:
    requirements = get_backend("s3").step_requirements({"credentials-secret": "s3-creds"})
    assert list(requirements.env) == [
        {"name": "AWS_ACCESS_KEY_ID", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_ACCESS_KEY_ID"}}},
        {"name": "AWS_SECRET_ACCESS_KEY", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_SECRET_ACCESS_KEY"}}},
        {"name": "AWS_SESSION_TOKEN", "valueFrom": {"secretKeyRef": {"name": "s3-creds", "key": "AWS_SESSION_TOKEN", "optional": True}}},
    ]
    assert all("value" not in entry for entry in requirements.env)
    assert not requirements.volumes and not requirements.volume_mounts and not requirements.args


def test_without_a_secret_the_step_gets_nothing_and_uses_the_aws_chain() -> None:
    requirements = get_backend("s3").step_requirements({"endpoint": "https://s3.example.com"})
    assert requirements.env == () and requirements.volumes == ()


# ---- data path ----

def test_tree_round_trips_and_the_bucket_holds_an_oci_layout(
    bucket: str, open_store, s3_server: S3Server, tmp_path: Path
) -> None:
    src = tmp_path / "src"
    write(src / "hello.txt", "hello")
    write(src / "deep" / "er" / "file.txt", "deeper")
    store = open_store(f"s3://{bucket}/ci/run-src")
    engine.store_ref(store, src, store.target_ref)

    client = s3_server.client()
    manifest_bytes = client.get_object(Bucket=bucket, Key="ci/run-src/refs/latest")["Body"].read()
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == oci_image.MANIFEST
    assert manifest["layers"][0]["mediaType"] == oci_image.LAYER_ZSTD
    manifest_digest = hashlib.sha256(manifest_bytes).hexdigest()
    for blob in [manifest["config"], *manifest["layers"], {"digest": f"sha256:{manifest_digest}"}]:
        key = "ci/run-src/blobs/sha256/" + blob["digest"].split(":")[1]
        data = client.get_object(Bucket=bucket, Key=key)["Body"].read()
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]
    marker = client.get_object(Bucket=bucket, Key="ci/run-src/oci-layout")["Body"].read()
    assert json.loads(marker) == {"imageLayoutVersion": "1.0.0"}
    leftovers = client.list_objects_v2(Bucket=bucket, Prefix="ci/run-src/uploads/").get("KeyCount")
    assert leftovers == 0

    out = tmp_path / "out"
    engine.fetch_ref(store, "latest", out)
    assert files(out) == {"hello.txt": "hello", "deep/er/file.txt": "deeper"}


def test_manifest_is_readable_by_digest_and_a_missing_ref_is_none(bucket: str, open_store) -> None:
    store = open_store(f"s3://{bucket}/p")
    store.put_manifest("r", b'{"x":1}', oci_image.MANIFEST)
    assert store.get_manifest("sha256:" + hashlib.sha256(b'{"x":1}').hexdigest()) == b'{"x":1}'
    assert store.get_manifest("r") == b'{"x":1}'
    assert store.get_manifest("other") is None


def test_a_reference_is_replaced_by_the_newer_manifest(bucket: str, open_store) -> None:
    store = open_store(f"s3://{bucket}/p")
    store.put_manifest("r", b'{"v":1}', oci_image.MANIFEST)
    store.put_manifest("r", b'{"v":2}', oci_image.MANIFEST)
    assert store.get_manifest("r") == b'{"v":2}'


def test_two_producers_fan_in_and_the_later_one_wins(bucket: str, credentials: S3Server, open_store, tmp_path: Path) -> None:
    target = f"s3://{bucket}/fan-in"
    options = credentials.options()
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1), "c": ProducerNode(("a",), 2)}
    work = {
        "a": lambda d: write(d / "base.txt", "a"),
        "b": lambda d: (write(d / "same.txt", "from b"), write(d / "b.txt", "b")),
        "c": lambda d: (write(d / "same.txt", "from c"), write(d / "c.txt", "c")),
    }
    store = open_store(target)
    for task, inputs in (("a", ()), ("b", ("a",)), ("c", ("a",))):
        ws, state = tmp_path / f"ws-{task}", tmp_path / f"state-{task}"
        s = spec(task, target, options, inputs, graph)
        engine.fetch(store, s, ws, state)
        work[task](ws)
        engine.store(store, s, ws, state)
    view = tmp_path / "view"
    report = engine.fetch(store, spec("d", target, options, ("b", "c"), graph), view, tmp_path / "state-d")
    assert files(view) == {"base.txt": "a", "b.txt": "b", "c.txt": "c", "same.txt": "from c"}
    assert report.layers == 3
    layers_b = json.loads(store.get_manifest(producer_ref(RUN, "b")))["layers"]
    layers_c = json.loads(store.get_manifest(producer_ref(RUN, "c")))["layers"]
    assert layers_b[0] == layers_c[0]  # the shared ancestor's layer is stored once


def test_a_skipped_producer_falls_back_to_its_input(bucket: str, credentials: S3Server, open_store, tmp_path: Path) -> None:
    target = f"s3://{bucket}/fallback"
    graph = {"clone": ProducerNode(), "lint": ProducerNode(("clone",), 1)}
    store = open_store(target)
    s = spec("clone", target, credentials.options(), (), graph)
    engine.fetch(store, s, tmp_path / "ws", tmp_path / "st")
    write(tmp_path / "ws" / "f", "clone")
    engine.store(store, s, tmp_path / "ws", tmp_path / "st")
    view = tmp_path / "view"
    report = engine.fetch(store, spec("test", target, credentials.options(), ("lint",), graph), view, tmp_path / "sv")
    assert files(view) == {"f": "clone"} and "lint has no stored state" in report.detail


def test_fetching_a_missing_reference_is_a_not_found_error(bucket: str, open_store, tmp_path: Path) -> None:
    store = open_store(f"s3://{bucket}/nothing")
    with pytest.raises(NotFoundError, match="no stored state under reference 'latest'"):
        engine.fetch_ref(store, "latest", tmp_path / "out")


def test_reading_a_missing_blob_is_a_not_found_error_naming_it(bucket: str, open_store) -> None:
    store = open_store(f"s3://{bucket}/p")
    missing = "sha256:" + "0" * 64
    assert not store.blob_exists(missing)
    with pytest.raises(NotFoundError, match=missing):
        list(store.open_blob(missing))


def test_a_multipart_blob_round_trips_with_its_digest(bucket: str, open_store, s3_server: S3Server) -> None:
    size = 2 * PART_SIZE + 4 * 1024 * 1024 + 7  # three parts, the last one short
    seed = os.urandom(1 << 20)

    class Generated(io.RawIOBase):
        """`size` bytes in short reads, never all held at once, like the layer pipe gives them."""

        def __init__(self) -> None:
            self.left = size

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            n = min(len(buffer), self.left, len(seed))
            buffer[:n] = seed[:n]
            self.left -= n
            return n

    expected = hashlib.sha256()
    left = size
    while left:
        n = min(left, len(seed))
        expected.update(seed[:n])
        left -= n

    store = open_store(f"s3://{bucket}/big")
    parts: list[int] = []
    store.client.meta.events.register(
        "before-parameter-build.s3.UploadPart", lambda params, **_: parts.append(params["PartNumber"])
    )
    desc = store.put_blob(Generated(), "application/octet-stream")
    # Streamed as whole parts: a single PUT would have meant holding the blob in memory.
    assert sorted(parts) == [1, 2, 3]
    assert desc.digest == "sha256:" + expected.hexdigest() and desc.size == size
    assert store.blob_exists(desc.digest)
    got, total = hashlib.sha256(), 0
    for chunk in store.open_blob(desc.digest):
        got.update(chunk)
        total += len(chunk)
    assert "sha256:" + got.hexdigest() == desc.digest and total == size
    listing = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="big/uploads/")
    assert listing.get("KeyCount") == 0


def test_an_interrupted_upload_leaves_no_blob_under_a_digest(bucket: str, open_store, s3_server: S3Server) -> None:
    class Broken(io.RawIOBase):
        sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            if self.sent > PART_SIZE + (1 << 20):
                raise ConnectionResetError("stream broke")
            buffer[: len(buffer)] = b"x" * len(buffer)
            self.sent += len(buffer)
            return len(buffer)

    store = open_store(f"s3://{bucket}/broken")
    with pytest.raises(ConnectionResetError):
        store.put_blob(io.BufferedReader(Broken()), "application/octet-stream")
    listing = s3_server.client().list_objects_v2(Bucket=bucket, Prefix="broken/")
    assert [o["Key"] for o in listing.get("Contents", [])] == []


# ---- errors a pipeline author can act on ----

def test_a_missing_bucket_is_a_not_found_error_naming_it(credentials: S3Server, tmp_path: Path) -> None:
    name = f"absent-{uuid.uuid4().hex[:10]}"
    store = get_backend("s3").open(f"s3://{name}/p", credentials.options())
    with pytest.raises(NotFoundError, match=f"bucket '{name}' does not exist"):
        engine.fetch_ref(store, "latest", tmp_path / "out")
    src = tmp_path / "src"
    write(src / "f", "x")
    with pytest.raises(NotFoundError, match=f"bucket '{name}' does not exist"):
        engine.store_ref(store, src, "latest")


def test_wrong_credentials_are_an_auth_error_naming_the_secret_param(
    bucket: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret-value")
    store = get_backend("s3").open(f"s3://{bucket}/p", s3_server.options())
    src = tmp_path / "src"
    write(src / "f", "x")
    with s3_server.checking_signatures():
        with pytest.raises(AuthError) as raised:
            engine.store_ref(store, src, "latest")
        with pytest.raises(AuthError):
            store.get_manifest("latest")
    message = str(raised.value)
    assert "credentials-secret" in message and "AWS_ACCESS_KEY_ID" in message and bucket in message
    assert "not-the-secret-value" not in message


def test_missing_credentials_are_an_auth_error(bucket: str, s3_server: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    store = get_backend("s3").open(f"s3://{bucket}/p", s3_server.options())
    with pytest.raises(AuthError, match="credentials-secret"):
        store.get_manifest("latest")


def test_an_unreachable_endpoint_is_a_network_error_naming_it(credentials: S3Server, monkeypatch: pytest.MonkeyPatch) -> None:
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")  # the default retries with backoff for seconds

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    server.stop()  # the port was real a moment ago; now nothing listens there
    endpoint = f"http://{host}:{port}"
    store = get_backend("s3").open("s3://some-bucket/p", {**credentials.options(), "endpoint": endpoint})
    with pytest.raises(NetworkError, match=f"cannot reach {endpoint}.*`endpoint` param"):
        store.get_manifest("latest")


class FlakyS3(ThreadingHTTPServer):
    """Answers 503 SlowDown to the first `failures` requests, then 404 NoSuchKey: a real HTTP peer."""

    def __init__(self, failures: int) -> None:
        self.failures, self.requests = failures, 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.requests += 1
                if server.requests <= server.failures:
                    self._answer(503, "SlowDown", "Please reduce your request rate.")
                else:
                    self._answer(404, "NoSuchKey", "The specified key does not exist.")

            def _answer(self, status: int, code: str, message: str) -> None:
                body = (
                    f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{code}</Code>"
                    f"<Message>{message}</Message></Error>"
                ).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/xml")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        super().__init__(("127.0.0.1", 0), Handler)


@pytest.fixture
def flaky_s3() -> Iterator[FlakyS3]:
    server = FlakyS3(failures=2)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


def test_transient_server_errors_are_retried(credentials: S3Server, flaky_s3: FlakyS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_MAX_ATTEMPTS", raising=False)
    endpoint = f"http://127.0.0.1:{flaky_s3.server_address[1]}"
    store = get_backend("s3").open("s3://some-bucket/p", {**credentials.options(), "endpoint": endpoint})
    assert store.get_manifest("latest") is None
    assert flaky_s3.requests == 3


def test_a_server_error_that_persists_is_a_network_error_naming_the_key(credentials: S3Server, flaky_s3: FlakyS3, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    endpoint = f"http://127.0.0.1:{flaky_s3.server_address[1]}"
    store = get_backend("s3").open("s3://some-bucket/p", {**credentials.options(), "endpoint": endpoint})
    with pytest.raises(NetworkError, match="503 SlowDown.*s3://some-bucket/p/refs/latest"):
        store.get_manifest("latest")
    assert flaky_s3.requests == 1


# ---- conformance kit ----


class TestS3Conformance(BackendConformance):
    @pytest.fixture
    def conformance_target(self, s3_server: S3Server) -> ConformanceTarget:
        bucket = s3_server.new_bucket()
        return ConformanceTarget(
            backend="s3",
            new_target=lambda: f"s3://{bucket}/t-{uuid.uuid4().hex[:12]}/src",
            options=s3_server.options(),
            env=s3_server.env(),
            unreachable=lambda netloc: Unusable(f"s3://{bucket}/src", {**s3_server.options(), "endpoint": f"http://{netloc}"}),
        )


class TestSeaweedFSConformance(BackendConformance):
    """The same promises against a production S3 implementation that checks signatures."""

    @pytest.fixture
    def conformance_target(self, seaweedfs: S3Server) -> ConformanceTarget:
        bucket = seaweedfs.shared_bucket
        return ConformanceTarget(
            backend="s3",
            new_target=lambda: f"s3://{bucket}/t-{uuid.uuid4().hex[:12]}/src",
            options=seaweedfs.options(),
            env=seaweedfs.env(),
            denied=lambda: Unusable(f"s3://{bucket}/denied-{uuid.uuid4().hex[:12]}/src",
                                    env={"AWS_SECRET_ACCESS_KEY": "not-the-secret-key"}),
        )


def test_seaweedfs_accepts_the_right_keys_and_refuses_a_wrong_secret(
    seaweedfs: S3Server, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    bucket = seaweedfs.shared_bucket
    src = tmp_path / "src"
    write(src / "f", "x")
    for name, value in seaweedfs.env().items():
        monkeypatch.setenv(name, value)
    with get_backend("s3").open(f"s3://{bucket}/ok", seaweedfs.options()) as store:
        engine.store_ref(store, src, "latest")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "a-wrong-secret-value")
    with get_backend("s3").open(f"s3://{bucket}/ok", seaweedfs.options()) as store:
        with pytest.raises(AuthError) as raised:
            store.get_manifest("latest")
    assert "credentials-secret" in str(raised.value) and "a-wrong-secret-value" not in str(raised.value)
