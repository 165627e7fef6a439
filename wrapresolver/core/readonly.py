"""readOnly wrapped workspaces: read-only for the task, as on a shared volume, yet filled by fetch (pure).

Tekton mounts a workspace its Task declares `readOnly` read-only in every container that
mounts it: through the stepTemplate, or in the steps and sidecars that list it when the
workspace is isolated (`pkg/workspace/apply.go`). No step may mount anything else at that
path (`validateDeclaredWorkspaces`). The volume behind it has a generated name
(`ws-<random>`) that only `$(workspaces.<ws>.volume)` gives, and Tekton substitutes that
variable in `volumeMounts[].name` too. So the rewrite leaves the workspace as the Task
declares it and gives the fetch step alone a second mount of the same volume, whole and
writable, at a path of its own: every reference, the sidecars, StepAction steps and
isolated steps see the workspace exactly as Tekton mounts it, and a write by the task fails
at once with EROFS. The fetch step finds the directory of the volume that the read-only
mount shows (the subPath, which the PipelineRun may extend) by device and inode
(steps/fill.py).

One case cannot be done so: a task workspace bound to a pipeline workspace declared
`optional: true`. A run may leave it unbound; then the variable names no volume and the Pod
could not be created. There the workspace is mounted writable and a store step in
`read_only` mode fails the task if it changed anything (steps/runner.py).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping

FILL_DIR = "/wrap-fill"
"""Where the fetch step mounts the volumes of readOnly workspaces writable, one directory each."""


def take_binding_read_only(binding: Mapping, declaration: MutableMapping) -> bool:
    """Whether the task workspace is read-only; a binding's `readOnly: true` moves onto the declaration.

    Tekton's pipeline task bindings have no `readOnly` (`WorkspacePipelineTaskBinding`:
    name, workspace, subPath): the API server prunes it from a Pipeline stored in the
    cluster, and Tekton drops it without a word from a resolver's answer. Where it reaches
    the resolver (git, bundles, render) the author's intent is plain, so it is made the
    embedded declaration's, which Tekton honours, and removed from the binding (the
    rewrite's own copy), which then has only Tekton's fields.
    """
    if binding.get("readOnly") is True and isinstance(binding, MutableMapping):
        del binding["readOnly"]
        declaration["readOnly"] = True
    return bool(declaration.get("readOnly"))


def fill_paths(task_workspaces: Iterable[str], taken: set[str]) -> dict[str, str]:
    """Task workspace -> where the fetch step mounts its volume writable.

    Neither a path in `taken` nor inside one nor around one: a mount nested in another
    volume's mount would depend on the order the runtime mounts them in.
    """
    fills: dict[str, str] = {}
    for ws in task_workspaces:
        path, n = f"{FILL_DIR}/{ws}", 2
        while _overlaps(path, taken):  # ends: each try has a parent of its own, `taken` is finite
            path, n = f"{FILL_DIR}-{n}/{ws}", n + 1
        taken.add(path)
        fills[ws] = path
    return fills


def _overlaps(path: str, taken: Iterable[str]) -> bool:
    for other in taken:
        other = "/" + other.strip("/")
        if other == "/":  # no container mounts a volume over its root
            continue
        if path == other or path.startswith(other + "/") or other.startswith(path + "/"):
            return True
    return False


def fill_mount(task_workspace: str, path: str) -> dict:
    """The fetch step's volumeMount of the workspace's own volume (writable: no `readOnly`)."""
    return {"name": f"$(workspaces.{task_workspace}.volume)", "mountPath": path}
