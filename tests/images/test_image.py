"""The built images, run as the Deployment runs them: read-only root, only /tmp writable, a UID
with no passwd entry (the image's own 65532 and an OpenShift-style random UID with GID 0).
See tests/images/conftest.py for how that is reproduced without a container runtime."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import tarfile
import tomllib
import urllib.request
import uuid
from pathlib import Path

import httpx
import pytest
import yaml

from tests.controller.conftest import SYSTEM_NS, Cluster, decoded, free_port, wait_for
from tests.fixtures.registry import Registry
from tests.images.conftest import REPO, BuiltImages, ImageRoot, buildah, deployment_settings, mounted
from wrapresolver.backends.rsync import SSH_KEY_MOUNT, SSH_KEY_NAME
from wrapresolver.core.params import DEFAULT_STEP_IMAGE
from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer

VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
SETTINGS = deployment_settings(SYSTEM_NS)
RUN = "7d41c0de-image-run"


def passwd_uids(image_root: ImageRoot) -> set[str]:
    return {line.split(":")[2] for line in (image_root.root / "etc/passwd").read_text().splitlines() if line}


def test_the_harness_runs_as_the_identity_on_a_read_only_root_with_a_writable_tmp(image_root, identity):
    uid, _, gid = identity.partition(":")
    assert uid not in passwd_uids(image_root), "the identity must have no passwd entry, as in the Deployment"
    assert SETTINGS.read_only_root and SETTINGS.empty_dirs == ("/tmp",), "config/deployment.yaml changed: update"
    done = image_root.run(["-c", "id -u; id -g; touch /probe 2>/dev/null || echo read-only; touch /tmp/probe && echo tmp-ok"],
                          user=identity, settings=SETTINGS, entrypoint=["/bin/sh"])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == [uid, gid, "read-only", "tmp-ok"]


def test_version_and_controller_help_run(image_root, identity):
    version = image_root.run(["--version"], user=identity, settings=SETTINGS)
    assert version.returncode == 0, version.stderr
    assert version.stdout.strip() == f"wrapresolver {VERSION}"
    helped = image_root.run(["controller", "--help"], user=identity, settings=SETTINGS)
    assert helped.returncode == 0, helped.stderr
    assert "--kubeconfig" in helped.stdout and "--health-address" in helped.stdout


def test_the_release_tag_is_the_step_image_default_and_the_install_manifests_image():
    assert DEFAULT_STEP_IMAGE == f"ghcr.io/wrapresolver/wrapresolver:{VERSION}"
    deployment = yaml.safe_load((REPO / "config" / "deployment.yaml").read_text())
    assert deployment["spec"]["template"]["spec"]["containers"][0]["image"] == DEFAULT_STEP_IMAGE
    kustomization = yaml.safe_load((REPO / "config" / "kustomization.yaml").read_text())
    assert {"name": "ghcr.io/wrapresolver/wrapresolver", "newTag": VERSION} in kustomization["images"]


@pytest.fixture
def cluster(tekton_crds, tmp_path: Path):
    c = Cluster(tekton_crds, tmp_path / "kubeconfig")
    yield c
    c.stop()


def test_controller_in_the_image_answers_a_request(image_root, identity, cluster, tmp_path: Path):
    cluster.configure({"default-target": "oci://registry.example/ci/<<workspace>>"})
    cluster.pipeline("build")
    health, metrics = free_port(), free_port()
    log = tmp_path / "controller.log"
    command = image_root.command(
        ["controller", "--kubeconfig", "/etc/wrapresolver/kubeconfig", "--config-namespace", SYSTEM_NS,
         "--health-address", f"127.0.0.1:{health}", "--metrics-port", str(metrics)],
        user=identity, settings=SETTINGS, binds={"/etc/wrapresolver/kubeconfig": cluster.kubeconfig})
    with open(log, "wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        def healthy() -> bool:
            assert proc.poll() is None, f"the controller exited {proc.returncode}:\n{log.read_text()[-3000:]}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{health}/healthz", timeout=1) as r:
                    return r.status == 200
            except OSError:
                return False
        wait_for(healthy, "the controller's health endpoint in the image", timeout=60)
        cluster.request("in-image", {"pipelineref": "build"})
        status = cluster.answer("in-image", timeout=60)
        assert next(c for c in status["conditions"] if c["type"] == "Succeeded")["status"] == "True", status
        steps = decoded(status)["spec"]["tasks"][0]["taskSpec"]["steps"]
        assert [s["name"] for s in steps] == ["wrap-fetch", "make", "wrap-store"]
        assert steps[0]["image"] == DEFAULT_STEP_IMAGE
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def emptydir(path: Path) -> Path:
    """A directory as an emptyDir volume is: empty, writable by any UID."""
    path.mkdir(parents=True)
    path.chmod(0o777)
    return path


def step(image_root: ImageRoot, identity: str, verb: str, spec: WorkspaceTransfer, workspace: Path,
         state: Path) -> subprocess.CompletedProcess:
    """The injected step as the rewrite writes it: the image's entrypoint, workspace and state volumes."""
    return image_root.run([verb, "--state-dir", "/wrap-state", "--workspace", spec.to_json()], user=identity,
                          settings=SETTINGS, binds={"/workspace/src": workspace, "/wrap-state": state})


