"""The file:// backend: an OCI image layout directory, safe under concurrent writers."""

from __future__ import annotations

import errno
import fcntl
import hashlib
import io
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wrapresolver.backends import file
from wrapresolver.backends.file import LayoutStore, parse_target
from wrapresolver.backends.registry import get_backend
from wrapresolver.core import oci_image
from wrapresolver.errors import NotFoundError, ParamError
from wrapresolver.steps import engine


def test_backend_is_registered_under_its_name_and_scheme() -> None:
    backend = get_backend("file")
    assert backend.name == "file" and backend.schemes == ("file",)


@pytest.mark.parametrize(
    "target,expected",
    [
        ("file:///srv/ci/run-src", (Path("/srv/ci/run-src"), "latest")),
        ("file:///srv/ci/run-src:v2", (Path("/srv/ci/run-src"), "v2")),
        ("file://localhost/srv/x", (Path("/srv/x"), "latest")),
        ("file:///srv/$(context.pipelineRun.name)-src", (Path("/srv/$(context.pipelineRun.name)-src"), "latest")),
    ],
)
def test_targets_parse_to_a_directory_and_a_reference(target: str, expected) -> None:
    assert parse_target(target) == expected


@pytest.mark.parametrize("target", ["file://server/share", "file://relative", "file:///a/../b", "s3://b/k"])
def test_bad_targets_are_param_errors(target: str) -> None:
    with pytest.raises(ParamError):
        get_backend("file").validate_target(target)


def test_compression_option_is_checked() -> None:
    backend = get_backend("file")
    assert backend.validate_options({"compression": "gzip"}) == {"compression": "gzip"}
    with pytest.raises(ParamError, match="zstd or gzip"):
        backend.validate_options({"compression": "lz4"})
    with pytest.raises(ParamError, match="unknown param"):
        backend.validate_options({"colour": "blue"})


def test_layout_round_trip_is_a_valid_oci_image_layout(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "hello.txt").write_text("hello")
    store = get_backend("file").open(f"file://{tmp_path}/layout:v1", {})
    engine.store_ref(store, src, store.target_ref)
    layout = tmp_path / "layout"
    assert json.loads((layout / "oci-layout").read_text()) == {"imageLayoutVersion": "1.0.0"}
    index = json.loads((layout / "index.json").read_text())
    [entry] = index["manifests"]
    assert entry["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    manifest_bytes = (layout / "blobs" / "sha256" / entry["digest"].split(":")[1]).read_bytes()
    assert entry["digest"] == "sha256:" + hashlib.sha256(manifest_bytes).hexdigest()
    manifest = json.loads(manifest_bytes)
    assert manifest["mediaType"] == oci_image.MANIFEST
    assert manifest["layers"][0]["mediaType"] == oci_image.LAYER_ZSTD
    for blob in [manifest["config"], *manifest["layers"]]:
        data = (layout / "blobs" / "sha256" / blob["digest"].split(":")[1]).read_bytes()
        assert len(data) == blob["size"]
        assert "sha256:" + hashlib.sha256(data).hexdigest() == blob["digest"]
    out = tmp_path / "out"
    engine.fetch_ref(store, "v1", out)
    assert (out / "hello.txt").read_text() == "hello"


def test_manifest_can_be_read_by_digest(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "layout")
    store.put_manifest("r", b'{"x":1}', oci_image.MANIFEST)
    digest = "sha256:" + hashlib.sha256(b'{"x":1}').hexdigest()
    assert store.get_manifest(digest) == b'{"x":1}'
    assert store.get_manifest("other") is None


def test_an_interrupted_blob_write_leaves_no_blob_and_no_temp_file(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "layout")

    class Broken(io.RawIOBase):
        sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer) -> int:
            if self.sent > 3 << 20:
                raise ConnectionError("stream broke")
            buffer[: len(buffer)] = b"x" * len(buffer)
            self.sent += len(buffer)
            return len(buffer)

    with pytest.raises(ConnectionError):
        store.put_blob(io.BufferedReader(Broken()), "application/octet-stream")
    assert list((tmp_path / "layout" / "blobs" / "sha256").iterdir()) == []


def test_blob_is_stored_under_its_sha256(tmp_path: Path) -> None:
    store = LayoutStore(tmp_path / "layout")
    desc = store.put_blob(io.BytesIO(b"payload"), "application/octet-stream")
    assert desc.digest == "sha256:" + hashlib.sha256(b"payload").hexdigest() and desc.size == 7
    assert store.blob_exists(desc.digest)
    assert b"".join(store.open_blob(desc.digest)) == b"payload"
    with pytest.raises(NotFoundError):
        list(store.open_blob("sha256:" + "0" * 64))


