"""`gs://` targets: workspace states as objects in a Google Cloud Storage bucket.

`gs://bucket/ci/run-src` keeps an OCI-image-layout-like tree under the prefix `ci/run-src/`:

    blobs/sha256/<hex>   layers, configs and manifests, named by their digest
    refs/<name>          the manifest bytes of one reference (`latest` is the exact target)
    uploads/<uuid>       a blob being written; renamed (server-side copy) once complete

A blob only appears under its digest once it is complete and its digest is known, and a
reference is written last: a single object write is atomic in GCS, so a reader sees either
the old or the new state, never a half one. Every lookup is by exact object name; the bucket
is never listed, which keeps reads strongly consistent and needs no `storage.objects.list`.
A task that dies mid-upload may leave an object under `uploads/`; a lifecycle rule on that
prefix (delete after a day) cleans them up.

Credentials: with the `credentials-secret` param, the steps mount that Secret read-only and
point `GOOGLE_APPLICATION_CREDENTIALS` at its `key.json` (a service-account key). Without it,
Application Default Credentials apply: on GKE, bind the TaskRun's Kubernetes service account
to a Google service account (workload identity) and no key is needed at all. When
`STORAGE_EMULATOR_HOST` is set (fake-gcs-server, tests), the client talks to that emulator
anonymously.

The google-cloud-storage library is imported only in `open`, so the controller never needs it.
The layout is `objectstore`'s; the module is over 400 lines because GCS's bucket naming
rules and the library's several error types each need their own words.
"""

from __future__ import annotations

import io
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from wrapresolver.backends.base import TEKTON_VARIABLE, Backend, KeyInfo, StepRequirements
from wrapresolver.backends.objectstore import ObjectStore
from wrapresolver.errors import (
    AuthError,
    NetworkError,
    NotFoundError,
    ParamError,
    TransferError,
)

if TYPE_CHECKING:  # pragma: no cover
    from google.cloud.storage import Blob, Bucket, Client

CHUNK = 8 << 20
"""Resumable upload and ranged download size; a multiple of 256 KiB as GCS requires."""
DOWNLOAD_CHUNK = 4 << 20
"""Ranged download size: the reader holds a few copies of one range, so keep it smaller."""
PIECE = 1 << 20
"""Size of the reads and writes around the library's chunk buffers, keeping peaks low."""
RETRY_DEADLINE = 30.0
"""Seconds the library keeps retrying transient failures (429, 5xx, dropped connections)."""
EMULATOR_ENV = "STORAGE_EMULATOR_HOST"
CREDENTIALS_ENV = "GOOGLE_APPLICATION_CREDENTIALS"
SECRET_MOUNT = "/var/run/secrets/wrapresolver/gcs"
SECRET_KEY = "key.json"
SECRET_VOLUME = "wrap-gcs-credentials"
PUBLIC_ENDPOINT = "https://storage.googleapis.com"

_BUCKET_CHARS = re.compile(r"^[a-z0-9][a-z0-9._-]*[a-z0-9]$")
_IPV4 = re.compile(r"^\d{1,3}(\.\d{1,3}){3}$")
_PROJECT = re.compile(r"^([a-z0-9.-]+:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$")


@dataclass(frozen=True)
class GCSTarget:
    """A parsed `gs://bucket/prefix`; `prefix` is empty or ends with `/`."""

    bucket: str
    prefix: str

    def object_name(self, relative: str) -> str:
        return self.prefix + relative

    def __str__(self) -> str:
        return f"gs://{self.bucket}/{self.prefix}".rstrip("/")


def parse_target(target: str) -> GCSTarget:
    """`gs://bucket[/prefix]` -> bucket and normalised object-name prefix."""
    parts = urlsplit(target)
    if parts.scheme != "gs":
        raise ParamError(f"target {target!r} is not a gs:// URL; write gs://bucket/prefix")
    if parts.query or parts.fragment:
        raise ParamError(f"target {target!r} must not have a query or fragment; write gs://bucket/prefix")
    check_bucket_name(parts.netloc, target)
    return GCSTarget(parts.netloc, _normalise_prefix(parts.path, target))


