"""The controller under test runs as a real `wrapresolver controller` process against the
in-process API server; a fake `git` resolver thread answers the child requests it creates."""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from tests.fixtures.kubeapi import CORE, KubeAPI, KubeAPIServer, ensure_namespace, resource_types_from_crds

SYSTEM_NS = "tekton-pipelines-resolvers"
RR = "resolution.tekton.dev/v1beta1"
CONTROLLER_COMMAND = [sys.executable, "-m", "wrapresolver", "controller"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate: Callable[[], object], what: str, timeout: float = 30.0) -> object:
    """Poll until `predicate` is truthy; the timeout only bounds a hung test, it asserts nothing about speed."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError(f"gave up waiting for {what}")


class Cluster:
    """The API server plus helpers that play Tekton's part: PipelineRuns and their requests."""

    def __init__(self, crd_dir: Path | None, kubeconfig: Path) -> None:
        types, crds = resource_types_from_crds(crd_dir)
        self.api = KubeAPI(CORE + types)
        for crd in crds:
            self.api.create("apiextensions.k8s.io/v1", "customresourcedefinitions", None, crd)
        self.server = KubeAPIServer(self.api).start()
        self.kubeconfig = self.server.write_kubeconfig(kubeconfig)
        for ns in ("default", SYSTEM_NS, "team-a", "blocked"):
            ensure_namespace(self.api, ns)

    def configure(self, data: dict[str, str]) -> dict:
        try:
            self.api.get("v1", "configmaps", SYSTEM_NS, "wrapresolver-config")
            return self.api.patch("v1", "configmaps", SYSTEM_NS, "wrapresolver-config", {"data": data})
        except Exception:  # first time: create it
            return self.api.create("v1", "configmaps", SYSTEM_NS, {"metadata": {"name": "wrapresolver-config"},
                                                                   "data": data})

    def pipeline(self, name: str, namespace: str = "default", version: str = "v1", tasks: list | None = None) -> dict:
        spec = {"workspaces": [{"name": "src"}],
                "tasks": tasks or [{"name": "build", "workspaces": [{"name": "src", "workspace": "src"}],
                                    "taskSpec": {"workspaces": [{"name": "src"}],
                                                 "steps": [{"name": "make", "image": "busybox", "script": "make"}]}}]}
        return self.api.create(f"tekton.dev/{version}", "pipelines", namespace, {"metadata": {"name": name}, "spec": spec})

    def request(self, name: str, params: dict, namespace: str = "default", run: str | None = None) -> dict:
        """A PipelineRun (binding `src` to an emptyDir) and the request Tekton would create for it."""
        run = run or f"run-{name}"
        try:
            pr = self.api.get("tekton.dev/v1", "pipelineruns", namespace, run)
        except Exception:
            pr = self.api.create("tekton.dev/v1", "pipelineruns", namespace, {
                "metadata": {"name": run},
                "spec": {"pipelineRef": {"resolver": "wrap"}, "workspaces": [{"name": "src", "emptyDir": {}}]}})
        return self.api.create(RR, "resolutionrequests", namespace, {
            "metadata": {"name": name, "labels": {"resolution.tekton.dev/type": "wrap"},
                         "ownerReferences": [{"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "name": run,
                                              "uid": pr["metadata"]["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": {"params": [{"name": k, "value": v} for k, v in params.items()]}})

    def get(self, name: str, namespace: str = "default") -> dict:
        return self.api.get(RR, "resolutionrequests", namespace, name)

    def answer(self, name: str, namespace: str = "default", timeout: float = 30.0) -> dict:
        def answered():
            status = self.get(name, namespace).get("status") or {}
            return status if status.get("data") or any(
                c.get("status") in ("True", "False") for c in status.get("conditions") or []) else None
        return wait_for(answered, f"an answer to {namespace}/{name}", timeout)  # type: ignore[return-value]

    def stop(self) -> None:
        self.server.stop()


def decoded(status: dict) -> dict:
    return yaml.safe_load(base64.b64decode(status["data"]))


def failure(status: dict) -> dict:
    cond = next(c for c in status["conditions"] if c["type"] == "Succeeded")
    assert cond["status"] == "False", status
    return cond


class Controller:
    """One `wrapresolver controller` process with its own health and metrics ports and log file."""

    def __init__(self, cluster: Cluster, log_path: Path, *args: str) -> None:
        self.cluster, self.log_path, self.args = cluster, log_path, args
        self.health, self.metrics = free_port(), free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Controller:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("KUBERNETES_SERVICE_HOST", None)
        self.log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            [*CONTROLLER_COMMAND, "--kubeconfig", str(self.cluster.kubeconfig), "--config-namespace", SYSTEM_NS,
             "--health-address", f"127.0.0.1:{self.health}", "--metrics-port", str(self.metrics), *self.args],
            stdout=self.log, stderr=subprocess.STDOUT, env=env)
        wait_for(self.healthy, "the controller's health endpoint")
        return self

    def healthy(self) -> bool:
        assert self.proc and self.proc.poll() is None, f"controller exited:\n{self.log_path.read_text()[-3000:]}"
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.health}/healthz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def scrape(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics", timeout=5) as r:
            return r.read().decode()

    def logs(self) -> list[dict]:
        lines = self.log_path.read_text().splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def stop(self) -> int:
        assert self.proc
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(20)
        finally:
            self.log.close()

    def kill(self) -> None:
        assert self.proc
        self.proc.kill()
        self.proc.wait(10)
        self.log.close()


class FakeGitResolver:
    """Plays the `git` resolver: answers child requests from `files` keyed by pathInRepo.

    A file is an object (dumped as YAML) or a string (sent as is). pathInRepo "fail" gets Succeeded=False; "never" is never answered. With `limit` set, only
    that many requests are answered until `limit` is set back to None.
    """

    def __init__(self, api: KubeAPI, files: dict[str, dict], limit: int | None = None) -> None:
        self.api, self.files, self.limit = api, files, limit
        self.answered = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stop.wait(0.02):
            for rr in self.api.list(RR, "resolutionrequests", label_selector="resolution.tekton.dev/type=git"):
                if rr.get("status"):
                    continue
                params = {p["name"]: p["value"] for p in rr["spec"]["params"]}
                path = params.get("pathInRepo", "")
                meta = rr["metadata"]
                if path == "never" or (self.limit is not None and self.answered >= self.limit):
                    continue
                self.answered += 1
                if path == "fail" or path not in self.files:
                    status = {"data": "", "refSource": {}, "source": {}, "conditions": [{
                        "type": "Succeeded", "status": "False", "reason": "ResolutionFailed",
                        "message": f'error getting "Git" "{meta["namespace"]}/{meta["name"]}": '
                                   f"path {path} does not exist"}]}
                else:
                    content = self.files[path]  # an object, or raw text exactly as a file in git
                    data = content.encode() if isinstance(content, str) else yaml.safe_dump(content).encode()
                    ref = {"uri": f"git+{params.get('url')}", "digest": {"sha1": "0" * 40}, "entryPoint": path}
                    status = {"data": base64.b64encode(data).decode(), "refSource": ref, "source": ref,
                              "annotations": {"resolution.tekton.dev/content-type": "application/x-yaml"}}
                self.api.patch(RR, "resolutionrequests", meta["namespace"], meta["name"], {"status": status},
                               subresource="status")

    def close(self) -> None:
        self.stop.set()
        self.thread.join(5)


@pytest.fixture(scope="module")
def cluster(tekton_crds: Path | None, tmp_path_factory: pytest.TempPathFactory):
    c = Cluster(tekton_crds, tmp_path_factory.mktemp("kube") / "kubeconfig")
    yield c
    c.stop()


@pytest.fixture
def start_controller(cluster: Cluster, tmp_path: Path):
    """Start controller processes against `cluster`; all are stopped at the end of the test."""
    started: list[Controller] = []

    def start(*args: str, name: str = "controller") -> Controller:
        ctl = Controller(cluster, tmp_path / f"{name}-{len(started)}.log", *args).start()
        started.append(ctl)
        return ctl

    yield start
    for ctl in started:
        if ctl.proc and ctl.proc.poll() is None:
            ctl.stop()
