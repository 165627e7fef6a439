"""Readiness and liveness, told apart, against the in-process API server.

Readiness (/readyz) follows the ability to serve: the API server answering this identity's
list of ResolutionRequests and kopf's watch of them running. Liveness (/healthz) is the
event loop answering, whatever the API server says. Every wait below is a poll for a
state; nothing asserts a duration.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.controller.conftest import SYSTEM_NS, Cluster, Controller, decoded, wait_for
from tests.fixtures.kubeapi import Rule


def probe(controller: Controller, path: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{controller.health}{path}", timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


NO_LIST = [Rule(groups=("*",), resources=("*",), verbs=("get", "watch", "create", "patch", "delete"))]
"""Every verb but list: what an RBAC change that drops `list` leaves the controller."""


@pytest.fixture
def rules_restored(cluster: Cluster) -> Iterator[Cluster]:
    yield cluster
    cluster.api.rules = None


def test_the_controller_is_ready_once_it_watches_requests_and_it_answers_them(cluster, start_controller):
    controller = start_controller()
    status, body = wait_for(lambda: (r := probe(controller, "/readyz"))[0] == 200 and r,
                            "the controller to be ready")  # type: ignore[misc]
    assert body["ready"] is True and "watching ResolutionRequests" in body["reason"]
    assert probe(controller, "/healthz")[0] == 200
    cluster.pipeline("probe-ready")
    cluster.request("probe-ready", {"pipelineref": "probe-ready", "target": "oci://reg.example/ci/<<workspace>>"})
    assert decoded(cluster.answer("probe-ready"))["kind"] == "Pipeline"


def test_an_api_server_that_refuses_the_list_makes_it_unready_but_not_dead_and_ready_again_after(
    rules_restored, start_controller,
):
    cluster = rules_restored
    controller = start_controller()
    wait_for(lambda: probe(controller, "/readyz")[0] == 200, "the controller to be ready")
    cluster.api.rules = NO_LIST
    status, body = wait_for(lambda: (r := probe(controller, "/readyz"))[0] == 503 and r,
                            "readiness to drop")  # type: ignore[misc]
    assert body["ready"] is False
    assert "refused to list ResolutionRequests" in body["reason"] and "403" in body["reason"]
    assert "config/rbac.yaml" in body["reason"]
    status, body = probe(controller, "/healthz")
    assert status == 200 and body["alive"] is True  # restarting would not give it permissions
    assert body["configResourceVersion"]
    cluster.api.rules = None
    wait_for(lambda: probe(controller, "/readyz")[0] == 200, "readiness to come back")


def run_controller(cluster: Cluster, health_address: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "wrapresolver", "controller", "--kubeconfig", str(cluster.kubeconfig),
         "--config-namespace", SYSTEM_NS, "--health-address", health_address, "--metrics-port", "0"],
        capture_output=True, text=True, timeout=60)


def test_a_probe_address_that_is_not_host_port_is_a_clear_error(cluster):
    done = run_controller(cluster, "no-port")
    assert done.returncode == 2
    assert "--health-address 'no-port' is not host:port" in done.stderr and "Traceback" not in done.stderr


def test_a_probe_port_already_taken_is_a_clear_error(cluster):
    with socket.create_server(("127.0.0.1", 0)) as taken:
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        done = run_controller(cluster, address)
    assert done.returncode == 2
    assert f"cannot serve the probes on {address}" in done.stderr and "Traceback" not in done.stderr


def test_an_api_server_that_keeps_refusing_ends_the_controller_with_what_to_fix(rules_restored, start_controller):
    cluster = rules_restored
    cluster.api.rules = NO_LIST  # as installed without its ClusterRole
    controller = start_controller()
    assert probe(controller, "/readyz")[0] == 503  # alive from the start, never ready
    assert controller.proc is not None
    assert controller.proc.wait(timeout=240) == 1  # kopf gives up after its retries
    output = controller.log_path.read_text()
    (said,) = [line for line in output.splitlines() if line.startswith("wrapresolver controller:")]
    assert "the API server refused the controller" in said and "403 Forbidden" in said
    assert "config/rbac.yaml" in said and "this is a bug" not in output
