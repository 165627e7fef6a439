"""rsync targets: whole directory trees on an rsync daemon or over SSH, no archives, no blobs.

Targets:

* `rsync://[user@]host[:port]/module/path`: the rsync daemon protocol (port 873 by
  default). The password comes from the Secret named by the `credentials-secret` option
  (key `password`) as the env var `RSYNC_PASSWORD` of the injected steps; it is handed to
  the `rsync` binary through that env var only, never on a command line or in a message.
* `ssh://[user@]host[:port]/absolute/path`, or scp-like `[user@]host:/absolute/path` when
  the `backend: rsync` param is given (it has no scheme): rsync over SSH (port 22 by
  default), which needs `rsync` on the server and `ssh` in the step image. The server
  needs no rsync daemon: any account that can write below the path will do.

SSH credentials: `credentials-secret` names a Secret of type `kubernetes.io/ssh-auth`; its
key `ssh-privatekey` is mounted read-only (mode 0400) into the injected steps, which pass
the key file to `ssh -i` (copied first to a private 0600 file, so ssh accepts it whatever
user the step runs as). The key is never read into a message or a command line. Without
`credentials-secret`, ssh uses the step image's own default identities. Since the
resolver does not know a target's transport when it builds the steps, one
`credentials-secret` serves both: the `password` env var and the `ssh-privatekey` file
are both referenced as optional, and the step says which key it missed.

SSH host keys: with `known-hosts-configmap` (a ConfigMap with key `known_hosts`, mounted
read-only) the server's key must match it (`StrictHostKeyChecking=yes`). Without it the
step trusts the first key the server shows (`StrictHostKeyChecking=accept-new` into a
throwaway known_hosts file in the step's temp dir): that is as safe as the network
between the pod and the server, fine inside a cluster network but not across untrusted
networks. To pin the key, put the output of `ssh-keyscan -p PORT HOST` (checked against
the server) under `known_hosts` in a ConfigMap and name it in `known-hosts-configmap`.

Layout under the target's directory (`module/path` on a daemon, the absolute path over
SSH; each name below is relative to it)::

    states/<ref>.<id>/        the full tree of one stored state; never changed once referenced
    states/<ref>.<id>.json    that state's own changes: {"changed": [...], "deleted": [...]}
    refs/<ref>.json           the reference: {"state": "<ref>.<id>", "layers": [...], ...}
    latest/                   the user's exact target: the final tree, a plain directory
    refs/latest.json          written after latest/ is complete

`<ref>` is `refs.producer_ref(run, task)`; `<id>` is random per store, so a retry uploads
into a fresh directory and a reader holding the previous reference still sees a complete
tree. The reference file is written LAST (rsync renames it into place): a state without
its reference does not exist. Directories of killed or retried stores stay behind as
garbage until the target is cleaned up with the run.

Each state is uploaded with `--link-dest` pointing at the state(s) it was fetched from, so
the server hard-links every unchanged file: an incremental store costs the changed files
plus directory entries.

`layers` lists the states whose own changes, applied in order, make up the tree (like the
layers of an OCI image). That is what fan-in needs: a task reading producers P1..Pn
(merge order, after fallbacks) starts from the full tree of P1 and then applies, in order,
the own changes (deletions first, then changed entries) of every layer of P2..Pn that P1
does not already contain. So on a conflicting path the LATER producer in merge order wins,
as with the layered engine. A producer without a reference (skipped by `when`, failed)
is replaced by its own inputs, recursively.

With a `sub_path` the task sees only that prefix. To store, the rest of the input tree is
downloaded first (rsync cannot copy between two directories of the server), so a
sub_path store costs a download of what lies outside it. `publish` (the finally task)
downloads the merged state once and uploads it to `latest/` hard-linked against its
inputs, so no file data goes up. `latest/` is updated in place: a reader during a publish
may see a mix; `refs/latest.json` tells when it is complete.

Both transports share every code path: only `RsyncTarget.url` (the daemon URL or
`user@host:/path`) and the options `Runner` puts before rsync's own arguments differ.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
import time
import weakref
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import urlsplit

from wrapresolver.backends.base import TEKTON_VARIABLE, Backend, StepRequirements, WorkspaceStore
from wrapresolver.errors import (
    AuthError, DiskFullError, IntegrityError, NetworkError, NotFoundError, ParamError,
    TransferError,
)
from wrapresolver.refs import producer_ref
from wrapresolver.stepspec import WorkspaceTransfer
from wrapresolver.transfer import snapshot
from wrapresolver.transfer.apply import empty_directory
from wrapresolver.transfer.localdisk import os_errors, record_stem
from wrapresolver.transfer.report import TransferReport

DEFAULT_PORT = 873
DEFAULT_SSH_PORT = 22
PASSWORD_ENV = "RSYNC_PASSWORD"
LATEST = "latest"
MAX_LINK_DESTS = 20
"""rsync accepts at most 20 --link-dest/--compare-dest directories."""
CONNECT_TIMEOUT = 30
_MODULE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_USER = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")
_HOST = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._:%-]*$")
_SCP_LIKE = re.compile(r"^(?:(?P<user>[^@/:\[\]]+)@)?(?P<host>\[[^\]/]+\]|[^@/:\[\]]+):(?P<path>.*)$")

SSH_KEY_ENV = "WRAPRESOLVER_SSH_KEY"
"""Path of the private key file for `ssh -i`, instead of the mounted Secret (tests, by hand)."""
SSH_KNOWN_HOSTS_ENV = "WRAPRESOLVER_SSH_KNOWN_HOSTS"
"""Path of a known_hosts file pinning the host key, instead of the mounted ConfigMap."""
SSH_KEY_NAME = "ssh-privatekey"
"""The key of a `kubernetes.io/ssh-auth` Secret that holds the private key."""
KNOWN_HOSTS_NAME = "known_hosts"
SSH_KEY_VOLUME = "wrap-rsync-ssh-key"
SSH_KEY_MOUNT = "/var/run/wrapresolver/rsync-ssh-key"
KNOWN_HOSTS_VOLUME = "wrap-rsync-known-hosts"
KNOWN_HOSTS_MOUNT = "/var/run/wrapresolver/rsync-known-hosts"
SERVER_ALIVE_INTERVAL = 15

# ---- targets ----


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
    if user and not _USER.match(user):
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


# ---- the resolver half ----


class RsyncBackend(Backend):
    """Whole-tree states on an rsync daemon or over SSH, hard-linked between producers."""

    name = "rsync"
    schemes = ("rsync", "ssh")
    options = {
        "credentials-secret": (
            "rsync:// targets: Secret with key `password`, given to rsync as RSYNC_PASSWORD; "
            f"SSH targets: Secret of type kubernetes.io/ssh-auth (key `{SSH_KEY_NAME}`), mounted read-only"
        ),
        "known-hosts-configmap": (
            f"SSH targets: ConfigMap whose `{KNOWN_HOSTS_NAME}` pins the server's host key; "
            "without it the first key the server shows is trusted"
        ),
        "user": "user on the rsync daemon or SSH server, when the target names none",
    }

    def validate_target(self, target: str) -> None:
        # Tekton substitutes $(context.pipelineRun.name) etc. later: check the rest.
        parse_target(TEKTON_VARIABLE.sub("x", target))

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        checked = super().validate_options(options)
        user = checked.get("user", "")
        if user and not _USER.match(TEKTON_VARIABLE.sub("x", user)):
            raise ParamError(f"user {user!r} is not a valid rsync daemon or SSH user name")
        return checked

    def step_requirements(self, options: Mapping[str, str]) -> StepRequirements:
        """Reference the Secret and ConfigMap; no credential is ever copied into the Pipeline.

        The transport is not known here (only the options are), so `credentials-secret`
        is offered both ways, each optional: the daemon password as RSYNC_PASSWORD and the
        SSH key as a read-only file. The step checks that the one its target needs is there.
        The step finds the mounted files from the options (see `SshSettings.from_step`).
        """
        env: list[dict] = []
        volumes: list[dict] = []
        mounts: list[dict] = []
        secret = options.get("credentials-secret", "")
        if secret:
            env.append({
                "name": PASSWORD_ENV,
                "valueFrom": {"secretKeyRef": {"name": secret, "key": "password", "optional": True}},
            })
            volumes.append({
                "name": SSH_KEY_VOLUME,
                "secret": {
                    "secretName": secret,
                    "items": [{"key": SSH_KEY_NAME, "path": SSH_KEY_NAME}],
                    "defaultMode": 0o400,
                    "optional": True,
                },
            })
            mounts.append({"name": SSH_KEY_VOLUME, "mountPath": SSH_KEY_MOUNT, "readOnly": True})
        configmap = options.get("known-hosts-configmap", "")
        if configmap:
            volumes.append({
                "name": KNOWN_HOSTS_VOLUME,
                "configMap": {
                    "name": configmap,
                    "items": [{"key": KNOWN_HOSTS_NAME, "path": KNOWN_HOSTS_NAME}],
                    "defaultMode": 0o444,
                },
            })
            mounts.append({"name": KNOWN_HOSTS_VOLUME, "mountPath": KNOWN_HOSTS_MOUNT, "readOnly": True})
        return StepRequirements(env=tuple(env), volumes=tuple(volumes), volume_mounts=tuple(mounts))

    def open(self, target: str, options: Mapping[str, str]) -> "RsyncStore":
        where = parse_target(target, options.get("user", ""))
        password = os.environ.get(PASSWORD_ENV)
        if where.ssh:
            return RsyncStore(where, password, SshSettings.from_step(options))
        if options.get("credentials-secret") and password is None:
            raise AuthError(
                f"the Secret {options['credentials-secret']!r} named by `credentials-secret` has no "
                f"key `password`, which the {where.server} needs (given to the step as {PASSWORD_ENV})"
            )
        return RsyncStore(where, password)


BACKEND = RsyncBackend()

# ---- SSH ----


@dataclass(frozen=True)
class SshSettings:
    """How the steps run ssh: which key file, which known_hosts (paths only, never content)."""

    key: str = ""
    """Private key file for `ssh -i`; empty: ssh's own default identities."""
    known_hosts: str = ""
    """known_hosts file that pins the host key; empty: trust the first key seen."""
    secret: str = ""
    """The `credentials-secret` option, to name in messages."""
    configmap: str = ""
    """The `known-hosts-configmap` option, to name in messages."""

    @classmethod
    def from_step(cls, options: Mapping[str, str]) -> "SshSettings":
        """The files `step_requirements` mounts for these options; the env vars override them."""
        secret = options.get("credentials-secret", "")
        configmap = options.get("known-hosts-configmap", "")
        key = os.environ.get(SSH_KEY_ENV) or (f"{SSH_KEY_MOUNT}/{SSH_KEY_NAME}" if secret else "")
        known = os.environ.get(SSH_KNOWN_HOSTS_ENV) or (
            f"{KNOWN_HOSTS_MOUNT}/{KNOWN_HOSTS_NAME}" if configmap else ""
        )
        return cls(key, known, secret, configmap)

    def key_hint(self) -> str:
        if self.secret:
            return (
                f"check the Secret {self.secret!r} named by `credentials-secret` (type "
                f"kubernetes.io/ssh-auth, key `{SSH_KEY_NAME}`): its public key must be in the "
                f"server's authorized_keys for that user"
            )
        return (
            f"set `credentials-secret` to a Secret of type kubernetes.io/ssh-auth whose key "
            f"`{SSH_KEY_NAME}` the server accepts for that user"
        )

    def host_key_hint(self, target: RsyncTarget) -> str:
        scan = f"ssh-keyscan -p {target.port} {target.host}"
        if self.configmap:
            return (
                f"the ConfigMap {self.configmap!r} named by `known-hosts-configmap` (key "
                f"`{KNOWN_HOSTS_NAME}`) does not hold the key this server showed; if the server's "
                f"key really changed, update it (`{scan}`, checked against the server)"
            )
        return (
            f"set `known-hosts-configmap` to a ConfigMap whose `{KNOWN_HOSTS_NAME}` holds the "
            f"server's key (`{scan}`, checked against the server)"
        )


