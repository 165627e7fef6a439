"""Who owns the files, end to end: tasks whose steps run as different users, through real backends.

Each case runs a rewritten Pipeline in the local executor, which really switches to each
step's UID/GID (step, stepTemplate, pod-level securityContext, else the image's default
user) and gives each task fresh emptyDir stand-ins. The rule under test is the one in
docs/semantics.md ("Who owns the files"): the injected steps run as the task says its
steps run, else as the pod says, else as the step image's user (root); a root fetch gives
each file its recorded owner, a non-root fetch gives them all to its own user.
"""

from __future__ import annotations

import shutil
import uuid
from pathlib import Path

import pytest
import yaml

from tests.fixtures.identities import ForeignPython, shared_dir
from wrapresolver.render import render
from wrapresolver.testing.executor import SUCCEEDED, Identity, LocalExecutor, PipelineRunResult

STEP_IMAGE = "registry.example/wrapresolver:test"
ROOT = Identity(0, 0)
"""The step image's default user under the rule (see the module docstring)."""
IMAGES = {STEP_IMAGE: ROOT, "busybox": ROOT, "node": Identity(1000, 1000)}


@pytest.fixture
def run_dir():
    root = shared_dir("wrap-identities-")
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(params=["file", "oci"])
def target(request, run_dir: Path) -> str:
    if request.param == "oci":
        registry = request.getfixturevalue("registry")
        return f"oci://{registry.host}/owners/{uuid.uuid4().hex[:8]}-<<workspace>>"
    # A directory every task identity may write, as a shared filesystem for several UIDs must be.
    store = run_dir / "store" / "src"
    (store / "blobs" / "sha256").mkdir(parents=True)
    for directory in (store.parent, store, store / "blobs", store / "blobs" / "sha256"):
        directory.chmod(0o777)
    (store / ".index.lock").touch(0o666)
    (store / ".index.lock").chmod(0o666)
    return f"file://{run_dir}/store/<<workspace>>"


def pipeline(*tasks: dict) -> dict:
    named = []
    for i, task in enumerate(tasks):
        spec = {"workspaces": [{"name": "src"}], **task["spec"]}
        entry = {"name": task["name"], "workspaces": [{"name": "src", "workspace": "src"}], "taskSpec": spec}
        if i:
            entry["runAfter"] = [tasks[i - 1]["name"]]
        named.append(entry)
    return {"apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "owners"},
            "spec": {"workspaces": [{"name": "src"}], "tasks": named}}


def step(name: str, script: str, image: str = "busybox", user: int | None = None) -> dict:
    out = {"name": name, "image": image, "script": "cd $(workspaces.src.path)\n" + script}
    if user is not None:
        out["securityContext"] = {"runAsUser": user, "runAsGroup": user}
    return out


def run(source: dict, target: str, run_dir: Path, python: ForeignPython, *, images=IMAGES,
        pod_security_context: dict | None = None) -> tuple[PipelineRunResult, dict]:
    run = {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "owners-run"},
           "spec": {"pipelineRef": {"resolver": "wrap", "params": [
               {"name": "pipelineref", "value": "owners"}, {"name": "target", "value": target}]},
               "workspaces": [{"name": "src", "emptyDir": {}}]}}
    rewritten = yaml.safe_load(render([source, run], ["test", "test"], config={"step-image": STEP_IMAGE}))
    executor = LocalExecutor(rewritten, name="owners-run", uid=str(uuid.uuid4()), workdir=run_dir / "run",
                             env={"DOCKER_CONFIG": str(run_dir / "no-docker-config")}, image_users=images,
                             pod_security_context=pod_security_context, python=python.argv)
    return executor.run(), rewritten


def owners(root: Path) -> dict[str, tuple[int, int, int]]:
    """path -> (uid, gid, mode) of everything under `root`."""
    return {str(p.relative_to(root)): (p.lstat().st_uid, p.lstat().st_gid, p.lstat().st_mode & 0o7777)
            for p in sorted(root.rglob("*"))}


def injected(rewritten: dict, task: str) -> list[dict]:
    spec = next(t for t in rewritten["spec"]["tasks"] if t["name"] == task)["taskSpec"]
    return [s for s in spec["steps"] if s["name"].startswith("wrap-")]


# ---- user steps as root ----

