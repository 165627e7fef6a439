"""The remote half of an rsync target: small JSON files and whole trees, moved by rsync.

rsync can only copy; these helpers build the rest from it (reading several small files in
one call, deleting a file by syncing an empty directory, uploading a tree hard-linked
against earlier states).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path

from wrapresolver.backends.rsync.layout import LATEST, OwnChanges, StoredState, View, only, remove_inside
from wrapresolver.backends.rsync.process import TREE_ARGS, Runner, RunResult, missing
from wrapresolver.backends.rsync.ssh import SshSettings
from wrapresolver.backends.rsync.target import RsyncTarget
from wrapresolver.errors import IntegrityError, NotFoundError
from wrapresolver.transfer.deeptree import empty_directory


class Remote:
    """The states of one target on an rsync daemon or over SSH, as files and trees."""

    def __init__(self, target: RsyncTarget, password: str | None = None, ssh: SshSettings | None = None) -> None:
        self.target = target
        self.runner = Runner(target, password, ssh or SshSettings())
        self._others: list[Runner] = []

    def close(self) -> None:
        """Remove the SSH key copies and throwaway known_hosts files (nothing for a daemon)."""
        for runner in (self.runner, *self._others):
            runner.close()
        self._others.clear()

    # ---- the early check ----
    def probe(self, *, read: bool, write: bool) -> bool:
        """One rsync call per access, neither moving a file.

        read: the listing of the target's directory (a missing one is fine: nothing stored
        yet). write: a dry run of pushing an empty directory there, which a daemon refuses
        for a `read only` module at connection time and which creates nothing. Both prove
        the daemon or SSH server answers and takes the credentials. Over SSH the dry run
        does not prove the directory is writable: that shows in the store step.
        """
        action = f"checking {self.target.display()}"
        if read:
            self.runner.run(["--list-only", "--dirs", self.target.url() + "/"], action, missing_ok=True)
        if write:
            with tempfile.TemporaryDirectory(prefix="wrap-rsync-") as empty:
                self.runner.run(["--dry-run", "--dirs", "--mkpath", empty + "/", self.target.url() + "/"], action)
        return True

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

    # ---- trees ----
    def _download(self, runner: Runner, remote: str, dest: Path, view: View, action: str) -> RunResult:
        """A remote tree (or the view's part of it) into `dest`, deleting what is not there."""
        src = runner.target.url("/".join(p for p in (remote, view.remote_prefix) if p)) + "/"
        result = runner.run(
            [*TREE_ARGS, "--delete", *view.download_args(), src, str(dest) + "/"], action,
            missing_ok=True, into=dest,
        )
        if missing(result):
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
            remove_inside(dest, rel)
        changed = view.changed(changes.changed)
        if not changed:
            return RunResult(0, "")
        with tempfile.TemporaryDirectory(prefix="wrap-rsync-") as scratch:
            rules = Path(scratch) / "rules"
            rules.write_bytes(b"".join(r.encode("utf-8", "surrogateescape") + b"\0" for r in only(changed)))
            remote = "/".join(p for p in (f"states/{layer}", view.remote_prefix) if p)
            return self.runner.run(
                [*TREE_ARGS, "--force", "--from0", f"--include-from={rules}", "--exclude=*",
                 self.target.url(remote) + "/", str(dest) + "/"], action, into=dest,
            )

    @staticmethod
    def _add(total: RunResult, part: RunResult) -> None:
        total.files += part.files
        total.bytes += part.bytes

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
            rules.write_bytes(b"".join(r.encode("utf-8", "surrogateescape") + b"\0" for r in only(paths)))
            self.runner.run(
                [*TREE_ARGS, "--ignore-times", "--from0", f"--include-from={rules}", "--exclude=*",
                 str(src) + "/", self.target.url(dest) + "/"], action,
            )

