"""Pod Security "restricted": the injected steps are admitted wherever the task's own steps are,
and what cannot work is said at resolution.

Rendered Pipelines are turned into the Pods Tekton would create and judged by
tests/psa_restricted.py, the admission checks of k8s.io/pod-security-admission written from
their Go source.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import psa_restricted as psa
from tests.test_corpus import catalog_tasks
from wrapresolver.cli import main
from wrapresolver.errors import WrapError
from wrapresolver.render import render

COMMAND = ["wrapresolver"]
HARDENED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
RESTRICTED_POD = {"runAsNonRoot": True, "runAsUser": 1000, "seccompProfile": {"type": "RuntimeDefault"}}


def task(name: str, steps: list[dict], template: dict | None = None, after: list[str] | None = None) -> dict:
    spec: dict[str, Any] = {"workspaces": [{"name": "src"}], "steps": steps}
    if template is not None:
        spec["stepTemplate"] = {"securityContext": template}
    out: dict[str, Any] = {"name": name, "workspaces": [{"name": "src", "workspace": "src"}], "taskSpec": spec}
    if after:
        out["runAfter"] = after
    return out


def step(name: str, context: dict | None = None) -> dict:
    out: dict[str, Any] = {"name": name, "image": "alpine", "script": "touch $(workspaces.src.path)/" + name}
    if context is not None:
        out["securityContext"] = context
    return out


def documents(tasks: list[dict], pod: dict | None = None, task_pods: dict[str, dict] | None = None) -> list[dict]:
    """A Pipeline of `tasks` and the PipelineRun of it, with `pod` as taskRunTemplate.podTemplate.securityContext."""
    pipeline = {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "ci"},
                "spec": {"workspaces": [{"name": "src"}], "tasks": tasks}}
    run: dict[str, Any] = {
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "ci-run"},
        "spec": {"pipelineRef": {"resolver": "wrap", "params": [
            {"name": "pipelineref", "value": "ci"}, {"name": "workspaces", "value": "src"},
            {"name": "target", "value": "oci://registry.example/ci/<<workspace>>"}]},
            "workspaces": [{"name": "src", "emptyDir": {}}]},
    }
    if pod is not None:
        run["spec"]["taskRunTemplate"] = {"podTemplate": {"securityContext": pod}}
    if task_pods:
        run["spec"]["taskRunSpecs"] = [{"pipelineTaskName": name, "podTemplate": {"securityContext": sc}}
                                       for name, sc in task_pods.items()]
    return [pipeline, run]


WRAP_PARAMS = {"workspaces": "src", "target": "oci://registry.example/ci/<<workspace>>"}


def rendered(docs: list[dict], **params: str) -> tuple[dict, list[str]]:
    warnings: list[str] = []
    out = yaml.safe_load(render(docs, params=params, warnings=warnings))
    return out, warnings


def pods(out: dict, run: dict | None) -> dict[str, tuple[dict, list[str], list[str]]]:
    """Per pipeline task: its Pod, the names of its own containers, of the injected ones."""
    found = {}
    for ptask in out["spec"]["tasks"] + out["spec"].get("finally", []):
        if "taskSpec" not in ptask:
            continue
        pod = psa.pod_of(ptask, run)
        injected = [psa.step_container_name(s, i) for i, s in enumerate(ptask["taskSpec"]["steps"])
                    if s.get("command") == COMMAND]
        own = [c["name"] for c in pod["containers"] if c["name"] not in injected]
        found[ptask["name"]] = (pod, own, injected)
    return found


def three_tasks(steps_of: Any, template: dict | None = None) -> list[dict]:
    """make, then left and right in parallel (so a wrap-publish task is added): every kind
    of injected step, fetch and store in each task and the publish task."""
    return [task("make", steps_of("make"), template), task("left", steps_of("left"), template, ["make"]),
            task("right", steps_of("right"), template, ["make"])]


def assert_injected_admitted(docs: list[dict]) -> list[str]:
    out, warnings = rendered(docs)
    found = pods(out, docs[1])
    assert "wrap-publish" in found
    for name, (pod, own, injected) in found.items():
        assert injected, name
        if own:
            assert psa.violations(psa.only(pod, own)) == [], (name, "the case must be admissible without us")
        assert psa.violations(pod) == [], (name, pod["containers"])
    return warnings


# ---- every way a task can be admissible ----

CASES = {
    # every step states the same complete context
    "shared": (lambda t: [step("a", {**HARDENED, **RESTRICTED_POD}), step("b", {**HARDENED, **RESTRICTED_POD})],
               None, None),
    # the stepTemplate states it all
    "inherited": (lambda t: [step("a"), step("b")], {**HARDENED, **RESTRICTED_POD}, None),
    # the stepTemplate states the user, each step the restrictions
    "inherited-and-per-step": (lambda t: [step("a", HARDENED), step("b", HARDENED)],
                               {"runAsUser": 1000, "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
                               None),
    # steps differ: one binds a low port, one has a read-only root and its own seccomp profile
    "differing": (lambda t: [
        step("a", {**HARDENED, **RESTRICTED_POD, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}),
        step("b", {**HARDENED, **RESTRICTED_POD, "readOnlyRootFilesystem": True,
                   "seccompProfile": {"type": "Localhost", "localhostProfile": "build.json"}})], None, None),
    # the pod says who and how; the steps say only the per-container fields, differently
    "pod-level": (lambda t: [step("a", HARDENED), step("b", {**HARDENED, "readOnlyRootFilesystem": True})],
                  None, RESTRICTED_POD),
    # steps run as different users; the pod gives the injected steps one
    "differing-users-pod-user": (lambda t: [step("a", {**HARDENED, "runAsUser": 1000}),
                                            step("b", {**HARDENED, "runAsUser": 2000})], None, RESTRICTED_POD),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_injected_steps_are_admitted_under_restricted_wherever_the_tasks_own_steps_are(case):
    steps_of, template, pod = CASES[case]
    assert_injected_admitted(documents(three_tasks(steps_of, template), pod))


def test_a_task_run_spec_pod_template_counts_for_its_own_task():
    """taskRunSpecs[].podTemplate replaces the run's securityContext for that task only."""
    def steps_of(name: str) -> list[dict]:
        return [step("a", HARDENED), step("b", {**HARDENED, "readOnlyRootFilesystem": True})]
    docs = documents(three_tasks(steps_of), RESTRICTED_POD, {"left": {**RESTRICTED_POD, "runAsUser": 3000}})
    warnings = assert_injected_admitted(docs)
    out, _ = rendered(docs)
    left = psa.pod_of(next(t for t in out["spec"]["tasks"] if t["name"] == "left"), docs[1])
    assert left["securityContext"]["runAsUser"] == 3000
    assert warnings == []


