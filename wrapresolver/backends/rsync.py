"""`rsync://` targets: whole directory trees on an rsync daemon, no archives, no blobs.

Target: `rsync://[user@]host[:port]/module/path` (daemon protocol, port 873 by default).
The password comes from the Secret named by the `credentials-secret` option (key
`password`) as the env var `RSYNC_PASSWORD` of the injected steps; it is handed to the
`rsync` binary through that env var only, never on a command line or in a message.

Layout under `module/path` (each name below is relative to it)::

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
the daemon hard-links every unchanged file: an incremental store costs the changed files
plus directory entries.

`layers` lists the states whose own changes, applied in order, make up the tree (like the
layers of an OCI image). That is what fan-in needs: a task reading producers P1..Pn
(merge order, after fallbacks) starts from the full tree of P1 and then applies, in order,
the own changes (deletions first, then changed entries) of every layer of P2..Pn that P1
does not already contain. So on a conflicting path the LATER producer in merge order wins,
as with the layered engine. A producer without a reference (skipped by `when`, failed)
is replaced by its own inputs, recursively.

With a `sub_path` the task sees only that prefix. To store, the rest of the input tree is
downloaded first (the daemon cannot copy between two of its own directories), so a
sub_path store costs a download of what lies outside it. `publish` (the finally task)
downloads the merged state once and uploads it to `latest/` hard-linked against its
inputs, so no file data goes up. `latest/` is updated in place: a reader during a publish
may see a mix; `refs/latest.json` tells when it is complete.

SSH transport (`[user@]host:path` with a key Secret) is not supported yet.
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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping
from urllib.parse import urlsplit

from wrapresolver.backends.base import Backend, StepRequirements, WorkspaceStore
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
PASSWORD_ENV = "RSYNC_PASSWORD"
LATEST = "latest"
MAX_LINK_DESTS = 20
"""rsync accepts at most 20 --link-dest/--compare-dest directories."""
CONNECT_TIMEOUT = 30
_PLACEHOLDER = re.compile(r"\$\([^)]*\)")
_MODULE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$")

# ---- targets ----


@dataclass(frozen=True)
class RsyncTarget:
    """Where the states of one target live on an rsync daemon."""

    host: str
    module: str
    path: str = ""
    port: int = DEFAULT_PORT
    user: str = ""

    @property
    def where(self) -> str:
        """`host:port`, what a network error must name."""
        return f"{self.host}:{self.port}"

    def url(self, rel: str = "") -> str:
        """The daemon URL of `rel` below the target's directory."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        user = f"{self.user}@" if self.user else ""
        parts = [p for p in (self.module, self.path, rel) if p]
        return f"rsync://{user}{host}:{self.port}/" + "/".join(parts)


def _ssh_error(target: str) -> ParamError:
    return ParamError(
        f"target {target!r} looks like an SSH location; the rsync backend supports only the "
        f"daemon protocol for now: run an rsync daemon and write "
        f"rsync://[user@]host[:port]/module/path"
    )


def parse_target(target: str, user_option: str = "") -> RsyncTarget:
    """`rsync://[user@]host[:port]/module/path` -> RsyncTarget; errors say what to write."""
    if "://" not in target:
        raise _ssh_error(target) if ":" in target else ParamError(
            f"target {target!r} is not an rsync:// URL; write rsync://[user@]host[:port]/module/path"
        )
    parts = urlsplit(target)
    if parts.scheme in ("ssh", "rsync+ssh", "ssh+rsync"):
        raise _ssh_error(target)
    if parts.scheme != "rsync":
        raise ParamError(f"target {target!r} is not an rsync:// URL; write rsync://[user@]host[:port]/module/path")
    if parts.password is not None:
        raise ParamError(
            f"the rsync target for host {parts.hostname!r} holds a password; remove it from the "
            f"URL and put it in the Secret named by `credentials-secret` (key `password`)"
        )
    if parts.query or parts.fragment:
        raise ParamError(f"target {target!r} must not have a query or fragment ('?' or '#')")
    if not parts.hostname:
        raise ParamError(f"target {target!r} names no host; write rsync://host/module/path")
    try:
        port = parts.port or DEFAULT_PORT
    except ValueError as exc:
        raise ParamError(f"target {target!r} has an invalid port: {exc}") from exc
    segments = [s for s in parts.path.split("/") if s]
    if not segments:
        raise ParamError(f"target {target!r} names no rsync module; write rsync://{parts.netloc}/module/path")
    if any(s in (".", "..") for s in segments):
        raise ParamError(f"target {target!r} must not contain '.' or '..' path segments")
    if not _MODULE.match(segments[0]):
        raise ParamError(f"rsync module {segments[0]!r} in target {target!r} is not a valid module name")
    user = _pick_user(parts.username or "", user_option, target)
    return RsyncTarget(parts.hostname, segments[0], "/".join(segments[1:]), port, user)


def _pick_user(from_url: str, from_option: str, target: str) -> str:
    if from_url and from_option and from_url != from_option:
        raise ParamError(
            f"target {target!r} names user {from_url!r} but the `user` param says "
            f"{from_option!r}; give the user in one place only"
        )
    return from_url or from_option


# ---- the resolver half ----


