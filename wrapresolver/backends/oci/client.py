"""A small distribution-API client on httpx: scheme choice, auth, retries, error messages.

Why not a general registry library: the step needs exactly five calls (HEAD/GET/POST/
PATCH/PUT on blobs and manifests) and all of them must stream, authenticate per scope and
fail in a bounded time with a message a pipeline author can act on.

Retries: refused or reset connections, 429 and 5xx, with bounded exponential backoff
(about 8 s in all by default), and only for requests whose body can be sent again. A
streamed upload is never re-sent: it fails, the store fails cleanly (no reference
written), and the task's own retry starts the store over.

Waiting is bounded by one setting, `WRAPRESOLVER_IO_TIMEOUT` (`wrapresolver.limits`,
default 30 s): connect, each read and each write wait at most that long. A registry that
accepts connections and then says nothing is not retried: the stall itself is the answer
(network failure, exit 5), after one timeout (two when a TLS attempt comes first).
"""

from __future__ import annotations

import functools
import http.client
import os
import random
import ssl
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from urllib.parse import urljoin

import httpx

from wrapresolver.backends.oci import Reference, blobget
from wrapresolver.backends.oci.auth import (
    Challenge,
    Credentials,
    TokenCache,
    basic_header,
    credentials_for,
    parse_challenge,
)
from wrapresolver.core.limits import IO_TIMEOUT, io_timeout, shown
from wrapresolver.errors import AuthError, NetworkError, NotFoundError, TransferError

RETRY_STATUS = {429, 500, 502, 503, 504}
DEFAULT_ATTEMPTS = 5
DOWNLOAD_CHUNK = 1 << 20
"""Bytes per chunk handed to the fetch: the decompressor and the hash run per chunk."""


def timeout() -> httpx.Timeout:
    """Every wait of a request bounded by the one setting (`WRAPRESOLVER_IO_TIMEOUT`)."""
    return httpx.Timeout(io_timeout())


def _stalled(exc: httpx.TransportError) -> bool:
    """The server took the connection but never answered: retrying only waits again."""
    return isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout, httpx.ConnectTimeout))


def _stall_message(registry: str, what: str) -> str:
    return (f"registry {registry} did not answer {what} within {io_timeout():g} s "
            f"({IO_TIMEOUT.where()}); it accepts connections but does not respond")

_TOKENS = TokenCache()
"""Shared by every client in the process: parallel workspaces reuse each other's tokens."""


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


def registry_message(response: httpx.Response) -> str:
    """The registry's own error text (`errors[0].message`), short."""
    try:
        errors = response.json().get("errors") or []
        if errors:
            first = errors[0]
            return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        pass
    return (response.text or response.reason_phrase or "")[:200].strip()


