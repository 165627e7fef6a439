"""Answering one ResolutionRequest: params -> sources -> rewrite -> one status patch.

Idempotent by construction, which is what makes replicas and restarts safe without kopf's
bookkeeping: a request that already has `status.data` or a terminal Succeeded condition is
left alone, and the answer is written with the resourceVersion it was computed from, so of
two replicas racing on one request only the first write lands; the other sees 409, reads the
request again and finds it answered.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import time
from collections import OrderedDict
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp

from wrapresolver import resolve
from wrapresolver.answercache import AnswerCache
from wrapresolver.controller import events, metrics, taskrequests
from wrapresolver.controller.cluster_source import ClusterSource
from wrapresolver.controller.config import LiveConfig
from wrapresolver.controller.kube import PIPELINERUNS, RESOLUTION_REQUESTS, Kube, KubeError
from wrapresolver.core.checks import Notice
from wrapresolver.core.limits import cap_line
from wrapresolver.core.params import RunContext
from wrapresolver.errors import WrapError
from wrapresolver.lastresort import describe

log = logging.getLogger("wrapresolver.controller")
RETRY_DELAYS = (0.2, 0.5, 1, 2, 4, 8)
GRACE = 1.0


@dataclass
class Runtime:
    """What every handler call shares: the cluster client and the live settings."""

    kube: Kube
    config: LiveConfig
    signing_key: bytes = b""
    """Signs the storage annotations of each answer (controller.signing); empty: unsigned."""
    answered: OrderedDict = field(default_factory=OrderedDict)
    """uids this replica answered recently: a later event for them needs no API call."""
    answers: AnswerCache = field(default_factory=AnswerCache)
    """The Task answers of runs answered per-task: their per-task requests cost a lookup."""
    background: set = field(default_factory=set)
    """Work started after an answer (`in_background`), referenced until it ends."""

    def in_background(self, work: Coroutine[Any, Any, None]) -> None:
        """Run `work` after the answer is written; kept referenced until it ends, errors logged."""
        task = asyncio.get_running_loop().create_task(work)
        self.background.add(task)

        def done(finished: asyncio.Task) -> None:
            self.background.discard(finished)
            if not finished.cancelled() and finished.exception() is not None:
                log.warning("background work failed: %r", finished.exception())

        task.add_done_callback(done)

    def remember(self, uid: str) -> None:
        self.answered[uid] = True
        while len(self.answered) > 10_000:
            self.answered.popitem(last=False)


def is_answered(request: Mapping) -> bool:
    status = request.get("status") or {}
    if status.get("data"):
        return True
    return any(c.get("type") == "Succeeded" and c.get("status") in ("True", "False")
               for c in status.get("conditions") or [])


def _condition(status: str, reason: str, message: str = "") -> dict:
    cond = {"type": "Succeeded", "status": status, "reason": reason,
            "lastTransitionTime": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if message:
        cond["message"] = message
    return cond


def success_status(resolution: resolve.Answer) -> dict:
    # Tekton's v1beta1 schema requires data, refSource and source together; source is the
    # deprecated name of refSource and carries the same object.
    return {"data": base64.b64encode(resolution.data).decode(), "annotations": dict(resolution.annotations),
            "refSource": dict(resolution.ref_source), "source": dict(resolution.ref_source),
            "conditions": [_condition("True", "ResolutionSuccessful")]}


def failure_status(reason: str, message: str) -> dict:
    # data/refSource/source are required whenever status is written; empty values mean "no answer".
    # Messages can echo input (names, YAML errors): capped, so a condition never floods etcd.
    return {"data": "", "refSource": {}, "source": {},
            "conditions": [_condition("False", reason, cap_line(message, 4000))]}


def log_fields(request: Mapping) -> dict:
    meta = request.get("metadata") or {}
    try:
        owner = events.owner_of(request)
        owner_text = f"{owner['kind']}/{owner['name']}"
    except Exception:  # malformed ownerReferences must not stop the answer
        owner_text = "?"
    return {"namespace": meta.get("namespace"), "request": meta.get("name"), "owner": owner_text}


async def run_context(kube: Kube, request: Mapping) -> RunContext:
    """The asking PipelineRun, from the request's controller ownerReference (read if allowed)."""
    meta = request.get("metadata") or {}
    namespace = meta.get("namespace", "")
    owner = events.owner_pipelinerun(request)
    if owner is None:
        return RunContext(namespace=namespace)
    pipelinerun = None
    for res in PIPELINERUNS:
        try:
            pipelinerun = await kube.get(res, namespace, owner.get("name", ""))
        except KubeError as exc:
            if exc.status != 403:
                raise
            log.warning("may not read PipelineRun %s/%s: %s", namespace, owner.get("name"), exc.message)
            break
        if pipelinerun is not None:
            break
    return RunContext(name=owner.get("name", ""), namespace=namespace, uid=owner.get("uid", ""),
                      pipelinerun=pipelinerun)


