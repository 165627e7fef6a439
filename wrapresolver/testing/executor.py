"""A local executor for rewritten Pipelines: proof that the data really flows, without a cluster.

It runs what Tekton would run, as local processes, with the parts of Tekton's behaviour
that decide what a wrapped workspace contains:

- every task runs in fresh, empty directories standing in for its `emptyDir` workspaces
  and volumes (nothing is shared between tasks except through the backend);
- `runAfter` and `$(tasks.X.results.Y)` order the tasks; independent tasks run at the same
  time in threads;
- `when` skips a task (its dependents still run, as in Tekton), a failed task skips the
  tasks after it, `retries` runs a task again in new directories, `finally` tasks run at
  the end with `$(tasks.status)` and `$(tasks.<name>.status)`;
- `$(params.*)`, `$(workspaces.*.path|bound)`, `$(results.*.path)`, `$(context.*)` are
  substituted; `script` runs with its shebang (or `sh`), `command`/`args` directly, and the
  injected `wrapresolver` steps with this Python interpreter.

Identities are honoured the way the kubelet applies them: `runAsUser`/`runAsGroup` from the
step's `securityContext`, else the task's `stepTemplate`, else the pod-level
`pod_security_context` (a PipelineRun's `taskRunTemplate.podTemplate`), else the image's
own user (`image_users`, standing for each image's `USER`). When the executor runs as root
it really switches to that UID/GID (no supplementary groups, no `HOME`), and the
directories standing in for emptyDir volumes are world-writable, as an emptyDir is. Not
running as root, it refuses a step that must run as someone else rather than pretend.

Workspaces are mounted as Tekton mounts them where it decides what a step can change: a
binding's `subPath` is a directory of the workspace's volume, a workspace the Task declares
`readOnly` is read-only in every step (a write fails with EROFS, as on a cluster), and a
`volumeMounts` entry naming `$(workspaces.<ws>.volume)` mounts that volume, whole, at its
`mountPath` (writable unless it says `readOnly`). A step that needs either runs in a mount
namespace of its own (`unshare`): as root, before switching to its UID; otherwise in a user
namespace, as the executor's own user mapped to root.

Images, resources, other security settings and sidecars are ignored. This is a test tool,
not a Tekton: it exists so tests can prove a file written by one task is read by the next
one through a real storage backend.

One module of more than 400 lines on purpose: scheduling, substitution, identities and
mounts all act on one TaskRun attempt at a time, and keeping them side by side is what
lets a reader check them against Tekton's behaviour in one place.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import uuid
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wrapresolver.core.plan import build_dag
from wrapresolver.core.stepspec import STATE_DIR

SUCCEEDED, FAILED, SKIPPED = "Succeeded", "Failed", "None"
_VAR = re.compile(r"\$\(([^()]+)\)")


@dataclass(frozen=True)
class Identity:
    """The user and group a step's process runs as."""

    uid: int
    gid: int


def step_identity(step: Mapping, step_template: Mapping | None, pod_security_context: Mapping | None,
                  image_users: Mapping[str, Identity]) -> Identity | None:
    """Who a step runs as, by the kubelet's precedence; None when nothing says (the executor's own).

    The container's securityContext is the step's merged with the task's stepTemplate
    (Tekton: the step's fields win); a field it leaves unset comes from the pod's, then
    from the image. Kubernetes runs a container whose `runAsUser` is set without a
    `runAsGroup` with the image's group when the image names one, else group 0.
    """
    def field(name: str):
        for context in ((step or {}).get("securityContext"), (step_template or {}).get("securityContext"),
                        pod_security_context):
            if isinstance(context, Mapping) and context.get(name) is not None:
                return int(context[name])
        return None

    image = image_users.get(str(step.get("image", ""))) or image_users.get("*")
    uid, gid = field("runAsUser"), field("runAsGroup")
    if uid is None and gid is None and image is None:
        return None
    if uid is None:
        uid = image.uid if image else os.geteuid()
    if gid is None:
        gid = image.gid if image else 0
    return Identity(uid, gid)