def test_fetch_and_store_in_the_image_move_a_workspace_through_the_registry(
        image_root, step_identity, registry: Registry, tmp_path: Path):
    identity = step_identity
    target = f"oci://{registry.repo('image-steps')}"
    clone = WorkspaceTransfer(workspace="src", target=target, run=RUN, task="clone", backend="oci",
                              path="/workspace/src")
    ws1, state1 = emptydir(tmp_path / "clone" / "src"), emptydir(tmp_path / "clone" / "state")
    fetched = step(image_root, identity, "fetch", clone, ws1, state1)
    assert fetched.returncode == 0, fetched.stderr
    # The task's own step, in the same image and as the same user, writes the workspace.
    # 200 files: more than one batch, so the fetch below creates them in its writer process.
    wrote = image_root.run(["-c", "mkdir -p /workspace/src/pkg /workspace/src/many"
                                  " && echo 'int main;' > /workspace/src/pkg/main.c && printf x > /workspace/src/flag"
                                  " && for i in $(seq 200); do echo $i > /workspace/src/many/f$i; done"],
                           user=identity, settings=SETTINGS, entrypoint=["/bin/sh"],
                           binds={"/workspace/src": ws1})
    assert wrote.returncode == 0, wrote.stderr
    stored = step(image_root, identity, "store", clone, ws1, state1)
    assert stored.returncode == 0, stored.stderr
    assert stored.stdout.startswith("wrap store src"), stored.stdout

    build = WorkspaceTransfer(workspace="src", target=target, run=RUN, task="build", backend="oci",
                              path="/workspace/src", inputs=("clone",), graph={"clone": ProducerNode()})
    ws2, state2 = emptydir(tmp_path / "build" / "src"), emptydir(tmp_path / "build" / "state")
    restored = step(image_root, identity, "fetch", build, ws2, state2)
    assert restored.returncode == 0, restored.stderr
    assert "(from clone)" in restored.stdout
    assert (ws2 / "pkg" / "main.c").read_text() == "int main;\n" and (ws2 / "flag").read_text() == "x"
    assert (ws2 / "pkg" / "main.c").stat().st_uid == int(identity.split(":")[0]), "restored files belong to the step's user"
    many = sorted(ws2.joinpath("many").iterdir())
    assert len(many) == 200 and (ws2 / "many" / "f137").read_text() == "137\n"
    assert {path.stat().st_uid for path in many} == {int(identity.split(":")[0])}


