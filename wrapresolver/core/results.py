"""Results for Tekton Chains: the states each injected step moved (pure).

Every injected step reports the states it moved as Tekton Chains type-hinted object
results, declared here in the task's own spec: `wrap-<W>-ARTIFACT_INPUTS` (one per state
a fetch may merge, `wrap-<W>-<i>-ARTIFACT_INPUTS` after the first) and
`wrap-<W>-ARTIFACT_OUTPUTS` (what a store or publish wrote; a store that publishes writes
the published target, a manifest of its own, to `wrap-<W>-published-ARTIFACT_OUTPUTS`).
The published target's value also carries `isBuildArtifact: "true"` (not a declared
property: Tekton requires the declared keys of an object result and keeps any other), the
mark Chains' slsa/v2alpha4 reads to make it a subject. Nothing references them, so they
add no edge to the DAG and a skipped producer skips no one. All results of a pod share
Tekton's 4096-byte termination message with the user's results and Tekton's own
data: ours get at most RESULTS_BUDGET bytes per task, outputs first, and what does not
fit is not declared (the step then writes nothing for it).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

from wrapresolver.core import plan as planning
from wrapresolver.core.stepspec import WorkspaceTransfer

RESULT_INPUTS = "ARTIFACT_INPUTS"
RESULT_OUTPUTS = "ARTIFACT_OUTPUTS"
RESULTS_BUDGET = 2048
"""Bytes of termination message the injected results of one task may take at most."""
_RESULT_OVERHEAD = 140
"""Per result in the termination message besides name and uri: the digest (71), the JSON
object (escaped inside a string) and Tekton's `{"key", "value", "type"}` entry around it."""
_BUILD_ARTIFACT_OVERHEAD = 30
"""The published target's `,"isBuildArtifact":"true"`, escaped inside the termination message."""
_UID_LENGTH = 36
_UNSAFE_RESULT = re.compile(r"[^A-Za-z0-9_.-]")


def declare_results(
    task_spec: dict, fetches: Sequence[WorkspaceTransfer], stores: Sequence[WorkspaceTransfer],
    publish_task: bool = False,
) -> tuple[list[WorkspaceTransfer], list[WorkspaceTransfer]]:
    """Declare the results of the injected steps in `task_spec`; the transfers told where to write.

    A store writes its producer state, and when it publishes, the published target (a
    manifest of its own) second; the publish task writes the target only.
    """
    taken = {str(r.get("name")) for r in task_spec.get("results") or [] if planning.is_map(r)}
    budget = RESULTS_BUDGET
    wanted: list[tuple[str, str, int, str]] = []  # (kind, workspace, slot, uri estimate), outputs first
    for s in stores:
        wanted.append(("store", s.workspace, 0, s.target if publish_task else _state_uri_estimate(s)))
        if s.publish and not publish_task:
            wanted.append(("store", s.workspace, 1, s.target))
    for s in fetches:
        slots = len(s.inputs) or (1 if s.base else 0)
        uri = _state_uri_estimate(s) if s.inputs else s.base
        wanted.extend(("fetch", s.workspace, slot, uri) for slot in range(slots))
    granted: dict[tuple[str, str], list[str]] = {}
    declarations: list[tuple[str, str, int, dict]] = []
    for kind, ws, slot, uri in wanted:
        mine = granted.get((kind, ws))
        if (len(mine) if mine else 0) != slot:
            continue  # slots stay in order: a step writes its n-th artifact to its n-th path
        suffix = RESULT_OUTPUTS if kind == "store" else RESULT_INPUTS
        nth = ("-published" if kind == "store" else f"-{slot + 1}") if slot else ""
        stem = f"wrap-{_safe(ws)}{nth}"
        name = f"{stem}-{suffix}"
        if name in taken:
            name = _result_name(stem, suffix, taken)
        cost = len(name) + len(uri) + _RESULT_OVERHEAD
        if kind == "store" and (slot == 1 or publish_task):
            cost += _BUILD_ARTIFACT_OVERHEAD
        if cost > budget:
            continue
        budget -= cost
        taken.add(name)
        granted.setdefault((kind, ws), []).append(f"$(results.{name}.path)")
        declarations.append((kind, ws, slot, {
            "name": name,
            "type": "object",
            "properties": {"uri": {"type": "string"}, "digest": {"type": "string"}},
        }))
    if declarations:
        order = {"fetch": 0, "store": 1}
        declarations.sort(key=lambda d: (order[d[0]], d[1], d[2]))
        task_spec.setdefault("results", []).extend(d[3] for d in declarations)

    def told(s: WorkspaceTransfer, kind: str) -> WorkspaceTransfer:
        paths = granted.get((kind, s.workspace))
        return s.with_results(paths) if paths else s

    return [told(s, "fetch") for s in fetches], [told(s, "store") for s in stores]


def _state_uri_estimate(s: WorkspaceTransfer) -> str:
    """As long as the uri of a producer state can be, the run uid in place of its variable."""
    return f"{s.target}:wrap-{'u' * max(len(s.run), _UID_LENGTH)}-{s.task}"


@functools.lru_cache(maxsize=1024)
def _safe(workspace: str) -> str:
    return _UNSAFE_RESULT.sub("-", workspace)


def _result_name(stem: str, suffix: str, taken: set[str]) -> str:
    name, n = f"{stem}-{suffix}", 2
    while name in taken:
        name, n = f"{stem}-r{n}-{suffix}", n + 1
    return name
