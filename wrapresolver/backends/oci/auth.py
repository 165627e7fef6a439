"""Registry credentials and challenges: the docker config Tekton writes, and token scopes.

Tekton gives each step a docker config built from the ServiceAccount's image pull secrets
(`$DOCKER_CONFIG` or `~/.docker/config.json`), so that is where credentials come from, the
way docker, crane and buildah look them up: `auths` entries (keyed by host, with or
without scheme and path), `credHelpers` per host, then `credsStore`.

Bearer tokens are cached per (realm, service, scope), as oras-go's auth cache does: a token
granted for `pull` must never be reused for `push`, which scope-enforcing registries
(distribution, ACR, Harbor) refuse.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from wrapresolver.errors import AuthError


@dataclass(frozen=True)
class Credentials:
    username: str = ""
    password: str = ""
    identity_token: str = ""
    """An OAuth2 refresh token (docker config `identitytoken`), exchanged at the realm."""

    def __bool__(self) -> bool:
        return bool(self.username or self.identity_token)

    def __repr__(self) -> str:  # never print a secret
        return f"Credentials(username={self.username!r}, password=***)"


@dataclass(frozen=True)
class Challenge:
    scheme: str  # "basic" or "bearer"
    params: dict


def docker_config_path() -> Path | None:
    """`$DOCKER_CONFIG/config.json`, else `~/.docker/config.json`; None when there is no home.

    A step running as an arbitrary UID (no passwd entry, no `HOME`) has no home directory,
    hence no docker config there: that means no credentials, not a failure.
    """
    root = os.environ.get("DOCKER_CONFIG")
    if root:
        return Path(root) / "config.json"
    home = os.path.expanduser("~")
    if home.startswith("~"):
        return None
    return Path(home) / ".docker" / "config.json"


def _normalise_host(key: str) -> str:
    key = re.sub(r"^[a-z]+://", "", key)
    key = key.split("/", 1)[0]
    return "docker.io" if key in ("index.docker.io", "registry-1.docker.io") else key


def credentials_for(registry: str) -> Credentials:
    """Credentials for `registry` (`host[:port]`) from the docker config, or none."""
    path = docker_config_path()
    if path is None:
        return Credentials()
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        return Credentials()
    except (OSError, ValueError) as exc:
        raise AuthError(f"cannot read the docker config {path}: {exc}") from None
    wanted = _normalise_host(registry)
    helper = (config.get("credHelpers") or {}).get(wanted)
    for key, entry in (config.get("auths") or {}).items():
        if _normalise_host(key) != wanted or not isinstance(entry, dict):
            continue
        if entry.get("identitytoken"):
            return Credentials(identity_token=entry["identitytoken"])
        if entry.get("auth"):
            try:
                user, _, password = base64.b64decode(entry["auth"]).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise AuthError(f"the docker config {path} has a malformed `auth` entry for {key}") from None
            return Credentials(user, password)
        if entry.get("username"):
            return Credentials(entry["username"], entry.get("password", ""))
    helper = helper or config.get("credsStore")
    if helper:
        return _from_helper(helper, registry)
    return Credentials()


def _from_helper(helper: str, registry: str) -> Credentials:
    try:
        done = subprocess.run(
            [f"docker-credential-{helper}", "get"], input=registry, capture_output=True,
            text=True, timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise AuthError(f"docker credential helper docker-credential-{helper} failed for {registry}: {exc}") from None
    if done.returncode != 0:
        return Credentials()  # the helper has nothing for this registry
    data = json.loads(done.stdout or "{}")
    if data.get("Username") == "<token>":
        return Credentials(identity_token=data.get("Secret", ""))
    return Credentials(data.get("Username", ""), data.get("Secret", ""))


_PARAM = re.compile(r'([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]+))')


def parse_challenge(header: str) -> Challenge | None:
    """`Bearer realm="...",service="...",scope="..."` -> Challenge; None if unusable."""
    scheme, _, rest = header.strip().partition(" ")
    scheme = scheme.lower()
    if scheme not in ("basic", "bearer"):
        return None
    params = {m.group(1).lower(): (m.group(2) if m.group(2) is not None else m.group(3)) for m in _PARAM.finditer(rest)}
    return Challenge(scheme, params)


def basic_header(creds: Credentials) -> str:
    raw = f"{creds.username}:{creds.password}".encode()
    return "Basic " + base64.b64encode(raw).decode()


class TokenCache:
    """Bearer tokens per (realm, service, scope), refreshed before they expire."""

    def __init__(self) -> None:
        self._tokens: dict[tuple[str, str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def get(self, key: tuple[str, str, str]) -> str | None:
        with self._lock:
            found = self._tokens.get(key)
        if found and found[1] > time.monotonic():
            return found[0]
        return None

    def put(self, key: tuple[str, str, str], token: str, expires_in: float) -> None:
        # Renew 30 s early so a long upload never starts with a token about to lapse.
        with self._lock:
            self._tokens[key] = (token, time.monotonic() + max(expires_in - 30, 10))