def _rsh_quote(arg: str) -> str:
    """Quote for rsync's own split of the -e command (quotes, no backslashes)."""
    if arg and not re.search(r"[\s'\"]", arg):
        return arg
    if "'" not in arg:
        return f"'{arg}'"
    if '"' not in arg:
        return f'"{arg}"'
    raise TransferError(f"the path {arg!r} cannot be passed to ssh through rsync: it holds both kinds of quote")


class _SshSession:
    """A private directory with the key copy and the throwaway known_hosts; removed on close."""

    def __init__(self, target: RsyncTarget, settings: SshSettings) -> None:
        self.dir = tempfile.mkdtemp(prefix="wrap-rsync-ssh-")
        self._cleanup = weakref.finalize(self, shutil.rmtree, self.dir, True)
        try:
            self.command = self._command(target, settings)
        except BaseException:
            self.close()
            raise

    def _command(self, target: RsyncTarget, settings: SshSettings) -> str:
        binary = shutil.which("ssh")
        if binary is None:
            raise TransferError(
                f"the ssh binary is not installed in the step image; add the openssh-client "
                f"package (needed for the SSH target {target.display()})"
            )
        opts = [
            "-p", str(target.port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"ConnectTimeout={CONNECT_TIMEOUT}", "-o", f"ServerAliveInterval={SERVER_ALIVE_INTERVAL}",
            "-o", "ServerAliveCountMax=4", "-o", "LogLevel=ERROR", "-o", "ForwardAgent=no",
            "-o", "ClearAllForwardings=yes", "-o", "PasswordAuthentication=no",
            "-o", "KbdInteractiveAuthentication=no",
        ]
        if settings.known_hosts:
            if not os.path.isfile(settings.known_hosts):
                raise AuthError(
                    f"the known_hosts file {settings.known_hosts} is missing: the ConfigMap "
                    f"{settings.configmap or '(unset)'!r} named by `known-hosts-configmap` must hold "
                    f"the key `{KNOWN_HOSTS_NAME}`"
                )
            opts += ["-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={settings.known_hosts}"]
        else:
            # Trust on first use, into a file nobody else reads: see the module docstring.
            opts += [
                "-o", "StrictHostKeyChecking=accept-new",
                "-o", f"UserKnownHostsFile={os.path.join(self.dir, KNOWN_HOSTS_NAME)}",
            ]
        if settings.key:
            opts += ["-i", self._private_key(settings)]
        return " ".join(_rsh_quote(a) for a in (binary, *opts))

    def _private_key(self, settings: SshSettings) -> str:
        """A 0600 copy owned by this user: ssh refuses a key others can read.

        A Secret volume's files belong to root (or to the fsGroup, group-readable), so the
        mounted file itself is not always acceptable to ssh.
        """
        secret = f"the Secret {settings.secret!r} named by `credentials-secret`" if settings.secret else SSH_KEY_ENV
        try:
            with open(settings.key, "rb") as src:
                data = src.read()
        except FileNotFoundError:
            raise AuthError(
                f"the SSH private key {settings.key} is missing: {secret} must be of type "
                f"kubernetes.io/ssh-auth and hold the key `{SSH_KEY_NAME}`"
            ) from None
        except OSError as exc:
            raise AuthError(
                f"cannot read the SSH private key {settings.key} ({exc.strerror}): check the "
                f"mount of {secret} and the step's user"
            ) from None
        copy = os.path.join(self.dir, "id")
        fd = os.open(copy, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as dst:
            dst.write(data if data.endswith(b"\n") else data + b"\n")
        return copy

    def close(self) -> None:
        self._cleanup()


# ---- running rsync ----


@dataclass
class RunResult:
    """What one rsync call did, from its --stats."""

    code: int
    stderr: str
    files: int = 0
    bytes: int = 0


def _stat_number(text: str, label: str) -> int:
    match = re.search(re.escape(label) + r":\s*([\d,.]+)", text)
    return int(re.sub(r"[,.]", "", match.group(1))) if match else 0


def _missing(result: RunResult) -> bool:
    """rsync's 'partial transfer' because the source path does not exist."""
    return result.code == 23 and "No such file or directory" in result.stderr


_SSH_AUTH = re.compile(r"Permission denied \([a-z][a-z,-]*\)|Too many authentication failures|Load key ")
_SSH_NO_USER = "No user exists for uid"
"""OpenSSH's client exits with this, before connecting, when its UID has no passwd entry."""
_SSH_HOST_KEY = re.compile(r"Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED")
_UNREACHABLE = (
    "Connection refused", "Name or service not known", "timed out", "No route to host",
    "Could not resolve hostname", "Network is unreachable", "Connection reset", "Connection closed by",
    "kex_exchange_identification", "Temporary failure in name resolution",
)


@dataclass
class Runner:
    """Calls the rsync binary; the password travels in the child's environment only."""

    target: RsyncTarget
    password: str | None = field(default=None, repr=False)
    ssh: SshSettings = field(default_factory=SshSettings)
    _session: _SshSession | None = field(default=None, init=False, repr=False)

    def transport_args(self) -> list[str]:
        """What goes before rsync's own arguments: the daemon timeout, or the ssh command."""
        if not self.target.ssh:
            return [f"--contimeout={CONNECT_TIMEOUT}"]
        if self._session is None:
            self._session = _SshSession(self.target, self.ssh)
        return ["-e", self._session.command]

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def run(self, args: list[str], action: str, *, missing_ok: bool = False) -> RunResult:
        """Run rsync; map its failures to errors that say what to fix."""
        binary = shutil.which("rsync")
        if binary is None:
            raise TransferError("the rsync binary is not installed in the step image; add the rsync package")
        env = dict(os.environ)
        env.pop(PASSWORD_ENV, None)
        if self.password is not None and not self.target.ssh:
            env[PASSWORD_ENV] = self.password
        transport = self.transport_args()
        for attempt in range(MKPATH_ATTEMPTS):
            proc = subprocess.run(
                [binary, *transport, *args],
                env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                start_new_session=True,  # no controlling tty: neither rsync nor ssh may prompt
            )
            result = RunResult(
                proc.returncode, proc.stderr,
                _stat_number(proc.stdout, "Number of regular files transferred"),
                _stat_number(proc.stdout, "Total transferred file size"),
            )
            if result.code == 0 or (missing_ok and _missing(result)):
                return result
            # Two runs sharing a target create the same parent (states/, refs/) at once;
            # --mkpath on the loser fails with EEXIST. The directory now exists: go again.
            if "File exists (17)" not in result.stderr or attempt + 1 == MKPATH_ATTEMPTS:
                break
            time.sleep(0.1 * (attempt + 1))
        raise self.error(result, action)

    def error(self, result: RunResult, action: str) -> TransferError:
        """The error class and message for a failed rsync call."""
        text = result.stderr.strip()
        if self.password:
            text = text.replace(self.password, "***")
        if self.target.ssh:
            found = self._ssh_error(result, text, action)
            if found is not None:
                return found
        where = self.target.where
        if not self.target.ssh and ("auth failed" in text or (result.code == 5 and "password" in text.lower())):
            return AuthError(
                f"{action}: the rsync daemon at {where} refused user {self.target.user or '(none)'!r} "
                f"for module {self.target.module!r}: check the Secret named by `credentials-secret` "
                f"(key `password`, given to the step as {PASSWORD_ENV}) and the `user` param"
            )
        if not self.target.ssh and "Unknown module" in text:
            return NotFoundError(
                f"{action}: the rsync daemon at {where} has no module {self.target.module!r}; "
                f"fix the module in the target URL"
            )
        if result.code in (10, 35) or any(s in text for s in _UNREACHABLE[:5]):
            return NetworkError(f"{action}: cannot reach the {self.target.server}: {_last_line(text)}")
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return DiskFullError(f"{action}: no space left on device: {_last_line(text)}")
        if _missing(result):
            return NotFoundError(f"{action}: not found on the {self.target.server}: {_last_line(text)}")
        return TransferError(f"{action}: rsync failed with exit code {result.code}: {_last_line(text)}")

    def _ssh_error(self, result: RunResult, text: str, action: str) -> TransferError | None:
        """Failures of ssh itself (before rsync ran on the server), or None."""
        where, user = self.target.where, self.target.user or "(the step's user)"
        line = _ssh_line(text)
        if _SSH_NO_USER in text:
            # Diagnosed from ssh's own words, not predicted from the user database: the step
            # image may give ssh an entry another way (the wrapresolver image does, for any UID).
            return TransferError(
                f"{action}: ssh refuses to run as uid {os.getuid()}, which has no passwd entry in the step "
                f"image (needed for the SSH target {self.target.display()}): use a step image whose ssh "
                f"runs as any UID (the wrapresolver image's does), run the injected steps as a user the "
                f"image knows (stepTemplate.securityContext.runAsUser), or use an rsync:// daemon target"
            )
        if _SSH_HOST_KEY.search(text):
            return AuthError(
                f"{action}: the host key of the SSH server at {where} could not be verified: "
                f"{self.ssh.host_key_hint(self.target)}"
            )
        if _SSH_AUTH.search(text):
            return AuthError(
                f"{action}: the SSH server at {where} refused the key for user {user!r} ({line}): "
                f"{self.ssh.key_hint()}"
            )
        if any(s in text for s in _UNREACHABLE) or result.code == 255:
            return NetworkError(f"{action}: cannot reach the SSH server at {where}: {line}")
        if result.code == 127 or "command not found" in text:
            return TransferError(
                f"{action}: the SSH server at {where} cannot run rsync ({line}); install rsync there"
            )
        return None


def _ssh_line(text: str) -> str:
    """ssh's own complaint, not rsync's 'connection unexpectedly closed' after it."""
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith(("rsync", "@")):
            return line
    return _last_line(text)


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip() and not line.startswith("rsync error:")]
    return (lines or text.splitlines() or ["no message"])[-1]


MKPATH_ATTEMPTS = 4

TREE_ARGS = ["-a", "--hard-links", "--numeric-ids", "--stats", "--modify-window=-1"]
"""Keep modes, times, symlinks, empty dirs and hard links; report what was moved.

`--modify-window=-1` makes rsync's "unchanged" check (size + mtime) compare nanoseconds:
with whole seconds, a file rewritten within the second of its fetch would be hard-linked
to its old content."""

# ---- what is stored ----


@dataclass(frozen=True)
class StoredState:
    """A reference: the tree's directory under states/ and the change sets making it up."""

    state: str
    layers: tuple[str, ...]

    @classmethod
    def from_dict(cls, data: Mapping, where: str) -> "StoredState":
        try:
            state = str(data["state"])
            layers = tuple(str(layer) for layer in data.get("layers", ()))
        except (KeyError, TypeError) as exc:
            raise IntegrityError(f"the reference of {where} is malformed: {exc}") from exc
        for name in (state, *layers):
            _check_name(name, where)
        return cls(state, layers)


@dataclass(frozen=True)
class OwnChanges:
    """What one state changed relative to what its task fetched ('/'-separated paths)."""

    changed: tuple[str, ...] = ()
    deleted: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, data: Mapping, where: str) -> "OwnChanges":
        changed = tuple(_safe_rel(p, where) for p in data.get("changed", ()))
        deleted = tuple(_safe_rel(p, where) for p in data.get("deleted", ()))
        return cls(changed, deleted)