def check_bucket_name(bucket: str, target: str) -> None:
    """Apply GCS's bucket naming rules now, so a typo fails at resolution, not mid-run.

    A name still holding a Tekton variable (`$(params.bucket)`) is checked only for what is
    fixed around the variable; Tekton substitutes it before the step runs.
    """
    if not bucket:
        raise ParamError(f"target {target!r} names no bucket; write gs://bucket/prefix")
    if TEKTON_VARIABLE.search(bucket):
        fixed = TEKTON_VARIABLE.sub("x", bucket)
        if not re.fullmatch(r"[a-z0-9._-]+", fixed):
            raise ParamError(f"bucket {bucket!r} in target {target!r} has characters GCS does not allow")
        return
    problem = _bucket_problem(bucket)
    if problem:
        raise ParamError(
            f"bucket {bucket!r} in target {target!r} is not a valid GCS bucket name: {problem}"
        )


def _bucket_problem(bucket: str) -> str:
    """Why `bucket` breaks the GCS naming rules, or "" when it does not."""
    if not _BUCKET_CHARS.match(bucket):
        return (
            "use lowercase letters, digits, '-', '_' and '.', starting and ending with a "
            "letter or digit"
        )
    limit = 222 if "." in bucket else 63
    if not 3 <= len(bucket) <= limit:
        return f"it must be 3 to {limit} characters long"
    if any(not 1 <= len(part) <= 63 for part in bucket.split(".")):
        return "each dot-separated part must be 1 to 63 characters long"
    if _IPV4.match(bucket):
        return "it must not look like an IP address"
    if bucket.startswith("goog") or "google" in bucket or "g00gle" in bucket:
        return "it must not start with 'goog' or contain 'google'"
    return ""


def _normalise_prefix(path: str, target: str) -> str:
    """Strip slashes and refuse object names GCS rejects or that would escape the prefix."""
    prefix = path.strip("/")
    if not prefix:
        return ""
    segments = prefix.split("/")
    if any(segment in ("", ".", "..") for segment in segments):
        raise ParamError(f"target {target!r} has an empty, '.' or '..' path segment")
    if any(ch in prefix for ch in "\r\n\0"):
        raise ParamError(f"target {target!r} contains a control character")
    if prefix.startswith(".well-known/acme-challenge"):
        raise ParamError(f"target {target!r} uses the reserved prefix .well-known/acme-challenge")
    if len(prefix.encode()) > 900:
        raise ParamError(f"the prefix of target {target!r} is too long for GCS object names")
    return prefix + "/"


class GCSBackend(Backend):
    name = "gcs"
    schemes = ("gs",)
    options = {
        "credentials-secret": (
            f"Secret holding a service-account key under `{SECRET_KEY}`; "
            "default: Application Default Credentials (GKE workload identity)"
        ),
        "project": "Google Cloud project the client works in; default: the credentials' project",
        "compression": "layer compression: zstd (default) or gzip",
    }

    def validate_target(self, target: str) -> None:
        parse_target(target)

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        checked = super().validate_options(options)
        project = checked.get("project", "")
        if project and not _PROJECT.match(project):
            raise ParamError(
                f"project {project!r} is not a Google Cloud project ID (6 to 30 lowercase "
                f"letters, digits and '-', starting with a letter)"
            )
        return checked

    def step_requirements(self, options: Mapping[str, str]) -> StepRequirements:
        """Mount the key Secret by reference; the key itself never enters the Pipeline."""
        secret = options.get("credentials-secret", "")
        if not secret:
            return StepRequirements()
        return StepRequirements(
            env=({"name": CREDENTIALS_ENV, "value": f"{SECRET_MOUNT}/{SECRET_KEY}"},),
            volumes=({
                "name": SECRET_VOLUME,
                "secret": {
                    "secretName": secret,
                    "items": [{"key": SECRET_KEY, "path": SECRET_KEY}],
                },
            },),
            volume_mounts=({"name": SECRET_VOLUME, "mountPath": SECRET_MOUNT, "readOnly": True},),
        )

    def open(self, target: str, options: Mapping[str, str]) -> GCSStore:
        store = connect(target, options)
        store.options = dict(options)
        return store