def test_root_steps_private_file_and_directory_are_stored_and_come_back_private_and_root_owned(
        target, run_dir, foreign_python):
    result, _ = run(pipeline(
        {"name": "make", "spec": {"steps": [step("write", "mkdir -m 0700 keys\necho k > keys/id\nchmod 600 keys/id\n"
                                                          "echo s > secret\nchmod 600 secret\n")]}},
        {"name": "use", "spec": {"steps": [step("read", "cat keys/id secret\n")]}},
    ), target, run_dir, foreign_python)
    assert result.status == SUCCEEDED, result.log()
    seen = owners(result.tasks["use"].workspaces["src"])
    assert seen == {"keys": (0, 0, 0o700), "keys/id": (0, 0, 0o600), "secret": (0, 0, 0o600)}


# ---- user steps as uid 1000 ----

WRITE = "mkdir -p lib/old\necho a > lib/a\necho o > lib/old/o\necho keep > keep\necho gone > gone\n"
CHANGE = ("echo changed >> lib/a\nrm -r lib/old\nrm gone\nmkdir new\necho n > new/n\n"
          "test -O lib && test -O keep\n")
CHECK = "test \"$(cat lib/a)\" = \"a\nchanged\"\ntest ! -e lib/old && test ! -e gone && test -f new/n\n"


def as_1000_in_template(name: str, *scripts: str) -> dict:
    return {"name": name, "spec": {"stepTemplate": {"securityContext": {"runAsUser": 1000, "runAsGroup": 1000}},
                                   "steps": [step(f"s{i}", s) for i, s in enumerate(scripts)]}}


def as_1000_in_every_step(name: str, *scripts: str) -> dict:
    return {"name": name, "spec": {"steps": [step(f"s{i}", s, user=1000) for i, s in enumerate(scripts)]}}


def as_1000_in_one_step(name: str, *scripts: str) -> dict:
    """A root step first (as many tasks have: install something), then the work as 1000."""
    return {"name": name, "spec": {"steps": [step("prepare", "ls -la >/dev/null\n"),
                                             *[step(f"s{i}", s, user=1000) for i, s in enumerate(scripts)]]}}


@pytest.mark.parametrize("shape", [as_1000_in_template, as_1000_in_every_step, as_1000_in_one_step],
                         ids=["stepTemplate", "every-step", "only-some-steps"])
def test_steps_as_uid_1000_modify_and_delete_what_fetch_restored_including_directories(
        shape, target, run_dir, foreign_python):
    result, rewritten = run(pipeline(shape("make", WRITE), shape("change", CHANGE), shape("check", CHECK)),
                            target, run_dir, foreign_python)
    assert result.status == SUCCEEDED, result.log()
    seen = owners(result.tasks["check"].workspaces["src"])
    assert {uid for uid, _, _ in seen.values()} == {1000}, seen
    if shape is as_1000_in_one_step:
        # The steps disagree, so the injected ones keep the image's root and restore owners.
        assert all("securityContext" not in s for s in injected(rewritten, "change"))


# ---- the next task as another uid ----

def test_the_next_task_as_another_uid_changes_what_uid_1000_wrote_and_a_root_task_sees_each_writer(
        target, run_dir, foreign_python):
    def as_user(name: str, uid: int, script: str) -> dict:
        return {"name": name, "spec": {"stepTemplate": {"securityContext": {"runAsUser": uid, "runAsGroup": uid}},
                                       "steps": [step("s", script)]}}

    result, _ = run(pipeline(
        as_user("make", 1000, WRITE),
        as_user("change", 2000, CHANGE),
        {"name": "check", "spec": {"steps": [step("s", CHECK)]}},  # no securityContext: root
    ), target, run_dir, foreign_python)
    assert result.status == SUCCEEDED, result.log()
    seen = owners(result.tasks["check"].workspaces["src"])
    assert seen["keep"][:2] == (1000, 1000), "unchanged since make: its writer"
    assert seen["lib/a"][:2] == (2000, 2000) and seen["new/n"][:2] == (2000, 2000), "changed by change: its writer"


# ---- a pod-level securityContext ----

def test_a_pod_level_security_context_applies_to_the_injected_steps_too(target, run_dir, foreign_python):
    plain = pipeline({"name": "make", "spec": {"steps": [step("s", WRITE)]}},
                     {"name": "change", "spec": {"steps": [step("s", CHANGE)]}},
                     {"name": "check", "spec": {"steps": [step("s", CHECK)]}})
    result, rewritten = run(plain, target, run_dir, foreign_python,
                            pod_security_context={"runAsUser": 1000, "runAsGroup": 1000, "runAsNonRoot": True})
    assert result.status == SUCCEEDED, result.log()
    assert all("securityContext" not in s for t in ("make", "change", "check") for s in injected(rewritten, t)), \
        "the rewrite states no identity the task does not, so the pod's applies"
    assert {uid for uid, _, _ in owners(result.tasks["check"].workspaces["src"]).values()} == {1000}


