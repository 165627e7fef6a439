"""Carrying out the retention policy: a run's intermediate states go when its PipelineRun ends.

The answer put a label (`wrapresolver.dev/storage: managed`) and two annotations (the
policy, the storage of each workspace: `core.lifecycle`) on the resolved Pipeline, which
Tekton merges into the PipelineRun. The controller watches PipelineRuns with that label
(kopf `on.event`: no finalizer, no kopf annotations, nothing written to users' objects) and,
when one ends or is deleted, waits what the policy says and deletes that run's states by
their exact reference names (`producer_ref(uid, task)` for the Pipeline's tasks) through
each backend's delete side. The published target is never deleted.

Catch-up: kopf lists every labelled PipelineRun when the controller starts, so a run that
ended while it was down is reclaimed then, its delay counted from `completionTime`.
Deleting twice finds nothing, so replicas and restarts need no bookkeeping. A run that was
deleted while the controller was down is no longer visible: `wrapresolver gc` finds its
states by age.

Trust: the controller acts only on annotations it can tell it wrote (their signature,
`core.lifecycle`, verifies for the run's uid with the key in its Secret, controller.signing)
and only on targets inside `allowed-targets` as the ConfigMap says at that moment. Anything
else is a Warning Event `StorageAnnotationIgnored` and a log line, and no storage is reached.
What the run published is reclaimed by `publish-retention` the same way (core.retention).

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

from wrapresolver.core.lifecycle import (
    ANNOTATION_PUBLISH_RETENTION,
    ANNOTATION_RETENTION,
    read_storage,
    signature_problem,
)
from wrapresolver.core.locations import parse_allowed_targets
from wrapresolver.core.params import CONFIG_ALLOWED_TARGETS
from wrapresolver.core.retention import parse_publish_retention, parse_retention
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
    """What reclaiming one run did, over all its workspaces."""

    deleted: int = 0
    bytes: int = 0
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def reclaim_run_states(uid: str, entries: list[dict[str, Any]]) -> Outcome:
    """Delete run `uid`'s states at every target it used (blocking: run in a thread)."""
    from wrapresolver.backends.reclaim import reclaim_run

    def one(store: Any, entry: dict[str, Any]) -> Any:
        tasks = [str(t) for t in entry.get("tasks") or []]
        return reclaim_run(store, uid, tasks)

    return _each_target(uid, [e for e in entries if e.get("tasks")], one,
                        [f"{_target(e, uid)}: the run's annotation names no tasks; nothing deleted"
                         for e in entries if not e.get("tasks")])


def reclaim_run_published(uid: str, entries: list[dict[str, Any]]) -> Outcome:
    """Delete what run `uid` published, where it is still its own (blocking: run in a thread).

    A carried workspace's result (its base is in the same repository) is never deleted.
    """
    from wrapresolver.backends.reclaim import reclaim_published

    return _each_target(uid, [e for e in entries if not e.get("carried")],
                        lambda store, entry: reclaim_published(store, uid), [])


def _target(entry: dict[str, Any], uid: str) -> str:
    return str(entry["target"]).replace(RUN_UID_VARIABLE, uid)


def _each_target(uid: str, entries: list[dict[str, Any]], action: Any, failures: list[str]) -> Outcome:
    from wrapresolver.backends.registry import REGISTRY

    out = Outcome(failures=list(failures))
    for entry in entries:
        target = _target(entry, uid)
        try:
            backend = REGISTRY.by_name(str(entry.get("backend") or ""))
            options = {str(k): str(v) for k, v in (entry.get("options") or {}).items()}
            store = backend.open(target, options)
            try:
                result = action(store, entry)
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


