"""The per-task requests of a run, created already answered, so Tekton finds them at once.

Tekton's PipelineRun reconciler resolves a run's tasks in order and stops at the first
ResolutionRequest that is not answered yet; the request's answer brings it back for the
next one. A per-task Pipeline answer (core.pertask) of 2,000 wrapped tasks would so take
2,000 rounds of reconciling a 2,000-task run before its first TaskRun. Right after the
Pipeline answer is written, this creates every task's request under the name Tekton gives
it (core.tektonnames) and writes its answer, in the Pipeline's order, a few at a time; the
reconciler then finds them answered and goes through all of them in one round.

Nothing depends on it for correctness: a request Tekton created first (409 here) is answered
by the handler as any other, and one this could not create or answer Tekton creates itself.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence

from wrapresolver import resolve
from wrapresolver.controller import events
from wrapresolver.controller.kube import RESOLUTION_REQUESTS, Kube, KubeError
from wrapresolver.core import tektonnames
from wrapresolver.core.params import RESOLVER_NAME

log = logging.getLogger("wrapresolver.controller")
IN_FLIGHT = 16
"""Requests created at once: enough to keep the API server busy, few enough to stay fair to others."""
TYPE_LABEL = "resolution.tekton.dev/type"


def request_body(namespace: str, owner: Mapping, task_request: resolve.TaskRequest) -> dict:
    """The ResolutionRequest Tekton would create for this task, owned by the same PipelineRun."""
    run_name = str(owner.get("name", ""))
    name = tektonnames.resolution_request_name(
        RESOLVER_NAME, namespace, tektonnames.task_run_name(run_name, task_request.task), task_request.params)
    # Tekton's own requests also say blockOwnerDeletion, which needs the right to update the
    # PipelineRun's finalizers; the owner is what deletes the request with its run.
    owner_ref = {"apiVersion": owner.get("apiVersion", "tekton.dev/v1"), "kind": "PipelineRun",
                 "name": run_name, "uid": owner.get("uid", ""), "controller": True}
    return {"apiVersion": RESOLUTION_REQUESTS.api_version, "kind": "ResolutionRequest",
            "metadata": {"name": name, "namespace": namespace, "labels": {TYPE_LABEL: RESOLVER_NAME},
                         "ownerReferences": [owner_ref]},
            "spec": {"params": [dict(p) for p in task_request.params]}}


Answering = Callable[[dict, resolve.Answer], Awaitable[str]]
"""Writes an answer into a request just created: 'written', or why not (controller.answer.write_status)."""


async def create_answered(kube: Kube, request: Mapping, task_requests: Sequence[resolve.TaskRequest],
                          write: Answering) -> dict[str, int]:
    """Create and answer each task's request; returns how many were 'answered', 'existed', 'failed'."""
    owner = events.owner_pipelinerun(request)
    namespace = str((request.get("metadata") or {}).get("namespace", ""))
    counts = {"answered": 0, "existed": 0, "failed": 0}
    if owner is None or not task_requests:
        return counts
    slots = asyncio.Semaphore(IN_FLIGHT)

    async def one(task_request: resolve.TaskRequest) -> None:
        async with slots:
            body = request_body(namespace, owner, task_request)
            try:
                created = await kube.create(RESOLUTION_REQUESTS, namespace, body)
            except Exception as exc:  # one request Tekton creates itself; the others go on
                exists = isinstance(exc, KubeError) and exc.status == 409
                counts["existed" if exists else "failed"] += 1
                if not exists:
                    log.warning("could not create the request of task %s: %r", task_request.task, exc,
                                extra={"namespace": namespace, "request": body["metadata"]["name"]})
                return
            try:
                written = await write(created, task_request.answer)
            except Exception as exc:  # Tekton will find it unanswered and wait for the handler
                counts["failed"] += 1
                log.warning("could not answer the request of task %s: %r", task_request.task, exc,
                            extra={"namespace": namespace, "request": body["metadata"]["name"]})
                return
            counts["answered" if written in ("written", "succeeded") else "existed"] += 1

    # Started in the Pipeline's order, so the reconciler, which walks the same order, finds
    # the first ones answered first.
    await asyncio.gather(*(one(r) for r in task_requests))
    return counts
