"""Names Tekton would reject, rejected first, in the author's terms.

Tekton validates a Pipeline only after the resolver answered; a name it refuses then shows
up as a generic validation failure of the resolved object, far from the cause. Checked here,
before the plan is built (the plan keys everything by pipeline task name, so duplicates
would also silently merge two tasks' bindings).

Pure: no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from wrapresolver.core.limits import shown
from wrapresolver.errors import RewriteError

DNS_LABEL_MAX = 63
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")


def is_dns_label(name: str) -> bool:
    """RFC 1123 label, as Kubernetes checks it: what Tekton requires of pipeline task names."""
    return len(name) <= DNS_LABEL_MAX and _DNS_LABEL.fullmatch(name) is not None


def check_pipeline_task_names(pipeline: Mapping[str, Any], pipeline_name: str) -> None:
    """Every entry of `tasks` and `finally` has a unique DNS-label name, or `RewriteError`.

    Also the shape of `spec.workspaces` (a list of objects with a name), which everything
    after this relies on.
    """
    spec = pipeline.get("spec")
    if not isinstance(spec, Mapping):
        return
    workspaces = spec.get("workspaces")
    if workspaces is not None:
        if not isinstance(workspaces, list) or not all(
            isinstance(ws, Mapping) and isinstance(ws.get("name"), str) for ws in workspaces
        ):
            raise RewriteError(
                f"Pipeline {pipeline_name!r}: `spec.workspaces` must be a list of workspaces, each "
                f"with a `name`"
            )
    seen: dict[str, str] = {}
    for section in ("tasks", "finally"):
        entries = spec.get(section)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise RewriteError(f"Pipeline {pipeline_name!r}: `spec.{section}` must be a list of pipeline tasks")
        for index, task in enumerate(entries):
            where = f"spec.{section}[{index}]"
            if not isinstance(task, Mapping):
                raise RewriteError(f"Pipeline {pipeline_name!r}: {where} is not a pipeline task (an object)")
            name = task.get("name")
            if not isinstance(name, str) or not name:
                raise RewriteError(f"Pipeline {pipeline_name!r}: {where} has no `name`")
            if not is_dns_label(name):
                raise RewriteError(
                    f"Pipeline {pipeline_name!r}: pipeline task name {shown(name)} ({where}) is not "
                    f"a DNS label (lowercase letters, digits and '-', starting and ending with a "
                    f"letter or digit, at most {DNS_LABEL_MAX} characters); Tekton rejects it"
                )
            if name in seen:
                raise RewriteError(
                    f"Pipeline {pipeline_name!r}: two pipeline tasks are named {name!r} "
                    f"({seen[name]} and {where}); Tekton requires unique names, rename one"
                )
            seen[name] = where
