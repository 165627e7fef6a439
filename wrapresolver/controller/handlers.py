"""kopf wiring, and nothing else of substance: what to watch, how to log in, when to answer.

Only `on.event` is used on ResolutionRequests: kopf then keeps no progress or diff-base
state on them (no annotations) and adds no finalizer, and it still lists every existing
request on start, which is how requests created while the controller was down get answered.
Retries and idempotency live in `answer`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import kopf

from wrapresolver.controller import answer as answering
from wrapresolver.controller import signing
from wrapresolver.controller.cluster_source import TYPE_LABEL
from wrapresolver.controller.config import LiveConfig
from wrapresolver.controller.health import Health
from wrapresolver.controller.kube import RESOLUTION_REQUESTS, Credentials, HttpKube
from wrapresolver.controller.retention import Reaper
from wrapresolver.core.lifecycle import LABEL_STORAGE, LABEL_STORAGE_VALUE
from wrapresolver.core.params import RESOLVER_NAME as OUR_TYPE

log = logging.getLogger("wrapresolver.controller")


def build_registry() -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()
    group, version, plural = RESOLUTION_REQUESTS.group, RESOLUTION_REQUESTS.version, RESOLUTION_REQUESTS.plural

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
        settings.posting.enabled = False  # our own Events go to the PipelineRun, not kopf's chatter
        settings.peering.standalone = True  # replicas are independent and idempotent; peering would pause them
        settings.scanning.disabled = True  # no CRD watch, so no RBAC on customresourcedefinitions
        settings.watching.label_selectors[group, plural] = f"{TYPE_LABEL}={OUR_TYPE}"
        settings.watching.server_timeout = 290
        settings.watching.client_timeout = 300
        settings.networking.request_timeout = 60
        settings.queueing.idle_timeout = 30
        # kopf waits this long after an event for more events of the same object before
        # handling it (default 0.1 s). A request needs one answer as soon as it exists, and
        # the only later event is our own status write, so debouncing only adds latency.
        settings.queueing.batch_window = 0.01
        settings.watching.label_selectors["tekton.dev", "pipelineruns"] = f"{LABEL_STORAGE}={LABEL_STORAGE_VALUE}"
        runtime = memo.runtime
        runtime.signing_key = await signing.load_key(runtime.kube, runtime.config.namespace)
        memo.config_task = asyncio.create_task(runtime.config.run(), name="wrapresolver-config-watch")

    @kopf.on.login(registry=registry)
    async def login(memo: kopf.Memo, **_: Any) -> kopf.ConnectionInfo:
        creds: Credentials = memo.creds
        token = creds.token
        if creds.token_file:
            token = (await asyncio.to_thread(Path(creds.token_file).read_text)).strip()
        return kopf.ConnectionInfo(
            server=creds.server, token=token or None, ca_path=creds.ca_path or None, insecure=creds.insecure,
            certificate_path=creds.cert_path or None, private_key_path=creds.key_path or None,
            default_namespace=creds.namespace or None)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(memo: kopf.Memo, **_: Any) -> None:
        task = memo.get("config_task")
        if task:
            task.cancel()
        await memo.reaper.close()
        await memo.runtime.kube.close()

    @kopf.on.event(group, version, plural, labels={TYPE_LABEL: OUR_TYPE}, registry=registry)
    async def resolution_request(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        if type == "DELETED":
            return
        await answering.answer(memo.runtime, body)

    @kopf.on.event("tekton.dev", "v1", "pipelineruns", labels={LABEL_STORAGE: LABEL_STORAGE_VALUE}, registry=registry)
    async def pipelinerun(type: str | None, body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
        """Ended or deleted: that run's intermediate states go, as its retention says."""
        await memo.reaper.on_event(type, body)

    return registry


def peering_identity(environ: Mapping[str, str] | None = None) -> str:
    """Who this replica is, told to kopf so that it never looks the user up.

    kopf's own default is `user@host/...` from `getpass.getuser()`, which needs `USER` or
    `LOGNAME` in the environment or a passwd entry for the UID; a container running as
    an arbitrary UID (the image's 65532, OpenShift's random UIDs) has neither and kopf
    crashes before any handler runs. The Pod's name (downward API `POD_NAME`) names a
    replica uniquely; outside a Pod the host name and process id do.
    """
    env = os.environ if environ is None else environ
    pod = (env.get("POD_NAME") or "").strip()
    if pod:
        return pod
    return f"{socket.gethostname() or 'localhost'}/{os.getpid()}"


async def run(creds: Credentials, *, config_namespace: str, namespaces: list[str],
              health_address: str | None, stop_flag: asyncio.Event | None = None) -> None:
    """Run until stopped; `health_address` (host:port) serves /healthz and /readyz (controller/health.py)."""
    kube = HttpKube(creds)
    runtime = answering.Runtime(kube=kube, config=LiveConfig(kube, config_namespace))
    memo = kopf.Memo(creds=creds, runtime=runtime, reaper=Reaper(kube, runtime))
    health = Health(kube, runtime.config, namespaces, f"{TYPE_LABEL}={OUR_TYPE}")
    server = await health.serve(health_address) if health_address else None
    try:
        await kopf.operator(
            registry=build_registry(), memo=memo, standalone=True,
            identity=peering_identity(),  # type: ignore[arg-type]  # kopf.Identity: a NewType of str
            clusterwide=not namespaces, namespaces=namespaces,
            ready_flag=health.started, stop_flag=stop_flag)
    finally:
        if server is not None:
            await server.cleanup()
