"""How the steps run ssh for `ssh://` targets: key file, host keys, the `-e` command.

The key is never read into a message or a command line; see the package docstring for the
trust model of host keys.
"""

from __future__ import annotations

import os
import pwd
import re
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

from wrapresolver.backends.rsync.target import SSH_KEY_NAME, RsyncTarget
from wrapresolver.core.limits import io_timeout
from wrapresolver.errors import AuthError, TransferError

SSH_KEY_ENV = "WRAPRESOLVER_SSH_KEY"
"""Path of the private key file for `ssh -i`, instead of the mounted Secret (tests, by hand)."""
SSH_KNOWN_HOSTS_ENV = "WRAPRESOLVER_SSH_KNOWN_HOSTS"
"""Path of a known_hosts file pinning the host key, instead of the mounted ConfigMap."""
KNOWN_HOSTS_NAME = "known_hosts"
SSH_KEY_VOLUME = "wrap-rsync-ssh-key"
SSH_KEY_MOUNT = "/var/run/wrapresolver/rsync-ssh-key"
KNOWN_HOSTS_VOLUME = "wrap-rsync-known-hosts"
KNOWN_HOSTS_MOUNT = "/var/run/wrapresolver/rsync-known-hosts"
SERVER_ALIVE_INTERVAL = 15


def _has_passwd_entry() -> bool:
    """OpenSSH's client exits at once ("No user exists for uid N") without one."""
    try:
        pwd.getpwuid(os.getuid())
        return True
    except KeyError:
        return False


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
    def from_step(cls, options: Mapping[str, str]) -> SshSettings:
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


def rsh_quote(arg: str) -> str:
    """Quote for rsync's own split of the -e command (quotes, no backslashes)."""
    if arg and not re.search(r"[\s'\"]", arg):
        return arg
    if "'" not in arg:
        return f"'{arg}'"
    if '"' not in arg:
        return f'"{arg}"'
    raise TransferError(f"the path {arg!r} cannot be passed to ssh through rsync: it holds both kinds of quote")


class SshSession:
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
        if not _has_passwd_entry():
            raise TransferError(
                f"ssh refuses to run as uid {os.getuid()}, which has no passwd entry in the step image "
                f"(needed for the SSH target {target.display()}): run the injected steps as a user the "
                f"image knows (stepTemplate.securityContext.runAsUser), or use an rsync:// daemon target"
            )
        opts = [
            "-p", str(target.port), "-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes",
            "-o", f"ConnectTimeout={max(1, round(io_timeout()))}", "-o", f"ServerAliveInterval={SERVER_ALIVE_INTERVAL}",
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
        return " ".join(rsh_quote(a) for a in (binary, *opts))

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