def connect(
    target: str, options: Mapping[str, str], *, retry_deadline: float = RETRY_DEADLINE
) -> GCSStore:
    """A store for `target`; `retry_deadline` bounds how long transient failures are retried."""
    from google.cloud.storage.retry import DEFAULT_RETRY

    where = parse_target(target)
    client = _client(options, where)
    return GCSStore(client, where, DEFAULT_RETRY.with_timeout(retry_deadline), _auth_hint(options))


def _client(options: Mapping[str, str], where: GCSTarget) -> Client:
    from google.auth.exceptions import DefaultCredentialsError
    from google.cloud import storage

    kwargs: dict[str, Any] = {"project": options.get("project") or None}
    if os.environ.get(EMULATOR_ENV):
        from google.auth.credentials import AnonymousCredentials

        kwargs["credentials"] = AnonymousCredentials()
    try:
        client = storage.Client(**kwargs)
    except DefaultCredentialsError:
        raise AuthError(
            f"no Google credentials found to reach {where}: set the `credentials-secret` param "
            f"to a Secret holding a service-account key under `{SECRET_KEY}`, or run the "
            f"pipeline under a Kubernetes service account bound to a Google service account "
            f"(workload identity)"
        ) from None
    _bound_waits(client)
    return client


def _bound_waits(client: Client) -> None:
    """Every request of `client` waits at most WRAPRESOLVER_IO_TIMEOUT (the library's default: 60 s).

    google-cloud-storage passes its own timeout to each call; capping it on the client's
    session keeps the one setting in force without touching every call.
    """
    from wrapresolver.core.limits import io_timeout

    session = client._http
    send = session.request
    limit = io_timeout()

    def bounded(method: str, url: str, *args: Any, **kwargs: Any) -> Any:
        kwargs["timeout"] = limit
        return send(method, url, *args, **kwargs)

    session.request = bounded


def _auth_hint(options: Mapping[str, str]) -> str:
    """Which credentials were used, in the words of the params, for auth error messages."""
    secret = options.get("credentials-secret", "")
    if secret:
        return (
            f"the service-account key of Secret {secret!r} (param `credentials-secret`, "
            f"mounted as {CREDENTIALS_ENV})"
        )
    if os.environ.get(CREDENTIALS_ENV):
        return f"the key file in {CREDENTIALS_ENV}"
    return (
        "Application Default Credentials (no `credentials-secret` param; check the workload "
        "identity binding of the TaskRun's service account)"
    )


