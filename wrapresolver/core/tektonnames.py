"""The names Tekton gives the objects it makes, computed the way its controller computes them.

A per-task answer (core.pertask) makes Tekton resolve every wrapped task on its own, and
Tekton's PipelineRun reconciler resolves a run's tasks one at a time: it stops at the first
ResolutionRequest still in progress and comes back when that request changes. Answered one
by one, a 2,000-task Pipeline would wait for 2,000 of those rounds before its first TaskRun.
A request Tekton finds already answered under the name it would have given it costs no
round, so the controller creates the requests, answered, under these names
(controller.taskrequests).

Both names are Tekton's and Knative's, read from their sources (tektoncd/pipeline
`pkg/resolution/resource/name.go` `GenerateDeterministicNameFromSpec`,
`pkg/reconciler/pipelinerun/resources/pipelinerunresolution.go` `GetTaskRunName`, and
knative.dev/pkg `kmeta.ChildName`). Getting one wrong costs speed, never correctness:
Tekton then makes its own request, and the controller answers it as any other.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence

NAME_MAX = 63
"""A DNS-1123 label, which request and TaskRun names must be."""
_FNV128_OFFSET = 0x6C62272E07BB014262B821756295C58D
_FNV128_PRIME = 0x0000000001000000000000000000013B
_MASK128 = (1 << 128) - 1
_MD5_HEX = 32


def _fnv1a_128(data: bytes, state: int = _FNV128_OFFSET) -> int:
    for byte in data:
        state = ((state ^ byte) * _FNV128_PRIME) & _MASK128
    return state


def resolution_request_name(resolver: str, namespace: str, name: str, params: Sequence[Mapping]) -> str:
    """The name of the ResolutionRequest Tekton creates for `name` (a run's or TaskRun's) in `namespace`."""
    return deterministic_name(resolver, f"{namespace}/{name}", params)


def deterministic_name(prefix: str, base: str, params: Sequence[Mapping]) -> str:
    """Tekton's `GenerateDeterministicName`: FNV-128a over `base`, then each param's name and
    value, sorted by name (strings as they are, arrays and objects as compact JSON), after
    `prefix-`, the prefix cut so that the whole hash always fits 63 characters."""
    state = _fnv1a_128(base.encode())
    for param in sorted(params, key=lambda p: str(p.get("name", ""))):
        state = _fnv1a_128(str(param.get("name", "")).encode(), state)
        value = param.get("value", "")
        text = value if isinstance(value, str) else json.dumps(value, separators=(",", ":"), sort_keys=True)
        state = _fnv1a_128(text.encode(), state)
    digest = f"{state:032x}"
    return f"{prefix[:NAME_MAX - len(digest) - 1]}-{digest}"


def task_run_name(pipelinerun: str, task: str) -> str:
    """The name of the TaskRun of pipeline task `task` before it exists: `<run>-<task>`, hashed when too long."""
    return child_name(pipelinerun, f"-{task}")


def child_name(parent: str, suffix: str) -> str:
    """Knative's `kmeta.ChildName`: `parent + suffix`, or a shortened parent and an MD5 when that is too long."""
    if len(parent) <= NAME_MAX - len(suffix):
        return parent + suffix
    head = NAME_MAX - _MD5_HEX
    if head - len(suffix) <= 0:
        digest = hashlib.md5((parent + suffix).encode(), usedforsecurity=False).hexdigest()
        out = parent[:head] + digest
        if len(out) < NAME_MAX:
            out += suffix[:NAME_MAX - len(out)]
        return _valid_end(out)
    return parent[:head - len(suffix)] + hashlib.md5(parent.encode(), usedforsecurity=False).hexdigest() + suffix


def _valid_end(name: str) -> str:
    """A DNS-1123 name ends in a letter or digit: what a cut left after that goes."""
    while name and not name[-1].isalnum():
        name = name[:-1]
    return name
