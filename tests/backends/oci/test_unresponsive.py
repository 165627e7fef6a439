"""Registries that do not answer: the step fails as a network failure in bounded time.

Real servers: a socket server that accepts connections and never answers, one that answers
503 to everything, and the docker registry fixture. No timed assertions: the configured
wait is set small (`WRAPRESOLVER_IO_TIMEOUT`) and the process gets a generous timeout; the
outcome (exit code, message) is what is asserted.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.fixtures.cli import wrapresolver
from tests.fixtures.registry import Registry
from wrapresolver.testing.conformance_errors import SilentServer


class Always503(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        body = b'{"errors":[{"code":"UNAVAILABLE","message":"maintenance"}]}'
        self.send_response(503)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = _answer  # noqa: N815

    def log_message(self, *args) -> None:  # quiet
        pass


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


@pytest.fixture
def always_503() -> Iterator[int]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), Always503)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_a_registry_that_never_answers_fails_a_fetch_as_a_network_failure(silent: SilentServer, tmp_path: Path) -> None:
    done = wrapresolver("fetch", "--target", f"127.0.0.1:{silent.port}/ci/ws", "--path", str(tmp_path / "out"),
                        env={"WRAPRESOLVER_IO_TIMEOUT": "1", "DOCKER_CONFIG": str(tmp_path)})
    assert done.returncode == 5, done.stderr
    assert "did not answer" in done.stderr
    assert "WRAPRESOLVER_IO_TIMEOUT" in done.stderr
    assert "Traceback" not in done.stderr
    assert silent.accepted <= 2  # one TLS attempt, one plain attempt: a stall is not retried


def test_a_registry_that_never_answers_fails_a_store_as_a_network_failure(silent: SilentServer, tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    seed.mkdir()
    (seed / "a.txt").write_text("a")
    done = wrapresolver("store", "--path", str(seed), "--target", f"127.0.0.1:{silent.port}/ci/ws",
                        env={"WRAPRESOLVER_IO_TIMEOUT": "1", "DOCKER_CONFIG": str(tmp_path)})
    assert done.returncode == 5, done.stderr
    assert "did not answer" in done.stderr


def test_a_registry_answering_503_to_everything_is_a_network_failure(always_503: int, tmp_path: Path) -> None:
    done = wrapresolver("fetch", "--target", f"127.0.0.1:{always_503}/ci/ws", "--path", str(tmp_path / "out"),
                        env={"WRAPRESOLVER_IO_TIMEOUT": "5", "DOCKER_CONFIG": str(tmp_path)})
    assert done.returncode == 5, done.stderr
    assert "503" in done.stderr and "does not look like an OCI registry" not in done.stderr


def test_a_nonsense_timeout_setting_is_a_usage_error_naming_the_variable(registry: Registry, tmp_path: Path) -> None:
    done = wrapresolver("fetch", "--target", registry.repo("timeouts"), "--path", str(tmp_path / "out"),
                        env={"WRAPRESOLVER_IO_TIMEOUT": "soon", "DOCKER_CONFIG": str(tmp_path)})
    assert done.returncode == 2, done.stderr
    assert "WRAPRESOLVER_IO_TIMEOUT" in done.stderr


def test_a_small_timeout_still_moves_data_through_a_live_registry(registry: Registry, tmp_path: Path) -> None:
    seed, back = tmp_path / "seed", tmp_path / "back"
    seed.mkdir()
    (seed / "data.bin").write_bytes(os.urandom(3 << 20))
    env = {"WRAPRESOLVER_IO_TIMEOUT": "2", "DOCKER_CONFIG": str(tmp_path)}
    target = registry.repo("small-timeout")
    stored = wrapresolver("store", "--path", str(seed), "--target", target, env=env)
    assert stored.returncode == 0, stored.stderr
    fetched = wrapresolver("fetch", "--path", str(back), "--target", target, env=env)
    assert fetched.returncode == 0, fetched.stderr
    assert (back / "data.bin").read_bytes() == (seed / "data.bin").read_bytes()
