"""The registry client's TLS trust is built once per process and follows a renewed CA file."""

from __future__ import annotations

import os
import ssl
from pathlib import Path

from tests.fixtures.registry import make_ca
from wrapresolver.backends.oci.tls import ssl_context


def _subjects(ctx: ssl.SSLContext) -> set[str]:
    return {dict(item[0] for item in cert["subject"]).get("commonName", "") for cert in ctx.get_ca_certs()}


def test_the_same_ca_file_gives_the_same_context_and_a_renewed_one_is_read_again(tmp_path: Path) -> None:
    ca, _, _ = make_ca(tmp_path)
    first = ssl_context(str(ca))
    assert "wrapresolver test CA" in _subjects(first)
    assert ssl_context(str(ca)) is first
    stat = ca.stat()
    os.utime(ca, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    renewed = ssl_context(str(ca))
    assert renewed is not first
    assert "wrapresolver test CA" in _subjects(renewed)


def test_a_missing_ca_file_adds_no_trust_and_does_not_fail(tmp_path: Path) -> None:
    ctx = ssl_context(str(tmp_path / "absent.crt"))
    assert "wrapresolver test CA" not in _subjects(ctx)