# ---- user steps as their image's own non-root user ----

def test_steps_as_their_images_user_1000_change_files_when_the_task_says_so_in_its_step_template(
        target, run_dir, foreign_python):
    def node(name: str, script: str) -> dict:
        return {"name": name, "spec": {"stepTemplate": {"securityContext": {"runAsUser": 1000}},
                                       "steps": [step("s", script, image="node")]}}

    result, _ = run(pipeline(node("make", WRITE), node("change", CHANGE), node("check", CHECK)),
                    target, run_dir, foreign_python)
    assert result.status == SUCCEEDED, result.log()


def test_with_a_non_root_step_image_a_root_steps_private_file_fails_the_store_naming_the_fix(
        target, run_dir, foreign_python):
    """Why the step image's default user is root: a non-root one cannot read what root keeps private."""
    result, _ = run(pipeline(
        {"name": "make", "spec": {"steps": [step("write", "echo s > secret\nchmod 600 secret\n")]}},
    ), target, run_dir, foreign_python, images={**IMAGES, STEP_IMAGE: Identity(65532, 65532)})
    assert result.tasks["make"].status != SUCCEEDED
    log = result.tasks["make"].log
    assert "secret" in log and "uid 65532" in log and "stepTemplate.securityContext.runAsUser" in log, log


# ---- Pod Security "restricted": runAsNonRoot everywhere ----

def test_under_run_as_non_root_steps_that_all_say_uid_1000_get_injected_steps_as_uid_1000(
        target, run_dir, foreign_python):
    restricted = {"runAsNonRoot": True}
    result, rewritten = run(pipeline(as_1000_in_every_step("make", WRITE), as_1000_in_every_step("change", CHANGE),
                                     as_1000_in_every_step("check", CHECK)),
                            target, run_dir, foreign_python, pod_security_context=restricted)
    assert result.status == SUCCEEDED, result.log()
    assert injected(rewritten, "change")[0]["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000}


def test_under_run_as_non_root_without_any_run_as_user_the_root_step_image_is_refused_at_start(
        target, run_dir, foreign_python):
    """The documented limit: the task or the pod must say which non-root user to be."""
    result, _ = run(pipeline({"name": "make", "spec": {"steps": [step("s", "true\n", image="node")]}}),
                    target, run_dir, foreign_python, pod_security_context={"runAsNonRoot": True})
    assert result.tasks["make"].status != SUCCEEDED
    assert "runAsNonRoot and image will run as root (container: wrap-fetch)" in result.tasks["make"].log


def test_steps_hardened_differently_but_sharing_one_user_get_injected_steps_as_that_user(
        target, run_dir, foreign_python):
    """Restricted-style steps rarely have identical securityContexts (one binds a low port,
    one has a read-only root): the user they share is still the task's, and the injected
    steps run as it, so they start under runAsNonRoot and what they restore is the task's."""
    hardened = {"runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": False,
                "capabilities": {"drop": ["ALL"]}}
    change = {"name": "change", "spec": {"steps": [
        {**step("edit", CHANGE), "securityContext": {**hardened, "readOnlyRootFilesystem": True}},
        {**step("list", "ls -la >/dev/null\n"),
         "securityContext": {**hardened, "capabilities": {"drop": ["ALL"], "add": ["NET_BIND_SERVICE"]}}},
    ]}}
    result, rewritten = run(pipeline({"name": "make", "spec": {"steps": [step("s", WRITE, user=2000)]}}, change,
                                     {"name": "check", "spec": {"steps": [step("s", CHECK, user=1000)]}}),
                            target, run_dir, foreign_python, pod_security_context={"runAsNonRoot": True})
    assert result.status == SUCCEEDED, result.log()
    for s in injected(rewritten, "change"):
        assert s["securityContext"] == {"runAsUser": 1000, "runAsGroup": 1000, "allowPrivilegeEscalation": False,
                                        "capabilities": {"drop": ["ALL"]}}
    assert {uid for uid, _, _ in owners(result.tasks["check"].workspaces["src"]).values()} == {1000}
