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

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wrapresolver.core.plan import is_map

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


def pod_context(pipelinerun: Mapping | None, task: str) -> PodContext:
    """What Tekton makes the pod template of `task`'s TaskRun (`PipelineRun.GetTaskRunSpec`).

    `taskRunSpecs[].podTemplate` of that task wins over `taskRunTemplate.podTemplate` field
    by field (`pod.MergePodTemplateWithDefault`: the `securityContext` as a whole). v1beta1
    runs name them `podTemplate` and `taskRunSpecs[].taskPodTemplate`. The cluster's
    `default-pod-template` (config-defaults) is not visible here.
    """
    if not is_map(pipelinerun) or not is_map(pipelinerun.get("spec")):
        return PodContext()
    spec = pipelinerun["spec"]
    run_template = spec.get("taskRunTemplate")
    default = (run_template.get("podTemplate") if is_map(run_template) else None) or spec.get("podTemplate")
    templates = [default] if is_map(default) else []
    for item in spec.get("taskRunSpecs") or []:
        if is_map(item) and item.get("pipelineTaskName") == task:
            own = item.get("podTemplate") or item.get("taskPodTemplate")
            if is_map(own):
                templates.insert(0, own)
    security: Mapping = {}
    host_users: bool | None = None
    for template in reversed(templates):  # the default first, the task's own over it
        if is_map(template.get("securityContext")):
            security = template["securityContext"]
        if isinstance(template.get("hostUsers"), bool):
            host_users = template["hostUsers"]
    return PodContext(security=security, host_users=host_users, known=True)


def container_context(step_template: Any, step: Any) -> dict:
    """A step's `securityContext` as its container gets it: the stepTemplate's, with the
    step's fields over it. Tekton merges them as a strategic merge patch of a Container
    (`v1.MergeStepsWithStepTemplate`): nested objects field by field, lists whole."""
    base = step_template.get("securityContext") if is_map(step_template) else None
    own = step.get("securityContext") if is_map(step) else None
    return merge(base if is_map(base) else {}, own if is_map(own) else {})


def merge(base: Mapping, over: Mapping) -> dict:
    out = {k: v for k, v in base.items() if v is not None}
    for key, value in over.items():
        if value is None:
            continue
        if is_map(value) and is_map(out.get(key)):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def drops_all(context: Mapping) -> bool:
    capabilities = context.get("capabilities")
    return is_map(capabilities) and "ALL" in (capabilities.get("drop") or [])


def seccomp_type(context: Mapping | None) -> str | None:
    profile = context.get("seccompProfile") if is_map(context) else None
    return str(profile.get("type")) if is_map(profile) and profile.get("type") is not None else None


def restricted_problems(containers: Sequence[tuple[str, Mapping]], pod: PodContext) -> list[str]:
    """What `restricted` would refuse in these containers (name, merged securityContext),
    in the words of the admission controller's messages; [] when it would admit them."""
    problems: list[str] = []
    user_namespace = pod.host_users is False

    def report(names: Iterable[str], text: str) -> None:
        names = list(names)
        if names:
            noun = "container" if len(names) == 1 else "containers"
            problems.append(f"{noun} {', '.join(repr(n) for n in names)} {text}")

    # check_allowPrivilegeEscalation.go
    report((n for n, c in containers if c.get("allowPrivilegeEscalation") is not False),
           "must set securityContext.allowPrivilegeEscalation=false")
    # check_capabilities_restricted.go
    report((n for n, c in containers if not drops_all(c)), 'must set securityContext.capabilities.drop=["ALL"]')
    report((n for n, c in containers if _added_capabilities(c) - {ALLOWED_ADDED_CAPABILITY}),
           f"must not add capabilities other than {ALLOWED_ADDED_CAPABILITY}")
    # check_privileged.go, check_procMount_restricted.go
    report((n for n, c in containers if c.get("privileged") is True), "must not set securityContext.privileged=true")
    report((n for n, c in containers if c.get("procMount") not in (None, "Default")),
           "must not set securityContext.procMount other than Default")
    if not user_namespace:
        # check_runAsNonRoot.go: the container's value, else the pod's; never false anywhere.
        pod_non_root = pod.security.get("runAsNonRoot")
        if pod_non_root is False:
            problems.append("pod must not set securityContext.runAsNonRoot=false")
        report((n for n, c in containers if c.get("runAsNonRoot") is False),
               "must not set securityContext.runAsNonRoot=false")
        if pod_non_root is not True and pod.known:
            report((n for n, c in containers if c.get("runAsNonRoot") is None),
                   "(or the pod) must set securityContext.runAsNonRoot=true")
        # check_runAsUser.go
        if pod.security.get("runAsUser") == 0:
            problems.append("pod must not set runAsUser=0")
        report((n for n, c in containers if c.get("runAsUser") == 0), "must not set runAsUser=0")
    # check_seccompProfile_restricted.go: the container's profile, else the pod's.
    pod_seccomp = seccomp_type(pod.security)
    if pod_seccomp is not None and pod_seccomp not in VALID_SECCOMP:
        problems.append(f"pod must not set securityContext.seccompProfile.type to {pod_seccomp!r}")
    report((n for n, c in containers if seccomp_type(c) not in (None, *VALID_SECCOMP)),
           "must not set securityContext.seccompProfile.type other than RuntimeDefault or Localhost")
    if pod_seccomp is None and pod.known:
        report((n for n, c in containers if seccomp_type(c) is None),
               '(or the pod) must set securityContext.seccompProfile.type to "RuntimeDefault" or "Localhost"')
    return problems


def _added_capabilities(context: Mapping) -> set[str]:
    capabilities = context.get("capabilities")
    return {str(c) for c in capabilities.get("add") or []} if is_map(capabilities) else set()