class RegistryClient:
    """Talks to one registry for one repository (plus cross-repository mounts)."""

    def __init__(
        self, ref: Reference, *, insecure: bool = False, ca_file: str | None = None,
        attempts: int | None = None, backoff: float = 0.5,
    ) -> None:
        self.ref = ref
        self.insecure = insecure
        self.attempts = max(1, attempts or DEFAULT_ATTEMPTS)
        self.backoff = backoff
        self._ca_file = ca_file
        self._http: httpx.Client | None = None
        self._tls: ssl.SSLContext | None = None
        """The TLS context of blob reads and their redirects (set by `_connect`; None: the default)."""
        self._base = ""
        self._challenge: Challenge | None = None
        self._creds: Credentials | None = None
        self._lock = threading.Lock()
        self._warming: threading.Thread | None = None
        self._warm_error: BaseException | None = None

    # ---- connection ----
    def connect_in_background(self, scopes: Iterable[Iterable[str]] = ()) -> None:
        """Start `_connect` on a thread; requests wait for it and raise what it raised.

        Loading the CA bundle (40-80 ms) releases the GIL, and the requests wait on the
        network, so they run beside the store's walk. A failure to connect is kept, not
        tried again: the first real request raises it, so a down registry costs one round
        of retries, not two. The bearer tokens for `scopes` are fetched there too, best
        effort: a token the thread could not get is asked for again by the request that
        needs it, which reports why it cannot have it.
        """
        if self._http is not None or self._warming is not None:
            return
        wanted = [tuple(scope) for scope in scopes]

        def run() -> None:
            try:
                self._connect()
            except BaseException as exc:  # handed to the first request, which raises it
                self._warm_error = exc
                return
            for scope in wanted:
                try:
                    self._auth_headers(scope)
                except Exception:  # noqa: BLE001 - the request that needs it reports it
                    continue

        self._warming = threading.Thread(target=run, name="registry-connect", daemon=True)
        self._warming.start()

    def _await_warm_up(self) -> None:
        warming = self._warming
        if warming is None or warming is threading.current_thread():
            return
        warming.join()
        if self._warm_error is not None:  # every later call too: the step fails on the first
            raise self._warm_error

    def _client(self, verify: ssl.SSLContext | bool) -> httpx.Client:
        return httpx.Client(
            verify=verify, timeout=timeout(), follow_redirects=True, trust_env=False,
            headers={"User-Agent": "wrapresolver"},
        )

    def _connect(self) -> None:
        """Pick the scheme and learn how the registry wants to be authenticated (GET /v2/)."""
        self._await_warm_up()
        if self._http is not None:
            return
        with self._lock:
            if self._http is not None:
                return
            # Like docker for insecure registries: try TLS once, fall back to plain HTTP.
            # Loopback registries get the same treatment, so a local TLS registry works too.
            candidates: list[tuple[str, ssl.SSLContext | bool]]
            if self.insecure:
                candidates = [("https", False), ("http", False)]
            elif self.ref.is_loopback:
                candidates = [("https", ssl_context(self._ca_file)), ("http", False)]
            else:
                candidates = [("https", ssl_context(self._ca_file))]
            for index, (scheme, verify) in enumerate(candidates):
                last = index == len(candidates) - 1
                client = self._client(verify)
                base = f"{scheme}://{self.ref.registry}"
                try:
                    response = self._send_with_retries(
                        client, "GET", f"{base}/v2/", {}, attempts=None if last else 1,
                    )
                except NetworkError as exc:
                    client.close()
                    if "CERTIFICATE_VERIFY_FAILED" in str(exc):
                        raise TransferError(
                            f"the TLS certificate of registry {self.ref.registry} is not trusted: "
                            f"name its CA with the `ca-configmap` param, or set `insecure: \"true\"` "
                            f"for a test registry"
                        ) from None
                    if last:
                        raise
                    continue
                if response.status_code == 401:
                    self._challenge = parse_challenge(response.headers.get("www-authenticate", ""))
                elif response.status_code != 200:
                    client.close()
                    if not last:
                        continue
                    if response.status_code in RETRY_STATUS or response.status_code >= 500:
                        raise NetworkError(
                            f"registry {self.ref.registry} kept failing with {response.status_code} for "
                            f"{base}/v2/ ({registry_message(response)}); it is down or overloaded"
                        )
                    raise TransferError(
                        f"{base}/v2/ answered {response.status_code}: this does not look like "
                        f"an OCI registry ({registry_message(response)})"
                    )
                self._http, self._base = client, base
                # Every hop of a blob read (blobget.py) uses the same trust, also when a
                # plain-HTTP registry redirects to HTTPS storage.
                self._tls = verify if isinstance(verify, ssl.SSLContext) else (
                    blobget.plain_context() if self.insecure else None)
                return

    def close(self) -> None:
        if self._warming is not None:
            self._warming.join()  # a connection opened after close() would leak
        if self._http is not None:
            self._http.close()
            self._http = None

    @property
    def base(self) -> str:
        self._connect()
        return self._base

    def url(self, path: str, repository: str | None = None) -> str:
        return f"{self.base}/v2/{repository or self.ref.repository}/{path}"

    # ---- auth ----
    def _credentials(self) -> Credentials:
        if self._creds is None:
            self._creds = credentials_for(self.ref.registry)
        return self._creds

    def _auth_headers(self, scopes: Iterable[str], *, fresh: bool = False) -> dict[str, str]:
        challenge = self._challenge
        if challenge is None:
            return {}
        creds = self._credentials()
        if challenge.scheme == "basic":
            if not creds:
                raise AuthError(self._no_credentials())
            return {"Authorization": basic_header(creds)}
        scope = " ".join(sorted(scopes))
        realm = challenge.params.get("realm", "")
        service = challenge.params.get("service", "")
        key = (realm, service, scope)
        token = None if fresh else _TOKENS.get(key)
        if token is None:
            token, expires = self._fetch_token(realm, service, scope, creds)
            _TOKENS.put(key, token, expires)
        return {"Authorization": f"Bearer {token}"}

    def _fetch_token(self, realm: str, service: str, scope: str, creds: Credentials) -> tuple[str, float]:
        if not realm.startswith(("http://", "https://")):
            raise AuthError(f"registry {self.ref.registry} sent an unusable token realm {realm!r}")
        assert self._http is not None
        params: list[tuple[str, str | int | float | bool | None]] = [("service", service)] if service else []
        params += [("scope", s) for s in scope.split()]
        try:
            if creds.identity_token:
                form = {"grant_type": "refresh_token", "refresh_token": creds.identity_token,
                        "service": service, "scope": scope, "client_id": "wrapresolver"}
                response = self._http.post(realm, data=form)
            else:
                headers = {"Authorization": basic_header(creds)} if creds else {}
                response = self._http.get(realm, params=params, headers=headers)
        except httpx.TransportError as exc:
            raise NetworkError(f"cannot reach the token service {realm} of {self.ref.registry}: {exc}") from None
        if response.status_code in (401, 403):
            raise AuthError(
                f"the token service of {self.ref.registry} refused the credentials"
                f"{' of user ' + repr(creds.username) if creds.username else ' (none found)'}: "
                f"{registry_message(response)}. {self._where_credentials()}"
            )
        if response.status_code != 200:
            raise AuthError(f"the token service {realm} answered {response.status_code}: {registry_message(response)}")
        data = response.json()
        token = data.get("token") or data.get("access_token")
        if not token:
            raise AuthError(f"the token service {realm} returned no token")
        return token, float(data.get("expires_in") or 60)

    def _where_credentials(self) -> str:
        return (
            f"Credentials come from the docker config at {os.environ.get('DOCKER_CONFIG') or '~/.docker'}"
            f"/config.json (Tekton writes it from the ServiceAccount's secrets; set DOCKER_CONFIG when "
            f"the step has no home directory) or from the `credentials-secret` param"
        )

    def _no_credentials(self) -> str:
        return f"registry {self.ref.registry} requires authentication and no credentials were found for it. {self._where_credentials()}"

    # ---- requests ----
    def _sleep(self, attempt: int) -> None:
        time.sleep(min(self.backoff * (2 ** attempt), 8.0) * (0.5 + random.random() / 2))

    def _send_with_retries(
        self, client: httpx.Client, method: str, url: str, headers: Mapping[str, str],
        content: bytes | None = None, attempts: int | None = None,
    ) -> httpx.Response:
        attempts = attempts or self.attempts
        for attempt in range(attempts):
            try:
                response = client.request(method, url, headers=headers, content=content)
            except httpx.TransportError as exc:
                if _stalled(exc):
                    raise NetworkError(_stall_message(self.ref.registry, f"{method} {url}")) from None
                if attempt + 1 >= attempts:
                    raise NetworkError(
                        f"cannot reach registry {self.ref.registry} ({method} {url}): "
                        f"{type(exc).__name__}: {exc or 'connection failed'} after {attempts} attempt(s)"
                    ) from None
                self._sleep(attempt)
                continue
            if response.status_code in RETRY_STATUS and attempt + 1 < attempts:
                self._sleep(attempt)
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def request(
        self, method: str, url: str, *, scopes: Iterable[str], headers: Mapping[str, str] | None = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        """A request with a replayable body: retried, re-authenticated once on 401."""
        self._connect()
        assert self._http is not None
        scopes = tuple(scopes)
        for second_try in (False, True):
            all_headers = {**(headers or {}), **self._auth_headers(scopes, fresh=second_try)}
            response = self._send_with_retries(self._http, method, url, all_headers, content)
            if response.status_code != 401 or second_try:
                return response
            # A token may have lapsed, or a registry that was open now wants credentials.
            challenge = parse_challenge(response.headers.get("www-authenticate", ""))
            if challenge is not None:
                self._challenge = challenge
        raise AssertionError("unreachable")  # pragma: no cover

    def cancel_upload(self, url: str, *, scopes: Iterable[str]) -> None:
        """Best effort: an upload session left open expires on the registry by itself."""
        try:
            self.request("DELETE", url, scopes=scopes)
        except TransferError:
            pass

    def stream_upload(self, url: str, body: Iterator[bytes], *, scopes: Iterable[str]) -> httpx.Response:
        """One streamed PATCH: never re-sent (the body is consumed), so auth is done first."""
        self._connect()
        assert self._http is not None
        headers = {"Content-Type": "application/octet-stream", **self._auth_headers(scopes)}
        try:
            return self._http.request("PATCH", url, headers=headers, content=body)
        except httpx.TransportError as exc:
            raise NetworkError(
                f"the connection to registry {self.ref.registry} broke during an upload: "
                f"{type(exc).__name__}: {exc or 'connection lost'}; nothing was referenced, "
                f"retrying the task stores again"
            ) from None

    def stream_download(self, url: str, *, scopes: Iterable[str], what: str) -> Iterator[bytes]:
        """GET a blob as chunks; redirects to object storage are followed without our token.

        Read with `http.client` (blobget.py says why); retried like any request until the
        body starts, never after: a body that breaks is a network failure of the fetch.
        """
        self._connect()
        scopes = tuple(scopes)
        context = self._tls or ssl_context(self._ca_file)
        for attempt in range(self.attempts):
            try:
                answer = blobget.get(url, self._auth_headers(scopes), context=context, timeout=io_timeout())
            except TimeoutError:
                raise NetworkError(_stall_message(self.ref.registry, f"the read of {what}")) from None
            except (OSError, http.client.HTTPException) as exc:
                if attempt + 1 >= self.attempts:
                    raise NetworkError(
                        f"cannot reach registry {self.ref.registry} to read {what}: "
                        f"{type(exc).__name__}: {exc or 'connection failed'} after {self.attempts} attempt(s)"
                    ) from None
                self._sleep(attempt)
                continue
            if answer.status in RETRY_STATUS and attempt + 1 < self.attempts:
                answer.close()
                self._sleep(attempt)
                continue
            if answer.status != 200:
                body = answer.error_body()
                self.raise_for(httpx.Response(answer.status, headers=list(answer.headers), content=body), what, "pull")
            return self._chunks(answer, what)
        raise AssertionError("unreachable")  # pragma: no cover

    def _chunks(self, answer: blobget.Answer, what: str) -> Iterator[bytes]:
        try:
            yield from answer.chunks(DOWNLOAD_CHUNK)
        except blobget.BodyBroken as exc:
            if exc.stalled:
                raise NetworkError(_stall_message(self.ref.registry, f"the read of {what}")) from None
            raise NetworkError(f"the connection to registry {self.ref.registry} broke while reading {what}: {exc}") from None
        except blobget.UnsupportedCoding as exc:
            raise TransferError(
                f"registry {self.ref.registry} (or a proxy in front of it) sent {what} in the content "
                f"coding {shown(str(exc))}, which this client does not decode (gzip and deflate are)"
            ) from None

    def absolute(self, location: str) -> str:
        return urljoin(self.base + "/", location)

    def raise_for(self, response: httpx.Response, what: str, action: str) -> None:
        """Turn a failed response into the error a pipeline author reads."""
        status = response.status_code
        detail = registry_message(response)
        if status == 401:
            raise AuthError(
                f"registry {self.ref.registry} refused to let us {action} {what} (401 {detail}). "
                f"{self._where_credentials()}"
            )
        if status == 403:
            raise AuthError(
                f"registry {self.ref.registry} denied {action} access to {what} (403 {detail}); "
                f"the credentials are valid but lack {action} permission on {self.ref.repository}"
            )
        if status == 404:
            raise NotFoundError(f"{what} does not exist in {self.ref.registry}/{self.ref.repository} ({detail})")
        if status in RETRY_STATUS:
            raise NetworkError(f"registry {self.ref.registry} kept failing with {status} for {what} ({detail})")
        raise TransferError(f"registry {self.ref.registry} answered {status} to {action} {what}: {detail}")

