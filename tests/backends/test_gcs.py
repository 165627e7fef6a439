"""The gs:// backend against a real fake-gcs-server: layout, streaming, errors, data path."""

from __future__ import annotations

import hashlib
import io
import json
import socket
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fixtures.gcsserver import GCSEmulator
from wrapresolver.backends.gcs import (
    CHUNK,
    CREDENTIALS_ENV,
    SECRET_KEY,
    GCSStore,
    GCSTarget,
    connect,
    parse_target,
)
from wrapresolver.backends.registry import get_backend
from wrapresolver.core import oci_image
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer
from wrapresolver.errors import AuthError, NetworkError, NotFoundError, ParamError
from wrapresolver.steps import engine
from wrapresolver.testing.conformance import BackendConformance, ConformanceTarget, Unusable

RUN = "7c1e9a2b-run"


# ---- resolver half: pure ----

def test_backend_is_registered_under_its_name_and_scheme() -> None:
    backend = get_backend("gcs")
    assert backend.name == "gcs" and backend.schemes == ("gs",)


@pytest.mark.parametrize(
    "target,expected",
    [
        ("gs://my-bucket", GCSTarget("my-bucket", "")),
        ("gs://my-bucket/", GCSTarget("my-bucket", "")),
        ("gs://my-bucket/ci/run-src", GCSTarget("my-bucket", "ci/run-src/")),
        ("gs://ci.example.com/x/", GCSTarget("ci.example.com", "x/")),
        ("gs://b_1/$(context.pipelineRun.name)/src", GCSTarget("b_1", "$(context.pipelineRun.name)/src/")),
        ("gs://$(params.bucket)/src", GCSTarget("$(params.bucket)", "src/")),
    ],
)
def test_targets_parse_to_a_bucket_and_an_object_prefix(target: str, expected: GCSTarget) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize(
    "target,reason",
    [
        ("gs:///prefix", "names no bucket"),
        ("gs://My-Bucket/x", "lowercase"),
        ("gs://ab/x", "3 to 63"),
        ("gs://" + "a" * 64 + "/x", "3 to 63"),
        ("gs://bucket-/x", "starting and ending"),
        ("gs://goog-ci/x", "goog"),
        ("gs://my-google-bucket/x", "google"),
        ("gs://192.168.1.10/x", "IP address"),
        ("gs://bucket/a/../b", "'..'"),
        ("gs://bucket/a//b", "empty"),
        ("gs://bucket/x?generation=1", "query"),
        ("s3://bucket/x", "not a gs:// URL"),
    ],
)
def test_bad_targets_are_param_errors_that_say_why(target: str, reason: str) -> None:
    with pytest.raises(ParamError, match=reason):
        get_backend("gcs").validate_target(target)


def test_options_are_checked() -> None:
    backend = get_backend("gcs")
    good = {"compression": "gzip", "credentials-secret": "gcs-key", "project": "my-project-123"}
    assert backend.validate_options(good) == good
    with pytest.raises(ParamError, match="zstd or gzip"):
        backend.validate_options({"compression": "lz4"})
    with pytest.raises(ParamError, match="credentials-secret"):
        backend.validate_options({"credentials-secret": "Not_A_Secret"})
    with pytest.raises(ParamError, match="project"):
        backend.validate_options({"project": "X"})
    with pytest.raises(ParamError, match="unknown param.*endpoint"):
        backend.validate_options({"endpoint": "http://x"})


def test_credentials_secret_is_mounted_by_reference_and_named_in_the_env() -> None:
    req = get_backend("gcs").step_requirements({"credentials-secret": "gcs-key"})
    [volume] = req.volumes
    [mount] = req.volume_mounts
    [env] = req.env
    assert volume["secret"]["secretName"] == "gcs-key"
    assert volume["secret"]["items"] == [{"key": SECRET_KEY, "path": SECRET_KEY}]
    assert mount["name"] == volume["name"] and mount["readOnly"] is True
    assert env == {"name": CREDENTIALS_ENV, "value": f"{mount['mountPath']}/{SECRET_KEY}"}
    assert set(env) == {"name", "value"}  # a path, never key material


def test_without_a_secret_the_steps_need_nothing_and_use_default_credentials() -> None:
    req = get_backend("gcs").step_requirements({"project": "my-project-123"})
    assert (req.env, req.volumes, req.volume_mounts) == ((), (), ())


# ---- step half against the emulator ----

@pytest.fixture
def emulator(gcs_server: GCSEmulator, monkeypatch: pytest.MonkeyPatch) -> GCSEmulator:
    gcs_server.use(monkeypatch)
    return gcs_server


@pytest.fixture
def bucket(emulator: GCSEmulator) -> str:
    return emulator.new_bucket()