class RsyncBackend(Backend):
    """Whole-tree states on an rsync daemon, hard-linked between producers."""

    name = "rsync"
    schemes = ("rsync",)
    options = {
        "credentials-secret": "Secret with key `password`, given to rsync as RSYNC_PASSWORD",
        "user": "rsync daemon user, when the target URL names none",
    }

    def validate_target(self, target: str) -> None:
        # Tekton substitutes $(context.pipelineRun.name) etc. later: check the rest.
        parse_target(_PLACEHOLDER.sub("x", target))

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        checked = super().validate_options(options)
        user = checked.get("user", "")
        if user and not re.match(r"^[A-Za-z0-9_][A-Za-z0-9._-]*$", _PLACEHOLDER.sub("x", user)):
            raise ParamError(f"user {user!r} is not a valid rsync daemon user name")
        secret = checked.get("credentials-secret", "")
        if secret and not re.match(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", secret):
            raise ParamError(f"credentials-secret {secret!r} is not a valid Kubernetes Secret name")
        return checked

    def step_requirements(self, options: Mapping[str, str]) -> StepRequirements:
        secret = options.get("credentials-secret", "")
        if not secret:
            return StepRequirements()
        env = {
            "name": PASSWORD_ENV,
            "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}},
        }
        return StepRequirements(env=(env,))

    def open(self, target: str, options: Mapping[str, str]) -> "RsyncStore":
        return RsyncStore(parse_target(target, options.get("user", "")), os.environ.get(PASSWORD_ENV))


BACKEND = RsyncBackend()

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


@dataclass
class Runner:
    """Calls the rsync binary; the password travels in the child's environment only."""

    target: RsyncTarget
    password: str | None = field(default=None, repr=False)

    def run(self, args: list[str], action: str, *, missing_ok: bool = False) -> RunResult:
        """Run rsync; map its failures to errors that say what to fix."""
        binary = shutil.which("rsync")
        if binary is None:
            raise TransferError("the rsync binary is not installed in the step image; add the rsync package")
        env = dict(os.environ)
        env.pop(PASSWORD_ENV, None)
        if self.password is not None:
            env[PASSWORD_ENV] = self.password
        for attempt in range(MKPATH_ATTEMPTS):
            proc = subprocess.run(
                [binary, f"--contimeout={CONNECT_TIMEOUT}", *args],
                env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, errors="replace",
                start_new_session=True,  # no controlling tty: rsync must never prompt for a password
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
        where = self.target.where
        if "auth failed" in text or (result.code == 5 and "password" in text.lower()):
            return AuthError(
                f"{action}: the rsync daemon at {where} refused user {self.target.user or '(none)'!r} "
                f"for module {self.target.module!r}: check the Secret named by `credentials-secret` "
                f"(key `password`, given to the step as {PASSWORD_ENV}) and the `user` param"
            )
        if "Unknown module" in text:
            return NotFoundError(
                f"{action}: the rsync daemon at {where} has no module {self.target.module!r}; "
                f"fix the module in the target URL"
            )
        if result.code in (10, 35) or any(
            s in text for s in ("Connection refused", "Name or service not known", "timed out", "No route to host")
        ):
            return NetworkError(f"{action}: cannot reach the rsync daemon at {where}: {_last_line(text)}")
        if "No space left on device" in text or "Disk quota exceeded" in text:
            return DiskFullError(f"{action}: no space left on device: {_last_line(text)}")
        if _missing(result):
            return NotFoundError(f"{action}: not found on the rsync daemon at {where}: {_last_line(text)}")
        return TransferError(f"{action}: rsync failed with exit code {result.code}: {_last_line(text)}")


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
    """The states of one target on an rsync daemon (see the module docstring)."""

    def __init__(self, target: RsyncTarget, password: str | None = None) -> None:
        self.target = target
        self.runner = Runner(target, password)

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
                    f"{action}: {remote}/ is referenced but missing on the rsync daemon at "
                    f"{runner.target.where}; it may have been deleted while the run was going on"
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
                raise NotFoundError(f"{action}: the change list of state {layer!r} is missing on the rsync daemon")
            changes = OwnChanges.from_dict(data, f"state {layer!r}")
            self._add(total, self._apply_layer(layer, changes, dest, view, action))
        return total

    @staticmethod
    def _add(total: RunResult, part: RunResult) -> None:
        total.files += part.files
        total.bytes += part.bytes

    def _open_base(self, base: str) -> "RsyncStore":
        return RsyncStore(parse_target(base, self.target.user), self.runner.password)

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
        action = f"storing workspace {spec.workspace!r} of task {spec.task!r} to the rsync daemon at {self.target.where}"
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
        action = f"publishing workspace {spec.workspace!r} to the rsync daemon at {self.target.where}"
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
        report = TransferReport(self.target.path or self.target.module, "fetch")
        action = f"pulling {self.target.url(LATEST)} into {dest}"
        if not self.read_refs([LATEST], action):
            raise NotFoundError(
                f"nothing was published to {self.target.url()} yet (no refs/{LATEST}.json): "
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
        report = TransferReport(self.target.path or self.target.module, "store")
        action = f"pushing {src} to {self.target.url(LATEST)}"
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