def _write_refs(root: str, writer: int, count: int) -> None:
    store = LayoutStore(Path(root))
    for i in range(count):
        store.put_manifest(f"w{writer}-r{i}", json.dumps({"w": writer, "i": i}).encode(), oci_image.MANIFEST)
        store.put_manifest("shared", json.dumps({"w": writer, "i": i}).encode(), oci_image.MANIFEST)


def test_concurrent_reference_writers_lose_no_reference(tmp_path: Path) -> None:
    root = str(tmp_path / "layout")
    context = multiprocessing.get_context("fork")
    writers = [context.Process(target=_write_refs, args=(root, w, 25)) for w in range(4)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(240)  # generous: every write fsyncs the index, and a loaded disk is slow
        assert process.exitcode == 0
    store = LayoutStore(Path(root))
    for w in range(4):
        for i in range(25):
            assert json.loads(store.get_manifest(f"w{w}-r{i}")) == {"w": w, "i": i}
    index = json.loads((Path(root) / "index.json").read_text())
    names = [m["annotations"]["org.opencontainers.image.ref.name"] for m in index["manifests"]]
    assert len(names) == len(set(names)) == 101
    assert json.loads(store.get_manifest("shared"))["i"] == 24


CROSSED_LOCKS = """
import sys, threading, time
from pathlib import Path
from wrapresolver.backends.file import LayoutStore

first, second, signals, me, other = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4], sys.argv[5]
errors = []

def wait_for(name):
    while not (signals / name).exists():
        time.sleep(0.01)

def ask():
    wait_for(f"{other}-holds")  # the other step holds the lock this thread asks for
    try:
        with LayoutStore(second)._locked():
            pass
    except OSError as exc:
        errors.append(exc)
        (signals / f"{me}-refused").touch()

asker = threading.Thread(target=ask)
with LayoutStore(first)._locked():
    (signals / f"{me}-holds").touch()
    asker.start()
    wait_for("release")
asker.join()
if errors:
    sys.exit(f"{me}: {errors[0]}")
"""


def _blocked_lock_waiters() -> int:
    return sum(1 for line in Path("/proc/locks").read_text().splitlines() if "->" in line)


def test_two_steps_each_locking_two_layouts_on_two_threads_wait_for_each_other_instead_of_failing(
    tmp_path: Path,
) -> None:
    # A store step stores its workspaces on threads: step 1 holds layout A's lock on one
    # thread and asks for B's on another, step 2 the other way round. No thread holds two
    # locks, so both must simply wait; process-owned locks made the kernel see a cycle and
    # fail one of them with EDEADLK ("Resource deadlock avoided").
    a, b, signals = tmp_path / "a", tmp_path / "b", tmp_path / "signals"
    for directory in (a, b, signals):
        directory.mkdir()
    LayoutStore(a), LayoutStore(b)
    before = _blocked_lock_waiters()
    steps = [
        subprocess.Popen([sys.executable, "-c", CROSSED_LOCKS, str(a), str(b), str(signals), "one", "two"],
                         stderr=subprocess.PIPE, text=True),
        subprocess.Popen([sys.executable, "-c", CROSSED_LOCKS, str(b), str(a), str(signals), "two", "one"],
                         stderr=subprocess.PIPE, text=True),
    ]
    try:
        # Both askers blocked in the kernel, or one of them already refused: then release.
        deadline = time.monotonic() + 60
        while _blocked_lock_waiters() - before < 2 and not any(signals.glob("*-refused")):
            assert time.monotonic() < deadline, "the two steps never both waited for a lock"
            time.sleep(0.01)
        (signals / "release").touch()
        results = [(s.wait(timeout=60), s.stderr.read() if s.stderr else "") for s in steps]
        assert results == [(0, ""), (0, "")]
    finally:
        (signals / "release").touch()  # a failed test leaves no step waiting for ever
        for s in steps:
            if s.poll() is None:
                s.kill()
                s.wait()


def test_without_open_file_locks_a_false_deadlock_refusal_is_retried(monkeypatch) -> None:
    monkeypatch.setattr(file, "_OFD_SETLKW", None)
    calls = []

    def lockf(fd: int, operation: int) -> None:
        calls.append(operation)
        if len(calls) < 3:
            raise OSError(errno.EDEADLK, "Resource deadlock avoided")

    monkeypatch.setattr(fcntl, "lockf", lockf)
    file._lock_file(0)
    assert calls == [fcntl.LOCK_EX] * 3
