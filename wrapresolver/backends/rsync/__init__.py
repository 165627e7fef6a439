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

`<ref>` is `core.refs.producer_ref(run, task)`; `<id>` is random per store, so a retry uploads
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

The package: `target` (parsing, pure), `ssh` (the ssh command and its files), `process`
(running rsync, its errors), `layout` (what is stored, a task's merged input), `remote`
(files and trees on the server), `store` (the step half). This module is the resolver
half; it imports the step half only in `open`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from wrapresolver.backends.base import TEKTON_VARIABLE, Backend, StepRequirements
from wrapresolver.backends.rsync.ssh import (
    KNOWN_HOSTS_MOUNT,
    KNOWN_HOSTS_NAME,
    KNOWN_HOSTS_VOLUME,
    SSH_KEY_ENV,
    SSH_KEY_MOUNT,
    SSH_KEY_VOLUME,
    SSH_KNOWN_HOSTS_ENV,
    SshSettings,
)
from wrapresolver.backends.rsync.target import PASSWORD_ENV, SSH_KEY_NAME, USER, parse_target
from wrapresolver.errors import AuthError, ParamError

if TYPE_CHECKING:  # pragma: no cover
    from wrapresolver.backends.rsync.store import RsyncStore

__all__ = [
    "BACKEND", "KNOWN_HOSTS_MOUNT", "SSH_KEY_ENV", "SSH_KEY_MOUNT", "SSH_KNOWN_HOSTS_ENV",
    "RsyncBackend", "SshSettings", "parse_target",
]


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
        if user and not USER.match(TEKTON_VARIABLE.sub("x", user)):
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

    def open(self, target: str, options: Mapping[str, str]) -> RsyncStore:
        from wrapresolver.backends.rsync.store import RsyncStore

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
