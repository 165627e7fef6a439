"""One blob GET read with the standard library's `http.client`, not httpx.

Why a second HTTP client for one request: the body of a layer is what every task waits for,
and it is read while the same process parses tar and creates files under one GIL. httpx
(through httpcore and h11) spends about 1 s of CPU in Python per 600 MB of body, in 64 KiB
pieces; `http.client` reads 1 MiB straight off the socket per call and spends about 0.2 s
(docs/oci.md, "Why httpx and not the `oras` SDK", has the measurement). Everything else (the `/v2/` probe, auth, manifests,
uploads) stays on httpx, where each request is small.

What httpx did for this request and this module does too, each with a test:
- redirects (a registry sends blob reads to object storage): followed, at most
  `MAX_REDIRECTS`, and `Authorization` is dropped when the redirect leaves the registry's
  origin, so a registry token never reaches a storage host;
- the TLS settings the registry client chose (its CA bundle, or no verification for an
  `insecure` registry), for every hop;
- a content coding a front end adds anyway (we ask for `identity`): gzip and deflate are
  decoded, any other is refused by name;
- a body shorter than its `Content-Length` is a broken connection, not a short blob;
- every connect and read waits at most the one I/O timeout.

No proxy support, as with httpx here (`trust_env=False`): registries are reached directly.
"""

from __future__ import annotations

import http.client
import ssl
import zlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

MAX_REDIRECTS = 5
REDIRECT_STATUS = {301, 302, 303, 307, 308}
ERROR_BODY_MAX = 64 << 10
"""Bytes of an error answer kept for its message."""


class BodyBroken(Exception):
    """The connection failed or stalled while the body was read; `stalled` says which."""

    def __init__(self, message: str, *, stalled: bool = False) -> None:
        super().__init__(message)
        self.stalled = stalled


class UnsupportedCoding(Exception):
    """The answer is in a content coding this client cannot decode (its name is the message)."""


@dataclass(frozen=True)
class Answer:
    """The final answer of a GET, after redirects, before its body is read."""

    status: int
    headers: tuple[tuple[str, str], ...]
    _response: http.client.HTTPResponse
    _connection: http.client.HTTPConnection

    def header(self, name: str) -> str:
        name = name.lower()
        return next((value for key, value in self.headers if key.lower() == name), "")

    def error_body(self) -> bytes:
        """Up to ERROR_BODY_MAX bytes of a non-200 answer, then the connection is closed."""
        try:
            return self._response.read(ERROR_BODY_MAX)
        except (OSError, http.client.HTTPException):
            return b""
        finally:
            self.close()

    def chunks(self, size: int) -> Iterator[bytes]:
        """The body, decoded, in chunks of about `size` bytes; the connection is closed after."""
        try:
            decoder = _decoder(self.header("content-encoding"))
            length = self._response.length  # None when chunked or read to the close
            received = 0
            while True:
                try:
                    data = self._response.read(size)
                except TimeoutError:
                    raise BodyBroken("no data within the I/O timeout", stalled=True) from None
                except (OSError, http.client.HTTPException) as exc:
                    raise BodyBroken(f"{type(exc).__name__}: {exc or 'connection lost'}") from None
                if not data:
                    break
                received += len(data)
                if decoder is not None:
                    try:
                        data = decoder.decompress(data)
                    except zlib.error as exc:
                        raise BodyBroken(f"the {self.header('content-encoding')} body does not decode: {exc}") from None
                if data:
                    yield data
            if length is not None and self._response.length:
                raise BodyBroken(f"the body ended after {received} of {received + self._response.length} bytes")
            if decoder is not None:
                tail = decoder.flush()
                if not decoder.eof:
                    raise BodyBroken("the encoded body ended before its end marker")
                if tail:
                    yield tail
        finally:
            self.close()

    def close(self) -> None:
        self._response.close()
        self._connection.close()


def _decoder(coding: str):
    coding = coding.strip().lower()
    if coding in ("", "identity"):
        return None
    if coding in ("gzip", "x-gzip"):
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if coding == "deflate":
        return zlib.decompressobj()
    raise UnsupportedCoding(coding)


def _origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return parts.scheme, (parts.hostname or "").lower(), port


def _open(url: str, headers: Mapping[str, str], context: ssl.SSLContext, timeout: float) -> Answer:
    parts = urlsplit(url)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        connection = http.client.HTTPSConnection(parts.netloc, timeout=timeout, context=context)
    elif parts.scheme == "http":
        connection = http.client.HTTPConnection(parts.netloc, timeout=timeout)
    else:
        raise http.client.InvalidURL(f"cannot follow a redirect to {url!r}")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    try:
        connection.request("GET", path, headers={"Accept-Encoding": "identity", **headers})
        response = connection.getresponse()
    except BaseException:
        connection.close()
        raise
    return Answer(response.status, tuple(response.getheaders()), response, connection)


def get(url: str, headers: Mapping[str, str], *, context: ssl.SSLContext, timeout: float) -> Answer:
    """GET `url`, following redirects; raises OSError or HTTPException when no answer comes.

    A timeout while connecting or waiting for the headers is `TimeoutError` (`socket.timeout`).
    """
    origin = _origin(url)
    sent = dict(headers)
    for _ in range(MAX_REDIRECTS + 1):
        answer = _open(url, sent, context, timeout)
        location = answer.header("location")
        if answer.status not in REDIRECT_STATUS or not location:
            return answer
        answer.close()
        url = urljoin(url, location)
        if _origin(url) != origin:
            sent = {key: value for key, value in sent.items() if key.lower() != "authorization"}
    raise http.client.HTTPException(f"more than {MAX_REDIRECTS} redirects, the last to {url}")


def plain_context() -> ssl.SSLContext:
    """For an `insecure` registry: TLS without verification, as httpx's `verify=False`."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
