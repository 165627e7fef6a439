"""Shared test configuration. Fixture modules live in tests/fixtures/, one per kind of server."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

# Fuzzing profiles (tests/fuzz/): "ci" keeps the suite fast; a longer campaign is
# `HYPOTHESIS_PROFILE=campaign python -m pytest tests/fuzz` (about 100 times the examples).
settings.register_profile("ci", max_examples=60, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.register_profile("campaign", max_examples=6000, deadline=None,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

pytest_plugins = [
    "tests.fixtures.registry",      # docker-registry (plain, htpasswd+TLS, token auth)
    "tests.fixtures.s3server",      # moto in server mode (S3)
    "tests.fixtures.gcsserver",     # fake-gcs-server (GCS JSON API)
    "tests.fixtures.rsyncd",        # Debian's rsync daemon with auth
    "tests.fixtures.sshd",          # OpenSSH server with a key, for rsync over SSH
    "tests.fixtures.kubeapi",       # in-process Kubernetes API server
    "tests.fixtures.identities",    # our processes as arbitrary UIDs/GIDs
]

REPO = Path(__file__).resolve().parent.parent
CORPUS = REPO.parent / "shared" / "corpus"


@pytest.fixture(scope="session")
def corpus_dir() -> Path:
    """The shared corpus of real Tekton files: beside the checkout, or `$WRAPRESOLVER_CORPUS`.

    The corpus is other people's files and is not copied into this repository; where it
    is not present the corpus tests are skipped with this reason, and every other test runs.
    """
    corpus = Path(os.environ.get("WRAPRESOLVER_CORPUS") or CORPUS)
    if not corpus.is_dir():
        pytest.skip(f"the shared corpus of Tekton files is not at {corpus}; set WRAPRESOLVER_CORPUS")
    return corpus
