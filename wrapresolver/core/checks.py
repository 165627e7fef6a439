"""What Tekton would refuse, refused at resolution; what is legal but likely a mistake, said (pure).

The rule: whatever a shared volume or Tekton itself would refuse, the resolver refuses at
the same moment or earlier, naming the thing and the fix. The wrapped Pipeline differs from
the original exactly where Tekton's later checks look: a task that binds a wrapped
workspace gets its Task embedded, and an embedded spec accepts any binding (Tekton
propagates it), so a typo Tekton would have refused when the TaskRun was created would pass
quietly. These checks mirror Tekton's own, read from its source:

- `pkg/apis/pipeline/v1/pipeline_validation.go` (`validateWorkspaces`): every binding of a
  pipeline task names a workspace the Pipeline declares, and a task binds a name once;
- `pkg/workspace/validate.go` (`ValidateBindings`, called from the TaskRun reconciler): a
  TaskRun of a referenced Task binds only names the Task declares. Tekton also refuses a
  required Task workspace left unbound, but a cluster's `default-task-run-workspace-binding`
  may bind it, which a resolver cannot see: that one is left to Tekton.

What is legal but probably not meant travels out as `Notice` values (never printed here):
`render` writes them to stderr, the controller as Warning Events on the PipelineRun.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from wrapresolver.core import plan as planning
from wrapresolver.core.params import (
    CONFIG_DEFAULT_PREFIX,
    CONFIG_KEYS,
    CONFIGMAP_NAME,
    CORE_PARAMS,
    PARAM_WORKSPACES,
    RunContext,
)
from wrapresolver.errors import RewriteError

REASON_VOLUME_BOUND = "WrappedWorkspaceOnVolume"
REASON_UNKNOWN_CONFIG = "UnknownConfigKey"
REASON_UNDECLARED_BINDING = "UndeclaredTaskWorkspace"
REASON_POD_SECURITY = "PodSecurityRestricted"
"""An injected step, or the task itself, would not be admitted under Pod Security `restricted`."""


@dataclass(frozen=True)
class Notice:
    """A run that is legal but probably not what was meant: said at resolution, not refused."""

    reason: str
    """One CamelCase word, the reason of the Warning Event."""
    message: str


def check_pipeline_bindings(pipeline: Mapping) -> None:
    """Every pipeline task binds only workspaces the Pipeline declares, each task name once.

    Without this a binding `workspace: sorce` (the Pipeline declares `sources`) would leave
    that task unwrapped, and it would read an empty directory instead of the sources.
    """
    spec = planning.spec_of(pipeline)
    declared = [str(w.get("name")) for w in spec.get("workspaces") or [] if planning.is_map(w)]
    name = _name(pipeline)
    twice = sorted({ws for ws in declared if declared.count(ws) > 1})
    if twice:
        raise RewriteError(
            f"Pipeline {name!r} declares workspace {twice[0]!r} more than once; Tekton refuses such a "
            f"Pipeline: keep one declaration"
        )
    for ptask in planning.all_tasks(spec):
        task = str(ptask.get("name", ""))
        seen: set[str] = set()
        for binding in ptask.get("workspaces") or []:
            if not planning.is_map(binding):
                continue
            task_ws = str(binding.get("name") or "")
            if task_ws in seen:
                raise RewriteError(
                    f"pipeline task {task!r} binds task workspace {task_ws!r} twice; Tekton refuses "
                    f"the Pipeline (workspace name must be unique): keep one binding"
                )
            seen.add(task_ws)
            workspace = str(binding.get("workspace") or task_ws)
            if workspace not in declared:
                raise RewriteError(
                    f"pipeline task {task!r} binds workspace {workspace!r}, which Pipeline {name!r} "
                    f"does not declare{_closest(workspace, declared)}; its workspaces are: "
                    f"{', '.join(declared) or 'none'}. Tekton refuses such a Pipeline; fix the "
                    f"binding's `workspace` or declare {workspace!r} in the Pipeline's `workspaces`"
                )


def check_task_bindings(pipeline: Mapping, task_objects: Mapping[str, Mapping]) -> None:
    """Each pipeline task whose Task is embedded binds only workspaces that Task declares.

    `task_objects` are the fetched Tasks of `taskRef` tasks. Tekton fails the TaskRun of a
    referenced Task with such a binding (`workspace binding "sr" does not match any declared
    workspace`); once embedded, the binding would be propagated instead, and the task would
    write its files where no later task looks.
    """
    by_name = {str(t.get("name", "")): t for t in planning.all_tasks(planning.spec_of(pipeline))}
    for task, obj in task_objects.items():
        ptask = by_name.get(task)
        if ptask is None:
            continue
        declared = [
            str(d.get("name")) for d in planning.spec_of(obj).get("workspaces") or [] if planning.is_map(d)
        ]
        task_name = _name(obj)
        for binding in ptask.get("workspaces") or []:
            if not planning.is_map(binding):
                continue
            bound = str(binding.get("name") or "")
            if bound not in declared:
                raise RewriteError(
                    f"pipeline task {task!r} binds task workspace {bound!r}, which Task "
                    f"{task_name!r} does not declare{_closest(bound, declared)}; the Task's "
                    f"workspaces are: {', '.join(declared) or 'none'}. Tekton would fail this "
                    f"task's TaskRun; set the binding's `name` to one of the Task's workspaces"
                )


def embedded_binding_notices(pipeline: Mapping) -> list[Notice]:
    """An embedded spec bound under a name it does not declare while a declared one is unbound.

    Legal: Tekton adds a declaration for the bound name (propagation), and a cluster's
    `default-task-run-workspace-binding` may bind the declared one. But `name: sr` next to a
    declared `src` is a typo far more often: the task's steps would use `src`, which is not
    the pipeline workspace, and their files would be lost to every later task.
    """
    notices = []
    for ptask in planning.all_tasks(planning.spec_of(pipeline)):
        task_spec = ptask.get("taskSpec")
        if not planning.is_map(task_spec):
            continue
        declared = [d for d in task_spec.get("workspaces") or [] if planning.is_map(d)]
        bound = [str(b.get("name") or "") for b in ptask.get("workspaces") or [] if planning.is_map(b)]
        unbound = [str(d.get("name")) for d in declared if not d.get("optional") and d.get("name") not in bound]
        names = {str(d.get("name")) for d in declared}
        for name in bound:
            close = difflib.get_close_matches(name, unbound, n=1, cutoff=0.6) if name not in names else []
            if close:
                notices.append(Notice(REASON_UNDECLARED_BINDING, (
                    f"pipeline task {ptask.get('name')!r} binds task workspace {name!r}, which its "
                    f"taskSpec does not declare, and leaves the declared {close[0]!r} unbound: Tekton "
                    f"adds a workspace {name!r} that the steps do not use; did you mean {close[0]!r}?"
                )))
    return notices


def volume_bound_notices(context: RunContext, workspaces: Sequence[str]) -> list[Notice]:
    """Wrapped workspaces the run binds to a PersistentVolumeClaim or a volumeClaimTemplate.

    Legal, and the run works, but the volume is provisioned (and, with Tekton's affinity
    assistant, pins every task to one node) while the data goes through storage anyway.
    """
    run = context.pipelinerun
    if not planning.is_map(run):
        return []
    notices = []
    for binding in planning.spec_of(run).get("workspaces") or []:
        if not planning.is_map(binding) or binding.get("name") not in workspaces:
            continue
        kind = next((k for k in ("volumeClaimTemplate", "persistentVolumeClaim") if k in binding), "")
        if not kind:
            continue
        ws = str(binding["name"])
        notices.append(Notice(REASON_VOLUME_BOUND, (
            f"workspace {ws!r} is wrapped but the PipelineRun binds it to a {kind}: Tekton still "
            f"provisions and mounts that volume (and its affinity assistant keeps the tasks on "
            f"one node) while the data goes through storage; bind {ws!r} to `emptyDir: {{}}` "
            f"in the PipelineRun, or leave it out of param `{PARAM_WORKSPACES}` to keep it on the volume"
        )))
    return notices


def unknown_config_notices(
    config: Mapping[str, str], option_names: Iterable[str], where: str = f"the ConfigMap {CONFIGMAP_NAME}",
) -> list[Notice]:
    """ConfigMap (or `render --config`) keys the resolver does not read, with the closest known one.

    `option_names` are the options of the installed backends: `default-<option>` is a key.
    A typo such as `default-compresion` would otherwise be ignored without a word.
    """
    known = known_config_keys(option_names)
    notices = []
    for key in sorted(config):
        if key in known or key.startswith("_"):  # `_example`: the Knative convention for a commented block
            continue
        close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
        hint = f"did you mean {close[0]!r}? " if close else ""
        notices.append(Notice(REASON_UNKNOWN_CONFIG, (
            f"{where} has key {key!r}, which the wrap resolver does not read; {hint}"
            f"the keys are {', '.join(sorted(k for k in known if not k.startswith(CONFIG_DEFAULT_PREFIX)))} "
            f"and `{CONFIG_DEFAULT_PREFIX}<param>` for a resolver param or backend option"
        )))
    return notices


def known_config_keys(option_names: Iterable[str]) -> frozenset[str]:
    """Every key the resolver reads: its own settings, and the default of each param and option."""
    defaults = {CONFIG_DEFAULT_PREFIX + name for name in (*CORE_PARAMS, *option_names)}
    return frozenset(CONFIG_KEYS) | defaults


def _closest(word: str, candidates: Sequence[str]) -> str:
    close = difflib.get_close_matches(word, list(candidates), n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _name(obj: Mapping) -> str:
    metadata = obj.get("metadata") if planning.is_map(obj) else None
    return str(metadata.get("name", "")) if planning.is_map(metadata) else ""
