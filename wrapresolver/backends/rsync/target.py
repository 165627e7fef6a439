"""rsync and SSH targets: parsed and checked, pure (the resolver validates with this)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from wrapresolver.errors import ParamError

DEFAULT_PORT = 873
DEFAULT_SSH_PORT = 22
PASSWORD_ENV = "RSYNC_PASSWORD"
"""The env var the daemon password reaches the step in, and rsync reads."""
SSH_KEY_NAME = "ssh-privatekey"
"""The key of a `kubernetes.io/ssh-auth` Secret that holds the private key."""
_MODULE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
"""A user name on the daemon or the SSH server: nothing that could reach ssh as an option."""
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:%-]*$")
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:\[\]]+)@)?(?P<host>\[[^\]/]+\]|[^@/:\[\]]+):(?P<path>.*)$")


@dataclass(frozen=True)
class RsyncTarget:
    """Where the states of one target live: on an rsync daemon or on an SSH server."""

    host: str
    module: str
    """The daemon module; empty over SSH."""
    path: str = ""
    """Below the module on a daemon; over SSH the absolute path without its leading '/'."""
    port: int = DEFAULT_PORT
    user: str = ""
    transport: str = "rsync"
    """`rsync` (daemon protocol) or `ssh`."""

    @property
    def ssh(self) -> bool:
        return self.transport == "ssh"

    @property
    def where(self) -> str:
        """`host:port`, what a network error must name."""
        return f"{self.host}:{self.port}"

    @property
    def server(self) -> str:
        """`rsync daemon at host:port` or `SSH server at host:port`, for messages."""
        return f"{'SSH server' if self.ssh else 'rsync daemon'} at {self.where}"

    def url(self, rel: str = "") -> str:
        """What rsync is given for `rel` below the target's directory.

        The daemon URL `rsync://user@host:port/module/path/rel`, or over SSH
        `user@host:/path/rel` (the port goes to ssh, see `Runner`).
        """
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        if self.ssh:
            return f"{user}{host}:/" + "/".join(p for p in (self.path, rel) if p)
        parts = [p for p in (self.module, self.path, rel) if p]
        return f"rsync://{user}{host}:{self.port}/" + "/".join(parts)

    def display(self, rel: str = "") -> str:
        """The location of `rel` as a user writes a target (with the SSH port), for messages."""
        if not self.ssh:
            return self.url(rel)
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        return f"ssh://{user}{host}:{self.port}/" + "/".join(p for p in (self.path, rel) if p)


_WRITE = "write rsync://[user@]host[:port]/module/path or ssh://[user@]host[:port]/absolute/path"


def parse_target(target: str, user_option: str = "") -> RsyncTarget:
    """An rsync daemon URL, an ssh:// URL or `[user@]host:/path` -> RsyncTarget.

    Errors say what to write.
    """
    if any(ch in target for ch in "\r\n\t\0"):
        raise ParamError(f"target {target!r} contains a control character")
    if "://" not in target:
        match = _SCP_LIKE.match(target)
        if match is None:
            raise ParamError(f"target {target!r} is not an rsync target; {_WRITE}")
        host = match["host"].removeprefix("[").removesuffix("]")
        return _ssh_target(target, match["user"] or "", host, DEFAULT_SSH_PORT, match["path"], user_option)
    parts = urlsplit(target)
    if parts.scheme not in ("rsync", "ssh"):
        raise ParamError(f"target {target!r} is not an rsync:// URL or ssh:// URL; {_WRITE}")
    if parts.password is not None:
        where = "Secret named by `credentials-secret` (key `password`)"
        if parts.scheme == "ssh":
            where = f"Secret of type kubernetes.io/ssh-auth named by `credentials-secret` (key `{SSH_KEY_NAME}`) as a key"
        raise ParamError(
            f"the {parts.scheme} target for host {parts.hostname!r} holds a password; remove it "
            f"from the URL and put the credential in the {where}"
        )
    if parts.query or parts.fragment:
        raise ParamError(f"target {target!r} must not have a query or fragment ('?' or '#')")
    if not parts.hostname:
        raise ParamError(f"target {target!r} names no host; {_WRITE}")
    try:
        port = parts.port or (DEFAULT_SSH_PORT if parts.scheme == "ssh" else DEFAULT_PORT)
    except ValueError as exc:
        raise ParamError(f"target {target!r} has an invalid port: {exc}") from exc
    if parts.scheme == "ssh":
        return _ssh_target(target, parts.username or "", parts.hostname, port, parts.path or "/", user_option)
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ParamError(f"target {target!r} names no rsync module; write rsync://{parts.netloc}/module/path")
    if any(s in (".", "..") for s in segments):
        raise ParamError(f"target {target!r} must not contain '.' or '..' path segments")
    if not _MODULE.match(segments[0]):
        raise ParamError(f"rsync module {segments[0]!r} in target {target!r} is not a valid module name")
    user = _pick_user(parts.username or "", user_option, target)
    return RsyncTarget(parts.hostname, segments[0], "/".join(segments[1:]), port, user)


def _ssh_target(target: str, user: str, host: str, port: int, path: str, user_option: str) -> RsyncTarget:
    """Check the parts of an SSH location; nothing may reach ssh as an option."""
    if not host or not _HOST.match(host):
        raise ParamError(f"target {target!r} names no valid SSH host; {_WRITE}")
    if user and not USER.match(user):
        raise ParamError(f"target {target!r} names an invalid SSH user {user!r}")
    if not path.startswith("/"):
        hint = (
            f"write ssh://host:{path.split('/')[0]}/absolute/path (scp-like targets take no port)"
            if path[:1].isdigit() else f"write {host}:/absolute/path"
        )
        raise ParamError(f"the path of SSH target {target!r} must be absolute (start with '/'); {hint}")
    segments = [s for s in path.split("/") if s]
    if not segments:
        raise ParamError(f"target {target!r} names no directory or the root directory; give an absolute directory below '/'")
    if any(s in (".", "..") for s in segments):
        raise ParamError(f"target {target!r} must not contain '.' or '..' path segments")
    return RsyncTarget(host, "", "/".join(segments), port, _pick_user(user, user_option, target), "ssh")


def _pick_user(from_url: str, from_option: str, target: str) -> str:
    if from_url and from_option and from_url != from_option:
        raise ParamError(
            f"target {target!r} names user {from_url!r} but the `user` param says "
            f"{from_option!r}; give the user in one place only"
        )
    return from_url or from_option
