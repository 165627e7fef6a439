"""Pod Security "restricted", as far as the resolver can judge it: the pod a run gives a task,
and the container checks that depend on a `securityContext` (pure).

The API server admits a Pod into a namespace labelled `pod-security.kubernetes.io/enforce:
restricted` only if every container passes the checks of k8s.io/pod-security-admission
(`policy/check_*.go`). The resolver never sees the Pod, but it sees what decides the
security settings of its step containers: each step merged with the task's `stepTemplate`
(Tekton sets no step `securityContext` of its own: its feature flag `set-security-context`
covers only the init containers and the results sidecar it adds), and the pod-level
`securityContext` of the PipelineRun's pod template. That is enough to tell, at resolution,
whether the injected steps would be refused where the task's own steps would not.

Only the checks a `securityContext` decides are here (allowPrivilegeEscalation,
capabilities_restricted, runAsNonRoot, runAsUser, seccompProfile_restricted, privileged,
procMount); volumes, host namespaces, ports and sysctls are the same Pod whether wrapped or
not, and the rewrite adds only `emptyDir` volumes. When the PipelineRun could not be read,
the pod-level fields are unknown and counted as passing: whatever the pod gives the task's
steps, it gives the injected ones too.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeGuard

VALID_SECCOMP = ("RuntimeDefault", "Localhost")
"""seccompProfile types `restricted` allows (check_seccompProfile_baseline.go, validSeccomp)."""
ALLOWED_ADDED_CAPABILITY = "NET_BIND_SERVICE"
"""The one capability `restricted` lets a container add (check_capabilities_restricted.go)."""


@dataclass(frozen=True)
class PodContext:
    """The pod-level settings a PipelineRun gives one pipeline task's TaskRun Pod."""

    security: Mapping = field(default_factory=dict)
    """The pod `securityContext` (`runAsUser`, `runAsNonRoot`, `seccompProfile`, ...), or {}."""
    host_users: bool | None = None
    """`hostUsers`; False (a user namespace) relaxes runAsNonRoot and runAsUser."""
    known: bool = False
    """False when the PipelineRun was not seen: pod-level fields are then unknown, not unset."""


def _is_map(value: Any) -> TypeGuard[Mapping]:
    """plan.is_map, with scalars answered before the Mapping ABC (most values here are)."""
    return type(value) is dict or (
        value is not None and not isinstance(value, (str, bool, int, float, list)) and isinstance(value, Mapping))


def pod_context(pipelinerun: Mapping | None, task: str) -> PodContext:
    """What Tekton makes the pod template of `task`'s TaskRun (`PipelineRun.GetTaskRunSpec`).

    `taskRunSpecs[].podTemplate` of that task wins over `taskRunTemplate.podTemplate` field
    by field (`pod.MergePodTemplateWithDefault`: the `securityContext` as a whole). v1beta1
    runs name them `podTemplate` and `taskRunSpecs[].taskPodTemplate`. The cluster's
    `default-pod-template` (config-defaults) is not visible here.
    """
    if not _is_map(pipelinerun) or not _is_map(pipelinerun.get("spec")):
        return PodContext()
    spec = pipelinerun["spec"]
    run_template = spec.get("taskRunTemplate")
    default = (run_template.get("podTemplate") if _is_map(run_template) else None) or spec.get("podTemplate")
    templates = [default] if _is_map(default) else []
    for item in as_list(spec.get("taskRunSpecs")):
        if _is_map(item) and item.get("pipelineTaskName") == task:
            own = item.get("podTemplate") or item.get("taskPodTemplate")
            if _is_map(own):
                templates.insert(0, own)
    security: Mapping = {}
    host_users: bool | None = None
    for template in reversed(templates):  # the default first, the task's own over it
        if _is_map(template.get("securityContext")):
            security = template["securityContext"]
        if isinstance(template.get("hostUsers"), bool):
            host_users = template["hostUsers"]
    return PodContext(security=security, host_users=host_users, known=True)


def as_list(value: Any) -> list:
    """A list field, or [] for anything else (Tekton's validation refuses it)."""
    return value if isinstance(value, list) else []


