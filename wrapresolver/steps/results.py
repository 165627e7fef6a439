"""The injected steps' Tekton results: the states a step consumed or stored, for Tekton Chains.

The rewrite declares `*ARTIFACT_INPUTS` / `*ARTIFACT_OUTPUTS` object results and hands each
step the files to write (`WorkspaceTransfer.results`, Tekton's `$(results.<name>.path)`).
Each file gets one `Artifact` as compact JSON (`{"digest":..,"uri":..}`): Chains' object
type hint, so the states show as materials of the consuming TaskRun and subjects or
by-products of the producing one. Slots beyond the artifacts stay unwritten (Tekton
accepts an unwritten result nobody references); artifacts beyond the slots are counted in
the log line, never written past the declared names.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from wrapresolver.core.values import Artifact


def write_results(paths: Sequence[str], artifacts: Sequence[Artifact]) -> str:
    """Write one artifact per declared result file; a note for the log when some did not fit."""
    for path, artifact in zip(paths, artifacts, strict=False):
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(target.name + ".tmp")
        tmp.write_text(artifact.to_result())
        tmp.replace(target)
    left = len(artifacts) - len(paths)
    if paths and left > 0:
        return f"{left} more input state(s) than declared results, not reported to Chains"
    return ""
