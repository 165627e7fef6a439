"""The states stored at a target, read back for people: listing, a run's data flow, a task's input.

A layered store (OCI, S3, GCS, file://) records with each state the run, task and
workspace, when it was stored, which producers the task fetched and merged
(`dev.wrapresolver.inputs`) and the layer it added itself (`dev.wrapresolver.own-layer`).
From those, `wrapresolver inspect` lists a target's states grouped by run and draws a run's
data flow, and `wrapresolver fetch --run --task` restores what a task stored or, with
`--input`, what it started from: the state's layers without its own.

The listing is a store's `Listable` ability (`backends.base`), the one the delete side
starts from too, so every backend that can reclaim its states can be inspected; a whole-directory backend (rsync) lists its
states without digests or inputs.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from wrapresolver.backends.base import STATE, BlobStore, Listable, StoredItem
from wrapresolver.core import oci_image
from wrapresolver.core.refs import producer_ref, uid_run_and_task
from wrapresolver.core.values import State, TransferReport
from wrapresolver.errors import NotFoundError, TransferError, WrapError

PUBLISHED = "published"
"""The graph node of the published target."""


class ListingUnsupported(TransferError):
    """The backend's store cannot list what it holds (a plugin without `stored_items`)."""


@dataclass(frozen=True)
class StoredState:
    """One state at a target, as `inspect` shows it."""

    reference: str
    run: str = ""
    task: str = ""
    workspace: str = ""
    digest: str = ""
    size: int | None = None
    layers: int | None = None
    created: str = ""
    inputs: tuple[str, ...] | None = None
    """The producers the task merged, in order; None when the state does not say."""
    published: bool = False
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "run": self.run, "task": self.task, "workspace": self.workspace, "reference": self.reference,
            "digest": self.digest, "size": self.size, "layers": self.layers, "created": self.created,
            "inputs": list(self.inputs) if self.inputs is not None else None, "published": self.published,
            **({"note": self.note} if self.note else {}),
        }


def list_states(store: object, run: str = "") -> list[StoredState]:
    """Every run state at the store's target and its published state; one run's only with `run`."""
    if not isinstance(store, Listable):
        raise ListingUnsupported(
            f"backend store {type(store).__name__} cannot list what it holds (it has no `stored_items`), "
            f"so its states cannot be inspected; use the storage's own tools, or upgrade the plugin "
            f"(plugin-authors.md, 'Reclaiming storage')"
        )
    items = [item for item in store.stored_items() if item.kind == STATE]
    found = [_describe(store, item) for item in items]
    if isinstance(store, BlobStore):
        published = _published(store)
        if published is not None:
            found.append(published)
    if run:
        found = [s for s in found if s.run == run]
    return sorted(found, key=lambda s: (s.run, s.published, s.created, s.reference))


def _describe(store: Listable, item: StoredItem) -> StoredState:
    run, task = uid_run_and_task(item.name) or ("", "")
    base = StoredState(
        item.name, run=item.run or run, task=task,
        size=item.size, created=_when(item.created),
    )
    if not isinstance(store, BlobStore):
        return base
    try:
        state = _read(store, item.name)
    except WrapError as exc:
        return replace(base, note=f"unreadable: {exc}")
    if state is None:
        return replace(base, note="deleted while listing")
    return _from_state(base, state)


def _published(store: BlobStore) -> StoredState | None:
    try:
        state = _read(store, store.target_ref)
    except WrapError as exc:
        return StoredState(store.target_ref, published=True, note=f"unreadable: {exc}")
    if state is None:
        return None
    return _from_state(StoredState(store.target_ref, published=True), state)


def _read(store: BlobStore, ref: str) -> State | None:
    from wrapresolver.steps.statedocs import read_state

    return read_state(store, ref, f"reference {ref!r}")


def _from_state(base: StoredState, state: State) -> StoredState:
    notes = state.annotations
    inputs = notes.get(oci_image.ANNOTATION_INPUTS)
    return replace(
        base,
        run=notes.get(oci_image.ANNOTATION_RUN) or base.run,
        task=notes.get(oci_image.ANNOTATION_TASK) or base.task,
        workspace=notes.get(oci_image.ANNOTATION_WORKSPACE, ""),
        digest=state.digest,
        size=sum(layer.descriptor.size for layer in state.layers),
        layers=len(state.layers),
        created=notes.get(oci_image.ANNOTATION_CREATED) or base.created,
        inputs=tuple(name for name in inputs.split(",") if name) if inputs is not None else None,
    )


def _when(epoch: float | None) -> str:
    if epoch is None:
        return ""
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ---- a task's state, by hand ----

