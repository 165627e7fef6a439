"""Kubernetes Events about failed resolutions, on the PipelineRun that asked.

The PipelineRun is where an author looks (`kubectl describe pipelinerun`). The Event's
name is derived from the request and the reason, so a second replica reporting the same
failure gets 409 AlreadyExists instead of a duplicate Event.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Mapping
from datetime import UTC, datetime

from wrapresolver.controller.kube import EVENTS, RESOLUTION_REQUESTS, Kube, KubeError

log = logging.getLogger("wrapresolver.controller.events")
COMPONENT = "wrapresolver"


def owner_pipelinerun(request: Mapping) -> dict | None:
    """The ownerReference of the PipelineRun that controls a request (it asked), if any."""
    refs = (request.get("metadata") or {}).get("ownerReferences") or []
    return next((r for r in refs if r.get("controller") and r.get("kind") == "PipelineRun"), None)


def owner_of(request: Mapping) -> dict:
    """The involved object: the controlling PipelineRun/TaskRun, else the request itself."""
    meta = request.get("metadata") or {}
    refs = meta.get("ownerReferences") or []
    ref = next((r for r in refs if r.get("controller")), refs[0] if refs else None)
    if ref:
        return {"apiVersion": ref.get("apiVersion"), "kind": ref.get("kind"), "name": ref.get("name"),
                "uid": ref.get("uid"), "namespace": meta.get("namespace")}
    return {"apiVersion": RESOLUTION_REQUESTS.api_version, "kind": "ResolutionRequest",
            "name": meta.get("name"), "uid": meta.get("uid"), "namespace": meta.get("namespace")}


async def record_failure(kube: Kube, request: Mapping, reason: str, message: str) -> None:
    """A Warning Event on the object that asked for the failed resolution."""
    meta = request.get("metadata") or {}
    await _warn(kube, owner_of(request), str(meta.get("uid")), reason,
                f"ResolutionRequest {meta.get('name')}: {message}")


async def record_warning(kube: Kube, request: Mapping, reason: str, message: str) -> None:
    """A Warning Event for a resolution that succeeded but is probably not what was meant.

    Named after the message too: one request may warn twice for one reason (two workspaces).
    """
    meta = request.get("metadata") or {}
    await _warn(kube, owner_of(request), f"{meta.get('uid')}/{message}", reason, message)


async def record_reclaim_failure(kube: Kube, pipelinerun: Mapping, message: str) -> None:
    """A Warning Event on the PipelineRun whose states could not (all) be deleted."""
    involved = _pipelinerun_ref(pipelinerun)
    await _warn(kube, involved, str(involved["uid"]), "StatesNotReclaimed",
                f"wrapped workspace states left in storage (remove them with `wrapresolver gc`): {message}")


def _pipelinerun_ref(pipelinerun: Mapping) -> dict:
    """The involved object of an Event about a PipelineRun read from the API."""
    meta = pipelinerun.get("metadata") or {}
    return {"apiVersion": pipelinerun.get("apiVersion", "tekton.dev/v1"), "kind": "PipelineRun",
            "name": meta.get("name"), "uid": meta.get("uid"), "namespace": meta.get("namespace")}


async def _warn(kube: Kube, involved: Mapping, key: str, reason: str, message: str) -> None:
    """Create one Warning Event, named after `key` and the reason so replicas do not repeat it."""
    namespace = involved.get("namespace")
    suffix = hashlib.sha256(f"{key}/{reason}".encode()).hexdigest()[:12]
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    event = {
        "apiVersion": "v1", "kind": "Event",
        "metadata": {"name": f"{str(involved.get('name'))[:200]}.wrap-{suffix}", "namespace": namespace},
        "involvedObject": dict(involved), "type": "Warning", "reason": reason,
        "message": message[:1024],
        "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
        "reportingInstance": os.environ.get("HOSTNAME", COMPONENT),
        "firstTimestamp": stamp, "lastTimestamp": stamp, "count": 1,
    }
    try:
        await kube.create(EVENTS, namespace, event)
    except KubeError as exc:
        if exc.status != 409:
            log.warning("could not record an Event for %s/%s: %s", namespace, involved.get("name"), exc)


async def record_ignored_storage(kube: Kube, pipelinerun: Mapping, message: str) -> None:
    """A Warning Event on a PipelineRun whose storage annotation the controller will not act on."""
    involved = _pipelinerun_ref(pipelinerun)
    await _warn(kube, involved, str(involved["uid"]), "StorageAnnotationIgnored",
                f"the wrap controller reclaims nothing here: {message}")
