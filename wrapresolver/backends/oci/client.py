"""A small distribution-API client on httpx: scheme choice, auth, requests.

Why not a general registry library: the step needs exactly five calls (HEAD/GET/POST/
PATCH/PUT on blobs and manifests) and all of them must stream, authenticate per scope and
fail in a bounded time with a message a pipeline author can act on.

Every request is retried by the one loop of `retries.py`, which also words every failure;
a blob read goes through `blobget.py`. A streamed upload is never re-sent: it fails, the
store fails cleanly (no reference written), and the task's own retry starts the store over.

Waiting is bounded by one setting, `WRAPRESOLVER_IO_TIMEOUT` (`wrapresolver.core.limits`,
default 30 s): connect, each read and each write wait at most that long. A registry that
accepts connections and then says nothing is not retried (after one timeout, two when a
TLS attempt comes first).
"""

from __future__ import annotations

import http.client
import os
import ssl
import threading
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
from wrapresolver.backends.oci.retries import (
    RETRY_STATUS,
    NoAnswer,
    backoff_sleep,
    error_text,
    failure,
    retrying,
    stall_message,
)
from wrapresolver.backends.oci.tls import ssl_context
from wrapresolver.core.limits import io_timeout, shown
from wrapresolver.errors import AuthError, NetworkError, TransferError, WrapError

DEFAULT_ATTEMPTS = 5
DOWNLOAD_CHUNK = 1 << 20
"""Bytes per chunk handed to the fetch: the decompressor and the hash run per chunk."""


def timeout() -> httpx.Timeout:
    """Every wait of a request bounded by the one setting (`WRAPRESOLVER_IO_TIMEOUT`)."""
    return httpx.Timeout(io_timeout())


def _stalled(exc: httpx.TransportError) -> bool:
    """The server took the connection but never answered: retrying only waits again."""
    return isinstance(exc, (httpx.ReadTimeout, httpx.WriteTimeout, httpx.PoolTimeout, httpx.ConnectTimeout))

_TOKENS = TokenCache()
"""Shared by every client in the process: parallel workspaces reuse each other's tokens."""


def registry_message(response: httpx.Response) -> str:
    """The registry's own error text (`errors[0].message`), short."""
    return error_text(response.content, response.reason_phrase)


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
        backoff_sleep(self.backoff, attempt)

    def _send_with_retries(
        self, client: httpx.Client, method: str, url: str, headers: Mapping[str, str],
        content: bytes | None = None, attempts: int | None = None,
    ) -> httpx.Response:
        def send() -> httpx.Response:
            try:
                return client.request(method, url, headers=headers, content=content)
            except httpx.TransportError as exc:
                raise NoAnswer(exc, stalled=_stalled(exc)) from None

        return retrying(send, lambda response: response.status_code, lambda response: response.close(),
                        registry=self.ref.registry, doing=f"{method} {url}", attempts=attempts or self.attempts,
                        sleep=self._sleep)

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

        def send() -> blobget.Answer:
            try:
                return blobget.get(url, self._auth_headers(scopes), context=context, timeout=io_timeout())
            except TimeoutError as exc:
                raise NoAnswer(exc, stalled=True) from None
            except (OSError, http.client.HTTPException) as exc:
                raise NoAnswer(exc, stalled=False) from None

        answer = retrying(send, lambda answer: answer.status, lambda answer: answer.close(),
                          registry=self.ref.registry, doing=f"the read of {what}", attempts=self.attempts,
                          sleep=self._sleep)
        if answer.status != 200:
            raise self._failure(answer.status, error_text(answer.error_body(), http.client.responses.get(answer.status, "")),
                                what, "pull")
        return self._chunks(answer, what)

    def _chunks(self, answer: blobget.Answer, what: str) -> Iterator[bytes]:
        try:
            yield from answer.chunks(DOWNLOAD_CHUNK)
        except blobget.BodyBroken as exc:
            if exc.stalled:
                raise NetworkError(stall_message(self.ref.registry, f"the read of {what}")) from None
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
        raise self._failure(response.status_code, registry_message(response), what, action)

    def _failure(self, status: int, detail: str, what: str, action: str) -> WrapError:
        return failure(status, detail, registry=self.ref.registry, repository=self.ref.repository, what=what,
                       action=action, where_credentials=self._where_credentials())

