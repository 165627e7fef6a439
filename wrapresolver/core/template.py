"""Target templating: one `target` param becomes one storage location per wrapped workspace.

Tekton substitutes `$(context.pipelineRun.*)` in resolver params before it creates the
request, so those usually arrive as values. When they do not (a request created by hand,
`wrapresolver render` offline), they stay in the text: the rewrite puts the target into the
args of steps inside embedded task specs, where Tekton substitutes them at run time.
"""

from __future__ import annotations

import difflib
import re
from typing import TYPE_CHECKING

from wrapresolver.errors import ParamError

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


RUN_CONTEXT_VARIABLES = (
    "context.pipelineRun.name", "context.pipelineRun.namespace", "context.pipelineRun.uid", "context.pipeline.name",
)
"""The context variables a target may hold: Tekton's list for a Pipeline (`validatePipelineContextVariables`
in `pkg/apis/pipeline/v1/pipeline_validation.go`) less `context.pipelineTask.retries`, which is one
task's and is replaced only in pipeline task params. The same for every task of the run, so every
task stores and fetches at the same place."""
_PER_TASK_PREFIXES = ("context.taskRun.", "context.task.", "context.pipelineTask.")
_VARIABLE_RE = re.compile(r"\$\(([^()]*)\)")
_PARAM_NAME_RE = re.compile(r"""^params(?:\.([^.\[]+)|\[["']([^"']+)["']\])""")


def check_variables(what: str, template: str, *, from_config: bool = False) -> None:
    """Refuse a `$(...)` in a target or base that the run will not replace with one value.

    Tekton replaces `$(params.x)` in resolver params with the PipelineRun's own params
    before it asks (tekton-facts §2), so one that arrives here is a param the run does not
    set: left alone it would reach the steps literally, or be replaced inside each embedded
    Task by that Task's own param of the same name. `what` names the param in the message;
    `from_config`: the value is a ConfigMap default, which Tekton never substitutes.
    """
    for match in _VARIABLE_RE.finditer(template):
        expression = match.group(1).strip()
        if expression in RUN_CONTEXT_VARIABLES:
            continue
        shown_ = match.group(0)
        param = _PARAM_NAME_RE.match(expression)
        if param and from_config:
            raise ParamError(
                f"{what} holds `{shown_}`, which nothing replaces: Tekton replaces `$(params.x)` "
                f"only in the PipelineRun's own pipelineRef params, and the resolver fills in only "
                f"the run's context in a ConfigMap default; set `target` in the PipelineRun "
                f"(where `$(params.x)` works), or remove `{shown_}` from the default"
            )
        if param:
            name = param.group(1) or param.group(2)
            raise ParamError(
                f"{what} holds `{shown_}`, but the PipelineRun does not set param {name!r}: Tekton "
                f"replaces `$(params.x)` in resolver params only with the PipelineRun's own "
                f"`spec.params` (not the Pipeline's defaults); add {name!r} to the PipelineRun's "
                f"`spec.params`, or write its value into the {what.split('`')[1]}"
            )
        if expression.startswith(_PER_TASK_PREFIXES):
            raise ParamError(
                f"{what} holds `{shown_}`, which differs from task to task, so each task would "
                f"store and fetch the workspace at a different place; use "
                f"$(context.pipelineRun.name) or $(context.pipelineRun.uid) to make it run-unique"
            )
        known = ", ".join(f"$({v})" for v in RUN_CONTEXT_VARIABLES)
        if expression.startswith("context."):
            close = difflib.get_close_matches(expression, RUN_CONTEXT_VARIABLES, n=1, cutoff=0.6)
            hint = f" (did you mean `$({close[0]})`?)" if close else ""
            raise ParamError(
                f"{what} holds `{shown_}`, which is not a Tekton context variable{hint}; a target "
                f"may use {known}"
            )
        raise ParamError(
            f"{what} holds `{shown_}`, which Tekton does not replace in resolver params; a target "
            f"may use `$(params.x)` of the PipelineRun's params and {known}"
        )


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
