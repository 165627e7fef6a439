"""The resolver params: parsed, merged with the ConfigMap defaults, validated, typed.

Param and config key names are the user-facing contract; they are constants here and
nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping

# ---- param names (DESIGN §4.1) ----
PARAM_PIPELINEREF = "pipelineref"
PARAM_WORKSPACES = "workspaces"
PARAM_TARGET = "target"
PARAM_BACKEND = "backend"
PARAM_BASE = "base"

# ---- ConfigMap keys (wrapresolver-config) ----
CONFIG_DEFAULT_PREFIX = "default-"  # default-<param> is the default of any param
CONFIG_STEP_IMAGE = "step-image"
CONFIG_ALLOWED_NAMESPACES = "allowed-namespaces"
CONFIG_BLOCKED_NAMESPACES = "blocked-namespaces"
CONFIG_RESOLUTION_TIMEOUT = "resolution-timeout"
CONFIG_LOG_LEVEL = "log-level"

DEFAULT_STEP_IMAGE = "ghcr.io/wrapresolver/wrapresolver:0.1.0"


@dataclass(frozen=True)
class PipelineRef:
    """Where the Pipeline comes from: a name in the request's namespace, or another resolver."""

    name: str = ""
    resolver: str = ""
    params: tuple[Mapping, ...] = ()
    """The nested resolver's params as Tekton writes them: [{name, value}, ...]."""


@dataclass(frozen=True)
class RunContext:
    """What is known about the PipelineRun that asked (from ownerReferences or a file)."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    pipelinerun: Mapping | None = None
    """The owning PipelineRun object when it could be read (for default workspaces)."""


@dataclass(frozen=True)
class WrapRequest:
    """A validated resolution request for the `wrap` resolver."""

    pipelineref: PipelineRef
    workspaces: tuple[str, ...]
    """Pipeline workspaces to wrap; empty means "decide from the PipelineRun" (see wrapped_workspaces)."""
    target: str
    """The target template, before `<<workspace>>` substitution."""
    backend: str
    """The backend name, from the `backend` param or the target's scheme."""
    base: str = ""
    options: Mapping[str, str] = field(default_factory=dict)
    """Backend options (every param that is not one of the names above)."""
    step_image: str = DEFAULT_STEP_IMAGE
    context: RunContext = field(default_factory=RunContext)