def _transient(exc: BaseException) -> bool:
    if isinstance(exc, KubeError):
        return exc.status in (408, 429) or exc.status >= 500
    return isinstance(exc, (aiohttp.ClientConnectionError, asyncio.TimeoutError))


async def compute_status(runtime: Runtime, request: Mapping, deadline: float
                         ) -> tuple[dict, tuple[Notice, ...], tuple[resolve.TaskRequest, ...]]:
    """The status to write, the resolution's warnings and, for a per-task Pipeline answer, its
    tasks' requests; never raises for bad input, retries transient API errors until the deadline."""
    loop = asyncio.get_running_loop()
    settings = runtime.config.current
    params = (request.get("spec") or {}).get("params") or []
    for delay in (*RETRY_DELAYS, None):
        try:
            context = await run_context(runtime.kube, request)
            source = ClusterSource(runtime.kube, request, settings, deadline)
            # The source gives up at the deadline with a precise message; this bound is the backstop.
            resolution = await asyncio.wait_for(resolve.resolve(params, settings.data, context, source,
                                                             signing_key=runtime.signing_key,
                                                             answers=runtime.answers),
                                                max(deadline - loop.time(), 0.001) + GRACE)
            return success_status(resolution), resolution.warnings, resolution.task_requests
        except WrapError as exc:
            return failure_status(exc.reason, str(exc)), (), ()
        except TimeoutError:
            if delay is not None and loop.time() + delay < deadline:  # a slow API call, not our deadline
                await asyncio.sleep(delay)
                continue
            return failure_status("ResolutionTimeout",
                                  f"resolution took longer than resolution-timeout "
                                  f"({settings.resolution_timeout:g}s) of the wrap resolver"), (), ()
        except Exception as exc:  # bad input must never crash the controller
            if _transient(exc) and delay is not None and loop.time() + delay < deadline:
                log.warning("transient error, retrying in %ss: %r", delay, exc, extra=log_fields(request))
                await asyncio.sleep(delay)
                continue
            log.exception("resolution failed unexpectedly", extra=log_fields(request))
            return failure_status("InternalError",
                                  f"the wrap resolver failed unexpectedly ({describe(exc)}); "
                                  "the controller logs have details"), (), ()
    raise AssertionError("unreachable")


async def write_status(kube: Kube, request: Mapping, status: dict) -> str:
    """Write with optimistic locking; 'written', 'raced' (someone answered first) or 'gone'."""
    meta = request.get("metadata") or {}
    current = request
    for _ in range(5):
        try:
            await kube.patch_status(RESOLUTION_REQUESTS, meta["namespace"], meta["name"], status,
                                    resource_version=(current.get("metadata") or {}).get("resourceVersion"))
            return "written"
        except KubeError as exc:
            if exc.status == 404:
                return "gone"
            if exc.status != 409:
                raise
        fresh = await kube.get(RESOLUTION_REQUESTS, meta["namespace"], meta["name"])
        if fresh is None or (fresh.get("metadata") or {}).get("uid") != meta.get("uid"):
            return "gone"
        if is_answered(fresh):
            return "raced"
        current = fresh  # e.g. Tekton set the condition to Unknown meanwhile: write again on top
    raise KubeError(409, "Conflict", "the request kept changing while the answer was written")