def task_state(store: BlobStore, run: str, task: str, input_only: bool) -> tuple[State, str]:
    """The state `task` of `run` stored, or with `input_only` the one it fetched; and what it is."""
    ref = producer_ref(run, task)
    state = _read(store, ref)
    if state is None:
        known = sorted({s.task for s in list_states(store, run)} - {""}) if isinstance(store, Listable) else []
        hint = f" (tasks with a state in this run: {', '.join(known)})" if known else (
            " (no state of this run here: check the run UID and the target)")
        raise NotFoundError(
            f"task {task!r} of run {run} stored no state at this target{hint}; a task that changed "
            f"nothing still stores one, so it did not run, failed before its store, or does not write "
            f"this workspace"
        )
    if not input_only:
        return state, f"what {task} stored"
    own = state.annotations.get(oci_image.ANNOTATION_OWN_LAYER)
    if own is None and oci_image.ANNOTATION_INPUTS not in state.annotations:
        raise TransferError(
            f"the state of {task!r} does not record which of its layers are its own (stored by an older "
            f"step image); fetch what it stored, without --input, or the states of the tasks before it"
        )
    layers = state.layers
    if own:
        if not layers or layers[-1].descriptor.digest != own:
            raise TransferError(f"the state of {task!r} does not end with the layer it added; cannot tell its input")
        layers = layers[:-1]
    return replace(state, layers=layers), f"what {task} started from"


def fetch_task(
    store: BlobStore, run: str, task: str, input_only: bool, dest: Path, sub_path: str = "",
) -> TransferReport:
    from wrapresolver.steps.engine import fetch_state

    state, what = task_state(store, run, task, input_only)
    report = fetch_state(store, state, dest, f"reference {producer_ref(run, task)!r}", sub_path)
    report.workspace = state.annotations.get(oci_image.ANNOTATION_WORKSPACE, task)
    report.detail = what + (f": {' + '.join(_inputs(state)) or 'empty'}" if input_only else "")
    return report


def _inputs(state: State) -> list[str]:
    text = state.annotations.get(oci_image.ANNOTATION_INPUTS, "")
    return [name for name in text.split(",") if name]


# ---- showing them ----

def _size(n: int | None) -> str:
    if n is None:
        return "?"
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("kB", 1 << 10)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} B"


def table(states: Sequence[StoredState]) -> str:
    """The states grouped by run, one aligned row each."""
    header = ("TASK", "WORKSPACE", "REFERENCE", "DIGEST", "SIZE", "LAYERS", "CREATED", "INPUTS")
    out: list[str] = []
    for run, group in _by_run(states):
        rows = [header]
        for s in group:
            inputs = "?" if s.inputs is None else (",".join(s.inputs) or "-")
            task = f"{s.task} (published)" if s.published else s.task
            rows.append((task or "?", s.workspace or "?", s.reference, s.digest[:19] or "-", _size(s.size),
                         "?" if s.layers is None else str(s.layers), s.created or "?",
                         inputs + (f"  [{s.note}]" if s.note else "")))
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        out.append(f"run {run or '(unknown)'}: {len(group)} state(s)")
        out.extend("  " + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows)
        out.append("")
    return "\n".join(out).rstrip("\n")


def as_json(target: str, states: Sequence[StoredState]) -> dict[str, Any]:
    return {"target": target,
            "runs": [{"run": run, "states": [s.to_json() for s in group]} for run, group in _by_run(states)]}


def _by_run(states: Iterable[StoredState]) -> list[tuple[str, list[StoredState]]]:
    groups: dict[str, list[StoredState]] = {}
    for s in states:
        groups.setdefault(s.run, []).append(s)
    return sorted(groups.items())


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def dot(states: Sequence[StoredState], run: str, target: str) -> str:
    """A run's data flow at one target as a Graphviz digraph: an edge A -> B when B fetched and
    merged A's state; the published target is a node of its own."""
    mine = [s for s in states if s.run == run]
    workspace = next((s.workspace for s in mine if s.workspace), "")
    lines = [f"digraph {_quote(f'run {run} workspace {workspace}'.strip())} {{", "  rankdir=LR;",
             "  node [shape=box];"]
    edges: list[tuple[str, str]] = []
    for s in mine:
        if s.published:
            lines.append(f"  {_quote(PUBLISHED)} [shape=note, label={_quote(f'{target}  {s.digest[:19]}')}];")
            if any(o.task == s.task and not o.published for o in mine):
                edges.append((s.task, PUBLISHED))
            else:  # published by wrap-publish: the merge of the leaf producers
                edges.extend((producer, PUBLISHED) for producer in s.inputs or ())
            continue
        lines.append(f"  {_quote(s.task or s.reference)} [label={_quote(f'{s.task}  {s.digest[:19]}')}];")
        for producer in s.inputs or ():
            if producer == "base":
                lines.append(f"  {_quote('base')} [shape=cylinder];")
            edges.append((producer, s.task))
    lines.extend(f"  {_quote(a)} -> {_quote(b)};" for a, b in dict.fromkeys(edges))
    lines.append("}")
    return "\n".join(lines)
