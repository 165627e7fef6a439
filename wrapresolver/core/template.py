"""Target templating: one `target` param becomes one storage location per wrapped workspace.

Tekton substitutes `$(context.pipelineRun.*)` in resolver params before it creates the
request, so those usually arrive as values. When they do not (a request created by hand,
`wrapresolver render` offline), they stay in the text: the rewrite puts the target into the
args of steps inside embedded task specs, where Tekton substitutes them at run time.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # pragma: no cover - params imports this module
    from wrapresolver.core.params import RunContext

WORKSPACE_PLACEHOLDERS = ("<<workspace>>", "{{workspace}}")
"""`<<workspace>>` is ours; `{{workspace}}` is the spelling of the earlier wrap resolver."""
PIPELINE_PLACEHOLDER = "<<pipeline>>"
"""The resolved Pipeline's `metadata.name`. Tekton replaces `$(context.pipeline.name)` in
resolver params with "" (the Pipeline is not fetched yet: tekton-facts §2), so a target
stable per Pipeline needs the resolver to fill it in."""
PIPELINE_STAND_IN = "pipeline"
"""What `<<pipeline>>` is checked as before the Pipeline is known (a valid path component)."""
KNOWN_PLACEHOLDERS = (*WORKSPACE_PLACEHOLDERS, PIPELINE_PLACEHOLDER)

RUN_UID_VARIABLE = "$(context.pipelineRun.uid)"

_PLACEHOLDER_RE = re.compile(r"<<[^<>]*>>|\{\{[^{}]*\}\}")
"""Anything spelled like a placeholder: a misspelt one must not become part of a storage key."""

_CONTEXT_RE = re.compile(r"\$\(context\.pipelineRun\.(name|namespace|uid)\)")
_SCHEME_RE = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://(.*)$", re.DOTALL)


def has_workspace_placeholder(template: str) -> bool:
    return any(p in template for p in WORKSPACE_PLACEHOLDERS)


def unknown_placeholders(template: str, known: tuple[str, ...] = KNOWN_PLACEHOLDERS) -> list[str]:
    """Placeholder-like parts of `template` that are not ours (`<<wrkspace>>`), in order."""
    return [m.group(0) for m in _PLACEHOLDER_RE.finditer(template) if m.group(0) not in known]


def expand_target(template: str, workspace: str, context: RunContext) -> str:
    """The storage location of `workspace`; unknown Tekton variables are left for Tekton.

    `<<pipeline>>` becomes the context's Pipeline name, or a stand-in while it is not known
    (the params are checked before the Pipeline is fetched; resolve fills it in after).
    """
    out = template
    for placeholder in WORKSPACE_PLACEHOLDERS:
        out = out.replace(placeholder, workspace)
    # Known once the Pipeline is fetched (resolve sets it); before, only shapes are checked.
    out = out.replace(PIPELINE_PLACEHOLDER, getattr(context, "pipeline", "") or PIPELINE_STAND_IN)

    def context_value(match: re.Match[str]) -> str:
        value = getattr(context, match.group(1))
        return value if value else match.group(0)

    return _CONTEXT_RE.sub(context_value, out)


def split_scheme(target: str) -> tuple[str, str]:
    """`("s3", "bucket/key")` for `s3://bucket/key`; `("", target)` without a scheme.

    A target without a scheme (`registry.example/ci/cache:tag`) is an OCI reference; the
    caller decides that, so this stays a plain split.
    """
    match = _SCHEME_RE.match(target)
    if not match:
        return "", target
    return match.group(1).lower(), match.group(2)


def run_id(context: RunContext) -> str:
    """The run-unique part of stored references.

    The uid rather than the name: names are reused after a PipelineRun is deleted, uids
    never are. Unknown at resolution time, it is Tekton's variable, substituted inside the
    embedded task specs before the steps start.
    """
    return context.uid or RUN_UID_VARIABLE
