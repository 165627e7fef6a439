"""Blob downloads as a registry's front end may serve them: cut short, or with a content coding.

A real docker-registry behind a small forwarding proxy started by the test. The proxy passes
every request through and changes only the answers to blob GETs: it stops halfway through
the body and closes the connection, or gzips the body and says so in `Content-Encoding`
(as a CDN in front of a registry may). The fetch runs as the CLI, as a task step runs it.
"""

from __future__ import annotations

import gzip
import os
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.fixtures.cli import wrapresolver
from tests.fixtures.registry import Registry
from wrapresolver.backends.oci.client import rechunked


class BlobProxy:
    """Forwards to `upstream`; blob GETs are answered as `mode` says ("cut", "gzip", "pass")."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self.blob_gets = 0
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("host", "content-length")}
                answer = httpx.request(self.command, f"http://{proxy.upstream}{self.path}", headers=headers,
                                       content=body, follow_redirects=True)
                data = answer.content
                blob = self.command == "GET" and "/blobs/sha256:" in self.path and answer.status_code == 200
                if blob:
                    proxy.blob_gets += 1
                if blob and proxy.mode == "gzip":
                    data = gzip.compress(data)
                self.send_response(answer.status_code)
                for key, value in answer.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding"):
                        self.send_header(key, value)
                if blob and proxy.mode == "gzip":
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command == "HEAD":
                    return
                if blob and proxy.mode == "cut":
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                self.wfile.write(data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

            def log_message(self, *args) -> None:  # quiet
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.host = f"127.0.0.1:{self.server.server_address[1]}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxy(registry: Registry) -> Iterator[BlobProxy]:
    server = BlobProxy(registry.host)
    yield server
    server.close()


def _fetched_through(registry: Registry, proxy: BlobProxy, tmp_path: Path, mode: str) -> subprocess.CompletedProcess:
    """Store a tree straight into the registry, then fetch it through the proxy in `mode`.

    The tree is kept in tmp_path/"seed", the fetch goes to tmp_path/"out".
    """
    seed = tmp_path / "seed"
    (seed / "sub").mkdir(parents=True)
    (seed / "data.bin").write_bytes(os.urandom(3 << 20))  # several download chunks
    (seed / "sub" / "note.txt").write_text("kept\n")
    env = {"WRAPRESOLVER_IO_TIMEOUT": "10", "DOCKER_CONFIG": str(tmp_path)}
    target = registry.repo(mode)
    done = wrapresolver("store", "--path", str(seed), "--target", target, env=env)
    assert done.returncode == 0, done.stderr
    proxy.mode = mode
    through = f"{proxy.host}/{target.split('/', 1)[1]}"
    return wrapresolver("fetch", "--path", str(tmp_path / "out"), "--target", through, env=env)


def test_a_blob_cut_short_by_the_registry_fails_the_fetch_as_a_network_failure_and_leaves_no_files(
    registry: Registry, proxy: BlobProxy, tmp_path: Path,
) -> None:
    done = _fetched_through(registry, proxy, tmp_path, "cut")
    out = tmp_path / "out"
    assert done.returncode == 5, done.stderr
    assert "broke while reading blob sha256:" in done.stderr
    assert "Traceback" not in done.stderr
    assert proxy.blob_gets >= 1
    assert not out.exists() or not any(out.iterdir())


def test_a_blob_served_gzip_encoded_by_a_front_end_is_decoded_and_verified(
    registry: Registry, proxy: BlobProxy, tmp_path: Path,
) -> None:
    done = _fetched_through(registry, proxy, tmp_path, "gzip")
    seed, out = tmp_path / "seed", tmp_path / "out"
    assert done.returncode == 0, done.stderr
    assert proxy.blob_gets >= 1
    assert (out / "data.bin").read_bytes() == (seed / "data.bin").read_bytes()
    assert (out / "sub" / "note.txt").read_text() == "kept\n"


@given(st.lists(st.binary(max_size=40), max_size=30), st.integers(min_value=1, max_value=64))
def test_rechunked_chunks_keep_every_byte_in_order_and_only_the_last_is_short(pieces: list[bytes], size: int) -> None:
    chunks = list(rechunked(iter(pieces), size))
    assert b"".join(chunks) == b"".join(pieces)
    assert all(len(chunk) >= size for chunk in chunks[:-1])
    assert all(chunks)