@pytest.fixture
def store(bucket: str) -> Iterator[GCSStore]:
    with get_backend("gcs").open(f"gs://{bucket}/ci/run-src", {}) as opened:
        yield opened


def object_names(store: GCSStore) -> set[str]:
    """Listing is fine for a test's assertions; the backend itself never lists."""
    return {blob.name for blob in store.client.list_blobs(store.where.bucket)}


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def files(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_tree_round_trips_and_lands_in_the_documented_layout(store: GCSStore, tmp_path: Path) -> None:
    write(tmp_path / "src" / "hello.txt", "hello")
    write(tmp_path / "src" / "deep" / "er.txt", "deeper")
    engine.store_ref(store, tmp_path / "src", store.target_ref)
    engine.fetch_ref(store, store.target_ref, tmp_path / "out")
    assert files(tmp_path / "out") == {"deep/er.txt": "deeper", "hello.txt": "hello"}

    manifest_bytes = store.get_manifest("latest")
    manifest = json_loads(manifest_bytes)
    digest = "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    assert store.get_manifest(digest) == manifest_bytes
    expected = {"ci/run-src/oci-layout", "ci/run-src/refs/latest", f"ci/run-src/blobs/sha256/{digest[7:]}"} | {
        f"ci/run-src/blobs/sha256/{d['digest'][7:]}" for d in [manifest["config"], *manifest["layers"]]
    }
    assert object_names(store) == expected  # no temporary upload left behind
    assert manifest["layers"][0]["mediaType"] == oci_image.LAYER_ZSTD


def test_gzip_compression_option_reaches_the_layers(bucket: str, tmp_path: Path) -> None:
    write(tmp_path / "src" / "f.txt", "x")
    options = {"compression": "gzip"}
    with get_backend("gcs").open(f"gs://{bucket}/gz", options) as store:
        engine.store_ref(store, tmp_path / "src", "latest", options)
        manifest = json_loads(store.get_manifest("latest"))
    assert manifest["layers"][0]["mediaType"] == oci_image.LAYER_GZIP


def spec(bucket: str, task: str, inputs=(), graph=None, **kw) -> WorkspaceTransfer:
    return WorkspaceTransfer(
        workspace="src", target=f"gs://{bucket}/ci/run-src", run=RUN, task=task, backend="gcs",
        inputs=tuple(inputs), graph=graph or {}, **kw,
    )


def run_task(store: GCSStore, s: WorkspaceTransfer, tmp: Path, work=lambda d: None) -> Path:
    """What the injected steps do around a task: fetch into a fresh dir, work, store."""
    ws, state = tmp / f"ws-{s.task}", tmp / f"state-{s.task}"
    engine.fetch(store, s, ws, state)
    work(ws)
    engine.store(store, s, ws, state)
    return ws


def test_two_producers_fan_in_and_the_later_one_wins(store: GCSStore, bucket: str, tmp_path: Path) -> None:
    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1), "c": ProducerNode(("a",), 2)}
    run_task(store, spec(bucket, "a", graph=graph), tmp_path, lambda d: write(d / "base.txt", "a"))
    run_task(store, spec(bucket, "b", ["a"], graph), tmp_path,
             lambda d: (write(d / "same.txt", "from b"), write(d / "b.txt", "b")))
    run_task(store, spec(bucket, "c", ["a"], graph), tmp_path,
             lambda d: (write(d / "same.txt", "from c"), write(d / "c.txt", "c")))
    view = tmp_path / "view"
    engine.fetch(store, spec(bucket, "d", ["b", "c"], graph), view, tmp_path / "state-view")
    assert files(view) == {"base.txt": "a", "b.txt": "b", "c.txt": "c", "same.txt": "from c"}
    assert store.get_manifest(producer_ref(RUN, "d")) is None  # fetching alone stores nothing


def test_a_skipped_producer_falls_back_to_its_input(store: GCSStore, bucket: str, tmp_path: Path) -> None:
    graph = {"clone": ProducerNode(), "lint": ProducerNode(("clone",), 1)}
    run_task(store, spec(bucket, "clone", graph=graph), tmp_path, lambda d: write(d / "f", "clone"))
    view = tmp_path / "view"
    engine.fetch(store, spec(bucket, "test", ["lint"], graph), view, tmp_path / "state-view")
    assert files(view) == {"f": "clone"}


def test_a_missing_reference_is_not_found(store: GCSStore, tmp_path: Path) -> None:
    assert store.get_manifest("nope") is None
    with pytest.raises(NotFoundError, match="nope"):
        engine.fetch_ref(store, "nope", tmp_path / "out")


def test_a_missing_blob_is_not_found(store: GCSStore) -> None:
    with pytest.raises(NotFoundError, match="object not found"):
        list(store.open_blob("sha256:" + "0" * 64))