def _run_as_non_root(step: Mapping, step_template: Mapping | None, pod_security_context: Mapping | None) -> bool:
    for context in ((step or {}).get("securityContext"), (step_template or {}).get("securityContext"),
                    pod_security_context):
        if isinstance(context, Mapping) and context.get("runAsNonRoot") is not None:
            return bool(context["runAsNonRoot"])
    return False


@dataclass
class TaskRun:
    """What happened to one pipeline task (its last attempt)."""

    name: str
    status: str = SKIPPED
    attempts: int = 0
    workspaces: dict[str, Path] = field(default_factory=dict)
    """Task workspace name -> the directory it had (kept after the run for assertions)."""
    results: dict[str, str] = field(default_factory=dict)
    log: str = ""
    reason: str = ""


@dataclass
class PipelineRunResult:
    status: str
    tasks: dict[str, TaskRun]

    def log(self) -> str:
        return "\n".join(f"--- {name} ({t.status}, {t.attempts} attempt(s))\n{t.log}" for name, t in self.tasks.items())


class LocalExecutor:
    """Runs one rewritten Pipeline; see the module docstring for what is honoured."""

    def __init__(
        self, pipeline: Mapping, *, params: Mapping[str, str] | None = None, name: str = "run",
        namespace: str = "default", uid: str | None = None, workdir: Path | None = None,
        env: Mapping[str, str] | None = None, step_timeout: float = 300,
        image_users: Mapping[str, Identity] | None = None, pod_security_context: Mapping | None = None,
        python: list[str] | None = None,
        task_resolver: Callable[[str, Mapping[str, str]], Mapping] | None = None,
    ) -> None:
        """`image_users`: each image's default user (key "*" for any other image); without an
        entry a step runs as the executor itself. `python`: the interpreter that runs the
        injected `wrapresolver` steps (default this one; another UID may need another path).
        `task_resolver(pipeline task, taskRef params)` gives the Task a pipeline task's
        `taskRef: {resolver: ...}` resolves to (a per-task answer); the params come with
        `$(params.*)` and `$(context.*)` substituted, as Tekton substitutes them."""
        self.pipeline = pipeline
        self.spec = pipeline.get("spec") or {}
        self.name, self.namespace = name, namespace
        self.uid = uid or str(uuid.uuid4())
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="wrap-run-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.workdir.chmod(0o755)  # other UIDs walk through it to their emptyDirs
        self.image_users = dict(image_users or {})
        self.pod_security_context = pod_security_context
        self.python = list(python or [sys.executable])
        self.env = dict(os.environ, **(env or {}))
        self.step_timeout = step_timeout
        self.params = self._pipeline_params(params or {})
        self.task_resolver = task_resolver
        self.runs: dict[str, TaskRun] = {}
        self._lock = threading.Lock()

    # ---- the pipeline ----
    def _pipeline_params(self, given: Mapping[str, str]) -> dict[str, str]:
        values: dict[str, str] = {}
        for decl in self.spec.get("params") or []:
            if "default" in decl:
                values[decl["name"]] = _as_text(decl["default"])
        values.update({k: str(v) for k, v in given.items()})
        return values

    def run(self) -> PipelineRunResult:
        dag = build_dag(self.spec)
        tasks = {t["name"]: t for t in self.spec.get("tasks") or []}
        pending = list(dag.order)
        running: dict[Future, str] = {}
        with ThreadPoolExecutor(max_workers=8) as pool:
            while pending or running:
                for name in list(pending):
                    parents = dag.parents[name]
                    if not all(p in self.runs and p not in self._running_names(running) for p in parents):
                        continue
                    pending.remove(name)
                    blocked = [p for p in parents if self.runs[p].status == FAILED or self.runs[p].reason == "blocked"]
                    if blocked:
                        self._record(TaskRun(name, SKIPPED, reason="blocked"))
                        continue
                    self._record(TaskRun(name, "Running"))
                    running[pool.submit(self._run_task, tasks[name], {})] = name
                if not running:
                    continue
                done, _ = wait(list(running), return_when=FIRST_COMPLETED)
                for future in done:
                    name = running.pop(future)
                    self._record(future.result())
            status = self._tasks_status(dag.order)
            extra = {"tasks.status": status}
            extra.update({f"tasks.{n}.status": self.runs[n].status for n in dag.order})
            for final in self.spec.get("finally") or []:
                self._record(self._run_task(final, extra))
        overall = FAILED if any(t.status == FAILED for t in self.runs.values()) else SUCCEEDED
        return PipelineRunResult(overall, dict(self.runs))

    def _running_names(self, running: Mapping[Future, str]) -> set[str]:
        return set(running.values())

    def _record(self, run: TaskRun) -> None:
        with self._lock:
            self.runs[run.name] = run

    def _tasks_status(self, names) -> str:
        statuses = [self.runs[n].status for n in names]
        if any(s == FAILED for s in statuses):
            return "Failed"
        if any(s == SKIPPED for s in statuses):
            return "Completed"
        return "Succeeded"

    # ---- one pipeline task ----
    def _run_task(self, task: Mapping, extra: Mapping[str, str]) -> TaskRun:
        name = task["name"]
        variables = dict(extra)
        variables.update({f"params.{k}": v for k, v in self.params.items()})
        variables.update(self._context())
        variables.update(self._task_results())
        variables.update({f"params.{k}[*]": v for k, v in self.params.items()})
        if not self._when(task, variables):
            return TaskRun(name, SKIPPED, reason="when")
        try:
            task, referenced = self._resolved(task, variables)
        except Exception as exc:  # Tekton: the TaskRun fails (CouldntGetTask)
            return TaskRun(name, FAILED, attempts=1, log=f"resolving its taskRef failed: {exc}", reason="resolution")
        retries = int(task.get("retries") or 0)
        run = TaskRun(name)
        for attempt in range(retries + 1):
            run = self._attempt(task, variables, attempt, referenced)
            if run.status == SUCCEEDED:
                break
        return run

    def _resolved(self, task: Mapping, variables: Mapping[str, str]) -> tuple[Mapping, bool]:
        """The task with the Task its `taskRef: {resolver}` resolves to, once (retries reuse it), as Tekton does.

        True when it was resolved: Tekton substitutes no `$(context.pipelineRun.*)` in a
        referenced Task, so neither does the attempt."""
        ref = task.get("taskRef")
        if task.get("taskSpec") is not None or not isinstance(ref, Mapping) or not ref.get("resolver"):
            return task, False
        if self.task_resolver is None:
            raise ValueError(f"task {task['name']!r} refers to resolver {ref['resolver']!r} and the executor "
                             f"was given no task_resolver")
        params = {str(p["name"]): _substitute(_as_text(p.get("value", "")), variables)
                  for p in ref.get("params") or []}
        obj = self.task_resolver(str(task["name"]), params)
        out = {k: v for k, v in task.items() if k != "taskRef"}
        out["taskSpec"] = obj.get("spec") or {}
        return out, True

    def _context(self) -> dict[str, str]:
        return {
            "context.pipelineRun.name": self.name, "context.pipelineRun.namespace": self.namespace,
            "context.pipelineRun.uid": self.uid, "context.pipeline.name": (self.pipeline.get("metadata") or {}).get("name", ""),
        }

    def _task_results(self) -> dict[str, str]:
        with self._lock:
            runs = list(self.runs.values())
        return {f"tasks.{r.name}.results.{k}": v for r in runs for k, v in r.results.items()}

    def _when(self, task: Mapping, variables: Mapping[str, str]) -> bool:
        for expr in task.get("when") or []:
            value = _substitute(str(expr.get("input", "")), variables)
            values = [_substitute(str(v), variables) for v in expr.get("values") or []]
            inside = value in values
            if (expr.get("operator") == "in") != inside:
                return False
        return True

    def _attempt(self, task: Mapping, pipeline_vars: Mapping[str, str], attempt: int,
                 referenced: bool = False) -> TaskRun:
        name = task["name"]
        spec = task.get("taskSpec")
        if spec is None:
            raise ValueError(f"task {name!r} has no embedded taskSpec; render the Pipeline first")
        root = self.workdir / f"{name}-{attempt}"
        run = TaskRun(name, attempts=attempt + 1)
        variables: dict[str, str] = {"context.task.retry-count": str(attempt), "context.taskRun.name": f"{self.name}-{name}"}
        # Task params: defaults, then the pipeline task's values (substituted at pipeline level).
        for decl in spec.get("params") or []:
            if "default" in decl:
                variables[f"params.{decl['name']}"] = _as_text(decl["default"])
        for param in task.get("params") or []:
            variables[f"params.{param['name']}"] = _substitute(_as_text(param.get("value", "")), pipeline_vars)
        for key in ("context.pipelineRun.name", "context.pipelineRun.namespace", "context.pipelineRun.uid", "context.pipeline.name"):
            if not referenced:  # Tekton substitutes these in embedded specs only
                variables[key] = pipeline_vars[key]
        bindings = {b["name"]: b for b in task.get("workspaces") or []}
        volumes: dict[str, Path] = {}
        read_only: list[Path] = []
        for decl in spec.get("workspaces") or []:
            name = decl["name"]
            volume = _emptydir(root / "workspaces" / name)
            sub_path = _substitute(str((bindings.get(name) or {}).get("subPath") or ""), pipeline_vars).strip("/")
            if ".." in sub_path.split("/"):
                raise ValueError(f"task {task['name']!r}: workspace {name!r} has subPath {sub_path!r}, "
                                 f"which Kubernetes refuses (no '..')")
            ws = _emptydir(volume / sub_path) if sub_path else volume  # the volume is mounted at its subPath
            run.workspaces[name] = ws
            variables[f"workspaces.{name}.path"] = str(ws)
            variables[f"workspaces.{name}.bound"] = "true" if name in bindings else "false"
            variables[f"workspaces.{name}.claim"] = ""
            variables[f"workspaces.{name}.volume"] = _workspace_volume(name)
            volumes[_workspace_volume(name)] = volume
            if decl.get("readOnly") is True:
                read_only.append(ws)
        for volume in spec.get("volumes") or []:
            volumes[volume["name"]] = _emptydir(root / "volumes" / volume["name"])
        results_dir = _emptydir(root / "results")
        for result in spec.get("results") or []:
            variables[f"results.{result['name']}.path"] = str(results_dir / result["name"])
        logs: list[str] = []
        status = SUCCEEDED
        for index, step in enumerate(spec.get("steps") or []):
            code, output = self._step(step, spec.get("stepTemplate"), variables, volumes, root / "steps" / str(index),
                                      read_only)
            logs.append(f"[{step.get('name', index)}] exit {code}\n{output}")
            if code != 0:
                status = FAILED
                break
        run.status, run.log = status, "\n".join(logs)
        if status == SUCCEEDED:
            for result in spec.get("results") or []:
                path = results_dir / result["name"]
                if path.exists():
                    run.results[result["name"]] = path.read_text().strip()
        return run

    def _step(self, step: Mapping, template: Mapping | None, variables: Mapping[str, str],
              volumes: Mapping[str, Path], scratch: Path, read_only: Sequence[Path] = ()) -> tuple[int, str]:
        _emptydir(scratch)
        mounts: dict[str, str] = {}
        binds: list[tuple[str, str]] = []  # (volume, mount point): a mount of its own
        ro = [str(p) for p in read_only]
        for i, m in enumerate(step.get("volumeMounts") or []):
            name = _substitute(str(m.get("name", "")), variables)
            if name not in volumes:
                continue
            if name.startswith(_WORKSPACE_VOLUME):
                point = _emptydir(scratch / "mounts" / str(i))
                binds.append((str(volumes[name]), str(point)))
                mounts[m["mountPath"]] = str(point)
            else:
                mounts[m["mountPath"]] = str(volumes[name])
            if m.get("readOnly") is True:
                ro.append(mounts[m["mountPath"]])

        def local(text: str) -> str:
            text = _substitute(text, variables)
            for mount, path in mounts.items():
                text = re.sub(rf"(?<![\w/]){re.escape(mount)}(?=/|\b|$)", path, text)
            return text

        env = dict(self.env)
        for item in step.get("env") or []:
            if "value" in item:
                env[item["name"]] = local(str(item["value"]))
        cwd = local(step.get("workingDir") or str(scratch))
        if step.get("script"):
            script = scratch / "script"
            body = local(step["script"])
            script.write_text(body if body.startswith("#!") else "#!/bin/sh\nset -e\n" + body)
            script.chmod(0o755)
            argv = [str(script)]
        else:
            command = [local(str(c)) for c in step.get("command") or []]
            argv = command + [local(str(a)) for a in step.get("args") or []]
            if argv and argv[0] == "wrapresolver":
                argv = [*self.python, "-m", "wrapresolver", *argv[1:]]
                if STATE_DIR in mounts and "--state-dir" not in argv and len(argv) > len(self.python) + 2:
                    # In the pod the volume is at the command's default state dir; here it is elsewhere.
                    at = len(self.python) + 3
                    argv[at:at] = ["--state-dir", mounts[STATE_DIR]]
        if not argv:
            return 1, "step has neither script nor command"
        who = step_identity(step, template, self.pod_security_context, self.image_users)
        if _run_as_non_root(step, template, self.pod_security_context) and (who.uid if who else os.geteuid()) == 0:
            # The kubelet's refusal, before the container starts.
            return 126, f"container has runAsNonRoot and image will run as root (container: {step.get('name')})"
        switch: dict[str, Any] = {}
        if who is not None and (who.uid, who.gid) != (os.geteuid(), os.getegid()):
            if os.geteuid() != 0:
                return 126, f"step must run as {who.uid}:{who.gid}; the executor can switch users only as root"
            switch = {"user": who.uid, "group": who.gid, "extra_groups": []}
            for name in ("HOME", "USER", "LOGNAME"):  # a container UID has no passwd entry, Tekton sets no HOME
                if not any(item.get("name") == name for item in step.get("env") or []):
                    env.pop(name, None)
        if binds or ro:
            argv, cwd = _in_mount_namespace(argv, cwd, binds, ro, switch), "/"
            switch = {}
        try:
            done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=self.step_timeout,
                                  **switch)
        except subprocess.TimeoutExpired:
            return 124, f"timed out after {self.step_timeout} s"
        return done.returncode, done.stdout + done.stderr


