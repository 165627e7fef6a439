"""The controller's probes, told apart: `/healthz` (liveness) and `/readyz` (readiness).

Readiness is the ability to serve now: kopf has finished starting, its watch of
ResolutionRequests is running (for every namespace served), and the API server answers a
list of them (the verb, scope and label selector of that watch) with this identity. A
replica that is not ready is left out of a rollout's count, so `kubectl rollout status`
waits for a replica that really answers.

Liveness is whether the process still runs its event loop: an answer at all. An API
server that is down or refusing is not a reason to restart (the watch reconnects on its
own, and a restart would not give it permissions), so liveness ignores it. A watch that
keeps failing is kopf's to end: it retries a refused list with its backoffs (about a
minute), then stops the whole operator, and the process exits with that error.

kopf does not expose its watchers; they are its asyncio tasks named `watcher for
<resource>@<namespace>` (kopf 1.x, which `pyproject.toml` pins). If a kopf release renamed
them, readiness would never turn true and the controller tests would say so.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from wrapresolver.controller.config import LiveConfig
from wrapresolver.controller.kube import RESOLUTION_REQUESTS, HttpKube, KubeError

log = logging.getLogger("wrapresolver.controller.health")

WATCHER_TASK = "watcher for "
CHECK_TIMEOUT = 3.0
"""Seconds the readiness list may take: under the Deployment's probe timeout (5 s)."""
MAX_AGE = 5.0
"""Seconds a readiness answer is reused, so that frequent probes cost one list."""


class ProbeAddressError(Exception):
    """The probes' host:port cannot be listened on (taken, or not ours to bind)."""


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str


def _watchers(plural: str) -> list[asyncio.Task]:
    return [t for t in asyncio.all_tasks()
            if t.get_name().startswith(WATCHER_TASK) and t.get_name()[len(WATCHER_TASK):].startswith(f"{plural}.")]


def _ended(task: asyncio.Task) -> str:
    if task.cancelled():
        return f"{task.get_name()} was cancelled"
    error = task.exception()
    return f"{task.get_name()} ended: {type(error).__name__}: {error}" if error else f"{task.get_name()} ended"


@dataclass
class Health:
    """What the two endpoints say; `started` is set by kopf when its startup handlers are done."""

    kube: HttpKube
    config: LiveConfig
    namespaces: Sequence[str]
    label_selector: str
    started: asyncio.Event = field(default_factory=asyncio.Event)
    _cached: tuple[float, Verdict] | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    _last_ready: bool | None = None

    async def readiness(self) -> Verdict:
        verdict = await self._readiness()
        if verdict.ok != self._last_ready:
            (log.info if verdict.ok else log.warning)(
                "ready" if verdict.ok else "not ready", extra={"reason": verdict.reason})
            self._last_ready = verdict.ok
        return verdict

    async def _readiness(self) -> Verdict:
        if not self.started.is_set():
            return Verdict(False, "starting: kopf's startup handlers have not finished")
        watchers = _watchers(RESOLUTION_REQUESTS.plural)
        expected = len(self.namespaces) or 1
        if len(watchers) < expected:
            return Verdict(False, "starting: the watch of ResolutionRequests is not running yet")
        ended = [_ended(t) for t in watchers if t.done()]
        if ended:
            return Verdict(False, "; ".join(ended))
        async with self._lock:
            now = time.monotonic()
            if self._cached is None or now - self._cached[0] >= MAX_AGE:
                self._cached = (now, await self._api_answers())
            return self._cached[1]

    async def _api_answers(self) -> Verdict:
        scopes: list[str | None] = list(self.namespaces) or [None]
        for namespace in scopes:
            where = f" in namespace {namespace}" if namespace else ""
            try:
                await asyncio.wait_for(
                    self.kube.list_page(RESOLUTION_REQUESTS, namespace, label_selector=self.label_selector, limit=1),
                    CHECK_TIMEOUT)
            except KubeError as exc:
                return Verdict(False, f"the API server refused to list ResolutionRequests{where}: {exc}; "
                                      f"check the controller's RBAC (config/rbac.yaml)")
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                return Verdict(False, f"the API server {self.kube.creds.server} did not answer a list of "
                                      f"ResolutionRequests{where}: {type(exc).__name__}: {exc}")
        return Verdict(True, "watching ResolutionRequests " + (
            f"in {', '.join(self.namespaces)}" if self.namespaces else "in every namespace"))

    # ---- HTTP ----
    async def _healthz(self, _: web.Request) -> web.Response:
        """Answered by the event loop, so an answer is the proof; it also says which settings are in use."""
        return web.json_response({"alive": True, "configResourceVersion": self.config.current.resource_version or "none"})

    async def _readyz(self, _: web.Request) -> web.Response:
        verdict = await self.readiness()
        return web.json_response({"ready": verdict.ok, "reason": verdict.reason}, status=200 if verdict.ok else 503)

    async def serve(self, address: str) -> web.AppRunner:
        """Listen on `host:port`; stop with `runner.cleanup()`."""
        host, _, port = address.rpartition(":")
        app = web.Application()
        app.add_routes([web.get("/healthz", self._healthz), web.get("/readyz", self._readyz)])
        runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        try:
            await web.TCPSite(runner, host or "0.0.0.0", int(port)).start()
        except OSError as exc:
            await runner.cleanup()
            raise ProbeAddressError(f"cannot serve the probes on {address}: {exc}") from exc
        return runner
