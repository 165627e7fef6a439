"""Every target under a prefix, for `wrapresolver gc --target oci://reg/ci/`.

A target ending in `/` is a prefix: `wrapresolver gc` walks every repository (OCI) or stored layout
(file://, s3://, gs://) under it, on path-segment boundaries (`ci/` finds `ci/a` and
`ci/team/b`, never `ci-other/c`).

* OCI: the registry's catalog (`GET /v2/_catalog`, paginated with `n` and `last` as the
  `Link` header says). A registry without a catalog (404, `UNSUPPORTED`, or a token that
  never grants `registry:catalog:*`) is an error that says so and how to go on: one
  repository at a time.
* file://: directories holding an `index.json` (an OCI image layout), `blobs/` not entered.
* s3:// and gs://: the bucket listed under the prefix (the store's `KeyListable` ability);
  a layout is the key prefix in front of `refs/<name>` or `blobs/sha256/<digest>`.

Other backends (rsync, plugins) name one target at a time; a prefix is refused with a
message that says so.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path

from wrapresolver.backends.base import Backend, KeyListable
from wrapresolver.core.values import SHA256_HEX
from wrapresolver.errors import NotFoundError, ParamError, TransferError

MAX_PAGES = 10_000
PAGE = 1000
_LAYOUT_KEY = re.compile(rf"^(?:(?P<target>.+)/)?(?:refs/[^/]+|blobs/sha256/{SHA256_HEX})$")


def is_prefix(target: str) -> bool:
    return target.endswith("/")


def targets_under(backend: Backend, prefix: str, options: Mapping[str, str]) -> list[str]:
    """The targets under `prefix`, sorted; `ParamError` for a backend that cannot list them."""
    name = backend.name
    if name == "oci":
        return _registry_targets(prefix, options)
    if name == "file":
        return _file_targets(prefix)
    if name in ("s3", "gcs"):
        return _bucket_targets(backend, prefix, options)
    raise ParamError(
        f"--target {prefix!r} ends with '/', a prefix, but backend {name!r} has no listing of its targets: "
        f"give one target at a time (without the trailing '/')")


def _registry_targets(prefix: str, options: Mapping[str, str]) -> list[str]:
    from wrapresolver.backends.oci import Reference
    from wrapresolver.backends.oci.reclaim import next_page
    from wrapresolver.backends.oci.store import RegistryStore

    text = prefix[len("oci://"):] if prefix.startswith("oci://") else prefix
    host, _, path = text.partition("/")
    path = path.strip("/")
    if not host:
        raise ParamError(f"--target {prefix!r} names no registry; write oci://registry.example/ci/")
    store = RegistryStore.open(Reference(host, "catalog"), options)
    client = store.client
    found: list[str] = []
    try:
        url: str | None = f"{client.base}/v2/_catalog?n={PAGE}"
        for _ in range(MAX_PAGES):
            if url is None:
                break
            response = client.request("GET", url, scopes=["registry:catalog:*"])
            if response.status_code in (401, 403, 404, 405) or "UNSUPPORTED" in response.text[:2000]:
                raise TransferError(
                    f"registry {host} has no catalog this client may read (GET /v2/_catalog answered "
                    f"{response.status_code}), so the repositories under {prefix!r} cannot be listed: run "
                    f"`wrapresolver gc` once per repository (--target oci://{host}/<repository>), or grant "
                    f"the catalog (distribution: token scope registry:catalog:*)")
            if response.status_code != 200:
                client.raise_for(response, f"the catalog of {host}", "list")
            found += [str(r) for r in response.json().get("repositories") or []]
            url = next_page(client.base, response.headers.get("link", ""))
    finally:
        store.close()
    chosen = sorted(r for r in set(found) if not path or r == path or r.startswith(path + "/"))
    return [f"oci://{host}/{r}" for r in chosen]


def _file_targets(prefix: str) -> list[str]:
    from wrapresolver.backends.file import parse_target

    root, _ = parse_target(prefix.rstrip("/") or "file:///")
    if not root.is_dir():
        raise NotFoundError(f"directory {str(root)!r} of --target {prefix!r} does not exist")
    found = []
    for directory, subdirs, files in os.walk(root):
        if "index.json" in files:
            found.append(Path(directory))
        subdirs[:] = sorted(d for d in subdirs if d != "blobs")
    return [f"file://{d}" for d in sorted(found)]


def _bucket_targets(backend: Backend, prefix: str, options: Mapping[str, str]) -> list[str]:
    scheme, _, rest = prefix.partition("://")
    bucket, _, path = rest.partition("/")
    path = path.strip("/")
    store = backend.open(f"{scheme}://{bucket}", options)
    try:
        keys = store
        if not isinstance(keys, KeyListable):
            raise ParamError(f"--target {prefix!r} ends with '/', a prefix, but the store of backend "
                             f"{backend.name!r} cannot list keys: give one target at a time (without the trailing '/')")
        found = set()
        for info in keys.list_keys(f"{path}/" if path else ""):
            match = _LAYOUT_KEY.match(info.key)
            if match:
                found.add(match.group("target") or "")
    finally:
        store.close()
    return [f"{scheme}://{bucket}/{t}".rstrip("/") for t in sorted(found)]
