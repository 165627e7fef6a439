"""The controller starts and answers as the Pod starts it: any UID, no passwd entry, no HOME.

The Deployment runs the image as 65532:65532, which has no passwd entry; OpenShift's
restricted-v2 gives a random UID from the namespace's range with GID 0. Either way there is
no `USER`, `LOGNAME` or `HOME` in the environment and only `/tmp` is writable, so nothing
may look the user up or write into a home directory.
"""

from __future__ import annotations

import shutil
import subprocess
import time

import pytest

from tests.controller.conftest import SYSTEM_NS, Controller, decoded, ensure_namespace
from wrapresolver.controller.handlers import peering_identity
from tests.fixtures.identities import NOBODY_UID, OPENSHIFT_UID, ForeignPython, has_passwd_entry, shared_dir

IDENTITIES = [
    pytest.param(NOBODY_UID, NOBODY_UID, id="image-user-65532-without-passwd-entry"),
    pytest.param(OPENSHIFT_UID, 0, id="openshift-random-uid-with-gid-0"),
]


class ControllerAs(Controller):
    """`wrapresolver controller` as uid:gid with an empty environment."""

    def __init__(self, cluster, log_path, python: ForeignPython, uid: int, gid: int, *args: str) -> None:
        super().__init__(cluster, log_path, *args)
        self.python, self.uid, self.gid = python, uid, gid
        self.home = shared_dir("wrap-kube-")
        self.kubeconfig = self.home / "kubeconfig"
        shutil.copy(cluster.kubeconfig, self.kubeconfig)
        self.kubeconfig.chmod(0o644)

    def start(self) -> "ControllerAs":
        from tests.controller.conftest import wait_for

        self.log = open(self.log_path, "ab")
        self.proc = self.python.popen(
            ["controller", "--kubeconfig", str(self.kubeconfig), "--config-namespace", SYSTEM_NS,
             "--health-address", f"127.0.0.1:{self.health}", "--metrics-port", str(self.metrics), *self.args],
            uid=self.uid, gid=self.gid, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(self.healthy, "the controller's health endpoint")
        return self

    def stop(self) -> int:
        try:
            return super().stop()
        finally:
            shutil.rmtree(self.home, ignore_errors=True)


@pytest.mark.parametrize(("uid", "gid"), IDENTITIES)
def test_controller_as_an_arbitrary_uid_without_passwd_entry_or_home_answers_a_request(
        cluster, foreign_python, tmp_path, uid, gid):
    assert not has_passwd_entry(uid), f"uid {uid} must have no passwd entry for this test to mean anything"
    namespace = f"as-{uid}"
    ensure_namespace(cluster.api, namespace)
    cluster.configure({"default-target": "oci://registry.example/ci/<<workspace>>"})
    cluster.pipeline("build", namespace=namespace)
    ctl = ControllerAs(cluster, tmp_path / "controller.log", foreign_python, uid, gid, "--namespace", namespace)
    try:
        ctl.start()
        cluster.request("as-any-user", {"pipelineref": "build"}, namespace=namespace)
        assert decoded(cluster.answer("as-any-user", namespace=namespace))["metadata"]["name"] == "build"
        assert ctl.proc.poll() is None, ctl.log_path.read_text()[-3000:]
    finally:
        code = ctl.stop()
    assert code == 0, ctl.log_path.read_text()[-3000:]


def test_controller_without_kubeconfig_or_home_says_where_it_looked(foreign_python):
    done = foreign_python.run(["controller", "--health-address", "", "--metrics-port", "0"],
                              uid=NOBODY_UID, gid=NOBODY_UID, timeout=60)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr, done.stderr
    assert "kubeconfig" in done.stderr and "--kubeconfig" in done.stderr, done.stderr


def test_peering_identity_is_the_pod_name_else_host_and_process_without_a_user_lookup():
    assert peering_identity({"POD_NAME": "wrapresolver-7d9f-abcde"}) == "wrapresolver-7d9f-abcde"
    host, _, pid = peering_identity({}).rpartition("/")
    assert host and pid.isdigit()


def test_deployment_gives_the_controller_its_pod_name_for_kopf():
    import yaml

    from tests.fixtures.identities import REPO

    deployment = yaml.safe_load((REPO / "config" / "deployment.yaml").read_text())
    env = {e["name"]: e for e in deployment["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
