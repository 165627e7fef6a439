"""The TLS trust of registry requests: public CAs, `$SSL_CERT_FILE` and the `ca-configmap` CA.

Its own module because it is built once per process and shared by both HTTP clients (httpx
for the API, `http.client` for blob reads: blobget.py).
"""

from __future__ import annotations

import functools
import os
import ssl


def ssl_context(ca_file: str | None) -> ssl.SSLContext:
    """Public CAs plus `$SSL_CERT_FILE` and the `ca-configmap` CA: a private CA adds trust.

    Built once per process for the same files: loading the CA bundle takes 40-80 ms, a
    sixth of a store after a small change. The key holds each file's mtime, so a
    renewed CA file is read again.
    """
    extras = tuple((path, _mtime(path)) for path in (os.environ.get("SSL_CERT_FILE"), ca_file) if path)
    return _context(extras)


def _mtime(path: str) -> int:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return -1


@functools.lru_cache(maxsize=8)
def _context(extras: tuple[tuple[str, int], ...]) -> ssl.SSLContext:
    import certifi

    ctx = ssl.create_default_context(cafile=certifi.where())
    for extra, mtime in extras:
        if mtime >= 0 and os.path.isfile(extra):
            ctx.load_verify_locations(cafile=extra)
    return ctx
