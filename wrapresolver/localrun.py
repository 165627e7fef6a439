"""`wrapresolver run`: a wrapped PipelineRun run on this machine, each step a local process.

    wrapresolver run -f pipeline.yaml -f pipelinerun.yaml [--target T] [-p NAME=VALUE] [--param NAME=VALUE]

The PipelineRun in the files (its `resolver: wrap` params, its own params) is resolved as
`render` resolves it, then run by the local executor (`wrapresolver.testing.executor`):
every task in fresh empty directories, the injected steps moving the workspaces through the
real backend. It exists so a pipeline author can see the data flow of a Pipeline, and debug
it, without a cluster.

What this module adds to the executor is the user-facing layer: run identity (a fresh UID
per run, so two runs never share states), Tasks named by `taskRef` taken from the files,
the identity the steps run as, one line per task as it starts and ends, the failed task's
logs, a summary table, and every failure as a message (never a traceback). It follows the
executor through `wrapresolver.runreport`, which overrides its per-attempt and per-step
methods rather than changing it.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import sys
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wrapresolver.core.limits import cap_line
from wrapresolver.render import _key_value
from wrapresolver.runreport import TaskLine, summary

DEFAULT_LOCAL_DIR = ".wrapresolver"
"""Where a run keeps its task directories and, when nothing names a target, its states."""
DEFAULT_STEP_TIMEOUT = 3600.0
_IDENTITY_KEYS = ("runAsUser", "runAsGroup")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run a wrapped PipelineRun from local YAML files, each step a local process",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "-f", "--filename", dest="files", action="append", required=True, metavar="FILE",
        help="YAML file with the PipelineRun, its Pipeline and Tasks; `-` reads stdin (repeatable)",
    )
    parser.add_argument(
        "--target", help="the storage target for this run, instead of the PipelineRun's `target` param",
    )
    parser.add_argument(
        "--param", dest="params", action="append", default=[], type=_key_value, metavar="NAME=VALUE",
        help="a resolver param, overriding the PipelineRun's (repeatable)",
    )
    parser.add_argument(
        "-p", "--pipeline-param", dest="run_params", action="append", default=[], type=_key_value,
        metavar="NAME=VALUE", help="a PipelineRun param (spec.params), overriding the file's (repeatable)",
    )
    parser.add_argument(
        "--config", dest="config", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
        help="a wrapresolver-config ConfigMap entry, e.g. default-target=... (repeatable)",
    )
    parser.add_argument(
        "--local-dir", type=Path, default=Path(DEFAULT_LOCAL_DIR),
        help=f"task directories (kept when the run fails) and the default file:// states (default {DEFAULT_LOCAL_DIR})",
    )
    parser.add_argument("--keep", action="store_true", help="keep the task directories after a successful run too")
    parser.add_argument("--step-timeout", type=float, default=DEFAULT_STEP_TIMEOUT, metavar="SECONDS",
                        help=f"a step running longer fails (default {DEFAULT_STEP_TIMEOUT:.0f})")
    parser.set_defaults(func=run)


# ---- what runs ----

@dataclass
class LocalRun:
    """Everything decided before the first step starts."""

    pipeline: dict
    """The rewritten Pipeline, every task with its `taskSpec`."""
    name: str
    namespace: str
    uid: str
    target: str
    params: dict[str, str] = field(default_factory=dict)
    """The PipelineRun's params (the Pipeline's declared defaults fill the rest)."""
    pod_security_context: Mapping | None = None
    as_root: bool = True
    warnings: list[str] = field(default_factory=list)
    """What the resolver found legal but probably not meant (render's `warning:` lines)."""


def prepare(
    files: Sequence[str], *, target: str | None = None, params: Mapping[str, str] | None = None,
    config: Mapping[str, str] | None = None, local_dir: Path = Path(DEFAULT_LOCAL_DIR),
    uid: str | None = None, as_root: bool | None = None, run_params_given: Mapping[str, str] | None = None,
) -> LocalRun:
    """Resolve the run as the controller would; raise `WrapError` for what cannot run here."""
    from wrapresolver.core.params import CONFIG_TASK_RESOLUTION, PARAM_TARGET, config_key
    from wrapresolver.core.pertask import MODE_INLINE, MODE_PER_TASK
    from wrapresolver.errors import ParamError
    from wrapresolver.render import DEFAULT_NAMESPACE, _pipelineref_params, _wrap_pipelinerun, read_documents, render
    from wrapresolver.sources import FileSource

    documents, origins = read_documents(files)
    run_obj = _wrap_pipelinerun(documents)
    uid = uid or str(uuid.uuid4())
    metadata = dict((run_obj or {}).get("metadata") or {})
    name = str(metadata.get("name") or "")
    if not name:
        name = f"{metadata.get('generateName') or 'local-run-'}{uid[:5]}"
    namespace = str(metadata.get("namespace") or DEFAULT_NAMESPACE)
    if run_obj is not None:
        # The run's identity, as the API server would have given it: context variables in
        # the resolver params ($(context.pipelineRun.uid) in a target) resolve to this run.
        local = copy.deepcopy(dict(run_obj))
        local["metadata"] = {**{k: v for k, v in metadata.items() if k != "uid"}, "name": name, "namespace": namespace}
        if run_params_given:  # before resolving: `$(params.x)` in the resolver params sees them too
            given = dict(run_params_given)
            kept = [p for p in local["spec"].get("params") or [] if not isinstance(p, Mapping) or p.get("name") not in given]
            local["spec"] = {**local["spec"], "params": kept + [{"name": k, "value": v} for k, v in given.items()]}
        documents = [local if doc is run_obj else doc for doc in documents]
        run_obj = local
    params = dict(params or {})
    config = dict(config or {})
    if config.get(CONFIG_TASK_RESOLUTION, MODE_INLINE) == MODE_PER_TASK:
        raise ParamError(f"`wrapresolver run` answers inline: a local run has no ResolutionRequest to fit; "
                         f"`wrapresolver render --config {CONFIG_TASK_RESOLUTION}={MODE_PER_TASK}` shows the "
                         f"per-task answer, `--task NAME` one task's")
    config[CONFIG_TASK_RESOLUTION] = MODE_INLINE  # however large: nothing to fit here
    if target:
        params[PARAM_TARGET] = target
    named = {p.get("name") for p in _pipelineref_params(run_obj)} | set(params)
    if PARAM_TARGET not in named and not config.get(config_key(PARAM_TARGET)):
        states = (local_dir / "states").resolve()
        params[PARAM_TARGET] = f"file://{states}/<<workspace>>"
    warnings: list[str] = []
    answer = render(documents, origins, params=params, config=config, output="json", uid=uid, warnings=warnings)
    pipeline = json.loads(answer)
    spec = pipeline.setdefault("spec", {})
    source = FileSource(documents, origins)
    declared = [str(p.get("name")) for p in spec.get("params") or [] if isinstance(p, Mapping)]
    embedded = _embedded_in(documents, str((pipeline.get("metadata") or {}).get("name") or ""))
    for task in [*(spec.get("tasks") or []), *(spec.get("finally") or [])]:
        _embed_task(task, source)
        if task.get("name") in embedded:
            _propagate_params(task, declared)
    spec_of_run = (run_obj or {}).get("spec") or {}
    run_params = {
        str(p["name"]): p["value"] if isinstance(p.get("value"), str) else json.dumps(p.get("value"))
        for p in spec_of_run.get("params") or [] if isinstance(p, Mapping) and "name" in p
    }
    run_params.update(run_params_given or {})
    pod = ((spec_of_run.get("taskRunTemplate") or {}).get("podTemplate") or {}).get("securityContext")
    as_root = os.geteuid() == 0 if as_root is None else as_root
    if not as_root:
        _drop_identities(pipeline)
        pod = None
    else:
        _injected_as_root(pipeline)
    if not isinstance(pod, Mapping):
        pod = None
    return LocalRun(pipeline, name, namespace, uid, _shown_target(params, config, documents, uid),
                    run_params, pod, as_root, warnings)


def _shown_target(params: Mapping[str, str], config: Mapping[str, str],
                  documents: Sequence[Mapping], uid: str) -> str:
    """The `target` param this run uses, its context variables replaced, for the start line."""
    from wrapresolver.core.params import PARAM_TARGET, config_key
    from wrapresolver.render import _pipelineref_params, _replacements, _substitute, _wrap_pipelinerun

    run_obj = _wrap_pipelinerun(documents)
    value = params.get(PARAM_TARGET)
    for p in _pipelineref_params(run_obj):
        if value is None and p.get("name") == PARAM_TARGET:
            value = p.get("value")
    if value is None:
        value = config.get(config_key(PARAM_TARGET), "")
    return str(_substitute(value, _replacements(run_obj, uid)))


def workspace_targets(pipeline: Mapping) -> dict[str, str]:
    """Each wrapped workspace's concrete target, read from the injected steps' arguments."""
    found: dict[str, str] = {}
    spec = pipeline.get("spec") or {}
    for task in [*(spec.get("tasks") or []), *(spec.get("finally") or [])]:
        for step in (task.get("taskSpec") or {}).get("steps") or []:
            args = [str(a) for a in step.get("args") or []]
            for flag, value in zip(args, args[1:], strict=False):
                if flag != "--workspace":
                    continue
                try:
                    transfer = json.loads(value)
                except ValueError:
                    continue
                if isinstance(transfer, dict) and transfer.get("workspace") and transfer.get("target"):
                    found.setdefault(str(transfer["workspace"]), str(transfer["target"]))
    return found


def _embed_task(task: dict, source: Any) -> None:
    """Put the Task a `taskRef` names in its place, as Tekton would fetch it; only from the files."""
    import asyncio

    from wrapresolver.errors import SourceError

    name = task.get("name")
    if "taskSpec" in task:
        return
    if "pipelineRef" in task or "pipelineSpec" in task:
        raise SourceError(f"task {name!r} runs a Pipeline in a Pipeline; `wrapresolver run` runs Tasks only")
    ref = task.get("taskRef")
    if not isinstance(ref, Mapping):
        raise SourceError(f"task {name!r} has neither taskSpec nor taskRef; give it one")
    if ref.get("resolver"):
        raise SourceError(
            f"task {name!r} refers to its Task through resolver {ref.get('resolver')!r}, which cannot be "
            f"followed locally; pass the Task with -f and refer to it by name (taskRef: {{name: ...}})"
        )
    fetched = asyncio.run(source.task(ref, ""))
    task["taskSpec"] = copy.deepcopy(dict(fetched.obj.get("spec") or {}))
    del task["taskRef"]


def _embedded_in(documents: Sequence[Mapping], name: str) -> set[str]:
    """The tasks the Pipeline in the files embeds (`taskSpec`): only they see its params unpassed."""
    for doc in documents:
        if doc.get("kind") == "Pipeline" and (doc.get("metadata") or {}).get("name") == name:
            spec = doc.get("spec") or {}
            tasks = [*(spec.get("tasks") or []), *(spec.get("finally") or [])]
            return {str(t.get("name")) for t in tasks if isinstance(t, Mapping) and "taskSpec" in t}
    return set()


def _propagate_params(task: dict, names: Sequence[str]) -> None:
    """Tekton's propagated params: a Pipeline param a task does not pass is still `$(params.x)` in it."""
    passed = {p.get("name") for p in task.get("params") or [] if isinstance(p, Mapping)}
    extra = [{"name": name, "value": f"$(params.{name})"} for name in names if name not in passed]
    if extra:
        task["params"] = [*(task.get("params") or []), *extra]


def _injected_as_root(pipeline: dict) -> None:
    """As root, the injected `wrapresolver` steps stay root, whatever UID the Pipeline gives them.

    They run this process's interpreter, which another UID may not be able to reach (a
    Python under /root or a private home); as root they read every file the task wrote
    and restore each file's recorded owner, so the user's steps, which do switch, find
    their files as they would on a cluster.
    """
    spec = pipeline.get("spec") or {}
    for task in [*(spec.get("tasks") or []), *(spec.get("finally") or [])]:
        for step in (task.get("taskSpec") or {}).get("steps") or []:
            if isinstance(step, dict) and (step.get("command") or [None])[0] == "wrapresolver":
                context = dict(step.get("securityContext") or {})
                context.pop("runAsNonRoot", None)
                context.update(runAsUser=0, runAsGroup=0)
                step["securityContext"] = context


def _drop_identities(pipeline: dict) -> None:
    """Not root, the steps can only run as this user: the UIDs the Pipeline asks for are dropped."""
    spec = pipeline.get("spec") or {}
    for task in [*(spec.get("tasks") or []), *(spec.get("finally") or [])]:
        task_spec = task.get("taskSpec") or {}
        holders = [*(task_spec.get("steps") or []), task_spec.get("stepTemplate") or {}]
        for holder in holders:
            context = holder.get("securityContext") if isinstance(holder, dict) else None
            if isinstance(context, dict):
                for key in _IDENTITY_KEYS:
                    context.pop(key, None)


def limits_line(plan: LocalRun) -> str:
    """What a local run does not do, in one line, so nobody mistakes it for a cluster."""
    who = ("your steps as the UIDs the Pipeline names, the injected wrapresolver steps as root" if plan.as_root else
           f"as this user (uid {os.geteuid()}; not root, so runAsUser/runAsGroup are ignored)")
    return ("local run: each step a process on this machine, " + who + "; not done locally: images (commands must "
            "exist here), sidecars, resources, pod settings other than the user, volumes other than emptyDir, "
            "Tasks from resolvers (only Tasks in the files)")


# ---- running it ----

def execute(plan: LocalRun, workdir: Path, step_timeout: float, say: Any) -> tuple[str, list[TaskLine]]:
    from wrapresolver.runreport import executor_class

    executor = executor_class()(
        plan.pipeline, params=plan.params, name=plan.name, namespace=plan.namespace, uid=plan.uid,
        workdir=workdir, step_timeout=step_timeout, pod_security_context=plan.pod_security_context, say=say,
    )
    result = executor.run()
    order = [t["name"] for t in [*(plan.pipeline["spec"].get("tasks") or []),
                                 *(plan.pipeline["spec"].get("finally") or [])]]
    lines = [executor.lines.get(name) or TaskLine(name, note=result.tasks[name].reason if name in result.tasks else "")
             for name in order]
    return result.status, lines


def run(args: argparse.Namespace) -> int:
    from wrapresolver.errors import WrapError

    lock = threading.Lock()

    def say(text: str, stream: Any = None) -> None:
        with lock:
            out = stream or sys.stdout
            print(text if "\n" in text else cap_line(text), file=out, flush=True)

    try:
        plan = prepare(args.files, target=args.target, params=dict(args.params), config=dict(args.config),
                       local_dir=args.local_dir, run_params_given=dict(args.run_params))
    except WrapError as exc:
        say(cap_line(f"wrapresolver run: error: {exc}"), sys.stderr)
        return 1
    workdir = (args.local_dir / "runs" / plan.uid).resolve()
    try:
        workdir.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        say(cap_line(f"wrapresolver run: error: cannot create {workdir.parent} for the task directories "
                     f"({exc.strerror or exc}); choose a writable --local-dir"), sys.stderr)
        return 1
    say(f"wrapresolver run: PipelineRun {plan.name} (uid {plan.uid}), target {plan.target}")
    say(limits_line(plan))
    for warning in plan.warnings:
        say(cap_line(f"warning: {warning}"), sys.stderr)
    status, lines = execute(plan, workdir, args.step_timeout, say)
    say("")
    say(summary(lines))
    failed = [line.name for line in lines if line.status == "Failed"]
    if status == "Succeeded":
        if not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        say(f"wrapresolver run: {plan.name} succeeded")
    for workspace, target in sorted(workspace_targets(plan.pipeline).items()):
        say(f"  {workspace}: wrapresolver inspect --target {target} --run {plan.uid}")
    if status == "Succeeded":
        return 0
    say(f"wrapresolver run: {plan.name} failed: task(s) {', '.join(failed) or '?'} failed; "
        f"their directories are kept in {workdir}", sys.stderr)
    return 1