def test_the_injected_steps_keep_the_user_the_steps_share_and_gain_only_what_every_step_has():
    out, warnings = rendered(documents(three_tasks(CASES["differing"][0])))
    make = next(t for t in out["spec"]["tasks"] if t["name"] == "make")
    for s in make["taskSpec"]["steps"]:
        if s.get("command") == COMMAND:
            assert s["securityContext"] == {
                "runAsUser": 1000, "runAsNonRoot": True, "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"},
            }
    publish = out["spec"]["finally"][0]["taskSpec"]["steps"][0]
    assert publish["securityContext"]["runAsUser"] == 1000 and publish["securityContext"]["allowPrivilegeEscalation"] is False
    assert warnings == []
    # What the stepTemplate already gives every step is not repeated on ours.
    out, _ = rendered(documents(three_tasks(CASES["inherited-and-per-step"][0], CASES["inherited-and-per-step"][1])))
    make = next(t for t in out["spec"]["tasks"] if t["name"] == "make")
    for s in make["taskSpec"]["steps"]:
        if s.get("command") == COMMAND:
            assert s["securityContext"] == HARDENED


# ---- property: wrapping never makes a Pod less admissible ----

PLACES = st.sampled_from(["template", "steps", "pod", "nowhere", "some-steps"])


@st.composite
def restricted_tasks(draw: Any) -> tuple[list[dict], dict | None, dict]:
    """A task with 1-3 steps; each restricted setting placed in the stepTemplate, every step,
    only some steps, the pod (where the pod can hold it) or nowhere; extra per-step variety."""
    count = draw(st.integers(1, 3))
    template: dict = {}
    contexts: list[dict] = [{} for _ in range(count)]
    pod: dict = {}
    settings_ = {
        "allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsNonRoot": True,
        "seccompProfile": {"type": "RuntimeDefault"}, "runAsUser": draw(st.sampled_from([1000, 65532])),
    }
    for key, value in settings_.items():
        place = draw(PLACES)
        if place == "pod" and key in ("allowPrivilegeEscalation", "capabilities"):
            place = "steps"
        if place == "template":
            template[key] = copy.deepcopy(value)
        elif place == "pod":
            pod[key] = copy.deepcopy(value)
        elif place == "steps":
            for c in contexts:
                c[key] = copy.deepcopy(value)
        elif place == "some-steps":
            for c in contexts[: draw(st.integers(0, count))]:
                c[key] = copy.deepcopy(value)
    for c in contexts:
        extra = draw(st.sampled_from(["none", "user", "port", "readonly", "localhost", "root", "privileged",
                                      "non-root-false"]))
        if extra == "user":
            c["runAsUser"] = draw(st.sampled_from([1000, 2000, 65532]))
        elif extra == "port":
            c["capabilities"] = {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}
        elif extra == "readonly":
            c["readOnlyRootFilesystem"] = True
        elif extra == "localhost":
            c["seccompProfile"] = {"type": "Localhost", "localhostProfile": "p.json"}
        elif extra == "root":
            c["runAsUser"] = 0
        elif extra == "privileged":
            c["privileged"] = True
        elif extra == "non-root-false":
            c["runAsNonRoot"] = False
    steps = [step(f"s{i}", c or None) for i, c in enumerate(contexts)]
    return steps, template or None, pod


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(restricted_tasks(), st.booleans())
def test_the_injected_steps_never_fail_a_restricted_check_the_tasks_own_steps_pass(generated, run_seen):
    steps, template, pod = generated
    docs = documents(three_tasks(lambda name: copy.deepcopy(steps), template), pod or None)
    # Unseen: the resolver could not read the PipelineRun, but its pod template still applies.
    out, _ = rendered(docs) if run_seen else rendered(docs[:1], **WRAP_PARAMS)
    found = pods(out, docs[1])
    own_failing: set[str] = set()
    for name, (pod_, own, injected) in found.items():
        if not own:
            continue
        theirs = psa.failing_checks(psa.only(pod_, own))
        ours = psa.failing_checks(psa.only(pod_, injected))
        assert ours <= theirs, (name, ours - theirs, pod_["containers"])
        own_failing |= theirs
        if not theirs:  # the same identity where the steps agree on one
            users = {c.get("securityContext", {}).get("runAsUser") for c in pod_["containers"] if c["name"] in own}
            if len(users) == 1 and None not in users:
                assert {c["securityContext"]["runAsUser"] for c in pod_["containers"]
                        if c["name"] in injected} == users
    publish_pod = found["wrap-publish"][0]
    assert psa.failing_checks(publish_pod) <= own_failing, publish_pod["containers"]


