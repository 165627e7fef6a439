"""The conformance kit's failure checks: errors land in the documented classes, waits are bounded.

`BackendConformance` (conformance.py) inherits these tests; they live here to keep that
module about one thing (what a backend stores and returns). They run the real
`wrapresolver fetch` command in a child process, as the injected step does, so what is
checked is what a pipeline author sees: the exit code of the error class
(docs/plugin-authors.md, "Errors"), one message line naming the server, and no traceback.

Checks that need more than a live target are skipped unless the `ConformanceTarget` says
how, with the same variants the early check uses (conformance_target.py): `unreachable`
(the backend pointed at another host:port) for a closed port and for a server that accepts
connections and never answers (with `WRAPRESOLVER_IO_TIMEOUT` set to one second: a backend
that does not build its client with `io_timeout()` hangs there until the guard below ends
it), and `denied` (credentials the live server refuses) for `AuthError`.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest

from wrapresolver.errors import AuthError, NetworkError, NotFoundError, TransferError
from wrapresolver.testing.conformance_target import ConformanceTarget, Unusable

IO_TIMEOUT = "1"
"""`WRAPRESOLVER_IO_TIMEOUT` for the stalled-server check: seconds, so the step fails fast."""
GUARD = 180.0
"""How long the child may take before the kit calls it hung. Only ends a hang; nothing is
asserted about how long a step took (retries with backoff are allowed their seconds)."""


class SilentServer:
    """A TCP server that accepts every connection and never sends a byte."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = self.sock.getsockname()[1]
        self._conns: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="silent-server", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.sock.settimeout(0.2)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self._conns.append(conn)  # held open, never answered

    @property
    def accepted(self) -> int:
        """Connections accepted so far: how many attempts a client made."""
        return len(self._conns)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._conns:
            conn.close()
        self.sock.close()


def closed_port() -> int:
    """A loopback port with no listener (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def fetch_by_hand(setup: ConformanceTarget, case: Unusable | None, out: Path,
                  env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`wrapresolver fetch --target T --path OUT` in a child, as a step would run it: of the
    variant `case` of the target, or of a fresh target when None; `env` over everything."""
    case = case or Unusable(setup.new_target())
    argv = [sys.executable, "-m", "wrapresolver", "fetch", "--backend", setup.backend,
            "--target", case.target, "--path", str(out)]
    for name, value in setup.options_for(case).items():
        argv += ["--option", f"{name}={value}"]
    child_env = {**case.environment({**os.environ, **setup.env}), **(env or {})}
    target = case.target
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=GUARD, env=child_env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"`wrapresolver fetch` of {target} was still waiting after {GUARD:.0f} s with "
                    f"WRAPRESOLVER_IO_TIMEOUT={child_env.get('WRAPRESOLVER_IO_TIMEOUT', 'unset')}: the "
                    f"backend must give every request io_timeout() (from wrapresolver.backends.base) as "
                    f"its connect and read timeout, and not retry a request that stalled")


def assert_one_error(done: subprocess.CompletedProcess[str], error: type[TransferError], *, naming: str) -> str:
    """The step failed with `error`'s exit code and a message naming `naming`, no traceback."""
    assert done.returncode == error.exit_code, (
        f"expected exit {error.exit_code} ({error.__name__}), got {done.returncode}: map this failure to "
        f"{error.__name__} (docs/plugin-authors.md, Errors)\n{done.stderr[-2000:]}")
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert naming in done.stderr, f"the message should name {naming!r}:\n{done.stderr[-2000:]}"
    return done.stderr


class ErrorConformance:
    """Mixed into `BackendConformance`; uses its `setup` fixture."""

    @pytest.fixture
    def silent_server(self) -> Iterator[SilentServer]:
        server = SilentServer()
        yield server
        server.close()

    def test_a_target_never_written_is_a_not_found_error_exit_code(
        self, setup: ConformanceTarget, tmp_path: Path,
    ) -> None:
        done = fetch_by_hand(setup, None, tmp_path / "out")
        assert_one_error(done, NotFoundError, naming="")

    def test_an_unreachable_server_is_a_network_error_naming_it(
        self, setup: ConformanceTarget, tmp_path: Path,
    ) -> None:
        if setup.unreachable is None:
            pytest.skip("ConformanceTarget.unreachable is not set: the backend cannot be pointed at another address")
        port = closed_port()
        done = fetch_by_hand(setup, setup.unreachable(f"127.0.0.1:{port}"), tmp_path / "out")
        assert_one_error(done, NetworkError, naming=str(port))

    def test_a_server_that_never_answers_fails_the_step_as_a_network_error_after_io_timeout(
        self, setup: ConformanceTarget, tmp_path: Path, silent_server: SilentServer,
    ) -> None:
        if setup.unreachable is None:
            pytest.skip("ConformanceTarget.unreachable is not set: the backend cannot be pointed at another address")
        case = setup.unreachable(f"127.0.0.1:{silent_server.port}")
        done = fetch_by_hand(setup, case, tmp_path / "out", env={"WRAPRESOLVER_IO_TIMEOUT": IO_TIMEOUT})
        assert_one_error(done, NetworkError, naming=str(silent_server.port))

    def test_refused_credentials_are_an_auth_error_that_shows_no_secret(
        self, setup: ConformanceTarget, tmp_path: Path,
    ) -> None:
        if setup.denied is None:
            pytest.skip("ConformanceTarget.denied is not set: no credentials the server refuses")
        case = setup.denied()
        done = fetch_by_hand(setup, case, tmp_path / "out")
        message = assert_one_error(done, AuthError, naming="")
        for value in case.secrets():
            assert value not in message, "a credential value is in the message"
