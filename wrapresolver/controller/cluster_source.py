"""The `Source` a ResolutionRequest is answered from: the cluster, and other resolvers.

Pipelines and Tasks named plainly are read from the request's namespace (tekton.dev/v1,
then v1beta1). A reference with `resolver:` is handed to that resolver the way Tekton itself
does it: a child ResolutionRequest labelled with the resolver's type, owned by our request
(so garbage collection removes it with the PipelineRun), waited for within our time budget.
The child's name is a hash of our request and the params, so two controller replicas create
the same child and share its answer.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
from collections.abc import Mapping

from wrapresolver.controller.config import Settings
from wrapresolver.controller.kube import PIPELINES, RESOLUTION_REQUESTS, TASKS, Kube, KubeError, Resource
from wrapresolver.core import safeyaml
from wrapresolver.core.limits import LimitError
from wrapresolver.core.params import RESOLVER_NAME, PipelineRef
from wrapresolver.errors import SourceError
from wrapresolver.sources import Fetched

TYPE_LABEL = "resolution.tekton.dev/type"
POLL_INTERVALS = (0.05, 0.1, 0.2, 0.3, 0.5)
KEPT_METADATA = ("name", "namespace", "labels", "annotations")
DROPPED_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def content_digest(obj: Mapping) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def clean_object(obj: Mapping) -> dict:
    """The object without server bookkeeping (uid, resourceVersion, managedFields, status).

    Both replicas must feed the rewrite identical input, and nothing that changes on every
    write of the object belongs in a Pipeline that Tekton will store in the PipelineRun.
    """
    meta = obj.get("metadata") or {}
    kept = {k: meta[k] for k in KEPT_METADATA if meta.get(k)}
    if "annotations" in kept:
        kept["annotations"] = {k: v for k, v in kept["annotations"].items() if k not in DROPPED_ANNOTATIONS}
        if not kept["annotations"]:
            del kept["annotations"]
    return {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "metadata": kept,
            "spec": obj.get("spec") or {}}


def child_request_name(resolver: str, parent_uid: str, params: object) -> str:
    digest = hashlib.sha256(json.dumps([parent_uid, resolver, params], sort_keys=True).encode()).hexdigest()[:32]
    return f"{resolver[:63 - 33]}-{digest}"


class ClusterSource:
    """`sources.Source` for one ResolutionRequest; `deadline` is on the event loop's clock."""

    def __init__(self, kube: Kube, request: Mapping, settings: Settings, deadline: float) -> None:
        self.kube, self.request, self.settings, self.deadline = kube, request, settings, deadline
        meta = request.get("metadata") or {}
        self.request_name = meta.get("name", "")
        self.request_namespace = meta.get("namespace", "")
        self.request_uid = meta.get("uid", "")

    def _check_namespace(self, namespace: str) -> None:
        if not self.settings.namespace_allowed(namespace):
            raise SourceError(
                f"namespace {namespace!r} may not use the wrap resolver: the cluster admin excluded it "
                "(allowed-namespaces / blocked-namespaces in the ConfigMap wrapresolver-config)",
                reason="NamespaceNotAllowed")

    async def pipeline(self, ref: PipelineRef, namespace: str) -> Fetched:
        namespace = namespace or self.request_namespace
        self._check_namespace(namespace)
        if ref.resolver:
            return await self._from_resolver(ref.resolver, list(ref.params), "Pipeline", namespace)
        return await self._by_name(PIPELINES, "Pipeline", ref.name, namespace)

    async def task(self, task_ref: Mapping, namespace: str) -> Fetched:
        namespace = namespace or self.request_namespace
        self._check_namespace(namespace)
        if task_ref.get("resolver"):
            return await self._from_resolver(str(task_ref["resolver"]), list(task_ref.get("params") or []),
                                             "Task", namespace)
        name = str(task_ref.get("name") or "")
        if not name:
            raise SourceError("a taskRef has neither name nor resolver; name the Task to use")
        return await self._by_name(TASKS, "Task", name, namespace)

    async def _by_name(self, resources: tuple[Resource, ...], kind: str, name: str, namespace: str) -> Fetched:
        for res in resources:
            try:
                obj = await self.kube.get(res, namespace, name)
            except KubeError as exc:
                if exc.status == 403:
                    raise SourceError(
                        f"the wrap resolver may not read {kind}s in namespace {namespace!r} ({exc.message}); "
                        "ask the cluster admin to grant it (see the ClusterRole in config/)",
                        reason="Forbidden") from None
                raise
            if obj is not None:
                meta = obj.get("metadata") or {}
                ref_source = {"uri": f"/apis/{res.group}/{res.version}/namespaces/{namespace}/{res.plural}/"
                                     f"{name}@{meta.get('uid', '')}",
                              "digest": {"sha256": content_digest(obj)}}
                return Fetched(obj=clean_object(obj), ref_source=ref_source)
        raise SourceError(f"{kind} {name!r} not found in namespace {namespace!r} (looked for tekton.dev/v1 and "
                          f"v1beta1); create it there or fix the name", reason="NotFound")

    async def _from_resolver(self, resolver: str, params: list, kind: str, namespace: str) -> Fetched:
        if resolver == RESOLVER_NAME:
            raise SourceError(
                f"the {kind} reference names the wrap resolver itself, which would resolve in a loop; "
                "point pipelineref (or the taskRef) at the resolver that holds the "
                f"{kind} (git, bundles, hub, http, cluster)", reason="ResolverLoop")
        name = child_request_name(resolver, self.request_uid, params)
        body = {
            "apiVersion": RESOLUTION_REQUESTS.api_version, "kind": "ResolutionRequest",
            "metadata": {"name": name, "namespace": namespace, "labels": {TYPE_LABEL: resolver},
                         "ownerReferences": [{
                             "apiVersion": RESOLUTION_REQUESTS.api_version, "kind": "ResolutionRequest",
                             "name": self.request_name, "uid": self.request_uid, "controller": True}]},
            "spec": {"params": params},
        }
        try:
            await self.kube.create(RESOLUTION_REQUESTS, namespace, body)
        except KubeError as exc:
            if exc.status == 403:
                raise SourceError(f"the wrap resolver may not create ResolutionRequests in {namespace!r} "
                                  f"({exc.message}); see the ClusterRole in config/", reason="Forbidden") from None
            if exc.status != 409:  # 409: another replica (or an earlier attempt) made it already
                raise
        child = await self._wait(namespace, name, resolver)
        status = child.get("status") or {}
        try:
            obj = safeyaml.load(base64.b64decode(status["data"], validate=True),
                                f"the answer of the {resolver} resolver to {namespace}/{name}")
        except LimitError as exc:
            raise SourceError(str(exc), reason=exc.reason) from None
        except (ValueError, safeyaml.YAMLError) as exc:
            raise SourceError(f"the {resolver} resolver answered {namespace}/{name} with data that is not "
                              f"base64 YAML: {exc}", reason="NestedResolutionFailed") from None
        if not isinstance(obj, dict) or obj.get("kind") != kind or not str(obj.get("apiVersion", "")).startswith("tekton.dev/"):
            got = f"{obj.get('apiVersion')} {obj.get('kind')}" if isinstance(obj, dict) else type(obj).__name__
            raise SourceError(f"the {resolver} resolver returned {got}, not a tekton.dev {kind}; "
                              "check the params that select the file", reason="NestedResolutionFailed")
        ref_source = status.get("refSource") or status.get("source") or {}
        return Fetched(obj=clean_object(obj), ref_source=dict(ref_source))

    async def _wait(self, namespace: str, name: str, resolver: str) -> dict:
        loop = asyncio.get_running_loop()
        for attempt in range(1_000_000):
            child = await self.kube.get(RESOLUTION_REQUESTS, namespace, name)
            status = (child or {}).get("status") or {}
            if child is not None and status.get("data"):
                return child
            failed = next((c for c in status.get("conditions") or []
                           if c.get("type") == "Succeeded" and c.get("status") == "False"), None)
            if failed:
                raise SourceError(f"the nested {resolver} resolver failed ({namespace}/{name}): "
                                  f"{failed.get('message') or failed.get('reason') or 'no message'}",
                                  reason="NestedResolutionFailed")
            remaining = self.deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.sleep(min(POLL_INTERVALS[min(attempt, len(POLL_INTERVALS) - 1)], remaining))
        raise SourceError(
            f"the nested {resolver} resolver did not answer ResolutionRequest {namespace}/{name} in time "
            f"(resolution-timeout {self.settings.resolution_timeout:g}s); check that the {resolver} resolver "
            "is installed and enabled, and its logs", reason="NestedResolutionTimeout")
