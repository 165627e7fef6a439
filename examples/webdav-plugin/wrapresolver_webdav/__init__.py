"""`webdav://host/path` targets: workspace states on any WebDAV server.

A third-party wrapresolver backend: it registers itself under the entry-point groups
`wrapresolver.backends` and `wrapresolver.schemes` (see pyproject.toml) and subclasses
`ObjectStore`, so it is only its transport (HTTP) and its error translation: the layout,
snapshots, diffs, merges and fallbacks come from wrapresolver unchanged.

Works with anything that speaks RFC 4918 class 1 (PUT, GET, HEAD, DELETE, MKCOL, MOVE):
Nextcloud / ownCloud, Apache mod_dav, nginx with `dav_methods`, `rclone serve webdav`,
WsgiDAV. The layout under the target path is `wrapresolver.backends.objectstore`'s.

Every write goes to a temporary name under `uploads/` first and is renamed with MOVE,
because PUT writes in place: a reader (or a step killed mid-upload) would otherwise see
half a blob or half a manifest under its final name.

`webdav://` is HTTPS; `webdav+http://` is plain HTTP for in-cluster services and tests.
Credentials (HTTP basic auth) come from WEBDAV_USERNAME / WEBDAV_PASSWORD, which the
resolver fills from the Secret named by the `credentials-secret` option.

The delete side (the controller reclaiming a finished run's states, `wrapresolver gc`) is
`ObjectStore`'s, given two transport methods: `list_keys` (PROPFIND, parsed in `listing.py`)
and `delete` (DELETE).

One module on purpose, but for the listing's XML (a little over 400 lines, most of them
target parsing and error messages): it is the example a plugin author reads top to bottom.
"""

from __future__ import annotations

import io
import os
import re
import threading
from collections.abc import Container, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from wrapresolver.backends.base import (
    TEKTON_VARIABLE,
    AuthError,
    Backend,
    DiskFullError,
    KeyInfo,
    NetworkError,
    NotFoundError,
    ParamError,
    StepRequirements,
    TransferError,
)
from wrapresolver.backends.objectstore import ObjectStore
from wrapresolver_webdav.listing import MAX_LISTING, PROPFIND_BODY, Entry, parse_multistatus

if TYPE_CHECKING:  # pragma: no cover
    import httpx

__all__ = ["BACKEND", "WebdavBackend", "WebdavStore", "WebdavTarget", "Credentials", "parse_target"]

SCHEMES: Mapping[str, str] = {"webdav": "https", "webdav+http": "http"}
"""Target scheme -> the HTTP scheme it is reached with."""
USERNAME_ENV = "WEBDAV_USERNAME"
PASSWORD_ENV = "WEBDAV_PASSWORD"
SECRET_KEYS: Mapping[str, str] = {USERNAME_ENV: "username", PASSWORD_ENV: "password"}
"""Step env var -> key in the `credentials-secret` Secret."""
CHUNK = 1 << 20
CONNECT_RETRIES = 2
"""Extra connection attempts (refused, reset before a response): covers a Service that is
briefly without endpoints, without hiding a server that is really down for long."""

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?)(:[0-9]{1,5})?$")
_HOST_CHARS = re.compile(r"^[A-Za-z0-9.:\[\]-]*$")
_MKCOL_DONE = frozenset({200, 201, 204, 405})
"""Created, or (405) already there."""
_ANY_STATUS = range(100, 600)
_SEGMENT_SAFE = "!$&'()*+,;=:@"
"""RFC 3986 pchar sub-delims kept as-is: Tekton placeholders and common names stay readable."""


# ---- targets ----

@dataclass(frozen=True)
class WebdavTarget:
    """Where the states live: an HTTP origin and a collection path (segments, unquoted)."""

    http_scheme: str
    netloc: str
    segments: tuple[str, ...] = ()

    @property
    def origin(self) -> str:
        return f"{self.http_scheme}://{self.netloc}"

    def url(self, *parts: str, collection: bool = False) -> str:
        """The absolute URL of `parts` under the target path, each segment percent-encoded.

        Collections get a trailing slash: nginx refuses MKCOL without one, others accept it.
        """
        path = "/".join(quote(seg, safe=_SEGMENT_SAFE) for seg in (*self.segments, *parts))
        return f"{self.origin}/{path}{'/' if collection and path else ''}"

    def display(self) -> str:
        """The target as the author wrote it, for messages."""
        scheme = next(name for name, http in SCHEMES.items() if http == self.http_scheme)
        return f"{scheme}://{self.netloc}/{'/'.join(self.segments)}"