# ---- what cannot work is said at resolution ----

def test_steps_differing_in_user_under_run_as_non_root_without_a_pod_user_are_warned_the_injected_steps_cannot_start():
    def steps_of(name: str) -> list[dict]:
        return [step("a", {**HARDENED, "runAsNonRoot": True, "runAsUser": 1000}),
                step("b", {**HARDENED, "runAsNonRoot": True, "runAsUser": 2000})]
    _, warnings = rendered(documents(three_tasks(steps_of), {"seccompProfile": {"type": "RuntimeDefault"}}))
    make = [w for w in warnings if w.startswith("task 'make'")]
    assert len(make) == 1, warnings
    for words in ("runAsNonRoot", "different users", "1000 in 'step-a'", "2000 in 'step-b'", "default user is root",
                  "kubelet would refuse", "set runAsUser", "stepTemplate.securityContext",
                  "taskRunTemplate.podTemplate.securityContext"):
        assert words in make[0], (words, make[0])
    assert any("'wrap-publish'" in w and "set runAsUser" in w for w in warnings), warnings


@pytest.mark.parametrize("shape", ["v1", "v1beta1", "v1beta1-task-pod-template"])
def test_steps_differing_in_user_with_a_pod_user_are_warned_that_restored_files_belong_to_that_user(shape):
    docs = documents(three_tasks(CASES["differing-users-pod-user"][0]), RESTRICTED_POD)
    if shape != "v1":  # v1beta1 names the run's pod template `podTemplate`, a task's `taskPodTemplate`
        spec = docs[1]["spec"]
        docs[1]["apiVersion"] = "tekton.dev/v1beta1"
        template = spec.pop("taskRunTemplate")["podTemplate"]
        if shape == "v1beta1":
            spec["podTemplate"] = template
        else:
            spec["taskRunSpecs"] = [{"pipelineTaskName": t, "taskPodTemplate": template}
                                    for t in ("make", "left", "right")]
    _, warnings = rendered(docs)
    make = [w for w in warnings if w.startswith("task 'make'")]
    assert len(make) == 1, warnings
    for words in ("different users", "1000 in 'step-a'", "2000 in 'step-b'", "run as 1000", "belongs to 1000",
                  "cannot change a file", "one runAsUser"):
        assert words in make[0], (words, make[0])