def _check_name(name: str, where: str) -> None:
    if not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$", name):
        raise IntegrityError(f"the reference of {where} names an invalid state {name!r}")


def _safe_rel(path: str, where: str) -> str:
    """A stored path must stay inside the workspace."""
    parts = str(path).split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise IntegrityError(f"the change list of {where} holds an unsafe path {path!r}")
    return str(path)


@dataclass(frozen=True)
class Resolution:
    """The merged input of a task: a full tree to start from and change sets to apply on top."""

    first: StoredState | None = None
    extra: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    """State directories to hard-link unchanged files against when storing."""
    inputs: tuple[str, ...] = ()
    base: str = ""
    """An rsync URL whose latest/ seeded the workspace (no producer ran before)."""
    detail: str = ""

    @property
    def layers(self) -> tuple[str, ...]:
        return (self.first.layers if self.first else ()) + self.extra

    def to_dict(self) -> dict:
        return {
            "first": {"state": self.first.state, "layers": list(self.first.layers)} if self.first else None,
            "extra": list(self.extra), "links": list(self.links), "inputs": list(self.inputs),
            "base": self.base, "detail": self.detail,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "Resolution":
        first = StoredState.from_dict(data["first"], "the fetch record") if data.get("first") else None
        return cls(
            first, tuple(data.get("extra", ())), tuple(data.get("links", ())),
            tuple(data.get("inputs", ())), data.get("base", ""), data.get("detail", ""),
        )


@dataclass(frozen=True)
class View:
    """Which part of the workspace a local directory holds.

    inside: only `sub_path`, with the prefix stripped (what a sub_path task sees);
    outside: everything but `sub_path` (what a sub_path store must add around it).
    """

    sub_path: str = ""
    inside: bool = True

    @property
    def remote_prefix(self) -> str:
        return self.sub_path if self.inside else ""

    def download_args(self) -> list[str]:
        return [] if self.inside or not self.sub_path else [f"--exclude=/{self.sub_path}"]

    def _under(self, path: str) -> bool:
        return path == self.sub_path or path.startswith(self.sub_path + "/")

    def changed(self, paths: Iterable[str]) -> list[str]:
        """Paths to copy, relative to the remote tree at `remote_prefix`."""
        if not self.sub_path:
            return list(paths)
        if self.inside:
            cut = len(self.sub_path) + 1
            return [p[cut:] for p in paths if p.startswith(self.sub_path + "/")]
        return [p for p in paths if not self._under(p)]

    def deleted(self, paths: Iterable[str]) -> tuple[list[str], bool]:
        """Local paths to remove, and whether the whole local tree goes (sub_path deleted)."""
        if not self.sub_path:
            return list(paths), False
        if self.inside:
            cut = len(self.sub_path) + 1
            clear = any(self.sub_path == p or self.sub_path.startswith(p + "/") for p in paths)
            return [p[cut:] for p in paths if p.startswith(self.sub_path + "/")], clear
        return [p for p in paths if not self._under(p)], False


WHOLE = View()

# ---- local file operations ----


def _pattern(path: str) -> str:
    """An anchored rsync filter pattern matching exactly `path`.

    rsync matches a pattern literally unless it holds a wildcard; then `\\` escapes.
    """
    if any(c in path for c in "*?["):
        path = re.sub(r"([*?\[\\])", r"\\\1", path)
    return "/" + path


def _only(paths: Iterable[str]) -> list[str]:
    """Include rules for exactly these paths and the directories leading to them.

    (Filters rather than --files-from: rsync 3.5 daemons report every file of a
    --files-from list as vanished when the source is below the module root.)
    """
    rules: dict[str, None] = {}
    for path in paths:
        parts = path.split("/")
        for i in range(1, len(parts) + 1):
            rules[_pattern("/".join(parts[:i]))] = None
    return list(rules)



def _remove_inside(root: Path, rel: str) -> None:
    """Delete `root/rel` without ever following a symlink out of `root`."""
    current = root
    parts = rel.split("/")
    for part in parts[:-1]:
        current = current / part
        if not current.is_dir() or current.is_symlink():
            return  # the parent is gone or not a directory: nothing below it to delete
    victim = current / parts[-1]
    if victim.is_dir() and not victim.is_symlink():
        shutil.rmtree(victim)
    elif victim.exists() or victim.is_symlink():
        victim.unlink()


def _record_paths(state_dir: Path, spec: WorkspaceTransfer) -> tuple[Path, Path]:
    stem = record_stem(state_dir, spec)
    return stem.with_name(stem.name + ".rsync.json"), stem.with_name(stem.name + ".rsync-snapshot.jsonl")


def _count_files(entries: Mapping[str, snapshot.Entry]) -> int:
    return sum(1 for e in entries.values() if e.kind != snapshot.DIR)


def _norm_sub_path(sub_path: str) -> str:
    sub = sub_path.strip("/")
    if sub:
        _safe_rel(sub, "the sub_path")
    return sub


# ---- the step half ----


class RsyncStore(WorkspaceStore):
    """The states of one target on an rsync daemon or over SSH (see the module docstring)."""

    def __init__(self, target: RsyncTarget, password: str | None = None, ssh: SshSettings | None = None) -> None:
        self.target = target
        self.runner = Runner(target, password, ssh or SshSettings())
        self._others: list[Runner] = []

    def close(self) -> None:
        """Remove the SSH key copies and throwaway known_hosts files (nothing for a daemon)."""
        for runner in (self.runner, *self._others):
            runner.close()
        self._others.clear()

    # ---- small remote files ----
    def _get_json(self, directory: str, names: Iterable[str], action: str) -> dict[str, dict]:
        """Download several small JSON files of one remote directory in one call."""
        wanted = sorted(set(names))
        if not wanted:
            return {}
        with tempfile.TemporaryDirectory(prefix="wrap-rsync-") as scratch:
            args = ["-r", "--times", *[f"--include=/{n}" for n in wanted], "--exclude=*"]
            self.runner.run([*args, self.target.url(directory) + "/", scratch + "/"], action, missing_ok=True)
            found: dict[str, dict] = {}
            for name in wanted:
                path = Path(scratch) / name
                if path.is_file():
                    try:
                        found[name] = json.loads(path.read_text())
                    except ValueError as exc:
                        raise IntegrityError(f"{action}: {directory}/{name} is not valid JSON: {exc}") from exc
            return found

    def _put_json(self, rel: str, data: Mapping, action: str) -> None:
        """Write a small JSON file; rsync renames it into place, so readers see all or nothing."""
        with tempfile.TemporaryDirectory(prefix="wrap-rsync-") as scratch:
            local = Path(scratch) / "data.json"
            local.write_text(json.dumps(data, sort_keys=True, separators=(",", ":")))
            # --ignore-times: a rewrite of the same size in the same second must not be skipped.
            self.runner.run(["--mkpath", "--ignore-times", str(local), self.target.url(rel)], action)

    def _delete_file(self, directory: str, name: str, action: str) -> None:
        """Remove one remote file (rsync can delete only by syncing an empty directory)."""
        with tempfile.TemporaryDirectory(prefix="wrap-rsync-") as empty:
            self.runner.run(
                ["-r", "--delete", "--mkpath", f"--include=/{name}", "--exclude=*", empty + "/",
                 self.target.url(directory) + "/"], action, missing_ok=True,
            )

    def _replace_latest(self, parts: list[tuple[Path, str]], links: Iterable[str], record: Mapping, action: str) -> RunResult:
        """Rewrite latest/ from scratch, hard-linked to `links`; refs/latest.json last.

        From scratch rather than in place: a file left from an earlier publish with the same
        size and mtime but other content would pass rsync's check and stay stale. The
        reference is removed first, so a reader sees "not published" rather than a mix.
        """
        self._delete_file("refs", f"{LATEST}.json", action)
        with tempfile.TemporaryDirectory(prefix="wrap-rsync-") as empty:
            self.runner.run(["-r", "--delete", "--mkpath", empty + "/", self.target.url(LATEST) + "/"], action)
        moved = self._upload(parts, LATEST, links, action)
        self._put_json(f"refs/{LATEST}.json", record, action)
        return moved

    def read_refs(self, names: Iterable[str], action: str) -> dict[str, StoredState]:
        """The stored states under these reference names; missing ones are left out."""
        raw = self._get_json("refs", [f"{n}.json" for n in names], action)
        return {
            name[: -len(".json")]: StoredState.from_dict(data, f"reference {name[:-5]!r}")
            for name, data in raw.items()
        }

    # ---- resolution ----
    def resolve(self, spec: WorkspaceTransfer, action: str) -> Resolution:
        """The merged input of `spec.task`: skipped or failed producers fall back to theirs."""
        refs = {p: producer_ref(spec.run, p) for p in {*spec.inputs, *spec.graph}}
        stored = self.read_refs(refs.values(), action)
        inputs = spec.resolve_inputs(lambda producer: stored.get(refs[producer]))
        order = tuple(producer for producer, _ in inputs.states)
        notes = inputs.notes()
        if order:
            return self._merge([state for _, state in inputs.states], order, notes)
        if spec.base:
            return Resolution(base=spec.base, detail="; ".join([f"from base {spec.base}", *notes]))
        return Resolution(detail="; ".join(["empty", *notes]))

    @staticmethod
    def _merge(states: list[StoredState], order: tuple[str, ...], notes: list[str]) -> Resolution:
        first = states[0]
        layers = list(first.layers)
        for state in states[1:]:
            layers.extend(layer for layer in state.layers if layer not in layers)
        links = tuple(dict.fromkeys(s.state for s in states))[:MAX_LINK_DESTS]
        detail = "; ".join([f"from {', '.join(order)}", *notes])
        return Resolution(first, tuple(layers[len(first.layers):]), links, order, detail=detail)

    # ---- materialising trees locally ----
    def _download(self, runner: Runner, remote: str, dest: Path, view: View, action: str) -> RunResult:
        """A remote tree (or the view's part of it) into `dest`, deleting what is not there."""
        src = runner.target.url("/".join(p for p in (remote, view.remote_prefix) if p)) + "/"
        result = runner.run(
            [*TREE_ARGS, "--delete", *view.download_args(), src, str(dest) + "/"], action,
            missing_ok=True,
        )
        if _missing(result):
            if not (view.inside and view.sub_path):
                raise NotFoundError(
                    f"{action}: {remote}/ is referenced but missing on the "
                    f"{runner.target.server}; it may have been deleted while the run was going on"
                )
            empty_directory(dest)  # the sub_path does not exist in that state: start empty
        return result

    def _apply_layer(self, layer: str, changes: OwnChanges, dest: Path, view: View, action: str) -> RunResult:
        """One state's own changes on top of `dest`: deletions first, then changed entries."""
        deleted, clear = view.deleted(changes.deleted)
        if clear:
            empty_directory(dest)
        for rel in deleted:
            _remove_inside(dest, rel)
        changed = view.changed(changes.changed)
        if not changed:
            return RunResult(0, "")
        with tempfile.TemporaryDirectory(prefix="wrap-rsync-") as scratch:
            rules = Path(scratch) / "rules"
            rules.write_bytes(b"".join(r.encode("utf-8", "surrogateescape") + b"\0" for r in _only(changed)))
            remote = "/".join(p for p in (f"states/{layer}", view.remote_prefix) if p)
            return self.runner.run(
                [*TREE_ARGS, "--force", "--from0", f"--include-from={rules}", "--exclude=*",
                 self.target.url(remote) + "/", str(dest) + "/"], action,
            )

    def materialize(self, res: Resolution, dest: Path, view: View, action: str) -> RunResult:
        """Build the merged input tree (or one view of it) in `dest`."""
        dest.mkdir(parents=True, exist_ok=True)
        total = RunResult(0, "")
        if res.first is None and res.base:
            base = self._open_base(res.base)
            if not base.read_refs([LATEST], action):
                raise NotFoundError(
                    f"{action}: base {res.base!r} does not exist (no {LATEST}/ written); "
                    f"push it first or fix the `base` param"
                )
            self._add(total, self._download(base.runner, LATEST, dest, view, action))
            return total
        if res.first is None:
            return total
        self._add(total, self._download(self.runner, f"states/{res.first.state}", dest, view, action))
        raw = self._get_json("states", [f"{layer}.json" for layer in res.extra], action)
        for layer in res.extra:
            data = raw.get(f"{layer}.json")
            if data is None:
                raise NotFoundError(f"{action}: the change list of state {layer!r} is missing on the {self.target.server}")
            changes = OwnChanges.from_dict(data, f"state {layer!r}")
            self._add(total, self._apply_layer(layer, changes, dest, view, action))
        return total

    @staticmethod
    def _add(total: RunResult, part: RunResult) -> None:
        total.files += part.files
        total.bytes += part.bytes

    def _open_base(self, base: str) -> "RsyncStore":
        store = RsyncStore(parse_target(base, self.target.user), self.runner.password, self.runner.ssh)
        self._others.append(store.runner)
        return store

    # ---- uploading trees ----
    def _upload(self, parts: list[tuple[Path, str]], remote: str, links: Iterable[str], action: str) -> RunResult:
        """Local trees to `remote`, hard-linking files unchanged from the `links` state dirs.

        `parts` pairs a local directory with where it goes below `remote` ("" for the top);
        a part with a sub-directory is uploaded after the top and excluded from it.
        """
        total = RunResult(0, "")
        subs = [sub for _, sub in parts if sub]
        for local, sub in parts:
            dest = "/".join(p for p in (remote, sub) if p)
            up = "../" * len(dest.split("/"))
            link_args = [f"--link-dest={up}states/{'/'.join(p for p in (link, sub) if p)}" for link in links]
            excludes = [f"--exclude=/{s}" for s in subs] if not sub else []
            result = self.runner.run(
                [*TREE_ARGS, "--delete", "--mkpath", *excludes, *link_args,
                 str(local) + "/", self.target.url(dest) + "/"], action,
            )
            self._add(total, result)
        return total

    # ---- the fetch record ----
    @staticmethod
    def _write_record(state_dir: Path, spec: WorkspaceTransfer, res: Resolution, entries) -> None:
        state_dir.mkdir(parents=True, exist_ok=True)
        record_path, snap_path = _record_paths(state_dir, spec)
        snapshot.save(entries, snap_path)
        tmp = record_path.with_name(record_path.name + ".tmp")
        tmp.write_text(json.dumps({"workspace": spec.workspace, "resolution": res.to_dict()}))
        tmp.replace(record_path)

    @staticmethod
    def _read_record(state_dir: Path, spec: WorkspaceTransfer) -> tuple[Resolution, dict] | None:
        record_path, snap_path = _record_paths(state_dir, spec)
        if not record_path.is_file() or not snap_path.is_file():
            return None
        data = json.loads(record_path.read_text())
        return Resolution.from_dict(data["resolution"]), snapshot.load(snap_path)

    # ---- WorkspaceStore ----
    def fetch(self, spec: WorkspaceTransfer, dest: Path, state_dir: Path) -> TransferReport:
        """The merged input tree into `dest` (see the module docstring for the merge rule)."""
        report = TransferReport(spec.workspace, "fetch")
        if spec.bound == "false":
            report.detail = "workspace not bound, nothing to do"
            return report
        start = time.monotonic()
        action = f"fetching workspace {spec.workspace!r} into {dest}"
        res = self.resolve(spec, action)
        view = View(_norm_sub_path(spec.sub_path), True)
        dest.mkdir(parents=True, exist_ok=True)
        try:
            with os_errors("fetching", spec.workspace, dest):
                moved = self.materialize(res, dest, view, action)
                entries = snapshot.take(dest)
                self._write_record(state_dir, spec, res, entries)
        except BaseException:
            empty_directory(dest)  # a half-fetched workspace must not look complete
            raise
        report.files, report.bytes = _count_files(entries), moved.bytes
        report.layers = len(res.layers)
        report.seconds = time.monotonic() - start
        report.detail = res.detail
        return report

    def store(self, spec: WorkspaceTransfer, src: Path, state_dir: Path) -> TransferReport:
        """Upload the tree as a new state hard-linked to its input; reference last."""
        report = TransferReport(spec.workspace, "store")
        if spec.bound == "false":
            report.detail = "workspace not bound, nothing to do"
            return report
        start = time.monotonic()
        action = f"storing workspace {spec.workspace!r} of task {spec.task!r} to the {self.target.server}"
        sub = _norm_sub_path(spec.sub_path)
        with os_errors("storing", spec.workspace, src):
            record = self._read_record(state_dir, spec)
            res, before = record if record is not None else (Resolution(), {})
            if res.base:
                before = {}  # a base lives elsewhere: this state's own changes are the whole tree
            after = snapshot.take(src)
            changes = snapshot.diff(before, after)
            ref = producer_ref(spec.run, spec.task)
            state_dir.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix="wrap-rsync-", dir=state_dir) as scratch:
                parts = _Parts(self, res, src, sub, Path(scratch), action)
                if not changes and res.first is not None and not res.extra:
                    stored, moved = res.first, RunResult(0, "")
                    note = "no changes, passed the input on"
                else:
                    stored, moved = self._store_new(ref, res, parts, changes, sub, action)
                    self._reupload_disguised(stored.state, src, sub, _disguised(before, after, changes), action)
                    note = f"{len(changes.changed)} changed, {len(changes.deleted)} deleted"
                self._put_json(f"refs/{ref}.json", _ref_record(stored, spec, res), action)
                if spec.publish:
                    latest = dict(_ref_record(stored, spec, res), state=LATEST, source=stored.state)
                    self._replace_latest(parts.get(), (stored.state,), latest, action)
        if record is None:
            note = "no fetch record: stored the whole tree"
        report.files, report.bytes = moved.files, moved.bytes
        report.layers = len(stored.layers)
        report.seconds = time.monotonic() - start
        report.detail = note + ("; published to the target" if spec.publish else "")
        return report

    def _store_new(
        self, ref: str, res: Resolution, parts: "_Parts", changes: snapshot.Changes, sub: str, action: str,
    ) -> tuple[StoredState, RunResult]:
        """A fresh state directory, then its change list; the caller writes the reference."""
        name = f"{ref}.{secrets.token_hex(4)}"
        moved = self._upload(parts.get(), f"states/{name}", res.links, action)
        prefix = f"{sub}/" if sub else ""
        own = {
            "changed": [prefix + p for p in changes.changed],
            "deleted": [prefix + p for p in changes.deleted],
        }
        self._put_json(f"states/{name}.json", own, action)
        return StoredState(name, res.layers + (name,)), moved

    def _reupload_disguised(self, state: str, src: Path, sub: str, paths: list[str], action: str) -> None:
        """Copy files whose content changed behind an unchanged size and mtime.

        rsync's check would hard-link them to the old content (`touch -r`, `cp -p`,
        reproducible builds with fixed mtimes); the snapshot knows better (ctime, inode).
        """
        if not paths:
            return
        dest = "/".join(p for p in (f"states/{state}", sub) if p)
        with tempfile.TemporaryDirectory(prefix="wrap-rsync-") as scratch:
            rules = Path(scratch) / "rules"
            rules.write_bytes(b"".join(r.encode("utf-8", "surrogateescape") + b"\0" for r in _only(paths)))
            self.runner.run(
                [*TREE_ARGS, "--ignore-times", "--from0", f"--include-from={rules}", "--exclude=*",
                 str(src) + "/", self.target.url(dest) + "/"], action,
            )

    def publish(self, spec: WorkspaceTransfer) -> TransferReport:
        """The merged state of `spec.inputs` to latest/, hard-linked against the inputs."""
        start = time.monotonic()
        report = TransferReport(spec.workspace, "publish")
        action = f"publishing workspace {spec.workspace!r} to the {self.target.server}"
        res = self.resolve(spec, action)
        with tempfile.TemporaryDirectory(prefix="wrap-rsync-") as scratch:
            tree = Path(scratch) / "tree"
            with os_errors("publishing", spec.workspace, tree):
                self.materialize(res, tree, WHOLE, action)
                record = {"state": LATEST, "layers": list(res.layers), "inputs": list(res.inputs),
                          "workspace": spec.workspace, "run": spec.run, "task": spec.task}
                moved = self._replace_latest([(tree, "")], res.links, record, action)
        report.files, report.bytes = moved.files, moved.bytes
        report.layers = len(res.layers)
        report.seconds = time.monotonic() - start
        report.detail = f"{res.detail}; to {LATEST}/"
        return report

    # ---- by hand ----
    def pull(self, dest: Path, sub_path: str = "") -> TransferReport:
        """The user's exact target (latest/) into `dest`."""
        start = time.monotonic()
        report = TransferReport(self.target.path or self.target.module or self.target.host, "fetch")
        action = f"pulling {self.target.display(LATEST)} into {dest}"
        if not self.read_refs([LATEST], action):
            raise NotFoundError(
                f"nothing was published to {self.target.display()} yet (no refs/{LATEST}.json): "
                f"run the pipeline or push first"
            )
        dest.mkdir(parents=True, exist_ok=True)
        with os_errors("fetching", report.workspace, dest):
            moved = self._download(self.runner, LATEST, dest, View(_norm_sub_path(sub_path), True), action)
        report.files, report.bytes = moved.files, moved.bytes
        report.seconds = time.monotonic() - start
        report.detail = f"from {LATEST}/"
        return report

    def push(self, src: Path, options: Mapping[str, str] | None = None) -> TransferReport:
        """`src` as the user's exact target (latest/): to make a base, or by hand."""
        start = time.monotonic()
        report = TransferReport(self.target.path or self.target.module or self.target.host, "store")
        action = f"pushing {src} to {self.target.display(LATEST)}"
        moved = self._replace_latest([(src, "")], (), {"state": LATEST, "layers": []}, action)
        report.files, report.bytes = moved.files, moved.bytes
        report.seconds = time.monotonic() - start
        report.detail = f"to {LATEST}/"
        return report


