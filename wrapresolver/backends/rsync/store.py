"""The rsync step half: a task's input assembled from stored trees, its changes uploaded.

The merge rule and the layout are in the package docstring; the rules every step follows
(unbound workspaces, the fetch record, cleanup, timing) are `wrapresolver.steps.runner`'s.
"""

from __future__ import annotations

import secrets
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from wrapresolver.backends.base import Input, Moved, Tick, WorkspaceStore
from wrapresolver.backends.rsync.layout import (
    LATEST,
    WHOLE,
    MergedInput,
    OwnChanges,
    StoredState,
    View,
    norm_sub_path,
)
from wrapresolver.backends.rsync.process import RunResult
from wrapresolver.backends.rsync.reclaim import RsyncReclaim
from wrapresolver.backends.rsync.remote import Remote
from wrapresolver.backends.rsync.target import parse_target
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.errors import NotFoundError
from wrapresolver.transfer import snapshot
from wrapresolver.transfer.localdisk import os_errors

MAX_LINK_DESTS = 20
"""rsync accepts at most 20 --link-dest/--compare-dest directories."""


class RsyncStore(RsyncReclaim, Remote, WorkspaceStore):
    """The states of one target on an rsync daemon or over SSH (see the package docstring)."""

    # ---- resolution ----
    def resolve_tree(self, spec: WorkspaceTransfer, action: str) -> MergedInput:
        """The merged input of `spec.task`: skipped or failed producers fall back to theirs."""
        refs = {p: producer_ref(spec.run, p) for p in {*spec.inputs, *spec.graph}}
        stored = self.read_refs(refs.values(), action)
        inputs = spec.resolve_inputs(lambda producer: stored.get(refs[producer]))
        order = tuple(producer for producer, _ in inputs.states)
        notes = inputs.notes()
        if order:
            return self._merge([state for _, state in inputs.states], order, notes)
        if spec.base and self._base_exists(spec, action):
            return MergedInput(base=spec.base, detail="; ".join([f"from base {spec.base}", *notes]))
        if spec.base:
            return MergedInput(detail="; ".join([f"empty: base {spec.base} does not exist yet", *notes]))
        return MergedInput(detail="; ".join(["empty", *notes]))

    @staticmethod
    def _merge(states: list[StoredState], order: tuple[str, ...], notes: list[str]) -> MergedInput:
        first = states[0]
        layers = list(first.layers)
        for state in states[1:]:
            layers.extend(layer for layer in state.layers if layer not in layers)
        links = tuple(dict.fromkeys(s.state for s in states))[:MAX_LINK_DESTS]
        detail = "; ".join([f"from {', '.join(order)}", *notes])
        return MergedInput(first, tuple(layers[len(first.layers):]), links, order, detail=detail)

    # ---- materialising trees locally ----
    def build(self, res: MergedInput, dest: Path, view: View, action: str) -> RunResult:
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

    def _base_exists(self, spec: WorkspaceTransfer, action: str) -> bool:
        """A missing base starts the workspace empty, unless `base-missing` is `fail`."""
        if self._open_base(spec.base).read_refs([LATEST], action):
            return True
        if spec.base_required:
            raise NotFoundError(
                f"{action}: base {spec.base!r} does not exist (no {LATEST}/ written) and "
                f"`base-missing` is `fail`; push it first, fix the `base` param, or let a first "
                f"run start empty (`base-missing: empty`)"
            )
        return False

    def _open_base(self, base: str) -> RsyncStore:
        store = RsyncStore(parse_target(base, self.target.user), self.runner.password, self.runner.ssh)
        self._others.append(store.runner)
        return store

    # ---- WorkspaceStore ----
    def resolve(self, spec: WorkspaceTransfer) -> Input:
        res = self.resolve_tree(spec, f"fetching workspace {spec.workspace!r}")
        return Input(res.to_dict(), len(res.layers), res.detail, res)

    def materialize(self, spec: WorkspaceTransfer, inputs: Input, dest: Path, tick: Tick) -> Moved:
        """The merged input tree into `dest` (see the package docstring for the merge rule)."""
        action = f"fetching workspace {spec.workspace!r} into {dest}"
        moved = self.build(inputs.value, dest, View(norm_sub_path(spec.sub_path), True), action)
        return Moved(None, moved.bytes)

    def save(
        self, spec: WorkspaceTransfer, src: Path, scratch: Path, record: Mapping[str, Any] | None,
        before: Mapping[str, snapshot.Entry], after: Mapping[str, snapshot.Entry], changes: snapshot.Changes,
        tick: Tick,
    ) -> Moved:
        """Upload the tree as a new state hard-linked to its input; reference last."""
        action = f"storing workspace {spec.workspace!r} of task {spec.task!r} to the {self.target.server}"
        sub = norm_sub_path(spec.sub_path)
        res = MergedInput.from_dict(record) if record is not None else MergedInput()
        if res.base:
            before = {}  # a base lives elsewhere: this state's own changes are the whole tree
            changes = snapshot.diff({}, dict(after))
        ref = producer_ref(spec.run, spec.task)
        parts = _Parts(self, res, src, sub, scratch, action)
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
        # Counted as the layered store counts: the changed entries that are not directories
        # (rsync's own count leaves out symlinks and what it hard-linked to the input).
        files = sum(1 for rel in changes.changed if rel in after and after[rel].kind != snapshot.DIR)
        return Moved(files, moved.bytes, len(stored.layers), note)

    def _store_new(
        self, ref: str, res: MergedInput, parts: _Parts, changes: snapshot.Changes, sub: str, action: str,
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

    def publish(self, spec: WorkspaceTransfer, tick: Tick) -> Moved:
        """The merged state of `spec.inputs` to latest/, hard-linked against the inputs."""
        action = f"publishing workspace {spec.workspace!r} to the {self.target.server}"
        res = self.resolve_tree(spec, action)
        with tempfile.TemporaryDirectory(prefix="wrap-rsync-") as scratch:
            tree = Path(scratch) / "tree"
            with os_errors("publishing", spec.workspace, tree):
                self.build(res, tree, WHOLE, action)
                record = {"state": LATEST, "layers": list(res.layers), "inputs": list(res.inputs),
                          "workspace": spec.workspace, "run": spec.run, "task": spec.task}
                moved = self._replace_latest([(tree, "")], res.links, record, action)
        return Moved(moved.files, moved.bytes, len(res.layers), f"{res.detail}; to {LATEST}/")

    # ---- by hand ----
    def _name(self) -> str:
        return self.target.path or self.target.module or self.target.host

    def pull(self, dest: Path, sub_path: str, tick: Tick) -> Moved:
        """The user's exact target (latest/) into `dest`."""
        action = f"pulling {self.target.display(LATEST)} into {dest}"
        if not self.read_refs([LATEST], action):
            raise NotFoundError(
                f"nothing was published to {self.target.display()} yet (no refs/{LATEST}.json): "
                f"run the pipeline or push first"
            )
        moved = self._download(self.runner, LATEST, dest, View(norm_sub_path(sub_path), True), action)
        return Moved(moved.files, moved.bytes, detail=f"from {LATEST}/", name=self._name())

    def push(self, src: Path, options: Mapping[str, str] | None, tick: Tick) -> Moved:
        """`src` as the user's exact target (latest/): to make a base, or by hand."""
        action = f"pushing {src} to {self.target.display(LATEST)}"
        moved = self._replace_latest([(src, "")], (), {"state": LATEST, "layers": []}, action)
        return Moved(moved.files, moved.bytes, detail=f"to {LATEST}/", name=self._name())


def _disguised(before: Mapping, after: Mapping, changes: snapshot.Changes) -> list[str]:
    """Changed regular files that kept their size and mtime (invisible to rsync's check)."""
    out = []
    for path in changes.changed:
        old, new = before.get(path), after.get(path)
        if old is None or new is None or new.kind != snapshot.FILE or old.kind != snapshot.FILE:
            continue
        if (old.size, old.mtime_ns) == (new.size, new.mtime_ns):
            out.append(path)
    return out


def _ref_record(stored: StoredState, spec: WorkspaceTransfer, res: MergedInput) -> dict:
    """The reference file: which tree, which change sets, and for humans where it came from."""
    return {
        "state": stored.state, "layers": list(stored.layers), "inputs": list(res.inputs),
        "workspace": spec.workspace, "run": spec.run, "task": spec.task,
    }


class _Parts:
    """The local trees that make up the full state; with a sub_path the rest is downloaded once."""

    def __init__(self, store: RsyncStore, res: MergedInput, src: Path, sub: str, scratch: Path, action: str) -> None:
        self.store, self.res, self.src, self.sub, self.scratch, self.action = store, res, src, sub, scratch, action
        self._parts: list[tuple[Path, str]] | None = None

    def get(self) -> list[tuple[Path, str]]:
        if self._parts is None:
            if not self.sub:
                self._parts = [(self.src, "")]
            else:
                outside = self.scratch / "outside"
                self.store.build(self.res, outside, View(self.sub, False), self.action)
                self._parts = [(outside, ""), (self.src, self.sub)]
        return self._parts
