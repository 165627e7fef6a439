"""Blob transfers as a registry's front end may serve them, and the requests they take.

A real docker-registry behind a small forwarding proxy started by the test. The proxy
passes every request through and changes only the answers to blob GETs, as `mode` says:
it stops halfway through the body and closes the connection ("cut") or goes quiet
("stall"); it adds a content coding (as a CDN in front of a registry may); or it
redirects the read to object storage, another origin ("away") or its own ("here"). The
proxy asks for Basic credentials, so the tests see where the registry's `Authorization`
goes. The fetch runs as the CLI, as a task step runs it.
"""

from __future__ import annotations

import base64
import gzip
import json
import os
import subprocess
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from tests.fixtures.cli import wrapresolver
from tests.fixtures.registry import Registry

USER, PASSWORD = "ci", "proxy-pass"
BASIC = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
STORAGE_PREFIX = "/_storage/"
CODINGS = {"gzip": gzip.compress, "deflate": zlib.compress, "br": lambda data: b"not brotli"}
REFUSALS = {
    "denied": (403, b'{"errors":[{"code":"DENIED","message":"blob reads are off"}]}'),
    "gone": (404, b'{"errors":[{"code":"BLOB_UNKNOWN","message":"blob unknown to registry"}]}'),
}
"""Modes in which a blob GET gets an error answer (status, the registry's JSON error)."""