def test_non_root_steps_stating_no_user_are_warned_even_when_the_pipeline_run_was_not_seen():
    def steps_of(name: str) -> list[dict]:
        return [step("a", {**HARDENED, "runAsNonRoot": True})]
    _, warnings = rendered(documents(three_tasks(steps_of))[:1], **WRAP_PARAMS)
    assert any(w.startswith("task 'make'") and "state no runAsUser" in w and "PipelineRun was not seen" in w
               for w in warnings), warnings


def test_a_task_meant_for_restricted_whose_own_steps_are_refused_is_warned_naming_container_and_field():
    def steps_of(name: str) -> list[dict]:
        return [step("a", {**HARDENED, "runAsUser": 1000}), step("b", {"runAsUser": 1000})]
    _, warnings = rendered(documents(three_tasks(steps_of), RESTRICTED_POD))
    make = [w for w in warnings if w.startswith("task 'make'")]
    assert len(make) == 1, warnings
    for words in ("own steps are not admissible", '"restricted"', "'step-b'", "allowPrivilegeEscalation=false",
                  'capabilities.drop=["ALL"]', "wrapped or not", "stepTemplate.securityContext"):
        assert words in make[0], (words, make[0])
    assert "'step-wrap-fetch'" not in make[0]


def test_render_prints_the_warnings_on_stderr_and_still_succeeds(tmp_path, capsys):
    def steps_of(name: str) -> list[dict]:
        return [step("a", {**HARDENED, "runAsNonRoot": True, "runAsUser": 1000}),
                step("b", {**HARDENED, "runAsNonRoot": True, "runAsUser": 2000})]
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump_all(documents(three_tasks(steps_of))))
    code = main(["render", "-f", str(path)])
    out, err = capsys.readouterr()
    assert code == 0 and "kind: Pipeline" in out
    lines = err.splitlines()
    assert lines and all(line.startswith("warning: ") for line in lines), err
    assert any("task 'make'" in line and "kubelet would refuse" in line for line in lines), err


# ---- the corpus: real Tasks, as written and hardened ----