def trusted_entries(annotations: Mapping[str, str], uid: str, key: bytes, config: Mapping[str, str],
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """The storage entries the controller may act on, and why the others are ignored.

    All of them only when the signature verifies for this run; of those, only the targets
    inside `allowed-targets` as the ConfigMap says now (an admin who narrows it stops the
    controller reaching what is now outside, even for runs resolved before).
    """
    entries = read_storage(annotations)
    problem = signature_problem(key, uid, annotations)
    if problem:
        return [], [problem]
    return allowed_entries(entries, uid, config)


def allowed_entries(entries: list[dict[str, Any]], uid: str, config: Mapping[str, str],
                    ) -> tuple[list[dict[str, Any]], list[str]]:
    """The entries inside `allowed-targets` of `config`, and why each other one is left out."""
    allowed, _ = parse_allowed_targets(config.get(CONFIG_ALLOWED_TARGETS))
    kept, reasons = [], []
    for entry in entries:
        why = allowed.refusal(_target(entry, uid), str(entry.get("backend") or "oci"))
        if why:
            reasons.append(f"workspace {entry.get('workspace')!r}: {why}")
        else:
            kept.append(entry)
    return kept, reasons


STATES, PUBLISHED = "states", "published"


class Reaper:
    """Schedules and runs the reclaiming of ended runs; one per controller process."""

    def __init__(self, kube: Any, runtime: Any = None) -> None:
        self.kube = kube
        self.runtime = runtime
        """The answering runtime: the signing key and the live ConfigMap (None: nothing is trusted)."""
        self.pending: dict[tuple[str, str], tuple[float, asyncio.Task]] = {}
        self.done: OrderedDict[tuple[str, str], bool] = OrderedDict()
        """Runs reclaimed (or ignored) recently: their later events need no storage call (bounded)."""
        self.warned: OrderedDict[str, bool] = OrderedDict()
        """Runs whose ignored annotation was reported: once each (bounded)."""

    def _remember(self, uid: str, what: str) -> None:
        self.done[(uid, what)] = True
        while len(self.done) > DONE_REMEMBERED:
            self.done.popitem(last=False)

    async def on_event(self, kind: str | None, body: Mapping) -> None:
        meta = body.get("metadata") or {}
        uid = str(meta.get("uid") or "")
        annotations = meta.get("annotations") or {}
        if not uid or not read_storage(annotations) or ((uid, STATES) in self.done and (uid, PUBLISHED) in self.done):
            return
        key = self.runtime.signing_key if self.runtime is not None else b""
        config = self.runtime.config.current.data if self.runtime is not None else {}
        entries, ignored = trusted_entries(annotations, uid, key, config)
        deleted = kind == "DELETED" or bool(meta.get("deletionTimestamp"))
        if ignored and uid not in self.warned:
            self.warned[uid] = True
            while len(self.warned) > DONE_REMEMBERED:
                self.warned.popitem(last=False)
            await self._ignore(body, ignored, deleted)
        if ignored:
            if not entries:
                self._remember(uid, STATES)
                self._remember(uid, PUBLISHED)
                return
        try:
            policy = parse_retention(str(annotations.get(ANNOTATION_RETENTION, "")))
            publish = parse_publish_retention(str(annotations.get(ANNOTATION_PUBLISH_RETENTION, "")))
        except WrapError as exc:
            log.warning("PipelineRun %s/%s: %s; its states are kept", meta.get("namespace"), meta.get("name"), exc)
            return
        for what, chosen in ((STATES, policy), (PUBLISHED, publish)):
            if (uid, what) not in self.done:
                self._schedule(what, chosen.due(outcome_of(body), deleted), uid, entries, body, deleted)

    async def _ignore(self, body: Mapping, reasons: list[str], deleted: bool) -> None:
        from wrapresolver.controller import events, metrics

        meta = body.get("metadata") or {}
        message = "; ".join(reasons)
        metrics.RECLAIM_FAILURES.inc(len(reasons))
        log.warning("PipelineRun %s/%s: storage annotation ignored: %s", meta.get("namespace"), meta.get("name"),
                    message)
        if not deleted:
            await events.record_ignored_storage(self.kube, body, message)

    def _schedule(self, what: str, due: float | None, uid: str, entries: list[dict[str, Any]], body: Mapping,
                  deleted: bool) -> None:
        if due is None:
            return
        now = time.time()
        when = now if deleted else ended_at(body, now) + due
        if (uid, what) in self.pending:
            planned, task = self.pending[(uid, what)]
            if when >= planned:
                return
            task.cancel()  # deleted during a keep-for delay: at once now
        task = asyncio.create_task(self._reclaim_at(when, what, uid, entries, dict(body), deleted),
                                   name=f"reclaim-{what}-{uid}")
        self.pending[(uid, what)] = (when, task)

    async def _reclaim_at(self, when: float, what: str, uid: str, entries: list[dict[str, Any]], body: dict,
                          deleted: bool) -> None:
        from wrapresolver.controller import events, metrics

        await asyncio.sleep(max(0.0, when - time.time()))
        meta = body.get("metadata") or {}
        if self.runtime is not None:  # the list may have been narrowed during a keep-for delay
            entries, ignored = allowed_entries(entries, uid, self.runtime.config.current.data)
            if ignored:
                await self._ignore(body, ignored, deleted)
        try:
            out = await asyncio.to_thread(reclaim_run_states if what == STATES else reclaim_run_published, uid, entries)
        finally:
            self.pending.pop((uid, what), None)
        self._remember(uid, what)
        metrics.RECLAIMED_STATES.inc(out.deleted)
        metrics.RECLAIMED_BYTES.inc(out.bytes)
        for note in out.notes:
            log.warning("PipelineRun %s/%s: %s", meta.get("namespace"), meta.get("name"), note)
        log.info("PipelineRun %s/%s: %d %s reclaimed (%d bytes)", meta.get("namespace"), meta.get("name"),
                 out.deleted, "states" if what == STATES else "published results", out.bytes)
        if out.failures:
            metrics.RECLAIM_FAILURES.inc(len(out.failures))
            message = "; ".join(out.failures)
            log.warning("PipelineRun %s/%s: %s not reclaimed: %s", meta.get("namespace"), meta.get("name"), what,
                        message)
            if not deleted:
                await events.record_reclaim_failure(self.kube, body, message)

    async def close(self) -> None:
        for _, task in list(self.pending.values()):
            task.cancel()
