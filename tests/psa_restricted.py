"""Pod Security "restricted" as the API server checks it, applied to the Pod of a rendered task.

Each `check_*` function below mirrors one check of k8s.io/pod-security-admission
(kubernetes/pod-security-admission, `policy/check_<name>.go`, the newest version of each, as
of commit 8f84a87): the `restricted` level is every baseline check plus the restricted ones,
where `capabilities_restricted`, `seccompProfile_restricted`, `procMount_restricted` and
`restrictedVolumes` replace their baseline counterparts (`OverrideCheckIDs`). Written here
from the Go source, independently of wrapresolver/core/podsecurity.py, so the tests do not
grade the resolver with its own rules. Windows pods (`spec.os.name: windows`, which skips
some checks) and the deprecated seccomp/AppArmor annotations are left out: Tekton sets
neither on a Linux TaskRun Pod.

`pod_of(ptask, pipelinerun)` builds the Pod Tekton would create for one pipeline task of a
rendered Pipeline (tektoncd/pipeline `pkg/pod/pod.go`): one container per step, named
`step-<name>`, the stepTemplate merged into it (`v1.MergeStepsWithStepTemplate`, a
strategic merge: objects field by field, lists whole; StepAction steps are skipped, their
settings live elsewhere), sidecars as `sidecar-<name>`, the task's volumes, its workspaces
as the PipelineRun binds them (`emptyDir` when unbound), and the pod-level fields of the
PipelineRun's pod template, `taskRunSpecs[].podTemplate` over `taskRunTemplate.podTemplate`
(`PipelineRun.GetTaskRunSpec`). Out of scope: the init containers and results sidecar that
Tekton itself adds. They carry a restricted-admissible securityContext only when Tekton's
feature flag `set-security-context` is "true" (`pkg/pod/security_context_config.go`); steps
never get one from Tekton, with or without the flag. That holds the same for a wrapped and
an unwrapped task, so a namespace enforcing `restricted` needs the flag either way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any

VALID_SECCOMP = {"RuntimeDefault", "Localhost"}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range",
    "net.ipv4.ip_unprivileged_port_start", "net.ipv4.ip_local_reserved_ports", "net.ipv4.tcp_keepalive_time",
    "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl", "net.ipv4.tcp_keepalive_probes", "net.ipv4.tcp_rmem",
    "net.ipv4.tcp_wmem", "net.ipv4.tcp_slow_start_after_idle", "net.ipv4.tcp_notsent_lowat",
}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "image", "persistentVolumeClaim",
                   "projected", "secret"}
WORKSPACE_VOLUME_KINDS = {"emptyDir": "emptyDir", "persistentVolumeClaim": "persistentVolumeClaim",
                          "volumeClaimTemplate": "persistentVolumeClaim", "configMap": "configMap",
                          "secret": "secret", "projected": "projected", "csi": "csi"}

Violation = tuple[str, str]
"""(check id as in the Go source, detail)."""


# ---- the Pod Tekton builds ----

def merged(template: Any, step: Any) -> dict:
    """Strategic merge of a Container over a template, as far as these checks read it."""
    if not isinstance(template, Mapping):
        return dict(step)
    out = dict(template)
    for key, value in step.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        elif value is not None:
            out[key] = value
    return out


def pod_template(pipelinerun: Mapping | None, task: str) -> dict:
    spec = (pipelinerun or {}).get("spec") or {}
    template = dict((spec.get("taskRunTemplate") or {}).get("podTemplate") or spec.get("podTemplate") or {})
    for item in spec.get("taskRunSpecs") or []:
        if item.get("pipelineTaskName") == task:
            own = item.get("podTemplate") or item.get("taskPodTemplate") or {}
            template = {**template, **{k: v for k, v in own.items() if v is not None}}
    return template


def step_container_name(step: Mapping, index: int) -> str:
    """tektoncd/pipeline pkg/pod `StepName`: `step-<name>`, or `step-unnamed-<index>`."""
    return f"step-{step.get('name') or f'unnamed-{index}'}"


def pod_of(ptask: Mapping, pipelinerun: Mapping | None = None) -> dict:
    spec = ptask["taskSpec"]
    template = spec.get("stepTemplate")
    containers = [
        {**merged(template, step), "name": step_container_name(step, i)}
        for i, step in enumerate(spec.get("steps") or []) if "ref" not in step
    ]
    containers += [{**s, "name": f"sidecar-{s.get('name')}"} for s in spec.get("sidecars") or []]
    run_bindings = {b["name"]: b for b in ((pipelinerun or {}).get("spec") or {}).get("workspaces") or []}
    volumes = [dict(v) for v in spec.get("volumes") or []]
    for binding in ptask.get("workspaces") or []:
        bound = run_bindings.get(binding.get("workspace") or binding["name"], {})
        kind = next((WORKSPACE_VOLUME_KINDS[k] for k in bound if k in WORKSPACE_VOLUME_KINDS), "emptyDir")
        volumes.append({"name": f"ws-{binding['name']}", kind: {}})
    tpl = pod_template(pipelinerun, ptask["name"])
    pod = {"containers": containers, "volumes": volumes + list(tpl.get("volumes") or [])}
    for key in ("securityContext", "hostNetwork", "hostUsers"):
        if key in tpl:
            pod[key] = tpl[key]
    return pod


# ---- the checks ----

def _sc(container: Mapping) -> Mapping:
    return container.get("securityContext") or {}


def _bad(pod: Mapping, test: Callable[[Mapping], bool]) -> list[str]:
    return [c["name"] for c in list(pod.get("initContainers") or []) + list(pod["containers"]) if test(c)]


def _user_namespace(pod: Mapping) -> bool:
    """helpers.go relaxPolicyForUserNamespacePod: hostUsers false relaxes some checks."""
    return pod.get("hostUsers") is False


def check_host_namespaces(pod: Mapping) -> list[Violation]:
    """check_hostNamespaces.go."""
    found = [f"{k}=true" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]
    return [("hostNamespaces", ", ".join(found))] if found else []


def check_privileged(pod: Mapping) -> list[Violation]:
    """check_privileged.go."""
    bad = _bad(pod, lambda c: _sc(c).get("privileged") is True)
    return [("privileged", f"{bad} must not set securityContext.privileged=true")] if bad else []


def check_host_path_volumes_and_restricted_volumes(pod: Mapping) -> list[Violation]:
    """check_restrictedVolumes.go (overrides check_hostPathVolumes.go under restricted)."""
    bad = [v["name"] for v in pod.get("volumes") or [] if not (set(v) - {"name"}) & ALLOWED_VOLUMES]
    return [("restrictedVolumes", f"volumes {bad}")] if bad else []


def check_host_ports(pod: Mapping) -> list[Violation]:
    """check_hostPorts.go."""
    bad = _bad(pod, lambda c: any(p.get("hostPort") for p in c.get("ports") or []))
    return [("hostPorts", f"{bad}")] if bad else []


def check_app_armor(pod: Mapping) -> list[Violation]:
    """check_appArmorProfile.go."""
    def bad_profile(sc: Mapping) -> bool:
        profile = sc.get("appArmorProfile")
        return isinstance(profile, Mapping) and profile.get("type") not in VALID_SECCOMP
    bad = _bad(pod, lambda c: bad_profile(_sc(c)))
    if bad_profile(pod.get("securityContext") or {}):
        bad.append("pod")
    return [("appArmorProfile", f"{bad}")] if bad else []


def check_selinux(pod: Mapping) -> list[Violation]:
    """check_seLinuxOptions.go."""
    def bad_options(sc: Mapping) -> bool:
        opts = sc.get("seLinuxOptions")
        return isinstance(opts, Mapping) and (
            (opts.get("type") or "") not in SELINUX_TYPES or bool(opts.get("user")) or bool(opts.get("role")))
    bad = _bad(pod, lambda c: bad_options(_sc(c)))
    if bad_options(pod.get("securityContext") or {}):
        bad.append("pod")
    return [("seLinuxOptions", f"{bad}")] if bad else []


def check_proc_mount(pod: Mapping) -> list[Violation]:
    """check_procMount_restricted.go (overrides check_procMount_baseline.go, not relaxed by hostUsers)."""
    bad = _bad(pod, lambda c: _sc(c).get("procMount") not in (None, "Default"))
    return [("procMount", f"{bad} must not set securityContext.procMount")] if bad else []


def check_seccomp_restricted(pod: Mapping) -> list[Violation]:
    """check_seccompProfile_restricted.go: the container's profile, or else the pod's, must be valid."""
    pod_profile = (pod.get("securityContext") or {}).get("seccompProfile")
    pod_set = isinstance(pod_profile, Mapping)
    out: list[Violation] = []
    if pod_set and pod_profile.get("type") not in VALID_SECCOMP:
        out.append(("seccompProfile", "pod must not set securityContext.seccompProfile.type"))
        pod_set = False
    explicit = _bad(pod, lambda c: isinstance(_sc(c).get("seccompProfile"), Mapping)
                    and _sc(c)["seccompProfile"].get("type") not in VALID_SECCOMP)
    if explicit:
        out.append(("seccompProfile", f"{explicit} must not set securityContext.seccompProfile.type"))
    elif not out:
        implicit = _bad(pod, lambda c: not isinstance(_sc(c).get("seccompProfile"), Mapping) and not pod_set)
        if implicit:
            out.append(("seccompProfile", f"pod or {implicit} must set securityContext.seccompProfile.type"))
    return out


def check_sysctls(pod: Mapping) -> list[Violation]:
    """check_sysctls.go (the 1.37 list)."""
    bad = [s.get("name") for s in (pod.get("securityContext") or {}).get("sysctls") or [] if s.get("name") not in SAFE_SYSCTLS]
    return [("sysctls", f"{bad}")] if bad else []


def check_windows_host_process(pod: Mapping) -> list[Violation]:
    """check_windowsHostProcess.go."""
    def host_process(sc: Mapping) -> bool:
        return (sc.get("windowsOptions") or {}).get("hostProcess") is True
    bad = _bad(pod, lambda c: host_process(_sc(c)))
    if host_process(pod.get("securityContext") or {}):
        bad.append("pod")
    return [("windowsHostProcess", f"{bad}")] if bad else []


def check_host_probes_and_lifecycle(pod: Mapping) -> list[Violation]:
    """check_hostProbesAndhostLifecycle.go."""
    def host_set(c: Mapping) -> bool:
        handlers = [c.get(p) for p in ("livenessProbe", "readinessProbe", "startupProbe")]
        handlers += [(c.get("lifecycle") or {}).get(h) for h in ("postStart", "preStop")]
        return any((h or {}).get(kind, {}).get("host") for h in handlers for kind in ("httpGet", "tcpSocket"))
    bad = _bad(pod, host_set)
    return [("hostProbesAndhostLifecycle", f"{bad}")] if bad else []


def check_allow_privilege_escalation(pod: Mapping) -> list[Violation]:
    """check_allowPrivilegeEscalation.go: every container must set it to false."""
    bad = _bad(pod, lambda c: _sc(c).get("allowPrivilegeEscalation") is not False)
    return [("allowPrivilegeEscalation", f"{bad} must set securityContext.allowPrivilegeEscalation=false")] if bad else []


def check_run_as_non_root(pod: Mapping) -> list[Violation]:
    """check_runAsNonRoot.go: true on the container, or unset there and true on the pod; never false."""
    if _user_namespace(pod):
        return []
    pod_value = (pod.get("securityContext") or {}).get("runAsNonRoot")
    explicit = _bad(pod, lambda c: _sc(c).get("runAsNonRoot") is False)
    if pod_value is False or explicit:
        return [("runAsNonRoot", f"pod={pod_value is False} {explicit} must not set securityContext.runAsNonRoot=false")]
    implicit = _bad(pod, lambda c: _sc(c).get("runAsNonRoot") is None and pod_value is not True)
    return [("runAsNonRoot", f"pod or {implicit} must set securityContext.runAsNonRoot=true")] if implicit else []


def check_run_as_user(pod: Mapping) -> list[Violation]:
    """check_runAsUser.go: no runAsUser 0, on the pod or a container."""
    if _user_namespace(pod):
        return []
    bad = _bad(pod, lambda c: _sc(c).get("runAsUser") == 0)
    if (pod.get("securityContext") or {}).get("runAsUser") == 0:
        bad.append("pod")
    return [("runAsUser", f"{bad} must not set runAsUser=0")] if bad else []


def check_capabilities_restricted(pod: Mapping) -> list[Violation]:
    """check_capabilities_restricted.go (overrides check_capabilities_baseline.go): drop ALL,
    add nothing but NET_BIND_SERVICE."""
    def caps(c: Mapping) -> Mapping:
        return _sc(c).get("capabilities") or {}
    out: list[Violation] = []
    missing = _bad(pod, lambda c: "ALL" not in (caps(c).get("drop") or []))
    if missing:
        out.append(("capabilities_restricted", f'{missing} must set securityContext.capabilities.drop=["ALL"]'))
    adding = _bad(pod, lambda c: bool(set(caps(c).get("add") or []) - {"NET_BIND_SERVICE"}))
    if adding:
        out.append(("capabilities_restricted", f"{adding} must not add capabilities"))
    return out


CHECKS = (
    check_host_namespaces, check_privileged, check_host_path_volumes_and_restricted_volumes, check_host_ports,
    check_app_armor, check_selinux, check_proc_mount, check_seccomp_restricted, check_sysctls,
    check_windows_host_process, check_host_probes_and_lifecycle, check_allow_privilege_escalation,
    check_run_as_non_root, check_run_as_user, check_capabilities_restricted,
)


def violations(pod: Mapping) -> list[Violation]:
    """Every `restricted` check the Pod fails; [] when the API server would admit it."""
    return [v for check in CHECKS for v in check(pod)]


def only(pod: Mapping, names: Iterable[str]) -> dict:
    """The same Pod with only the containers named: to judge some containers on their own
    (the pod-level checks still apply)."""
    wanted = set(names)
    return {**pod, "containers": [c for c in pod["containers"] if c["name"] in wanted]}


def failing_checks(pod: Mapping) -> set[str]:
    return {check for check, _ in violations(pod)}
