"""Running the rsync binary: credentials in its environment only, failures as messages.

Both transports go through `Runner.run`; only what it puts before rsync's own arguments
differs (the daemon timeout, or `-e <ssh command>`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from wrapresolver.backends.rsync.ssh import SshSession, SshSettings
from wrapresolver.backends.rsync.target import PASSWORD_ENV, RsyncTarget
from wrapresolver.core.limits import IO_TIMEOUT, io_timeout
from wrapresolver.errors import AuthError, DiskFullError, NetworkError, NotFoundError, TransferError

MKPATH_ATTEMPTS = 4
"""Tries of a call that lost a race creating the same parent directory (see `Runner.run`)."""


@dataclass
class RunResult:
    """What one rsync call did, from its --stats."""

    code: int
    stderr: str
    files: int = 0
    bytes: int = 0
    stdout: str = ""
    """Its output, for `--list-only` (the delete side)."""


def _stat_number(text: str, label: str) -> int:
    match = re.search(re.escape(label) + r":\s*([\d,.]+)", text)
    return int(re.sub(r"[,.]", "", match.group(1))) if match else 0


def missing(result: RunResult) -> bool:
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
    _session: SshSession | None = field(default=None, init=False, repr=False)

    def transport_args(self) -> list[str]:
        """What goes before rsync's own arguments: the daemon timeout, or the ssh command."""
        # rsync's own --timeout ends a transfer in which no data moved for that long (exit 30).
        waits = [f"--timeout={max(1, round(io_timeout()))}"]
        if not self.target.ssh:
            return [f"--contimeout={max(1, round(io_timeout()))}", *waits]
        if self._session is None:
            self._session = SshSession(self.target, self.ssh)
        return [*waits, "-e", self._session.command]

    def close(self) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None

    def run(self, args: list[str], action: str, *, missing_ok: bool = False, into: Path | None = None) -> RunResult:
        """Run rsync; map its failures to errors that say what to fix.

        `into`: the local directory a download fills. It is the Pod's volume, which a
        non-root step may fill but not re-time or chmod; rsync reports that as a partial
        transfer (exit 23) although every entry below it arrived, so that alone is success.
        """
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
                proc.stdout,
            )
            if result.code == 0 or (missing_ok and missing(result)) or _only_top_attrs(result, into):
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
        if not self.target.ssh and "module is read only" in text:
            return AuthError(
                f"{action}: the rsync daemon at {where} serves module {self.target.module!r} read-only, "
                f"and this task stores into it: set `read only = no` for the module in rsyncd.conf "
                f"(or use a module the task may write)"
            )
        if not self.target.ssh and "Unknown module" in text:
            return NotFoundError(
                f"{action}: the rsync daemon at {where} has no module {self.target.module!r}; "
                f"fix the module in the target URL"
            )
        if result.code == 30:
            return NetworkError(f"{action}: the {self.target.server} stopped answering for "
                                f"{io_timeout():g} s ({IO_TIMEOUT.where()}): {_last_line(text)}")
        if result.code in (10, 35) or any(s in text for s in _UNREACHABLE[:5]):
            return NetworkError(f"{action}: cannot reach the {self.target.server}: {_last_line(text)}")
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return DiskFullError(f"{action}: no space left on device: {_last_line(text)}")
        if missing(result):
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



_ATTR_FAILURE = re.compile(r'failed to set (?:times|permissions) on "(?P<path>.*)": Operation not permitted')


def _only_top_attrs(result: RunResult, into: Path | None) -> bool:
    """Exit 23 whose every complaint is about the times or mode of `into` itself."""
    if result.code != 23 or into is None:
        return False
    top = {str(into).rstrip("/") + suffix for suffix in ("/.", "/", "")}
    # Each complaint is an `rsync: [generator] ...` line; the closing `rsync error: ... (code 23)`
    # only sums them up.
    complaints = [line for line in result.stderr.splitlines() if line.startswith("rsync: ")]
    failures = [_ATTR_FAILURE.search(line) for line in complaints]
    return bool(failures) and all(f is not None and f.group("path") in top for f in failures)


TREE_ARGS = ["-a", "--hard-links", "--numeric-ids", "--stats", "--modify-window=-1"]
"""Keep modes, times, symlinks, empty dirs and hard links; report what was moved.

`--modify-window=-1` makes rsync's "unchanged" check (size + mtime) compare nanoseconds:
with whole seconds, a file rewritten within the second of its fetch would be hard-linked
to its old content."""
