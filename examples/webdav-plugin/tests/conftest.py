"""A real WebDAV server for the tests: WsgiDAV on cheroot, basic auth, serving a temp dir.

A live server rather than a mock, because what the backend relies on (MKCOL answers,
MOVE with Overwrite, chunked PUT bodies, 401s) is exactly what a mock would assume.
"""

from __future__ import annotations

import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

USERNAME = "ci"
PASSWORD = "s3cret-pw"


@dataclass
class DavServer:
    """One running WsgiDAV instance and how to reach it."""

    root: Path
    port: int
    username: str = USERNAME
    password: str = field(default=PASSWORD, repr=False)
    _server: object = field(repr=False, default=None)
    _thread: threading.Thread | None = field(repr=False, default=None)

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.port}"

    def fresh_target(self) -> str:
        """A new, empty location: the backend creates the collections on first write."""
        return f"webdav+http://{self.netloc}/ci/{uuid.uuid4().hex[:12]}/src"

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None


def free_port() -> int:
    """A loopback port nothing listens on now; the server binds it right after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_dav_server(root: Path) -> DavServer:
    """Start WsgiDAV with basic auth only (no digest), as Nextcloud and rclone use it."""
    from cheroot import wsgi
    from wsgidav.wsgidav_app import WsgiDAVApp

    port = free_port()
    app = WsgiDAVApp({
        "host": "127.0.0.1",
        "port": port,
        "provider_mapping": {"/": str(root)},
        "http_authenticator": {
            "domain_controller": None,  # the SimpleDomainController below
            "accept_basic": True,
            "accept_digest": False,
            "default_to_digest": False,
        },
        "simple_dc": {"user_mapping": {"*": {USERNAME: {"password": PASSWORD}}}},
        "lock_storage": True,
        "verbose": 1,
        "logging": {"enable_loggers": []},
        "dir_browser": {"enable": False},
    })
    server = wsgi.Server(("127.0.0.1", port), app, numthreads=16)
    server.prepare()  # bound and listening once this returns: no waiting loop needed
    thread = threading.Thread(target=server.serve, name=f"wsgidav-{port}", daemon=True)
    thread.start()
    return DavServer(root=root, port=port, _server=server, _thread=thread)


@pytest.fixture(scope="session")
def dav_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DavServer]:
    """One server for the whole run; every test writes under its own fresh path."""
    server = start_dav_server(tmp_path_factory.mktemp("dav-root"))
    yield server
    server.stop()


@pytest.fixture
def private_dav_server(tmp_path: Path) -> Iterator[DavServer]:
    """A server a test may stop without disturbing the others."""
    root = tmp_path / "dav-root"
    root.mkdir()
    server = start_dav_server(root)
    yield server
    server.stop()