_WORKSPACE_VOLUME = "ws."
"""Prefix of the executor's names for workspace volumes: not a valid volume name, so no
volume of the task can take it (Tekton's are `ws-<random>`)."""

_MOUNT_SCRIPT = """set -e
while [ "$1" != -- ]; do
  if [ "$1" = bind ]; then mount --bind "$2" "$3"; shift 3
  else mount --bind "$2" "$2"; mount -o remount,bind,ro "$2"; shift 2; fi
done
cd "$2"
shift 2
exec "$@"
"""
"""Make the mounts, enter the working directory (only now: one under a read-only mount must
be the read-only one), run the step. Binds come first, so a read-only mount made after
never shows through a writable mount of the same volume."""


def _workspace_volume(workspace: str) -> str:
    return f"{_WORKSPACE_VOLUME}{workspace}"


def _in_mount_namespace(argv: list[str], cwd: str, binds: Sequence[tuple[str, str]], read_only: Sequence[str],
                        switch: Mapping[str, Any]) -> list[str]:
    """`argv` run in a mount namespace of its own, with `binds` and `read_only` mounted, as `switch` says."""
    ops: list[str] = []
    for source, point in binds:
        ops += ["bind", source, point]
    for path in read_only:
        ops += ["ro", path]
    if os.geteuid() == 0:
        unshare = ["unshare", "--mount", "--propagation", "private"]
    else:  # no other way to mount: the step runs as root of a user namespace, mapped to us
        unshare = ["unshare", "--map-root-user", "--mount", "--propagation", "private"]
    become: list[str] = []
    if switch:
        become = ["setpriv", f"--reuid={switch['user']}", f"--regid={switch['group']}", "--clear-groups", "--"]
    return [*unshare, "sh", "-c", _MOUNT_SCRIPT, "sh", *ops, "--", cwd, *become, *argv]


def _emptydir(path: Path) -> Path:
    """A directory like a fresh emptyDir volume: empty, and writable by whichever UID runs."""
    path.mkdir(parents=True)  # parents get 0755 (umask permitting): other UIDs can walk through
    path.chmod(0o777)
    return path


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value)


def _substitute(text: str, variables: Mapping[str, str]) -> str:
    """Replace `$(name)` for known names; leave the rest, as Tekton leaves unknown text."""
    return _VAR.sub(lambda m: variables.get(m.group(1).strip(), m.group(0)), text)