def test_the_base_image_has_no_files_and_serves_as_an_empty_workspace_base(
        built_images: BuiltImages, image_root, step_identity, registry: Registry, tmp_path: Path):
    identity = step_identity
    for root in mounted(built_images.base):
        assert list(root.root.iterdir()) == []
    ref = f"{registry.repo('base')}:{VERSION}"
    buildah("push", "--quiet", "--tls-verify=false", built_images.base, f"docker://{ref}")
    repo, _, tag = ref.partition("/")[2].rpartition(":")
    accept = "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json"
    manifest = httpx.get(f"http://{registry.host}/v2/{repo}/manifests/{tag}", headers={"Accept": accept}).json()
    for layer in manifest["layers"]:
        blob = httpx.get(f"http://{registry.host}/v2/{repo}/blobs/{layer['digest']}", follow_redirects=True).content
        with tarfile.open(fileobj=io.BytesIO(blob)) as tar:
            assert tar.getmembers() == [], f"layer {layer['digest']} holds files"

    first = WorkspaceTransfer(workspace="src", target=f"oci://{registry.repo('from-base')}", run=RUN, task="first",
                              backend="oci", path="/workspace/src", base=f"oci://{ref}")
    ws, state = emptydir(tmp_path / "src"), emptydir(tmp_path / "state")
    fetched = step(image_root, identity, "fetch", first, ws, state)
    assert fetched.returncode == 0, fetched.stderr
    assert "from base" in fetched.stdout, fetched.stdout
    assert list(ws.iterdir()) == []


def ssh_key_volume(ssh_server, tmp_path: Path) -> Path:
    """The Secret volume of `credentials-secret`: the key owned by root, readable by the step (0644)."""
    key_dir = tmp_path / "key"
    key_dir.mkdir()
    (key_dir / SSH_KEY_NAME).write_bytes(ssh_server.client_key.read_bytes())
    (key_dir / SSH_KEY_NAME).chmod(0o644)
    key_dir.chmod(0o755)
    return key_dir


def ssh_spec(ssh_server, name: str, task: str, **extra) -> WorkspaceTransfer:
    target = f"ssh://{ssh_server.user}@{ssh_server.host}:{ssh_server.port}{ssh_server.data_dir}/{name}"
    return WorkspaceTransfer(workspace="src", target=target, run=RUN, task=task, backend="rsync",
                             path="/workspace/src", options={"credentials-secret": "ci-ssh"}, **extra)


def ssh_step(image_root, identity, verb, spec, workspace, state, key_dir) -> subprocess.CompletedProcess:
    return image_root.run([verb, "--state-dir", "/wrap-state", "--workspace", spec.to_json()], user=identity,
                          settings=SETTINGS, binds={"/workspace/src": workspace, "/wrap-state": state,
                                                    SSH_KEY_MOUNT: key_dir})


def test_rsync_over_ssh_in_the_image_works_for_a_uid_without_a_passwd_entry(
        image_root, identity, ssh_server, tmp_path: Path):
    """OpenSSH's client refuses a user it cannot look up; the image's ssh wrapper gives it one."""
    key_dir, name = ssh_key_volume(ssh_server, tmp_path), f"image-{uuid.uuid4().hex[:8]}"
    clone = ssh_spec(ssh_server, name, "clone")
    ws1, state1 = emptydir(tmp_path / "clone" / "src"), emptydir(tmp_path / "clone" / "state")
    assert (done := ssh_step(image_root, identity, "fetch", clone, ws1, state1, key_dir)).returncode == 0, done.stderr
    (ws1 / "notes.txt").write_text("over ssh\n")
    assert (done := ssh_step(image_root, identity, "store", clone, ws1, state1, key_dir)).returncode == 0, done.stderr

    # The next task's workspace belongs to the step's user here: into a root-owned emptyDir, the
    # rsync backend's fetch as non-root fails setting the times of the directory itself (exit 23).
    build = ssh_spec(ssh_server, name, "build", inputs=("clone",), graph={"clone": ProducerNode()})
    ws2, state2 = emptydir(tmp_path / "build" / "src"), emptydir(tmp_path / "build" / "state")
    uid, _, gid = identity.partition(":")
    os.chown(ws2, int(uid), int(gid))
    assert (done := ssh_step(image_root, identity, "fetch", build, ws2, state2, key_dir)).returncode == 0, done.stderr
    assert (ws2 / "notes.txt").read_text() == "over ssh\n"

