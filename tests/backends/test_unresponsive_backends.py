"""S3, GCS and rsync get the same bound as OCI: a silent server fails the step as a network failure.

A real socket server accepts every connection and never answers; the one setting
`WRAPRESOLVER_IO_TIMEOUT` is set small, the process gets a generous timeout, and the
outcome (exit code 5, no traceback) is asserted, never a duration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.backends.oci.test_unresponsive import SilentServer


@pytest.fixture
def silent() -> Iterator[SilentServer]:
    server = SilentServer()
    yield server
    server.close()


def fetch(target: str, out: Path, *extra: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wrapresolver", "fetch", "--target", target, "--path", str(out), *extra],
        capture_output=True, text=True, timeout=240,
        env={**os.environ, "WRAPRESOLVER_IO_TIMEOUT": "1", **env},
    )


def test_a_silent_s3_endpoint_fails_the_fetch_as_a_network_failure(silent: SilentServer, tmp_path: Path) -> None:
    done = fetch("s3://bucket/ci/ws", tmp_path / "out", "--option", f"endpoint=http://127.0.0.1:{silent.port}",
                 "--option", "path-style=true", "--option", "region=us-east-1",
                 env={"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s", "AWS_MAX_ATTEMPTS": "2"})
    assert done.returncode == 5, done.stderr
    assert "Traceback" not in done.stderr


def test_a_silent_gcs_endpoint_fails_the_fetch_as_a_network_failure(silent: SilentServer, tmp_path: Path) -> None:
    done = fetch("gs://bucket/ci/ws", tmp_path / "out", env={"STORAGE_EMULATOR_HOST": f"http://127.0.0.1:{silent.port}"})
    assert done.returncode == 5, done.stderr
    assert "Traceback" not in done.stderr


def test_a_silent_rsync_daemon_fails_the_fetch_as_a_network_failure(silent: SilentServer, tmp_path: Path) -> None:
    done = fetch(f"rsync://user@127.0.0.1:{silent.port}/module/ci/ws", tmp_path / "out", env={"RSYNC_PASSWORD": "x"})
    assert done.returncode == 5, done.stderr
    assert "Traceback" not in done.stderr