def _disguised(before: Mapping, after: Mapping, changes: snapshot.Changes) -> list[str]:
    """Changed regular files that kept their size and mtime (invisible to rsync's check)."""
    out = []
    for path in changes.changed:
        old, new = before.get(path), after.get(path)
        if old is None or new.kind != snapshot.FILE or old.kind != snapshot.FILE:
            continue
        if (old.size, old.mtime_ns) == (new.size, new.mtime_ns):
            out.append(path)
    return out


def _ref_record(stored: StoredState, spec: WorkspaceTransfer, res: Resolution) -> dict:
    """The reference file: which tree, which change sets, and for humans where it came from."""
    return {
        "state": stored.state, "layers": list(stored.layers), "inputs": list(res.inputs),
        "workspace": spec.workspace, "run": spec.run, "task": spec.task,
    }


class _Parts:
    """The local trees that make up the full state; with a sub_path the rest is downloaded once."""

    def __init__(self, store: RsyncStore, res: Resolution, src: Path, sub: str, scratch: Path, action: str) -> None:
        self.store, self.res, self.src, self.sub, self.scratch, self.action = store, res, src, sub, scratch, action
        self._parts: list[tuple[Path, str]] | None = None

    def get(self) -> list[tuple[Path, str]]:
        if self._parts is None:
            if not self.sub:
                self._parts = [(self.src, "")]
            else:
                outside = self.scratch / "outside"
                self.store.materialize(self.res, outside, View(self.sub, False), self.action)
                self._parts = [(outside, ""), (self.src, self.sub)]
        return self._parts
