"""The delete side of an rsync target: references, their state trees, partial state directories.

rsync can list (`--list-only`) and delete (syncing an empty directory with `--delete`),
which is all this needs. A state is its reference file `refs/<ref>.json`, its tree
`states/<ref>.<id>/` and its change list `states/<ref>.<id>.json`; the reference goes
first, so a reader never finds a reference to a half-deleted tree. A state directory that
no reference names (not even `refs/latest.json`) is a partial one: a store that was killed
or retried, or one still uploading, which is why only `wrapresolver gc --older-than`
lists them and nothing deletes them by run. `latest/` is never listed.

The bytes reported for a state are the sizes of the files of its tree; unchanged files are
hard links shared with other states, so the disk space freed can be smaller.
"""

from __future__ import annotations

import re
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

from wrapresolver.backends.base import PARTIAL, STATE, Reclaimable, Reclaimed, StoredItem
from wrapresolver.backends.rsync.layout import LATEST
from wrapresolver.errors import WrapError

if TYPE_CHECKING:  # pragma: no cover
    from wrapresolver.backends.rsync.layout import StoredState
    from wrapresolver.backends.rsync.process import Runner
    from wrapresolver.backends.rsync.target import RsyncTarget

_LINE = re.compile(r"^(?P<mode>[-dl][-rwxsStT]{9})\s+(?P<size>[\d,]+)\s+(?P<date>\d{4}/\d\d/\d\d \d\d:\d\d:\d\d)\s(?P<name>.+)$")


class RsyncReclaim(Reclaimable):
    """Mixed into `RsyncStore`: `stored_items` and `delete_items` over rsync."""

    runner: Runner
    target: RsyncTarget

    if TYPE_CHECKING:  # pragma: no cover - provided by the store it is mixed into
        def read_refs(self, names: Iterable[str], action: str) -> dict[str, StoredState]:  # provided by Remote
            ...

    def _list(self, rel: str, recursive: bool = False) -> list[tuple[str, bool, int, float]]:
        """(name, is_dir, size, mtime) of the entries of remote directory `rel`."""
        args = ["--list-only", *(["-r"] if recursive else []), self.target.url(rel) + "/"]
        result = self.runner.run(args, f"listing {self.target.display(rel)}", missing_ok=True)
        entries = []
        for line in (result.stdout or "").splitlines():
            match = _LINE.match(line)
            if not match or match["name"] == ".":
                continue
            when = time.mktime(time.strptime(match["date"], "%Y/%m/%d %H:%M:%S"))
            entries.append((match["name"], match["mode"][0] == "d", int(match["size"].replace(",", "")), when))
        return entries

    def stored_items(self) -> list[StoredItem]:
        refs = {
            name[: -len(".json")]: when
            for name, is_dir, _, when in self._list("refs") if not is_dir and name.endswith(".json")
        }
        stored = self.read_refs(sorted(refs), "listing the states")
        named = {s for ref in stored.values() for s in (ref.state, *ref.layers)}
        items = [
            StoredItem(ref, STATE, created=refs[ref]) for ref in sorted(stored) if ref != LATEST
        ]
        for name, is_dir, _, when in self._list("states"):
            if is_dir and name not in named:
                items.append(StoredItem(f"states/{name}", PARTIAL, created=when))
        return items

    def _tree_bytes(self, rel: str) -> int:
        return sum(size for _, is_dir, size, _ in self._list(rel, recursive=True) if not is_dir)

    def _remove(self, directory: str, patterns: Sequence[str], action: str) -> None:
        """Delete entries of one remote directory by syncing an empty one over them."""
        with tempfile.TemporaryDirectory(prefix="wrap-rsync-") as empty:
            self.runner.run(
                ["-r", "--delete", *[f"--include={p}" for p in patterns], "--exclude=*",
                 empty + "/", self.target.url(directory) + "/"], action, missing_ok=True,
            )

    def delete_items(self, items: Sequence[StoredItem]) -> Reclaimed:
        result = Reclaimed()
        states = sorted({i.name for i in items if i.kind == STATE and i.name != LATEST})
        stored = self.read_refs(states, "reading the states to delete")
        for ref in states:
            if ref not in stored:
                continue
            state = stored[ref].state
            action = f"deleting state {ref} from {self.target.display()}"
            try:
                size = self._tree_bytes(f"states/{state}")
                self._remove("refs", [f"/{ref}.json"], action)
                self._remove("states", [f"/{state}/***", f"/{state}.json"], action)
            except WrapError as exc:
                result.failures.append(f"{ref}: {exc}")
                continue
            result.deleted.append(ref)
            result.bytes += size
        for item in items:
            if item.kind != PARTIAL:
                continue
            name = item.name.removeprefix("states/")
            if "/" in name or name in (".", "..", "") or not item.name.startswith("states/"):
                result.kept.append(f"{item.name}: not a state directory of this layout")
                continue
            try:
                size = self._tree_bytes(item.name)
                self._remove("states", [f"/{name}/***", f"/{name}.json"], f"deleting {item.name}")
            except WrapError as exc:
                result.failures.append(f"{item.name}: {exc}")
                continue
            result.deleted.append(item.name)
            result.bytes += size
        return result
