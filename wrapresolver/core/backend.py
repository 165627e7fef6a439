"""The resolver half of a storage backend: what the rewrite asks of it, pure.

A backend is a `Backend` instance registered under the entry-point group
`wrapresolver.backends` (see `wrapresolver.backends.registry`). The resolver only calls the
methods below, which do no I/O and import no client library; the step half starts at
`open`, which the injected steps call (see `wrapresolver.backends.base`).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, Protocol

from wrapresolver.core import oci_image
from wrapresolver.core.values import TEKTON_VARIABLE, StepRequirements
from wrapresolver.errors import ParamError

_OBJECT_NAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


class Backend(ABC):
    """One storage backend. Instances are stateless and cheap; `BACKEND = MyBackend()`."""

    name: ClassVar[str]
    """The name users write in the `backend` param and the entry point's name."""
    schemes: ClassVar[tuple[str, ...]] = ()
    """Target schemes that select this backend (`s3` for `s3://...`)."""
    options: ClassVar[Mapping[str, str]] = {}
    """Backend options the resolver accepts as params: name -> one-line description."""

    # ---- resolver half: pure ----
    def validate_target(self, target: str) -> None:
        """Raise `ParamError` if `target` (workspace already substituted) cannot work.

        `target` may still hold `$(context.pipelineRun.*)` or `$(params.*)`: accept those.
        """

    def validate_options(self, options: Mapping[str, str]) -> dict[str, str]:
        """Check and normalise backend options; unknown names are an error."""
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            known = ", ".join(sorted(self.options)) or "none"
            raise ParamError(
                f"unknown param(s) {', '.join(unknown)} for backend {self.name!r}; "
                f"its options are: {known}"
            )
        # Options that name a Secret or a ConfigMap (`credentials-secret`, `ca-configmap`, ...)
        # must be object names in the PipelineRun's namespace: checked once, here.
        for name, value in options.items():
            kind = "Secret" if name.endswith("-secret") else "ConfigMap" if name.endswith("-configmap") else ""
            if kind and value and not TEKTON_VARIABLE.search(value) and not _OBJECT_NAME.match(value):
                raise ParamError(
                    f"param `{name}` must name a {kind} in the PipelineRun's namespace: "
                    f"{value!r} is not a valid Kubernetes {kind} name (lowercase letters, "
                    f"digits, '-' and '.', at most 253 characters)"
                )
        # `compression` means the same for every layered backend: checked once, here.
        if options.get("compression"):
            oci_image.layer_media_type(options["compression"])  # the one list of compressions
        return dict(options)

    def step_requirements(self, options: Mapping[str, str]) -> StepRequirements:
        """Env, Secret volumes and mounts the injected steps need (pure)."""
        return StepRequirements()

    # ---- step half ----
    @abstractmethod
    def open(self, target: str, options: Mapping[str, str]) -> Any:
        """Connect to the storage at `target`; only the injected steps call this.

        Return a `wrapresolver.backends.base.BlobStore` (the layered data path is put
        around it) or a `WorkspaceStore` (a whole-directory backend). Import client
        libraries here, never at module top, so the controller needs none of them.
        """


class Backends(Protocol):
    """Finds a backend by the name of the `backend` param or by a target's scheme.

    The resolver core is handed one (`wrapresolver.backends.registry.REGISTRY`) instead of
    importing the registry, so it stays free of entry points and plugin imports.
    """

    def by_name(self, name: str) -> Backend: ...

    def by_scheme(self, scheme: str) -> Backend: ...