def parse_target(target: str) -> WebdavTarget:
    """`webdav://host[:port]/path` or `webdav+http://...` -> WebdavTarget.

    Parsed by hand rather than with urlsplit so a `#` or `?` is an error instead of being
    silently cut off, and `$(context.pipelineRun.name)` placeholders pass untouched.
    """
    scheme, sep, rest = target.partition("://")
    if not sep or scheme not in SCHEMES:
        raise ParamError(
            f"target {target!r} is not a WebDAV URL; write webdav://host[:port]/path (HTTPS) "
            f"or webdav+http://host[:port]/path (plain HTTP)"
        )
    netloc, _, path = rest.partition("/")
    _check_netloc(netloc, target)
    return WebdavTarget(SCHEMES[scheme], netloc, _path_segments(path, target))


def _check_netloc(netloc: str, target: str) -> None:
    if not netloc:
        raise ParamError(f"target {target!r} names no host; write webdav://host[:port]/path")
    if "@" in netloc:
        raise ParamError(
            f"target {target!r} carries credentials in the URL, where every reader of the "
            f"Pipeline sees them; put them in a Secret and name it in the `credentials-secret` param"
        )
    if TEKTON_VARIABLE.search(netloc):
        literal = TEKTON_VARIABLE.sub("", netloc)
        if _HOST_CHARS.match(literal):
            return
    elif _HOST.match(netloc) and _port_ok(netloc):
        return
    raise ParamError(f"target {target!r}: {netloc!r} is not a host name or host:port")


def _port_ok(netloc: str) -> bool:
    host_end = netloc.rfind("]")
    _, sep, port = netloc[host_end + 1:].rpartition(":")
    return not sep or 0 < int(port) < 65536


def _path_segments(path: str, target: str) -> tuple[str, ...]:
    stripped = path.strip("/")
    if not stripped:
        return ()
    if any(ch in stripped for ch in "?#") or any(ord(ch) < 0x20 or ch == "\x7f" for ch in stripped):
        raise ParamError(
            f"target {target!r}: the path must not contain '?', '#' or control characters"
        )
    segments = tuple(stripped.split("/"))
    if any(seg in ("", ".", "..") for seg in segments):
        raise ParamError(
            f"target {target!r}: the path {stripped!r} must not contain empty, '.' or '..' segments"
        )
    return segments


# ---- the resolver half ----

class WebdavBackend(Backend):
    name = "webdav"
    schemes = tuple(SCHEMES)
    options = {
        "credentials-secret": "Secret with keys `username` and `password` (HTTP basic auth); "
        "empty: anonymous access",
        "compression": "layer compression: zstd (default) or gzip",
    }

    def validate_target(self, target: str) -> None:
        parse_target(target)

    def step_requirements(self, options: Mapping[str, str]) -> StepRequirements:
        """Credentials by secretKeyRef only, so no password is ever written into the Pipeline."""
        secret = options.get("credentials-secret", "")
        if not secret:
            return StepRequirements()
        env = tuple(
            {"name": var, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}
            for var, key in SECRET_KEYS.items()
        )
        return StepRequirements(env=env)

    def open(self, target: str, options: Mapping[str, str]) -> WebdavStore:
        return WebdavStore(parse_target(target), Credentials.from_env(), options)


# ---- the step half ----

@dataclass(frozen=True)
class Credentials:
    """HTTP basic auth read from the step's environment; the password never shows in a repr."""

    username: str = ""
    password: str = field(default="", repr=False)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Credentials:
        env = os.environ if environ is None else environ
        return cls(env.get(USERNAME_ENV, ""), env.get(PASSWORD_ENV, ""))

    @property
    def given(self) -> bool:
        return bool(self.username or self.password)


