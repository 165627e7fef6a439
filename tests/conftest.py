"""Shared test configuration. Fixture modules live in tests/fixtures/, one per kind of server."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest_plugins = [
    "tests.fixtures.registry",      # docker-registry (plain, htpasswd+TLS, token auth)
    "tests.fixtures.s3server",      # moto in server mode (S3)
    "tests.fixtures.gcsserver",     # fake-gcs-server (GCS JSON API)
    "tests.fixtures.rsyncd",        # Debian's rsync daemon with auth
    "tests.fixtures.sshd",          # OpenSSH server with a key, for rsync over SSH
    "tests.fixtures.kubeapi",       # in-process Kubernetes API server
]

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared corpus of real Tekton files, beside the repository checkout."""
    if not CORPUS.is_dir():
        pytest.fail(f"corpus not found at {CORPUS}: the tests read real Tekton files from there")
    return CORPUS
