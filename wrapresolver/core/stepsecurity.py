"""The `securityContext` of the injected steps: the task's identity, and no less restricted
than the task's own steps (pure).

Two rules meet here. The identity rule of docs/semantics.md ("Who owns the files"): the
injected steps run as the task says its steps run, so the files the fetch step writes are
theirs. And Pod Security: under `restricted` the API server refuses the whole Pod when one
container lacks a setting (see podsecurity.py), so a task whose own steps pass must not be
refused because of ours.

Each field is decided from the task's steps as their containers get them (the stepTemplate
merged in, podsecurity.container_context), and only what the stepTemplate does not already
give is written, since Tekton merges it into the injected steps as into every step:

- identity and confinement (`runAsUser`, `runAsGroup`, `seLinuxOptions`, `appArmorProfile`,
  `windowsOptions`): the value every step has; where they differ, none, so the stepTemplate's,
  else the pod's, else the step image's applies, as before;
- restrictions (`allowPrivilegeEscalation: false`, `capabilities: {drop: [ALL]}`,
  `runAsNonRoot: true`, a `seccompProfile`): each one every step has (a seccomp profile the
  steps share, else `RuntimeDefault`). The injected steps need no privilege these take away,
  and a restriction only some steps have is left out, because a task running its other steps
  as root with capabilities relies on the fetch step being able to restore owners;
- never: `privileged`, `procMount`, added capabilities (the injected steps need none of
  them) and `readOnlyRootFilesystem` (they write temporary files).

The `wrap-publish` finally task has no steps of its own: it gets what every wrapped task's
injected steps have, by the same rule.

What cannot be made to work is said at resolution as warnings (`render` prints them):
injected steps that must run as non-root with no user to run as (the step image's default
user is root, so the kubelet would refuse to start them); steps running as different users
where the injected steps cannot be root (no single owner is right for the restored files);
a task meant for `restricted` (a step or the stepTemplate sets `allowPrivilegeEscalation:
false` or drops ALL capabilities) whose own steps would be refused; and, should the rule
above ever fall short, injected steps refused where the task's steps are not.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from wrapresolver.core import podsecurity as psa
from wrapresolver.core.plan import is_map

IDENTITY_FIELDS = ("runAsUser", "runAsGroup", "seLinuxOptions", "appArmorProfile", "windowsOptions")
_ORDER = ("runAsUser", "runAsGroup", "runAsNonRoot", "allowPrivilegeEscalation", "capabilities", "seccompProfile",
          "seLinuxOptions", "appArmorProfile", "windowsOptions")


@dataclass(frozen=True)
class InjectedSecurity:
    """What the injected steps of one task (or the publish task) get, and what to say about it."""

    context: dict | None
    """The `securityContext` to write on each injected step; None: write none."""
    effective: dict
    """The container-level context they end up with, the stepTemplate's merged in."""
    warnings: tuple[str, ...] = ()


def for_task(task: str, task_spec: Mapping, pod: psa.PodContext, injected: Sequence[str]) -> InjectedSecurity:
    """The injected steps (`injected`: their names) of pipeline task `task`."""
    template = task_spec.get("stepTemplate")
    if not _states_security(template) and not any(_states_security(s) for s in psa.as_list(task_spec.get("steps"))):
        # Nothing to follow (most tasks): only the pod can say something worth a warning.
        return InjectedSecurity(None, {}, tuple(_identity_warnings(f"task {task!r}", [], {}, pod)))
    base = psa.container_context(template, None)
    steps = [
        (f"step-{s.get('name') or f'unnamed-{i}'}", psa.container_context(template, s))  # Tekton's StepName
        for i, s in enumerate(psa.as_list(task_spec.get("steps"))) if is_map(s) and "ref" not in s
    ]
    context = _needed(_shared([c for _, c in steps]), base)
    effective = psa.merge(base, context)
    ours = [(f"step-{name}", effective) for name in injected]
    where = f"task {task!r}"
    warnings = _identity_warnings(where, steps, effective, pod)
    # Only a task meant for restricted is judged by it (and only such a task can pass it).
    if not any(c.get("allowPrivilegeEscalation") is False or psa.drops_all(c) for _, c in steps):
        return InjectedSecurity(context or None, effective, tuple(warnings))
    sidecars = [
        (f"sidecar-{s.get('name')}", psa.container_context(None, s)) for s in psa.as_list(task_spec.get("sidecars")) if is_map(s)
    ]
    theirs = psa.restricted_problems(steps + sidecars, pod)
    if not theirs:
        mine = psa.restricted_problems(ours, pod)
        if mine:
            warnings.append(
                f"{where}: its steps are admissible under Pod Security \"restricted\" but its injected steps "
                f"would not be ({'; '.join(mine)}); set these fields in the task's stepTemplate.securityContext "
                f"so that every step, the injected ones included, has them"
            )
    else:
        warnings.append(
            f"{where}: its own steps are not admissible under Pod Security \"restricted\" "
            f"({'; '.join(theirs)}), so a namespace enforcing it refuses the task's Pod, wrapped or not; "
            f"set the missing fields in the task's stepTemplate.securityContext (or the pod-level ones in the "
            f"PipelineRun's taskRunTemplate.podTemplate.securityContext) and the injected steps follow"
        )
    return InjectedSecurity(context or None, effective, tuple(warnings))


