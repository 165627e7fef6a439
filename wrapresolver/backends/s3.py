"""`s3://bucket/prefix` targets: an OCI-image-layout-shaped tree of objects in a bucket.

Works with AWS S3 and S3-compatible servers (MinIO, SeaweedFS, Ceph RGW, moto) through the
`endpoint`, `region` and `path-style` options. Layout under the prefix:

    <prefix>/oci-layout              {"imageLayoutVersion":"1.0.0"}
    <prefix>/blobs/sha256/<hex>      layers, configs and manifests, immutable
    <prefix>/refs/<name>             the manifest bytes of a reference
    <prefix>/uploads/<uuid>          blobs in flight; never visible under a digest

Every lookup is by exact key (HEAD / GET): the bucket is never listed, so an S3 policy may
grant only `s3:GetObject`, `s3:PutObject` and `s3:DeleteObject` on the prefix. A reference
is one PUT, which S3 applies atomically, and it is written last, so a reader sees either
the previous state or the complete new one.

Credentials: with the `credentials-secret` option the injected steps get
AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN if the Secret has it) from
that Kubernetes Secret. Without it the standard AWS credential chain applies in the step:
environment variables, web identity (EKS IRSA / pod identity, GKE workload identity
federation), the shared config file, and the instance profile of the node.

The module is a little over 400 lines: the layout is `objectstore`'s, what is left is the
target and option checks and the translation of botocore's errors, one concern.
"""

from __future__ import annotations

import io
import ipaddress
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
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

PART_SIZE = 8 << 20
"""Multipart threshold and part size: memory per upload is about PART_SIZE * CONCURRENCY."""
CONCURRENCY = 4
CHUNK = 1 << 20
MAX_ATTEMPTS = 5
"""Total tries per request in botocore's standard retry mode (throttling, 5xx and connection
errors are retried with jittered backoff); the AWS_MAX_ATTEMPTS env var overrides it."""
SECRET_KEYS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
SESSION_TOKEN = "AWS_SESSION_TOKEN"

_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_BUCKET_CHARS = re.compile(r"^[a-z0-9.-]*$")
_REGION = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
_AUTH_CODES = {
    "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken",
    "InvalidToken", "TokenRefreshRequired", "InvalidClientTokenId", "AllAccessDisabled",
    "403", "401",
}