class BlobProxy:
    """Forwards to `upstream` behind Basic auth; blob GETs are answered as `mode` says."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.mode = "pass"
        self.blob_gets = 0
        self.requests: list[tuple[str, str]] = []
        """(method, path) of every authenticated request that reached the registry side."""
        self.storage_auth: list[str] = []
        """The `Authorization` each read of the storage side came with ('' for none)."""
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() != "chunked":
                    length = int(self.headers.get("Content-Length") or 0)
                    return self.rfile.read(length) if length else b""
                parts = []
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    parts.append(self.rfile.read(size))
                    self.rfile.readline()
                self.rfile.readline()  # the CRLF after the last, empty chunk
                return b"".join(parts)

            def _upstream(self, path: str) -> httpx.Response:
                body = self._body()
                skip = ("host", "content-length", "authorization", "accept-encoding")
                headers = {k: v for k, v in self.headers.items() if k.lower() not in skip}
                return httpx.request(self.command, f"http://{proxy.upstream}{path}", headers=headers,
                                     content=body, follow_redirects=True)

            def _send(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
                self.send_response(status)
                for key, value in headers:
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _storage(self) -> None:
                proxy.storage_auth.append(self.headers.get("Authorization", ""))
                answer = self._upstream(self.path[len(STORAGE_PREFIX) - 1:])
                self._send(answer.status_code, [("Content-Type", "application/octet-stream")], answer.content)

            def _forward(self) -> None:
                if self.path.startswith(STORAGE_PREFIX):
                    self._storage()
                    return
                if self.headers.get("Authorization") != BASIC:
                    self._send(401, [("WWW-Authenticate", 'Basic realm="proxy"')], b"")
                    return
                proxy.requests.append((self.command, self.path.split("?")[0]))
                blob = self.command == "GET" and "/blobs/sha256:" in self.path
                if blob and proxy.mode in ("away", "here"):
                    proxy.blob_gets += 1
                    host = proxy.storage.host if proxy.mode == "away" else proxy.host
                    location = f"http://{host}{STORAGE_PREFIX}{self.path.lstrip('/')}?X-Signature=abc"
                    self._send(307, [("Location", location)], b"")
                    return
                if blob and proxy.mode in REFUSALS:
                    proxy.blob_gets += 1
                    status, refusal = REFUSALS[proxy.mode]
                    self._send(status, [("Content-Type", "application/json")], refusal)
                    return
                answer = self._upstream(self.path)
                data = answer.content
                blob = blob and answer.status_code == 200
                proxy.blob_gets += blob
                # Upload sessions come back to this proxy, not to the registry behind it.
                headers = [(k, v.replace(proxy.upstream, proxy.host) if k.lower() == "location" else v)
                           for k, v in answer.headers.items()
                           if k.lower() not in ("content-length", "transfer-encoding", "connection", "content-encoding")]
                if blob and proxy.mode in CODINGS:
                    data = CODINGS[proxy.mode](data)
                    headers.append(("Content-Encoding", proxy.mode))
                if blob and proxy.mode in ("cut", "stall"):
                    self.send_response(answer.status_code)
                    for key, value in headers:
                        self.send_header(key, value)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[: len(data) // 2])
                    self.wfile.flush()
                    if proxy.mode == "stall":
                        time.sleep(4)  # longer than the fetch's I/O timeout
                    self.close_connection = True
                    return
                self._send(answer.status_code, headers, data)

            do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = _forward  # noqa: N815

            def log_message(self, *args) -> None:  # quiet
                pass

        def serve() -> tuple[ThreadingHTTPServer, str]:
            server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
            server.daemon_threads = True
            threading.Thread(target=server.serve_forever, daemon=True).start()
            return server, f"127.0.0.1:{server.server_address[1]}"

        self.server, self.host = serve()
        storage_server, storage_host = serve()
        self.storage = type("Storage", (), {"server": storage_server, "host": storage_host})
        """The same handler on another port: another origin, as object storage is."""

    def close(self) -> None:
        for server in (self.server, self.storage.server):
            server.shutdown()
            server.server_close()


@pytest.fixture
def proxy(registry: Registry) -> Iterator[BlobProxy]:
    server = BlobProxy(registry.host)
    yield server
    server.close()


def _client_env(proxy: BlobProxy, tmp_path: Path, timeout: str = "10") -> dict[str, str]:
    """The CLI's environment: the proxy's Basic credentials in a docker config in tmp_path."""
    (tmp_path / "config.json").write_text(json.dumps({"auths": {proxy.host: {"auth": BASIC.split(" ", 1)[1]}}}))
    return {"WRAPRESOLVER_IO_TIMEOUT": timeout, "DOCKER_CONFIG": str(tmp_path)}


def _fetched_through(registry: Registry, proxy: BlobProxy, tmp_path: Path, mode: str,
                     timeout: str = "10") -> subprocess.CompletedProcess:
    """Store a tree straight into the registry, then fetch it through the proxy in `mode`.

    The tree is kept in tmp_path/"seed", the fetch goes to tmp_path/"out".
    """
    seed = tmp_path / "seed"
    (seed / "sub").mkdir(parents=True)
    (seed / "data.bin").write_bytes(os.urandom(3 << 20))  # several download chunks
    (seed / "sub" / "note.txt").write_text("kept\n")
    env = _client_env(proxy, tmp_path, timeout)
    target = registry.repo(mode)
    done = wrapresolver("store", "--path", str(seed), "--target", target, env=env)
    assert done.returncode == 0, done.stderr
    proxy.mode = mode
    through = f"{proxy.host}/{target.split('/', 1)[1]}"
    return wrapresolver("fetch", "--path", str(tmp_path / "out"), "--target", through, env=env)


def _fetched_whole(tmp_path: Path) -> bool:
    seed, out = tmp_path / "seed", tmp_path / "out"
    return ((out / "data.bin").read_bytes() == (seed / "data.bin").read_bytes()
            and (out / "sub" / "note.txt").read_text() == "kept\n")


def _no_files(tmp_path: Path) -> bool:
    out = tmp_path / "out"
    return not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(("mode", "code", "words"), [
    ("denied", 3, "denied pull access to blob sha256:"),
    ("gone", 4, "does not exist in"),
])
def test_a_refused_blob_read_is_worded_as_every_registry_failure_with_the_registrys_own_text(
    registry: Registry, proxy: BlobProxy, tmp_path: Path, mode: str, code: int, words: str,
) -> None:
    done = _fetched_through(registry, proxy, tmp_path, mode)
    assert done.returncode == code, done.stderr
    assert words in done.stderr
    assert REFUSALS[mode][1].decode().split('"message":"')[1].split('"')[0] in done.stderr
    assert proxy.blob_gets == 1  # an answer, even a refusal, is not retried
    assert "Traceback" not in done.stderr and _no_files(tmp_path)


def test_a_blob_cut_short_by_the_registry_fails_the_fetch_as_a_network_failure_and_leaves_no_files(
    registry: Registry, proxy: BlobProxy, tmp_path: Path,
) -> None:
    done = _fetched_through(registry, proxy, tmp_path, "cut")
    assert done.returncode == 5, done.stderr
    assert "broke while reading blob sha256:" in done.stderr
    assert "ended after" in done.stderr
    assert "Traceback" not in done.stderr
    assert proxy.blob_gets >= 1
    assert _no_files(tmp_path)


def test_a_blob_read_that_goes_quiet_halfway_fails_after_the_io_timeout_and_leaves_no_files(
    registry: Registry, proxy: BlobProxy, tmp_path: Path,
) -> None:
    done = _fetched_through(registry, proxy, tmp_path, "stall", timeout="1")
    assert done.returncode == 5, done.stderr
    assert "did not answer the read of blob sha256:" in done.stderr
    assert "WRAPRESOLVER_IO_TIMEOUT" in done.stderr
    assert _no_files(tmp_path)


@pytest.mark.parametrize("coding", ["gzip", "deflate"])
def test_a_blob_a_front_end_encodes_anyway_is_decoded_and_verified(
    registry: Registry, proxy: BlobProxy, tmp_path: Path, coding: str,
) -> None:
    done = _fetched_through(registry, proxy, tmp_path, coding)
    assert done.returncode == 0, done.stderr
    assert proxy.blob_gets >= 1
    assert _fetched_whole(tmp_path)


def test_a_content_coding_the_client_cannot_decode_is_refused_by_name(
    registry: Registry, proxy: BlobProxy, tmp_path: Path,
) -> None:
    done = _fetched_through(registry, proxy, tmp_path, "br")
    assert done.returncode == 1, done.stderr
    assert "content coding 'br'" in done.stderr
    assert "Traceback" not in done.stderr
    assert _no_files(tmp_path)


@pytest.mark.parametrize(("mode", "credentials"), [("away", ""), ("here", BASIC)], ids=["another-origin", "same-origin"])
def test_a_redirected_read_carries_the_registry_credentials_only_within_the_registry_origin(
    registry: Registry, proxy: BlobProxy, tmp_path: Path, mode: str, credentials: str,
) -> None:
    done = _fetched_through(registry, proxy, tmp_path, mode)
    assert done.returncode == 0, done.stderr
    assert _fetched_whole(tmp_path)
    assert proxy.blob_gets >= 1
    assert proxy.storage_auth and set(proxy.storage_auth) == {credentials}


@pytest.mark.parametrize(("size", "patches"), [(200 << 10, 0), (3 << 20, 1)], ids=["small-layer", "large-layer"])
def test_blobs_within_one_chunk_go_up_in_one_put_and_only_larger_layers_stream(
    registry: Registry, proxy: BlobProxy, tmp_path: Path, size: int, patches: int,
) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "data.bin").write_bytes(os.urandom(size))  # incompressible: the layer stays this big
    env = _client_env(proxy, tmp_path)
    target = registry.repo(f"upload-{size}")
    through = f"{proxy.host}/{target.split('/', 1)[1]}"
    done = wrapresolver("store", "--path", str(seed), "--target", through, env=env)
    assert done.returncode == 0, done.stderr
    uploads = [method for method, path in proxy.requests if "/blobs/uploads/" in path]
    assert uploads.count("PATCH") == patches
    assert uploads.count("PUT") == uploads.count("POST") == 2  # the layer and the config
    fetched = wrapresolver("fetch", "--path", str(tmp_path / "out"), "--target", target, env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert (tmp_path / "out" / "data.bin").read_bytes() == (seed / "data.bin").read_bytes()
