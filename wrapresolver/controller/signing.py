"""The controller's signing key: a Secret in its own namespace, created on first start.

The key signs the storage annotations of every answer (core.lifecycle) and is checked
before any reclaim, so only annotations this controller wrote can make it reach storage.
It lives in the Secret `wrapresolver-signing-key` (key `key`, 32 random bytes) next to the
ConfigMap. The first replica to start creates it; a replica that loses the race (409) reads
the winner's, so every replica signs and verifies with the same key. An admin can create
the Secret beforehand (any key of 32 bytes or more); deleting it makes the next start create
a new key, and the annotations signed with the old one are then ignored (their states are
left for `wrapresolver gc`).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os

import aiohttp

from wrapresolver.controller.kube import Kube, KubeError, Resource

SECRETS = Resource("", "v1", "secrets")
SECRET_NAME = "wrapresolver-signing-key"
SECRET_KEY = "key"
KEY_BYTES = 32

log = logging.getLogger("wrapresolver.controller.signing")


async def load_key(kube: Kube, namespace: str, attempts: int = 5) -> bytes:
    """The key from the Secret, creating the Secret when absent; b"" (and an error log) when neither works.

    An API server that does not answer yet (the controller starting with the cluster) is
    asked again a few times before giving up.
    """
    for attempt in range(attempts):
        try:
            return await _load_key(kube, namespace)
        except (TimeoutError, OSError, aiohttp.ClientError) as exc:
            if attempt + 1 == attempts:
                log.error("no signing key: the API server did not answer (%r); answers are not signed", exc)
                return b""
            await asyncio.sleep(2 ** attempt)
    return b""


async def _load_key(kube: Kube, namespace: str) -> bytes:
    try:
        for _ in range(3):
            secret = await kube.get(SECRETS, namespace, SECRET_NAME)
            if secret is not None:
                return _key_of(secret, namespace)
            body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                    "metadata": {"name": SECRET_NAME, "labels": {"app.kubernetes.io/name": "wrapresolver"}},
                    "data": {SECRET_KEY: base64.b64encode(os.urandom(KEY_BYTES)).decode()}}
            try:
                created = await kube.create(SECRETS, namespace, body)
            except KubeError as exc:
                if exc.status == 409:  # another replica created it first: read that one
                    continue
                raise
            log.info("created the signing key Secret %s/%s", namespace, SECRET_NAME)
            return _key_of(created, namespace)
    except KubeError as exc:
        log.error("no signing key: Secret %s/%s could not be read or created (%s); answers are not signed and "
                  "the controller reclaims no storage until it can", namespace, SECRET_NAME, exc.message)
        return b""
    log.error("no signing key: Secret %s/%s kept appearing and disappearing", namespace, SECRET_NAME)
    return b""


def _key_of(secret: dict, namespace: str) -> bytes:
    try:
        key = base64.b64decode(str((secret.get("data") or {}).get(SECRET_KEY) or ""), validate=True)
    except ValueError:
        key = b""
    if len(key) < KEY_BYTES:
        log.error("Secret %s/%s: `%s` must hold at least %d bytes (base64 in data); answers are not signed",
                  namespace, SECRET_NAME, SECRET_KEY, KEY_BYTES)
        return b""
    return key
