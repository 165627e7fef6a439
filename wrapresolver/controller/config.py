"""The live settings from the ConfigMap `wrapresolver-config` in the controller's namespace.

The ConfigMap is watched, not read at start: a change applies to the next request without
a restart. A missing or partly invalid ConfigMap never stops the controller; the invalid key
is logged and its default used.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from wrapresolver.controller.kube import CONFIGMAPS, Kube
from wrapresolver.core.checks import unknown_config_notices
from wrapresolver.core.locations import parse_allowed_targets
from wrapresolver.core.params import (
    CONFIG_ALLOWED_NAMESPACES,
    CONFIG_ALLOWED_TARGETS,
    CONFIG_BLOCKED_NAMESPACES,
    CONFIG_LOG_LEVEL,
    CONFIG_RESOLUTION_TIMEOUT,
    CONFIGMAP_NAME,
)
from wrapresolver.resolve import backend_option_names

DEFAULT_RESOLUTION_TIMEOUT = 60.0
"""Tekton fails a request after its own global timeout (1 minute by default) anyway."""

log = logging.getLogger("wrapresolver.controller.config")

_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_duration(text: str) -> float:
    """Seconds from a Go-style duration ("90s", "1m30s") or a plain number of seconds."""
    text = text.strip()
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return float(text)
    if not text or _DURATION.sub("", text):
        raise ValueError(f"{text!r} is not a duration like 60s, 2m or 1m30s")
    return sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(text))


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(",") if n.strip())


@dataclass(frozen=True)
class Settings:
    data: Mapping[str, str] = field(default_factory=dict)
    """The whole ConfigMap: `resolve` reads `default-<param>` and `step-image` from it."""
    allowed_namespaces: tuple[str, ...] = ()
    blocked_namespaces: tuple[str, ...] = ()
    resolution_timeout: float = DEFAULT_RESOLUTION_TIMEOUT
    log_level: str = "INFO"
    resource_version: str = ""

    @classmethod
    def from_configmap(cls, configmap: Mapping | None) -> Settings:
        data = {str(k): str(v) for k, v in ((configmap or {}).get("data") or {}).items()}
        timeout = DEFAULT_RESOLUTION_TIMEOUT
        if data.get(CONFIG_RESOLUTION_TIMEOUT, "").strip():
            try:
                timeout = parse_duration(data[CONFIG_RESOLUTION_TIMEOUT])
            except ValueError as exc:
                log.warning("%s: %s; using %ss", CONFIG_RESOLUTION_TIMEOUT, exc, timeout)
        for problem in parse_allowed_targets(data.get(CONFIG_ALLOWED_TARGETS))[1]:
            log.warning("%s", problem)
        level = data.get(CONFIG_LOG_LEVEL, "").strip().upper() or "INFO"
        if level not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            log.warning("%s: %r is not one of debug, info, warning, error; using info", CONFIG_LOG_LEVEL, level)
            level = "INFO"
        return cls(data=data, allowed_namespaces=_names(data.get(CONFIG_ALLOWED_NAMESPACES, "")),
                   blocked_namespaces=_names(data.get(CONFIG_BLOCKED_NAMESPACES, "")),
                   resolution_timeout=timeout, log_level=level,
                   resource_version=((configmap or {}).get("metadata") or {}).get("resourceVersion", ""))

    def namespace_allowed(self, namespace: str) -> bool:
        """Tekton's cluster-resolver rules: blocked wins; `*` blocks all but the allowed; an allow list is exclusive."""
        if namespace in self.blocked_namespaces:
            return False
        if namespace in self.allowed_namespaces:
            return True
        if "*" in self.blocked_namespaces:
            return False
        return not self.allowed_namespaces


class LiveConfig:
    """Holds the current Settings; `run()` keeps them in step with the ConfigMap."""

    def __init__(self, kube: Kube, namespace: str, name: str = CONFIGMAP_NAME) -> None:
        self.kube, self.namespace, self.name = kube, namespace, name
        self.current = Settings()

    def apply(self, configmap: Mapping | None) -> None:
        self.current = Settings.from_configmap(configmap)
        logging.getLogger("wrapresolver").setLevel(self.current.log_level)
        where = {"configmap": f"{self.namespace}/{self.name}"}
        log.info("configuration applied", extra={**where, "resourceVersion": self.current.resource_version or "none"})
        # Said once here, when the admin's change is taken; each resolution says it again
        # on the PipelineRun (core.checks), where authors look.
        for notice in unknown_config_notices(self.current.data, backend_option_names()):
            log.warning("%s", notice.message, extra={**where, "reason": notice.reason})

    async def run(self) -> None:
        async for kind, obj in self.kube.watch(CONFIGMAPS, self.namespace, field_selector=f"metadata.name={self.name}"):
            if kind == "LIST":
                self.apply(obj["items"][0] if obj["items"] else None)
            elif kind in ("ADDED", "MODIFIED"):
                self.apply(obj)
            elif kind == "DELETED":
                self.apply(None)