def container_context(step_template: Any, step: Any) -> dict:
    """A step's `securityContext` as its container gets it: the stepTemplate's, with the
    step's fields over it. Tekton merges them as a strategic merge patch of a Container
    (`v1.MergeStepsWithStepTemplate`): nested objects field by field, lists whole."""
    base = step_template.get("securityContext") if _is_map(step_template) else None
    own = step.get("securityContext") if _is_map(step) else None
    return merge(base if _is_map(base) else {}, own if _is_map(own) else {})


def merge(base: Mapping, over: Mapping) -> dict:
    out = {k: v for k, v in base.items() if v is not None}
    for key, value in over.items():
        if value is None:
            continue
        if _is_map(value) and _is_map(out.get(key)):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def drops_all(context: Mapping) -> bool:
    capabilities = context.get("capabilities")
    return _is_map(capabilities) and "ALL" in _strings(capabilities.get("drop"))


def seccomp_type(context: Mapping | None) -> str | None:
    profile = context.get("seccompProfile") if _is_map(context) else None
    return str(profile.get("type")) if _is_map(profile) and profile.get("type") is not None else None


def restricted_problems(containers: Sequence[tuple[str, Mapping]], pod: PodContext) -> list[str]:
    """What `restricted` would refuse in these containers (name, merged securityContext),
    in the words of the admission controller's messages; [] when it would admit them.

    One pass over the containers (a Pipeline may have thousands of tasks), each container's
    failures filed under the message of the check it fails."""
    user_namespace = pod.host_users is False
    pod_non_root = pod.security.get("runAsNonRoot")
    pod_seccomp = seccomp_type(pod.security)
    problems: list[str] = []
    if not user_namespace and pod_non_root is False:
        problems.append("pod must not set securityContext.runAsNonRoot=false")
    if not user_namespace and pod.security.get("runAsUser") == 0:
        problems.append("pod must not set runAsUser=0")
    if pod_seccomp is not None and pod_seccomp not in VALID_SECCOMP:
        problems.append(f"pod must not set securityContext.seccompProfile.type to {pod_seccomp!r}")
    failing: dict[str, list[str]] = {}
    for name, c in containers:
        found = []
        if c.get("allowPrivilegeEscalation") is not False:  # check_allowPrivilegeEscalation.go
            found.append("must set securityContext.allowPrivilegeEscalation=false")
        if not drops_all(c):  # check_capabilities_restricted.go
            found.append('must set securityContext.capabilities.drop=["ALL"]')
        if _added_capabilities(c) - {ALLOWED_ADDED_CAPABILITY}:
            found.append(f"must not add capabilities other than {ALLOWED_ADDED_CAPABILITY}")
        if c.get("privileged") is True:  # check_privileged.go
            found.append("must not set securityContext.privileged=true")
        if c.get("procMount") not in (None, "Default"):  # check_procMount_restricted.go
            found.append("must not set securityContext.procMount other than Default")
        if not user_namespace:
            # check_runAsNonRoot.go: the container's value, else the pod's; never false anywhere.
            if c.get("runAsNonRoot") is False:
                found.append("must not set securityContext.runAsNonRoot=false")
            elif c.get("runAsNonRoot") is None and pod_non_root is not True and pod.known:
                found.append("(or the pod) must set securityContext.runAsNonRoot=true")
            if c.get("runAsUser") == 0:  # check_runAsUser.go
                found.append("must not set runAsUser=0")
        # check_seccompProfile_restricted.go: the container's profile, else the pod's.
        own = seccomp_type(c)
        if own is not None and own not in VALID_SECCOMP:
            found.append("must not set securityContext.seccompProfile.type other than RuntimeDefault or Localhost")
        elif own is None and pod_seccomp is None and pod.known:
            found.append('(or the pod) must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
        for text in found:
            failing.setdefault(text, []).append(name)
    for text, names in failing.items():
        noun = "container" if len(names) == 1 else "containers"
        problems.append(f"{noun} {', '.join(repr(n) for n in names)} {text}")
    return problems


def _added_capabilities(context: Mapping) -> set[str]:
    capabilities = context.get("capabilities")
    return set(_strings(capabilities.get("add"))) if _is_map(capabilities) else set()


def _strings(value: Any) -> list[str]:
    """A list field as strings; anything else (Tekton's validation refuses it) as empty."""
    return [str(v) for v in value] if isinstance(value, list) else []
