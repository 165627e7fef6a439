"""Carrying out the retention policy: a run's intermediate states go when its PipelineRun ends.

The answer put a label (`wrapresolver.dev/storage: managed`) and two annotations (the
policy, the storage of each workspace: `core.lifecycle`) on the resolved Pipeline, which
Tekton merges into the PipelineRun. The controller watches PipelineRuns with that label
(kopf `on.event`: no finalizer, no kopf annotations, nothing written to users' objects) and,
when one ends or is deleted, waits what the policy says and deletes that run's states by
their exact reference names (`producer_ref(uid, task)` for the Pipeline's tasks) through
each backend's delete side. The published target is never deleted.

Catch-up: kopf lists every labelled PipelineRun when the controller starts, so a run that
ended while it was down is collected then, its delay counted from `completionTime`.
Deleting twice finds nothing, so replicas and restarts need no bookkeeping. A run that was
deleted while the controller was down is no longer visible: `wrapresolver gc` finds its
states by age.

Storage is reached with the controller's own identity (its environment: registry
credentials, AWS_*, GOOGLE_APPLICATION_CREDENTIALS, RSYNC_PASSWORD...), not the Secrets
the run's steps use; a delete the storage refuses is a Warning Event on the PipelineRun and
a failure in the metrics, and the states stay for `wrapresolver gc`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from wrapresolver.core.lifecycle import ANNOTATION_RETENTION, read_storage
from wrapresolver.core.retention import parse_retention
from wrapresolver.core.template import RUN_UID_VARIABLE
from wrapresolver.errors import WrapError

log = logging.getLogger("wrapresolver.controller.retention")
DONE_REMEMBERED = 10_000


def outcome_of(pipelinerun: Mapping) -> str:
    """succeeded, failed, or running (no final Succeeded condition yet)."""
    for cond in (pipelinerun.get("status") or {}).get("conditions") or []:
        if cond.get("type") == "Succeeded":
            return {"True": "succeeded", "False": "failed"}.get(str(cond.get("status")), "running")
    return "running"


def ended_at(pipelinerun: Mapping, now: float) -> float:
    text = str((pipelinerun.get("status") or {}).get("completionTime") or "")
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else now
    except ValueError:
        return now


@dataclass
class Outcome:
    """What collecting one run did, over all its workspaces."""

    deleted: int = 0
    bytes: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def collect(uid: str, entries: list[dict[str, Any]]) -> Outcome:
    """Delete run `uid`'s states at every target it used (blocking: run in a thread)."""
    from wrapresolver.backends.reclaim import reclaim_run
    from wrapresolver.backends.registry import REGISTRY

    out = Outcome()
    for entry in entries:
        target = str(entry["target"]).replace(RUN_UID_VARIABLE, uid)
        tasks = [str(t) for t in entry.get("tasks") or []]
        if not tasks:
            out.failures.append(f"{target}: the run's annotation names no tasks; nothing deleted")
            continue
        try:
            backend = REGISTRY.by_name(str(entry.get("backend") or ""))
            options = {str(k): str(v) for k, v in (entry.get("options") or {}).items()}
            store = backend.open(target, options)
            try:
                result = reclaim_run(store, uid, tasks)
            finally:
                close = getattr(store, "close", None)
                if close is not None:
                    close()
        except (WrapError, OSError, ValueError) as exc:
            out.failures.append(f"{target}: {exc}")
            continue
        out.deleted += len(result.deleted)
        out.bytes += result.bytes
        out.failures += [f"{target}: {f}" for f in result.failures]
        out.notes += [f"{target}: {n}" for n in result.notes]
        out.failures += [f"{target}: kept {k}" for k in result.kept]
    return out


class Reaper:
    """Schedules and runs the collection of ended runs; one per controller process."""

    def __init__(self, kube: Any) -> None:
        self.kube = kube
        self.pending: dict[str, tuple[float, asyncio.Task]] = {}
        self.done: OrderedDict[str, bool] = OrderedDict()
        """Runs collected recently: their later events need no storage call (bounded)."""

    async def on_event(self, kind: str | None, body: Mapping) -> None:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        annotations = meta.get("annotations") or {}
        entries = read_storage(annotations)
        if not uid or not entries or uid in self.done:
            return
        try:
            policy = parse_retention(str(annotations.get(ANNOTATION_RETENTION, "")))
        except WrapError as exc:
            log.warning("PipelineRun %s/%s: %s; its states are kept", meta.get("namespace"), meta.get("name"), exc)
            return
        deleted = kind == "DELETED" or bool(meta.get("deletionTimestamp"))
        due = policy.due(outcome_of(body), deleted)
        if due is None:
            return
        now = time.time()
        when = now if deleted else ended_at(body, now) + due
        if uid in self.pending:
            planned, task = self.pending[uid]
            if when >= planned:
                return
            task.cancel()  # deleted during a keep-for delay: at once now
        task = asyncio.create_task(self._collect_at(when, uid, entries, dict(body), deleted), name=f"reclaim-{uid}")
        self.pending[uid] = (when, task)

    async def _collect_at(self, when: float, uid: str, entries: list[dict[str, Any]], body: dict, deleted: bool) -> None:
        from wrapresolver.controller import events, metrics

        await asyncio.sleep(max(0.0, when - time.time()))
        meta = body.get("metadata") or {}
        try:
            out = await asyncio.to_thread(collect, uid, entries)
        finally:
            self.pending.pop(uid, None)
        self.done[uid] = True
        while len(self.done) > DONE_REMEMBERED:
            self.done.popitem(last=False)
        metrics.RECLAIMED_STATES.inc(out.deleted)
        metrics.RECLAIMED_BYTES.inc(out.bytes)
        for note in out.notes:
            log.warning("PipelineRun %s/%s: %s", meta.get("namespace"), meta.get("name"), note)
        log.info("PipelineRun %s/%s: %d states reclaimed (%d bytes)", meta.get("namespace"), meta.get("name"),
                 out.deleted, out.bytes)
        if out.failures:
            metrics.RECLAIM_FAILURES.inc(len(out.failures))
            message = "; ".join(out.failures)
            log.warning("PipelineRun %s/%s: states not reclaimed: %s", meta.get("namespace"), meta.get("name"), message)
            if not deleted:
                await events.record_reclaim_failure(self.kube, body, message)

    async def close(self) -> None:
        for _, task in list(self.pending.values()):
            task.cancel()