def _states_security(container: Any) -> bool:
    return is_map(container) and bool(container.get("securityContext"))


def for_publish(task: str, wrapped: Sequence[InjectedSecurity], pod: psa.PodContext) -> InjectedSecurity:
    """The publish task's one step: what the injected steps of every wrapped task share."""
    context = _needed(_shared([w.effective for w in wrapped]), {})
    warnings = _identity_warnings(f"the injected finally task {task!r}", [], context, pod, publish=True)
    return InjectedSecurity(context or None, context, tuple(warnings))


def _shared(contexts: Sequence[Mapping]) -> dict:
    """The fields the injected steps should have, given the steps' merged contexts."""
    if not contexts:
        return {}
    want: dict[str, Any] = {}
    for name in IDENTITY_FIELDS:
        first = contexts[0].get(name)
        if first is not None and all(c.get(name) == first for c in contexts):
            want[name] = first
    if all(c.get("runAsNonRoot") is True for c in contexts):
        want["runAsNonRoot"] = True
    if all(c.get("allowPrivilegeEscalation") is False for c in contexts):
        want["allowPrivilegeEscalation"] = False
    if all(psa.drops_all(c) for c in contexts):
        want["capabilities"] = {"drop": ["ALL"]}
    profiles = [c.get("seccompProfile") for c in contexts]
    if all(psa.seccomp_type(c) in psa.VALID_SECCOMP for c in contexts):
        want["seccompProfile"] = profiles[0] if all(p == profiles[0] for p in profiles) else {"type": "RuntimeDefault"}
    return want


def _needed(want: Mapping, base: Mapping) -> dict:
    """`want` without what the stepTemplate (`base`) already gives every step."""
    out = {}
    for name in _ORDER:
        if name not in want:
            continue
        if name == "capabilities":
            given = psa.drops_all(base)
        elif name == "seccompProfile":
            given = psa.seccomp_type(base) in psa.VALID_SECCOMP and base.get(name) == want[name]
        else:
            given = base.get(name) == want[name]
        if not given:
            out[name] = want[name]
    return out


def _identity_warnings(
    where: str, steps: Sequence[tuple[str, Mapping]], ours: Mapping, pod: psa.PodContext, publish: bool = False,
) -> list[str]:
    """Injected steps that cannot start, or cannot give restored files the right owner."""
    pod_user = pod.security.get("runAsUser")
    uid = ours.get("runAsUser", pod_user)
    non_root = ours.get("runAsNonRoot", pod.security.get("runAsNonRoot")) is True
    users = {name: c.get("runAsUser", pod_user) for name, c in steps}
    differ = len(set(map(str, users.values()))) > 1
    if not (non_root and uid is None) and not (differ and uid not in (None, 0)):
        return []
    listed = ", ".join(f"{'image user' if u is None else u} in {n!r}" for n, u in users.items())
    if non_root and uid is None:
        if publish:
            why = "the wrapped tasks' injected steps do not all run as one user"
        elif differ:
            why = f"the task's steps run as different users ({listed})"
        else:
            why = "the task's steps state no runAsUser, so they run as their images' users"
        unseen = "" if pod.known else " (the PipelineRun was not seen: ignore this if its pod template sets runAsUser)"
        fix = ("the PipelineRun's taskRunTemplate.podTemplate.securityContext" if publish else
               "the task's stepTemplate.securityContext or in the PipelineRun's taskRunTemplate.podTemplate.securityContext")
        subject = "its step" if publish else "the injected steps"
        return [
            f"{where}: {subject} must run as non-root (runAsNonRoot) but nothing says which user: "
            f"{why}, and the step image's default user is root, so the kubelet would refuse to start them; "
            f"set runAsUser in {fix}{unseen}"
        ]
    if differ and uid not in (None, 0):
        return [
            f"{where}: its steps run as different users ({listed}) and the injected steps run as {uid}, not "
            f"root, so every file the fetch step restores belongs to {uid}: a step running as another user "
            f"cannot change a file it did not write itself; give the task's steps one runAsUser "
            f"(stepTemplate.securityContext)"
        ]
    return []
