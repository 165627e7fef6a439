"""The install manifests as kustomize builds them: config/, and config/ with its in-cluster registry.

Built by the real kustomize (kubectl's or the standalone binary), then checked the way a
cluster would use them: every object in the resolver's namespace, the registry Service
reaching the registry Pod, the NetworkPolicy letting TaskRun pods in, and the
`default-target` the component sets accepted by the resolver's own param parsing.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Mapping
from pathlib import Path

import pytest
import yaml

from wrapresolver.backends.registry import REGISTRY
from wrapresolver.core.params import CONFIGMAP_NAME, RunContext, parse_request

ROOT = Path(__file__).resolve().parents[1]
NAMESPACE = "tekton-pipelines-resolvers"
WITH_REGISTRY = ROOT / "examples" / "with-registry"


def kustomize(directory: Path) -> list[dict]:
    if shutil.which("kustomize"):
        argv = ["kustomize", "build", str(directory)]
    elif shutil.which("kubectl"):
        argv = ["kubectl", "kustomize", str(directory)]
    else:  # pragma: no cover - scripts/install-test-servers.sh installs kustomize
        pytest.fail("neither kustomize nor kubectl is installed; run scripts/install-test-servers.sh")
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return [doc for doc in yaml.safe_load_all(done.stdout) if doc]


def by_kind(objects: list[dict], kind: str) -> dict[str, dict]:
    return {o["metadata"]["name"]: o for o in objects if o["kind"] == kind}


def selects(selector: Mapping[str, str], labels: Mapping[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return kustomize(ROOT / "config")


@pytest.fixture(scope="module")
def with_registry() -> list[dict]:
    return kustomize(WITH_REGISTRY)


def test_the_registry_overlay_adds_a_registry_and_changes_nothing_else_of_the_base(base, with_registry):
    added = {(o["kind"], o["metadata"]["name"]) for o in with_registry} - {(o["kind"], o["metadata"]["name"]) for o in base}
    assert added == {
        ("ConfigMap", "wrap-registry-config"), ("Deployment", "wrap-registry"),
        ("Service", "wrap-registry"), ("NetworkPolicy", "wrap-registry"),
    }
    unchanged = [o for o in with_registry if (o["kind"], o["metadata"]["name"]) not in added
                 and o["metadata"]["name"] != CONFIGMAP_NAME]
    assert unchanged == [o for o in base if o["metadata"]["name"] != CONFIGMAP_NAME]
    # No new identity or permission: the registry runs without a token.
    assert not {k for k, _ in added} & {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding", "ServiceAccount"}
    assert by_kind(with_registry, "Deployment")["wrap-registry"]["spec"]["template"]["spec"]["automountServiceAccountToken"] is False


def test_every_namespaced_object_lands_in_the_resolver_namespace(with_registry):
    for obj in with_registry:
        if obj["kind"] not in ("ClusterRole", "ClusterRoleBinding"):
            assert obj["metadata"].get("namespace") == NAMESPACE, obj["metadata"]["name"]


def test_the_service_reaches_the_single_registry_pod_on_the_port_its_config_listens_on(with_registry):
    deployment = by_kind(with_registry, "Deployment")["wrap-registry"]
    service = by_kind(with_registry, "Service")["wrap-registry"]
    pod = deployment["spec"]["template"]
    assert deployment["spec"]["replicas"] == 1
    assert selects(service["spec"]["selector"], pod["metadata"]["labels"])
    assert selects(deployment["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    # The controller's own Service/Deployment labels never match the registry's selector.
    controller = by_kind(with_registry, "Deployment")["wrapresolver"]["spec"]["template"]["metadata"]["labels"]
    assert not selects(service["spec"]["selector"], controller)
    container = pod["spec"]["containers"][0]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    (port,) = service["spec"]["ports"]
    assert ports[port["targetPort"]] == int(port_of_config(with_registry))


def port_of_config(objects: list[dict]) -> str:
    return registry_config(objects)["http"]["port"]


def registry_config(objects: list[dict]) -> dict:
    return json.loads(by_kind(objects, "ConfigMap")["wrap-registry-config"]["data"]["config.json"])


def test_the_registry_stores_on_its_data_volume_with_garbage_collection_on(with_registry):
    config = registry_config(with_registry)
    pod = by_kind(with_registry, "Deployment")["wrap-registry"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    data = mounts[config["storage"]["rootDirectory"]]
    assert "emptyDir" in volumes[data]
    config_mount = next(path for path, name in mounts.items() if "configMap" in volumes[name])
    assert pod["containers"][0]["args"] == ["serve", f"{config_mount}/config.json"]
    storage = config["storage"]
    assert storage["gc"] is True and storage["gcDelay"] and storage["gcInterval"]
    assert storage["retention"]["policies"][0]["deleteUntagged"] is True


def test_the_network_policy_admits_taskrun_pods_to_the_registry_port_only(with_registry):
    policy = by_kind(with_registry, "NetworkPolicy")["wrap-registry"]["spec"]
    pod = by_kind(with_registry, "Deployment")["wrap-registry"]["spec"]["template"]
    assert selects(policy["podSelector"]["matchLabels"], pod["metadata"]["labels"])
    assert policy["policyTypes"] == ["Ingress"]
    (rule,) = policy["ingress"]
    assert [p["port"] for p in rule["ports"]] == [int(port_of_config(with_registry))]
    (peer,) = rule["from"]
    assert peer["namespaceSelector"] == {}
    assert peer["podSelector"]["matchExpressions"] == [{"key": "tekton.dev/taskRun", "operator": "Exists"}]


def test_the_default_target_names_the_registry_service_and_the_resolver_accepts_it(with_registry):
    config = by_kind(with_registry, "ConfigMap")[CONFIGMAP_NAME]["data"]
    service = by_kind(with_registry, "Service")["wrap-registry"]
    host = f"{service['metadata']['name']}.{NAMESPACE}.svc.cluster.local:{service['spec']['ports'][0]['port']}"
    assert config["default-target"].startswith(f"oci://{host}/")
    context = RunContext(name="build-1", namespace="team-a", uid="u-1")
    request = parse_request([{"name": "pipelineref", "value": "build"}, {"name": "workspaces", "value": "src,cache"}],
                            config, context, REGISTRY)
    assert request.backend == "oci"
    assert request.options["insecure"] == "true"  # the in-cluster Service speaks plain HTTP


def test_the_pvc_component_moves_the_registry_data_onto_a_claim(tmp_path: Path):
    def relative(path: str) -> str:  # kustomize takes only relative paths
        return os.path.relpath(ROOT / path, overlay)

    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": NAMESPACE,
        "resources": [relative("config")],
        "components": [relative("config/components/registry"), relative("config/components/registry-pvc")],
    }))
    objects = kustomize(overlay)
    claim = by_kind(objects, "PersistentVolumeClaim")["wrap-registry-data"]
    pod = by_kind(objects, "Deployment")["wrap-registry"]["spec"]["template"]["spec"]
    data = {v["name"]: v for v in pod["volumes"]}["data"]
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