def test_catalog_tasks_wrapped_are_admitted_wherever_they_are_and_warned_where_they_are_not(corpus_dir):
    """Each catalog Task with workspaces, hardened as a restricted namespace needs (the
    per-container fields in each step's own securityContext, the user and seccomp in the pod
    template), used twice in a row and wrapped: the injected steps pass every check the
    Task's steps pass; a Task that stays refusable (root, privileged) is warned about."""
    checked = admitted = 0
    for original in catalog_tasks(corpus_dir):
        decls = original["spec"].get("workspaces") or []
        if not decls or original["spec"].get("resources"):
            continue
        t = copy.deepcopy(original)
        for s in t["spec"]["steps"]:
            s["securityContext"] = {**HARDENED, **(s.get("securityContext") or {})}
        params = [
            {"name": p["name"], "value": ["x"] if p.get("type") == "array" else ({} if p.get("type") == "object" else "x")}
            for p in t["spec"].get("params") or [] if "default" not in p
        ]
        bindings = [{"name": d["name"], "workspace": d["name"]} for d in decls]
        name = t["metadata"]["name"]
        docs = documents([])
        pipeline, run = docs
        pipeline["spec"] = {"workspaces": [{"name": d["name"]} for d in decls], "tasks": [
            {"name": "first", "taskRef": {"name": name}, "params": params, "workspaces": bindings},
            {"name": "second", "runAfter": ["first"], "taskRef": {"name": name}, "params": params,
             "workspaces": bindings}]}
        run["spec"]["pipelineRef"]["params"][1]["value"] = ",".join(d["name"] for d in decls)
        run["spec"]["workspaces"] = [{"name": d["name"], "emptyDir": {}} for d in decls]
        run["spec"]["taskRunTemplate"] = {"podTemplate": {"securityContext": RESTRICTED_POD}}
        out, warnings = rendered([pipeline, run, t])
        for ptask_name, (pod, own, injected) in pods(out, run).items():
            theirs = psa.failing_checks(psa.only(pod, own))
            assert psa.failing_checks(psa.only(pod, injected)) <= theirs, (name, ptask_name)
            security_failures = theirs - {"restrictedVolumes", "hostNamespaces", "hostPorts"}
            if security_failures:
                assert any(w.startswith(f"task {ptask_name!r}") and "not admissible" in w for w in warnings), (
                    name, security_failures, warnings)
            else:
                admitted += 1
        checked += 1
    assert checked >= 30 and admitted >= 50, (checked, admitted)


def harden(task_spec: dict) -> None:
    """What a restricted namespace needs of each step, in the step's own securityContext,
    the first step also with a read-only root filesystem: steps that differ, as real ones do."""
    for i, s in enumerate(task_spec.get("steps") or []):
        if isinstance(s, dict) and "ref" not in s:
            extra = {"readOnlyRootFilesystem": True} if i == 0 else {}
            s["securityContext"] = {**HARDENED, **extra, **(s.get("securityContext") or {})}