@dataclass(frozen=True)
class S3Target:
    """A bucket and a key prefix (no leading or trailing slash; may be empty)."""

    bucket: str
    prefix: str = ""

    def key(self, *parts: str) -> str:
        return "/".join(p for p in (self.prefix, *parts) if p)

    def url(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


@dataclass(frozen=True)
class S3Options:
    """The validated backend options, as the step half uses them."""

    endpoint: str | None = None
    region: str | None = None
    path_style: bool = False

    @classmethod
    def from_options(cls, options: Mapping[str, str]) -> S3Options:
        return cls(
            endpoint=options.get("endpoint") or None,
            region=options.get("region") or None,
            path_style=_truth(options.get("path-style", "false"), "path-style"),
        )


def parse_target(target: str) -> S3Target:
    """`s3://bucket/some/prefix` -> S3Target; the bucket is checked by the S3 naming rules."""
    if not target.startswith("s3://"):
        raise ParamError(f"target {target!r} is not an s3:// URL; write s3://bucket/prefix")
    bucket, _, prefix = target[len("s3://"):].partition("/")
    _check_bucket(bucket, target)
    prefix = prefix.strip("/")
    if "//" in prefix or any(seg in (".", "..") for seg in prefix.split("/")):
        raise ParamError(
            f"target {target!r}: the key prefix {prefix!r} must not contain empty, '.' or '..' "
            f"segments"
        )
    if any(ord(ch) < 0x20 or ch == "\x7f" for ch in prefix):
        raise ParamError(f"target {target!r}: the key prefix contains control characters")
    return S3Target(bucket, prefix)


def _check_bucket(bucket: str, target: str) -> None:
    """S3 bucket naming rules; a bucket with Tekton placeholders is checked only in its literal parts."""
    if not bucket:
        raise ParamError(f"target {target!r} names no bucket; write s3://bucket/prefix")
    if TEKTON_VARIABLE.search(bucket):
        literal = TEKTON_VARIABLE.sub("", bucket)
        if not _BUCKET_CHARS.match(literal):
            raise ParamError(_bucket_rule(bucket, target))
        return
    if not _BUCKET.match(bucket) or ".." in bucket or _is_ip(bucket):
        raise ParamError(_bucket_rule(bucket, target))


def _bucket_rule(bucket: str, target: str) -> str:
    return (
        f"target {target!r}: {bucket!r} is not a valid S3 bucket name; bucket names are 3-63 "
        f"characters of lowercase letters, digits, '.' and '-', start and end with a letter or "
        f"digit, and are not IP addresses"
    )


def _is_ip(name: str) -> bool:
    try:
        ipaddress.IPv4Address(name)
    except ValueError:
        return False
    return True


def _truth(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered not in ("true", "false"):
        raise ParamError(f"{name} must be \"true\" or \"false\", not {value!r}")
    return lowered == "true"


class S3Backend(Backend):
    name = "s3"
    schemes = ("s3",)
    options = {
        "endpoint": "S3-compatible endpoint URL (MinIO, SeaweedFS, ...); empty for AWS",
        "region": "bucket region, e.g. eu-west-1 (default: from the AWS config, else us-east-1)",
        "path-style": "\"true\" to address buckets as <endpoint>/<bucket> (most S3-compatible servers)",
        "credentials-secret": "Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY[, AWS_SESSION_TOKEN]; "
        "empty: the AWS credential chain (IRSA, instance profile)",
        "compression": "layer compression: zstd (default) or gzip",
    }

    def validate_target(self, target: str) -> None:
        parse_target(target)

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        checked = super().validate_options(options)
        _check_endpoint(checked.get("endpoint", ""))
        region = checked.get("region", "")
        if region and not TEKTON_VARIABLE.search(region) and not _REGION.match(region):
            raise ParamError(f"region {region!r} is not a region name like eu-west-1")
        if "path-style" in checked:
            checked["path-style"] = str(_truth(checked["path-style"], "path-style")).lower()
        return checked

    def step_requirements(self, options: Mapping[str, str]) -> StepRequirements:
        """Credentials come from the Secret by reference, so no key ever enters the Pipeline."""
        secret = options.get("credentials-secret", "")
        if not secret:
            return StepRequirements()
        env = [_secret_env(secret, key, optional=False) for key in SECRET_KEYS]
        env.append(_secret_env(secret, SESSION_TOKEN, optional=True))
        return StepRequirements(env=tuple(env))

    def open(self, target: str, options: Mapping[str, str]) -> S3Store:
        store = S3Store(parse_target(target), S3Options.from_options(options))
        store.options = dict(options)
        return store


def _check_endpoint(endpoint: str) -> None:
    if not endpoint or TEKTON_VARIABLE.search(endpoint):
        return
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ParamError(
            f"endpoint {endpoint!r} must be an http:// or https:// URL such as "
            f"https://minio.example.com:9000"
        )


def _secret_env(secret: str, key: str, optional: bool) -> dict:
    ref: dict[str, Any] = {"name": secret, "key": key}
    if optional:
        ref["optional"] = True
    return {"name": key, "valueFrom": {"secretKeyRef": ref}}


class S3Store(ObjectStore):
    """Blobs and references under one bucket prefix, reached through boto3."""

    def __init__(self, target: S3Target, options: S3Options, client: Any = None) -> None:
        self.target = target
        self.s3 = options
        self.client = client or _make_client(options)

    # ---- error translation ----
    @property
    def _where(self) -> str:
        return self.s3.endpoint or "AWS S3"

    @contextmanager
    def _errors(self, action: str, key: str) -> Iterator[None]:
        """botocore exceptions as messages naming the bucket, key, endpoint or credentials to fix."""
        try:
            yield
        except TransferError:
            raise
        except Exception as exc:  # translated or re-raised below
            translated = self._translate(exc, action, key)
            if translated is None:
                raise
            raise translated from exc

    def _translate(self, exc: BaseException, action: str, key: str) -> TransferError | None:
        from botocore import exceptions as bex

        url = f"s3://{self.target.bucket}/{key}"
        for cause in _causes(exc):
            if isinstance(cause, (bex.NoCredentialsError, bex.PartialCredentialsError)):
                return AuthError(
                    f"no AWS credentials for {action} {url}: set the `credentials-secret` param to "
                    f"a Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or give the "
                    f"task's service account a cloud identity (IRSA / workload identity)"
                )
            if isinstance(cause, bex.ClientError):
                return self._client_error(cause, action, key, url)
            if isinstance(cause, (bex.ConnectionError, bex.HTTPClientError)):
                return NetworkError(
                    f"cannot reach {self._where} while {action} {url}: {cause}; check the "
                    f"`endpoint` param and that the step can reach it"
                )
        return None

    def _client_error(self, exc: Any, action: str, key: str, url: str) -> TransferError:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code == "NoSuchBucket":
            return NotFoundError(
                f"bucket {self.target.bucket!r} does not exist at {self._where} ({action} {url}): "
                f"create it or fix the target"
            )
        if code in _AUTH_CODES or status in (401, 403):
            return AuthError(
                f"access denied ({code or status}) while {action} {url} at {self._where}: check "
                f"AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY in the Secret named by the "
                f"`credentials-secret` param (or the step's cloud identity) and that it may read "
                f"and write s3://{self.target.bucket}/{self.target.key()}"
            )
        if isinstance(status, int) and status >= 500:
            return NetworkError(
                f"{self._where} kept failing ({status} {code}) while {action} {url}, even after "
                f"retries: the storage service is unavailable or overloaded; retry the run later"
            )
        if code in ("NoSuchKey", "404") or status == 404:
            return NotFoundError(f"{url} does not exist at {self._where} ({action})")
        return TransferError(f"{action} {url} at {self._where} failed: {code} {error.get('Message', '')}".rstrip())

    # ---- ObjectStore: the transport ----
    @property
    def location(self) -> str:
        return f"{self.target.url()} at {self._where}"

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        key = self.target.key(key)
        with self._errors("checking", key):
            try:
                self.client.head_object(Bucket=self.target.bucket, Key=key)
            except ClientError as exc:
                if _status(exc) == 404 and _code(exc) != "NoSuchBucket":
                    return False
                raise
        return True

    def read(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        key = self.target.key(key)
        with self._errors("reading", key):
            try:
                response = self.client.get_object(Bucket=self.target.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) == "NoSuchKey":
                    return None
                raise
            return response["Body"].read()

    def stream(self, key: str) -> Iterator[bytes] | None:
        from botocore.exceptions import ClientError

        key = self.target.key(key)
        with self._errors("reading", key):
            try:
                response = self.client.get_object(Bucket=self.target.bucket, Key=key)
            except ClientError as exc:
                if _code(exc) == "NoSuchKey":
                    return None
                raise
        return self._chunks(response["Body"], key)

    def _chunks(self, body: Any, key: str) -> Iterator[bytes]:
        with self._errors("reading", key):
            try:
                yield from body.iter_chunks(CHUNK)
            finally:
                body.close()

    def write(self, key: str, data: bytes, media_type: str) -> None:
        """One PUT, which S3 applies atomically."""
        key = self.target.key(key)
        with self._errors("writing", key):
            self.client.put_object(Bucket=self.target.bucket, Key=key, Body=data, ContentType=media_type)

    def upload(self, key: str, reader: io.RawIOBase, media_type: str) -> None:
        # s3transfer sizes parts by single read() calls: buffering makes every part whole
        # even when `reader` returns short reads (a pipe), so no part is under S3's minimum.
        whole_reads = io.BufferedReader(reader, CHUNK)
        key = self.target.key(key)
        with self._errors("uploading", key):
            self.client.upload_fileobj(
                whole_reads, self.target.bucket, key,
                ExtraArgs={"ContentType": media_type}, Config=_transfer_config(),
            )

    def move(self, source: str, dest: str) -> None:
        """A server-side copy (S3 has no rename): the data stays off this pod."""
        source, dest = self.target.key(source), self.target.key(dest)
        with self._errors("copying to", dest):
            self.client.copy(
                {"Bucket": self.target.bucket, "Key": source}, self.target.bucket, dest,
                Config=_transfer_config(),
            )
        self.delete_quietly(source, relative=False)

    def delete_quietly(self, key: str, relative: bool = True) -> None:
        """A leftover upload costs storage only (a lifecycle rule on uploads/ cleans it up)."""
        try:
            self.client.delete_object(Bucket=self.target.bucket, Key=self.target.key(key) if relative else key)
        except Exception:  # never hide the original error behind cleanup
            pass

    # ---- the early check ----
    def check_read(self) -> None:
        """One bucket-level call, a listing of at most one key under the prefix: it tells a
        missing bucket (NoSuchBucket) from a missing key, which a HEAD cannot. A policy
        without `s3:ListBucket` gets the lookup by name the data path makes instead, so the
        check never asks for more than the steps need."""
        prefix = self.target.key("")
        try:
            with self._errors("listing", prefix):
                self.client.list_objects_v2(Bucket=self.target.bucket, Prefix=prefix, MaxKeys=1)
        except AuthError:
            super().check_read()

    # ---- the delete side (objectstore_reclaim) ----
    def list_keys(self, prefix: str) -> Iterator[KeyInfo]:
        base = self.target.key("")
        start = self.target.key(prefix) if prefix else base
        strip = len(base) + 1 if base else 0
        with self._errors("listing", start):
            pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.target.bucket, Prefix=start)
            for page in pages:
                for obj in page.get("Contents") or []:
                    modified = obj.get("LastModified")
                    yield KeyInfo(obj["Key"][strip:], obj.get("Size"), modified.timestamp() if modified else None)

    def delete(self, key: str) -> None:
        key = self.target.key(key)
        with self._errors("deleting", key):
            self.client.delete_object(Bucket=self.target.bucket, Key=key)

    def close(self) -> None:
        close = getattr(self.client, "close", None)
        if close is not None:
            close()


def _make_client(options: S3Options) -> Any:
    """boto3 is imported here so the controller and other backends never need it."""
    import boto3
    from botocore.config import Config

    from wrapresolver.core.limits import io_timeout

    session = boto3.session.Session()
    retries: dict[str, Any] = {"mode": "standard"}
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        retries["total_max_attempts"] = MAX_ATTEMPTS
    config = Config(
        retries=retries,
        s3={"addressing_style": "path" if options.path_style else "auto"},
        # One setting bounds every wait (docs/security.md): a stalled endpoint fails after
        # at most MAX_ATTEMPTS waits of WRAPRESOLVER_IO_TIMEOUT.
        connect_timeout=io_timeout(),
        read_timeout=io_timeout(),
        max_pool_connections=CONCURRENCY * 2,
    )
    region = options.region or session.region_name or "us-east-1"
    return session.client("s3", endpoint_url=options.endpoint, region_name=region, config=config)


def _transfer_config() -> Any:
    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(
        multipart_threshold=PART_SIZE, multipart_chunksize=PART_SIZE,
        max_concurrency=CONCURRENCY, use_threads=True,
    )
    # Parts read ahead from a non-seekable stream are held in memory: cap them (default 10).
    config.max_in_memory_upload_chunks = CONCURRENCY
    return config


def _causes(exc: BaseException) -> Iterator[BaseException]:
    """The exception and its causes: s3transfer wraps ClientError in S3UploadFailedError."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def _code(exc: Any) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def _status(exc: Any) -> int | None:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")


BACKEND = S3Backend()