class WebdavStore(ObjectStore):
    """Blobs and references under one WebDAV collection, reached through httpx."""

    def __init__(
        self, target: WebdavTarget, credentials: Credentials = Credentials(),
        options: Mapping[str, str] | None = None, client: httpx.Client | None = None,
    ) -> None:
        self.target = target
        self.credentials = credentials
        self.options = dict(options or {})
        self.client = client or _make_client(credentials)
        self._layout_ready = False
        self._layout_lock = threading.Lock()

    # ---- HTTP with errors an author can act on ----
    def _send(
        self, method: str, url: str, action: str, ok: Container[int], *,
        stream: bool = False, **kwargs: Any,
    ) -> httpx.Response:
        """One request; a status outside `ok` or a transport failure becomes a TransferError."""
        import httpx

        request = self.client.build_request(method, url, **kwargs)
        try:
            response = self.client.send(request, stream=stream)
        except httpx.TransportError as exc:
            raise self._network_error(exc, action, url) from exc
        if response.status_code not in ok:
            response.close()
            raise self._status_error(response.status_code, action, url)
        return response

    def _network_error(self, exc: Exception, action: str, url: str) -> NetworkError:
        return NetworkError(
            f"cannot reach the WebDAV server {self.target.origin} while {action} {url}: "
            f"{type(exc).__name__}: {str(exc) or 'connection failed'}; check the target's host and port "
            f"and that the step can reach it"
        )

    def _status_error(self, status: int, action: str, url: str) -> TransferError:
        if status in (401, 403):
            return AuthError(self._auth_message(status, action, url))
        if status == 507:
            return DiskFullError(
                f"the WebDAV server {self.target.origin} is out of space (507) while {action} "
                f"{url}: free space or raise the user's quota"
            )
        if status == 404:
            return NotFoundError(f"{url} does not exist on the WebDAV server ({action})")
        if status >= 500:
            return NetworkError(
                f"the WebDAV server {self.target.origin} failed ({status}) while {action} {url}: "
                f"it is unavailable or overloaded; retry the run later"
            )
        return TransferError(f"{action} {url} failed: the WebDAV server answered {status}")

    def _auth_message(self, status: int, action: str, url: str) -> str:
        """Names the param and the env var to fix, never a credential value."""
        if not self.credentials.given:
            return (
                f"the WebDAV server refused {action} {url} ({status}) and no credentials were "
                f"sent: set the `credentials-secret` param to a Secret with keys `username` and "
                f"`password` (the step reads them as {USERNAME_ENV} / {PASSWORD_ENV})"
            )
        return (
            f"the WebDAV server refused {action} {url} ({status}): check {USERNAME_ENV} / "
            f"{PASSWORD_ENV}, filled from keys `username` and `password` of the Secret named by "
            f"the `credentials-secret` param, and that this user may write under "
            f"{self.target.display()}"
        )

    # ---- collections ----
    def prepare(self) -> None:
        """Create the target's collections once per store, before the first write.

        Done before any PUT so that a wrong password surfaces as a clean 401 on a MKCOL, not
        as a server hanging up in the middle of a streamed upload.
        """
        with self._layout_lock:
            if self._layout_ready:
                return
            root = self.target.segments
            for parts in ((), ("blobs",), ("blobs", "sha256"), ("uploads",), ("refs",)):
                self._mkcol((*root, *parts))
            self._layout_ready = True

    def _mkcol(self, segments: tuple[str, ...]) -> None:
        """MKCOL the collection at `segments` (from the server root), and its parents if needed.

        The deepest collection is tried first and parents only on 409 (Conflict: parent
        missing), so existing ancestors the account may not touch (`/remote.php/dav/...` on
        Nextcloud) are never sent a MKCOL. 405 is RFC 4918's answer for an existing one.
        """
        if not segments:
            return
        url = replace(self.target, segments=segments).url(collection=True)
        status = self._mkcol_status(url)
        if status == 409:
            self._mkcol(segments[:-1])
            status = self._mkcol_status(url)
        if status in _MKCOL_DONE:
            return
        if status not in (401, 403, 507) and self._collection_exists(url):
            return  # another writer created it at the same moment; some servers answer 5xx then
        raise self._status_error(status, "creating the collection", url)

    def _mkcol_status(self, url: str) -> int:
        response = self._send("MKCOL", url, "creating the collection", ok=_ANY_STATUS)
        response.close()
        return response.status_code

    def _collection_exists(self, url: str) -> bool:
        response = self._send(
            "PROPFIND", url, "checking the collection", ok=(207, 404), headers={"Depth": "0"},
        )
        response.close()
        return response.status_code == 207

    # ---- ObjectStore: the transport ----
    @property
    def location(self) -> str:
        return self.target.display()

    def _url(self, key: str) -> str:
        return self.target.url(*key.split("/"))

    def exists(self, key: str) -> bool:
        response = self._send("HEAD", self._url(key), "checking", ok=(200, 204, 404))
        response.close()
        return response.status_code != 404

    def read(self, key: str) -> bytes | None:
        response = self._send("GET", self._url(key), "reading", ok=(200, 404))
        return None if response.status_code == 404 else response.content

    def stream(self, key: str) -> Iterator[bytes] | None:
        url = self._url(key)
        response = self._send("GET", url, "reading", ok=(200, 404), stream=True)
        if response.status_code == 404:
            response.close()
            return None
        return self._chunks(response, url)

    def _chunks(self, response: httpx.Response, url: str) -> Iterator[bytes]:
        import httpx

        try:
            yield from response.iter_bytes(CHUNK)
        except httpx.TransportError as exc:
            raise self._network_error(exc, "reading", url) from exc
        finally:
            response.close()

    def upload(self, key: str, reader: io.RawIOBase, media_type: str) -> None:
        self._send(
            "PUT", self._url(key), "uploading", ok=(200, 201, 204),
            content=_chunks_of(reader), headers={"Content-Type": media_type},
        ).close()

    def write(self, key: str, data: bytes, media_type: str) -> None:
        """PUT under a temporary name, then MOVE with Overwrite: T.

        RFC 4918 lets the server delete the old object before the move: while the exact
        target is replaced, a reader may find no reference for an instant (producer
        references are written only once).
        """
        staging = self.staging_key()
        try:
            self._send(
                "PUT", self._url(staging), "writing", ok=(200, 201, 204),
                content=data, headers={"Content-Type": media_type},
            ).close()
            self._move(staging, key, overwrite=True)
        except BaseException:
            self.delete_quietly(staging)
            raise

    def move(self, source: str, dest: str) -> None:
        self._move(source, dest, overwrite=False)

    def _move(self, source: str, dest: str, overwrite: bool) -> None:
        """MOVE `source` onto `dest`; without overwrite an existing `dest` wins (412) and the source goes."""
        target = self._url(dest)
        response = self._send(
            "MOVE", self._url(source), "moving into place", ok=(200, 201, 204, 412),
            headers={"Destination": target, "Overwrite": "T" if overwrite else "F"},
        )
        response.close()
        if response.status_code == 412:
            if overwrite:
                raise TransferError(f"the WebDAV server refused to replace {target} (412)")
            self.delete_quietly(source)

    def delete_quietly(self, key: str) -> None:
        """A leftover upload costs space only; never hide the original error behind cleanup."""
        try:
            self.client.delete(self._url(key)).close()
        except Exception:  # cleanup must not replace the error being raised
            pass

    # ---- the delete side: ObjectStore's, over these two ----
    def list_keys(self, prefix: str) -> Iterator[KeyInfo]:
        """Every object whose key starts with `prefix`, walking collections one level at a time."""
        directory = prefix.rpartition("/")[0]
        pending = [tuple(directory.split("/")) if directory else ()]
        seen = set(pending)  # each collection listed once, whatever hrefs a server sends
        depth = len(self.target.segments)
        while pending:
            parts = pending.pop()
            for entry in self._members(parts):
                if entry.segments[:depth] != self.target.segments:
                    continue  # not under the target: a server quirk, never ours to list
                key = "/".join(entry.segments[depth:])
                if entry.collection:
                    if (f"{key}/".startswith(prefix) or key.startswith(prefix)) and entry.segments[depth:] not in seen:
                        seen.add(entry.segments[depth:])
                        pending.append(entry.segments[depth:])
                elif key.startswith(prefix):
                    yield KeyInfo(key, entry.size, entry.modified)

    def _members(self, parts: tuple[str, ...]) -> list[Entry]:
        """The members of one collection (PROPFIND, Depth: 1); none when it does not exist."""
        import httpx

        url = self.target.url(*parts, collection=True)
        response = self._send(
            "PROPFIND", url, "listing", ok=(207, 404), stream=True, content=PROPFIND_BODY,
            headers={"Depth": "1", "Content-Type": "application/xml; charset=utf-8"},
        )
        try:
            if response.status_code == 404:
                return []
            body = bytearray()
            for chunk in response.iter_bytes(CHUNK):
                body += chunk
                if len(body) > MAX_LISTING:
                    raise TransferError(
                        f"the WebDAV server's listing of {url} is over {MAX_LISTING >> 20} MiB; "
                        f"run `wrapresolver gc` on a target with fewer states")
        except httpx.TransportError as exc:
            raise self._network_error(exc, "listing", url) from exc
        finally:
            response.close()
        own = (*self.target.segments, *parts)
        return [e for e in parse_multistatus(bytes(body), url) if e.segments != own]

    def delete(self, key: str) -> None:
        """A missing object is not an error: another reclaim may have got there first."""
        self._send("DELETE", self._url(key), "deleting", ok=(200, 204, 404)).close()

    def close(self) -> None:
        self.client.close()


def _chunks_of(reader: io.RawIOBase) -> Iterator[bytes]:
    """A streamed PUT body: the reader (which hashes what passes) in chunks."""
    while True:
        chunk = reader.read(CHUNK)
        if not chunk:
            return
        yield chunk


def _make_client(credentials: Credentials) -> httpx.Client:
    """httpx is imported here so the resolver never loads it for this backend.

    Basic auth is sent preemptively: a streamed body cannot be replayed after a 401.
    HTTPS trust follows SSL_CERT_FILE / SSL_CERT_DIR for private CAs.
    """
    import httpx

    from wrapresolver.backends.base import io_timeout

    return httpx.Client(
        auth=(credentials.username, credentials.password) if credentials.given else None,
        timeout=httpx.Timeout(io_timeout()),  # the one setting every backend honours
        transport=httpx.HTTPTransport(retries=CONNECT_RETRIES),
        limits=httpx.Limits(max_connections=16, max_keepalive_connections=8),
        follow_redirects=False,
    )


BACKEND = WebdavBackend()