class GCSStore(ObjectStore):
    """Blobs and references under one prefix of one bucket."""

    target_ref = "latest"

    def __init__(self, client: Client, where: GCSTarget, retry: Any, auth_hint: str) -> None:
        self.client = client
        self.where = where
        self.retry = retry
        self.auth_hint = auth_hint
        self.bucket: Bucket = client.bucket(where.bucket)
        self._bucket_seen = False

    # ---- naming ----
    def _blob(self, relative: str) -> Blob:
        return self.bucket.blob(self.where.object_name(relative), chunk_size=CHUNK)

    # ---- errors ----
    @property
    def endpoint(self) -> str:
        return os.environ.get(EMULATOR_ENV) or PUBLIC_ENDPOINT

    @contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        """Turn library exceptions into errors that name what the pipeline author must fix."""
        from google.api_core import exceptions as api

        try:
            try:
                yield
            except _media_errors() as exc:
                # Resumable uploads report HTTP failures in their own type; re-raise as the
                # matching api_core error so one mapping below serves every call.
                raise api.from_http_status(_status_of(exc), _short(exc)) from exc
        except Exception as exc:  # translated or re-raised unchanged
            translated = self._translate(exc, action)
            if translated is exc:
                raise
            raise translated from exc

    def _translate(self, exc: Exception, action: str) -> Exception:
        from google.api_core import exceptions as api
        from google.auth import exceptions as auth

        if isinstance(exc, api.RetryError):
            return NetworkError(
                f"{action} at {self.where}: {self.endpoint} kept failing until the retry "
                f"deadline: {exc.cause or exc}"
            )
        if isinstance(exc, (api.Unauthorized, api.Forbidden, auth.RefreshError, auth.DefaultCredentialsError)):
            return AuthError(
                f"{action}: access to bucket {self.where.bucket!r} was denied using "
                f"{self.auth_hint}; grant it roles/storage.objectUser on the bucket "
                f"({_short(exc)})"
            )
        if isinstance(exc, api.NotFound):
            self._raise_if_bucket_missing(action)
            return NotFoundError(f"{action}: object not found in {self.where} ({_short(exc)})")
        if isinstance(exc, api.GoogleAPICallError):
            return TransferError(f"{action} at {self.where} failed: {_short(exc)}")
        if _is_network(exc):
            return NetworkError(f"{action}: cannot reach GCS at {self.endpoint}: {exc}")
        return exc

    def _raise_if_bucket_missing(self, action: str) -> None:
        """A 404 is ambiguous (object or bucket); one bucket lookup tells them apart.

        A workload with only object permissions gets 403 on the lookup: then the bucket is
        assumed to exist and the 404 was about the object.
        """
        if self._bucket_seen:
            return
        from google.api_core import exceptions as api

        try:
            exists = self.bucket.exists(retry=self.retry)
        except (api.Forbidden, api.Unauthorized):
            exists = True
        except Exception:  # cannot tell; the caller reports the original 404
            return
        if not exists:
            raise NotFoundError(
                f"{action}: bucket {self.where.bucket!r} does not exist at {self.endpoint}; "
                f"create it or fix the target {self.where}"
            )
        self._bucket_seen = True

    # ---- ObjectStore: the transport ----
    @property
    def location(self) -> str:
        return str(self.where)

    def exists(self, key: str) -> bool:
        with self._errors(f"checking {key}"):
            return bool(self._blob(key).exists(retry=self.retry))

    def read(self, key: str) -> bytes | None:
        from google.api_core.exceptions import NotFound

        action = f"reading {key}"
        with self._errors(action):
            try:
                return bytes(self._blob(key).download_as_bytes(retry=self.retry))
            except NotFound:
                self._raise_if_bucket_missing(action)
                return None

    def stream(self, key: str) -> Iterator[bytes] | None:
        return self._chunks(self._blob(key), f"reading {key}")

    def _chunks(self, blob: Blob, action: str) -> Iterator[bytes]:
        with self._errors(action):
            reader = blob.open("rb", chunk_size=DOWNLOAD_CHUNK, retry=self.retry)
        with reader:
            while True:
                with self._errors(action):
                    chunk = reader.read(PIECE)
                if not chunk:
                    return
                yield chunk

    def write(self, key: str, data: bytes, media_type: str) -> None:
        """One object write, which GCS applies atomically; the same bytes again are harmless."""
        with self._errors(f"writing {key}"):
            self._blob(key).upload_from_string(data, content_type=media_type, retry=self.retry)

    def upload(self, key: str, reader: io.RawIOBase, media_type: str) -> None:
        """A resumable upload; memory stays at one upload chunk."""
        action = f"uploading a blob to {self.where}"
        with self._errors(action):
            writer = self._blob(key).open(
                "wb", ignore_flush=True, content_type=media_type,
                if_generation_match=0, retry=self.retry,
            )
        try:
            while True:
                chunk = reader.read(PIECE)  # errors of the source stay as they are
                if not chunk:
                    break
                with self._errors(action):
                    writer.write(chunk)
            with self._errors(action):
                writer.close()
        except BaseException:
            # Cancel the resumable upload and drop the buffer; a writer left open would try to
            # finish the upload again when garbage-collected.
            _quietly(writer.terminate)
            raise

    def move(self, source: str, dest: str) -> None:
        """A server-side rewrite (no second pass over the data), then the upload goes."""
        from google.api_core.exceptions import PreconditionFailed

        final, temporary = self._blob(dest), self._blob(source)
        with self._errors(f"storing {dest}"):
            token = None
            try:
                while True:
                    token, _, _ = final.rewrite(
                        temporary, token=token, if_generation_match=0, retry=self.retry
                    )
                    if token is None:
                        break
            except PreconditionFailed:
                pass  # another writer stored the same content first
        self.delete_quietly(source)

    # ---- the early check ----
    def check_read(self) -> None:
        """One bucket-level call: a listing of at most one object under the prefix, which
        names a missing bucket."""
        from google.api_core.exceptions import NotFound

        action = f"listing {self.where}"
        try:
            with self._errors(action):
                try:
                    for _ in self.client.list_blobs(self.bucket, prefix=self.where.prefix, max_results=1,
                                                    retry=self.retry):
                        break
                except NotFound:
                    raise NotFoundError(
                        f"{action}: bucket {self.where.bucket!r} does not exist at {self.endpoint}; "
                        f"create it or fix the target {self.where}"
                    ) from None
        except AuthError:
            super().check_read()  # a role without `storage.objects.list`: the lookup by name the steps make

    # ---- the delete side (objectstore_reclaim) ----
    def list_keys(self, prefix: str) -> Iterator[KeyInfo]:
        strip = len(self.where.prefix)
        with self._errors(f"listing {prefix or 'the target'}"):
            for blob in self.client.list_blobs(self.bucket, prefix=self.where.object_name(prefix), retry=self.retry):
                updated = blob.updated or blob.time_created
                yield KeyInfo(blob.name[strip:], blob.size, updated.timestamp() if updated else None)

    def delete(self, key: str) -> None:
        from google.api_core.exceptions import NotFound

        with self._errors(f"deleting {key}"):
            try:
                self._blob(key).delete(retry=self.retry)
            except NotFound:
                pass

    def delete_quietly(self, key: str) -> None:
        """Best effort: a leftover under uploads/ is garbage, never a wrong state."""
        blob = self._blob(key)
        _quietly(lambda: blob.delete(retry=self.retry))

    def close(self) -> None:
        _quietly(self.client.close)


def _is_network(exc: BaseException) -> bool:
    """Connection-level failures (refused, reset, DNS, timeouts) as opposed to local I/O."""
    from google.auth import exceptions as auth

    if isinstance(exc, auth.TransportError):
        return True
    try:
        import requests
    except ImportError:  # pragma: no cover - a dependency of google-cloud-storage
        return isinstance(exc, ConnectionError)
    return isinstance(exc, (requests.ConnectionError, requests.Timeout, ConnectionError))


def _media_errors() -> tuple[type[BaseException], ...]:
    """The upload/download error type: in the library since 3.0, in resumable-media before."""
    try:
        from google.cloud.storage.exceptions import InvalidResponse
    except ImportError:  # pragma: no cover - google-cloud-storage 2.x
        from google.resumable_media.common import InvalidResponse
    return (InvalidResponse,)


def _status_of(exc: BaseException) -> int:
    response = getattr(exc, "response", None)
    return int(getattr(response, "status_code", 0) or 500)


def _short(exc: BaseException) -> str:
    """The first line of a library error: the status and URL, without response dumps."""
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _quietly(action: Any) -> None:
    try:
        action()
    except Exception:  # cleanup must not hide the real outcome
        pass


BACKEND = GCSBackend()