async def answer(runtime: Runtime, request: Mapping) -> str:
    """Answer one request; returns the outcome ('succeeded', 'failed', 'skipped', 'raced', 'gone').

    The last resort of the controller: whatever goes wrong unexpectedly while answering, the
    request still ends `Succeeded=False` (reason `InternalError`, the exception in one capped
    line) when the API server lets us write it, and nothing escapes to stop the handler.
    """
    try:
        return await _answer(runtime, request)
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.exception("answering failed unexpectedly", extra=log_fields(request))
        status = failure_status("InternalError", f"the wrap resolver failed unexpectedly ({describe(exc)}); "
                                                 "the controller logs have details")
        try:
            written = await write_status(runtime.kube, request, status)
        except Exception as write_exc:  # the API server itself is failing
            log.warning("could not write the failure either: %r", write_exc, extra=log_fields(request))
            return "error"
        metrics.FAILURES.labels("InternalError").inc()
        return "failed" if written == "written" else written


async def _answer(runtime: Runtime, request: Mapping) -> str:
    meta = request.get("metadata") or {}
    if is_answered(request) or meta.get("uid") in runtime.answered or meta.get("deletionTimestamp"):
        metrics.SKIPPED.inc()
        return "skipped"
    fields = log_fields(request)
    started = time.monotonic()
    deadline = asyncio.get_running_loop().time() + runtime.config.current.resolution_timeout
    metrics.IN_FLIGHT.inc()
    try:
        status, notices, task_requests = await compute_status(runtime, request, deadline)
        written = await write_status(runtime.kube, request, status)
    finally:
        metrics.IN_FLIGHT.dec()
    runtime.remember(meta.get("uid", ""))
    if written != "written":
        log.info("not written: %s", "answered by another replica" if written == "raced" else "request deleted",
                 extra=fields)
        metrics.SKIPPED.inc()
        return written
    failed = status["conditions"][0]["status"] == "False"
    outcome = "failed" if failed else "succeeded"
    seconds = time.monotonic() - started
    metrics.REQUESTS.labels(outcome).inc()
    metrics.LATENCY.labels(outcome).observe(seconds)
    if failed:
        cond = status["conditions"][0]
        metrics.FAILURES.labels(cond["reason"]).inc()
        log.warning("resolution failed: %s", cond["message"],
                    extra={**fields, "outcome": outcome, "reason": cond["reason"], "seconds": round(seconds, 4)})
        try:
            await events.record_failure(runtime.kube, request, cond["reason"], cond["message"])
        except Exception as exc:  # an Event is best effort
            log.warning("could not record an Event: %r", exc, extra=fields)
    else:
        log.info("resolved", extra={**fields, "outcome": outcome, "seconds": round(seconds, 4),
                                    **{k.rsplit("/", 1)[-1]: v for k, v in status["annotations"].items()
                                       if k.endswith(("/workspaces", "/backend"))}})
        await _warn(runtime, request, notices, fields)
        if task_requests:
            runtime.in_background(_create_task_requests(runtime, request, task_requests, fields))
    return outcome


async def _create_task_requests(runtime: Runtime, request: Mapping, task_requests: tuple[resolve.TaskRequest, ...],
                                fields: dict) -> None:
    """The per-task requests Tekton will make for this run, created answered (controller.taskrequests)."""
    started = time.monotonic()

    async def write(created: dict, task_answer: resolve.Answer) -> str:
        uid = (created.get("metadata") or {}).get("uid", "")
        runtime.remember(uid)  # its watch event needs no answer: this writes it
        try:
            return await write_status(runtime.kube, created, success_status(task_answer))
        except Exception:
            runtime.answered.pop(uid, None)  # the handler may have skipped it meanwhile: answer it as one
            return await answer(runtime, created)

    counts = await taskrequests.create_answered(runtime.kube, request, task_requests, write)
    log.info("task requests created answered", extra={**fields, **counts,
                                                     "seconds": round(time.monotonic() - started, 3)})


async def _warn(runtime: Runtime, request: Mapping, notices: tuple[Notice, ...], fields: dict) -> None:
    """Each warning of a successful resolution: a log line, and a Warning Event on the PipelineRun."""
    for notice in notices:
        log.warning("resolution warning: %s", notice.message, extra={**fields, "reason": notice.reason})
        try:
            await events.record_warning(runtime.kube, request, notice.reason, notice.message)
        except Exception as exc:  # an Event is best effort
            log.warning("could not record an Event: %r", exc, extra=fields)