def test_corpus_pipelines_hardened_for_restricted_are_admitted_wrapped_wherever_their_tasks_are(corpus_dir):
    """Every corpus Pipeline, its embedded and referenced Tasks hardened (harden()) and the
    pod template of RESTRICTED_POD, every workspace wrapped: each task's injected steps fail
    no check its own steps pass, and the publish task is admitted where every task is."""
    from tests.test_corpus import cases, to_wrap
    catalog = catalog_tasks(corpus_dir)
    compared = admitted = 0
    for label, original, run, docs in cases(corpus_dir):
        wrap = to_wrap(original, None)
        if not wrap:
            continue
        pipeline = copy.deepcopy(original)
        for ptask in (pipeline["spec"].get("tasks") or []) + (pipeline["spec"].get("finally") or []):
            if isinstance(ptask.get("taskSpec"), dict):
                harden(ptask["taskSpec"])
        names = {(d.get("kind"), d["metadata"]["name"]) for d in docs if d.get("metadata", {}).get("name")}
        tasks = [copy.deepcopy(d) for d in docs if d.get("kind") == "Task"]
        tasks += [copy.deepcopy(t) for t in catalog if ("Task", t["metadata"]["name"]) not in names]
        for t in tasks:
            harden(t["spec"])
        spec = {k: v for k, v in copy.deepcopy((run or {}).get("spec") or {}).items() if k != "pipelineSpec"}
        spec["taskRunTemplate"] = {"podTemplate": {"securityContext": RESTRICTED_POD}}
        spec["pipelineRef"] = {"resolver": "wrap", "params": [
            {"name": "pipelineref", "value": pipeline["metadata"]["name"]},
            {"name": "workspaces", "value": ",".join(wrap)}, {"name": "target", "value": "file:///srv/<<workspace>>"}]}
        wrap_run = {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "r"},
                    "spec": spec}
        try:
            out, _ = rendered([pipeline, wrap_run] + tasks)
        except WrapError as exc:  # the deliberate errors of test_corpus: nothing to inject into
            assert "cannot resolve resolver" in str(exc) or "pipelines in pipelines" in str(exc), (label, exc)
            continue
        found = pods(out, wrap_run)
        every_task_admitted = True
        for name, (pod, own, injected) in found.items():
            if not own:
                continue
            theirs = psa.failing_checks(psa.only(pod, own))
            assert psa.failing_checks(psa.only(pod, injected)) <= theirs, (label, name)
            every_task_admitted &= not theirs
            compared += 1
        if "wrap-publish" in found and every_task_admitted:
            assert psa.violations(found["wrap-publish"][0]) == [], label
            admitted += 1
    assert compared >= 40 and admitted >= 1, (compared, admitted)


# ---- the oracle itself, on the Go tests' own cases ----

@pytest.mark.parametrize(("container", "pod", "failing"), [
    ({}, {}, {"allowPrivilegeEscalation", "capabilities_restricted", "runAsNonRoot", "seccompProfile"}),
    ({**HARDENED, "runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}}, {}, set()),
    (HARDENED, {"runAsNonRoot": True, "seccompProfile": {"type": "Localhost"}}, set()),
    ({**HARDENED, "runAsNonRoot": False}, {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"}},
     {"runAsNonRoot"}),
    ({**HARDENED, "runAsUser": 0}, RESTRICTED_POD, {"runAsUser"}),
    ({**HARDENED, "seccompProfile": {"type": "Unconfined"}}, RESTRICTED_POD, {"seccompProfile"}),
    ({**HARDENED, "capabilities": {"drop": ["ALL"], "add": ["SYS_ADMIN"]}}, RESTRICTED_POD, {"capabilities_restricted"}),
    ({**HARDENED, "privileged": True}, RESTRICTED_POD, {"privileged"}),
    ({**HARDENED, "procMount": "Unmasked"}, RESTRICTED_POD, {"procMount"}),
])
def test_the_restricted_checks_decide_as_pod_security_admission(container, pod, failing):
    subject = {"containers": [{"name": "c", "securityContext": container}], "securityContext": pod, "volumes": []}
    assert psa.failing_checks(subject) == failing


def test_a_user_namespace_relaxes_run_as_non_root_and_run_as_user_only():
    subject = {"containers": [{"name": "c", "securityContext": {**HARDENED, "runAsUser": 0}}],
               "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}}, "hostUsers": False,
               "volumes": [{"name": "h", "hostPath": {"path": "/"}}]}
    assert psa.failing_checks(subject) == {"restrictedVolumes"}


@pytest.mark.parametrize("context", [
    {"capabilities": {"drop": 5, "add": "SYS_ADMIN"}, "allowPrivilegeEscalation": False},
    {"capabilities": "ALL", "seccompProfile": "RuntimeDefault", "allowPrivilegeEscalation": False},
    {"runAsUser": "1000", "runAsNonRoot": "yes", "seLinuxOptions": [1]},
])
def test_malformed_security_settings_are_never_an_unexpected_error(context):
    """Tekton's validation refuses these; the resolution must not fail with a "bug" message."""
    docs = documents(three_tasks(lambda name: [step("a", context), step("b", HARDENED)]), {"runAsNonRoot": 1})
    docs[1]["spec"]["taskRunSpecs"] = 7
    out, _ = rendered(docs)
    assert out["kind"] == "Pipeline"