def test_a_missing_bucket_is_not_found_naming_the_bucket(emulator: GCSEmulator, tmp_path: Path) -> None:
    absent = "never-created-" + emulator.new_bucket()[5:]
    with get_backend("gcs").open(f"gs://{absent}/x", {}) as store:
        with pytest.raises(NotFoundError, match=f"bucket '{absent}' does not exist"):
            engine.fetch_ref(store, "latest", tmp_path / "out")
        write(tmp_path / "src" / "f", "x")
        with pytest.raises(NotFoundError, match=f"bucket '{absent}' does not exist"):
            engine.store_ref(store, tmp_path / "src", "latest")


class PatternReader(io.RawIOBase):
    """`size` bytes of a non-repeating pattern, produced on demand (never all in memory)."""

    def __init__(self, size: int, fail_after: int | None = None) -> None:
        self.left, self.fail_after, self.sent = size, fail_after, 0
        self.hash = hashlib.sha256()

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        if self.fail_after is not None and self.sent >= self.fail_after:
            raise OSError(5, "the source disk failed")
        n = min(len(buffer), self.left, 1 << 20)
        block = hashlib.sha512(self.sent.to_bytes(8, "big")).digest() * (n // 64 + 1)
        data = block[:n]
        buffer[:n] = data
        self.hash.update(data)
        self.left -= n
        self.sent += n
        return n


def test_a_twenty_megabyte_blob_streams_in_several_chunks_and_keeps_its_digest(store: GCSStore) -> None:
    size = 20 << 20
    assert size > 2 * CHUNK
    source = PatternReader(size)
    desc = store.put_blob(io.BufferedReader(source), "application/octet-stream")
    assert desc.size == size and desc.digest == "sha256:" + source.hash.hexdigest()
    assert store.blob_exists(desc.digest)
    back, got = hashlib.sha256(), 0
    for chunk in store.open_blob(desc.digest):
        back.update(chunk)
        got += len(chunk)
    assert got == size and "sha256:" + back.hexdigest() == desc.digest
    assert not any("/uploads/" in name for name in object_names(store))


def test_memory_stays_below_the_blob_size_while_streaming(store: GCSStore) -> None:
    """A 48 MiB blob must pass through with a peak of a few chunks, not the whole blob."""
    size = 48 << 20
    tracemalloc.start()
    try:
        desc = store.put_blob(io.BufferedReader(PatternReader(size)), "application/octet-stream")
        upload_peak = tracemalloc.get_traced_memory()[1]
        tracemalloc.reset_peak()
        read = sum(len(chunk) for chunk in store.open_blob(desc.digest))
        download_peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert read == size
    assert upload_peak < 3 * CHUNK < size and download_peak < 3 * CHUNK


def test_storing_the_same_blob_twice_keeps_one_object(store: GCSStore) -> None:
    first = store.put_blob(io.BytesIO(b"payload"), "application/octet-stream")
    second = store.put_blob(io.BytesIO(b"payload"), "application/octet-stream")
    assert first == second
    assert object_names(store) == {f"ci/run-src/blobs/sha256/{first.digest[7:]}"}


def test_a_broken_source_stream_leaves_no_blob_and_keeps_its_own_error(store: GCSStore) -> None:
    source = PatternReader(30 << 20, fail_after=CHUNK + (1 << 20))
    with pytest.raises(OSError, match="source disk failed"):
        store.put_blob(io.BufferedReader(source), "application/octet-stream")
    assert object_names(store) == set()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_an_unreachable_endpoint_is_a_network_error_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", endpoint)
    with connect("gs://some-bucket/x", {}, retry_deadline=1.0) as store:
        with pytest.raises(NetworkError, match=endpoint):
            store.get_manifest("latest")


def test_missing_credentials_are_an_auth_error_naming_the_param(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("STORAGE_EMULATOR_HOST", raising=False)
    monkeypatch.setenv(CREDENTIALS_ENV, str(tmp_path / "no-such-key.json"))
    with pytest.raises(AuthError, match="credentials-secret"):
        get_backend("gcs").open("gs://some-bucket/x", {})


def json_loads(data: bytes | None) -> dict:
    assert data is not None
    return json.loads(data)


class TestGCSConformance(BackendConformance):
    """The shared backend suite, each test on a fresh bucket of the emulator."""

    @pytest.fixture
    def conformance_target(self, gcs_server: GCSEmulator) -> ConformanceTarget:
        return ConformanceTarget(
            backend="gcs",
            new_target=lambda: f"gs://{gcs_server.new_bucket()}/ci/run-src",
            options={},
            env={"STORAGE_EMULATOR_HOST": gcs_server.url},
            unreachable=lambda netloc: Unusable("gs://unreachable/ci/run-src", env={
                "STORAGE_EMULATOR_HOST": f"http://{netloc}", "WRAPRESOLVER_IO_TIMEOUT": "2",
            }),
        )
