"""The install manifests as kustomize builds them: config/, and config/ with its in-cluster registry.

Built by the real kustomize (kubectl's or the standalone binary), then checked the way a
cluster would use them: every object in the resolver's namespace, the registry Service
reaching the registry Pod, the NetworkPolicy admitting the pods of wrapped runs and the
controller (evaluated with the API server's selector rules), zot's retention expiring
`wrap-*` states and keeping every other tag (evaluated with zot's rules), the data on a
bounded claim, and the `default-target` the component sets accepted by the resolver's own
param parsing.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Mapping
from datetime import timedelta
from pathlib import Path

import pytest
import yaml

from wrapresolver.backends.registry import REGISTRY
from wrapresolver.core import lifecycle
from wrapresolver.core.params import CONFIGMAP_NAME, RunContext, parse_request
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.retention import Retention

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
        ("PersistentVolumeClaim", "wrap-registry-data"),
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


def test_the_registry_stores_on_its_bounded_claim_with_garbage_collection_on(with_registry):
    config = registry_config(with_registry)
    pod = by_kind(with_registry, "Deployment")["wrap-registry"]["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    data = mounts[config["storage"]["rootDirectory"]]
    # A claim, not an emptyDir: a full claim refuses uploads, a full emptyDir gets the Pod evicted.
    claim = by_kind(with_registry, "PersistentVolumeClaim")["wrap-registry-data"]
    assert volumes[data] == {"name": data, "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}
    assert claim["spec"]["resources"]["requests"]["storage"]
    config_mount = next(path for path, name in mounts.items() if "configMap" in volumes[name])
    assert pod["containers"][0]["args"] == ["serve", f"{config_mount}/config.json"]
    storage = config["storage"]
    assert storage["gc"] is True and storage["gcDelay"] and storage["gcInterval"]
    assert storage["retention"]["policies"][0]["deleteUntagged"] is True


# ---- NetworkPolicy peers, with the API server's rules ----

def selector_matches(selector: Mapping, labels: Mapping[str, str]) -> bool:
    """A LabelSelector (matchLabels and matchExpressions, ANDed) as the API server applies it."""
    if not all(labels.get(k) == v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {"In": key in labels and labels[key] in values, "NotIn": labels.get(key) not in values,
              "Exists": key in labels, "DoesNotExist": key not in labels}[op]
        if not ok:
            return False
    return True


def admitted(policy: dict, pod_labels: Mapping[str, str], pod_namespace: str) -> bool:
    """Whether a pod may open a connection to the pods the policy selects (ingress only).

    A peer with only a podSelector means pods of the policy's own namespace; with a
    namespaceSelector too, pods matching both (namespace labels: the automatic
    `kubernetes.io/metadata.name`).
    """
    namespace_labels = {"kubernetes.io/metadata.name": pod_namespace}
    for rule in policy["spec"]["ingress"]:
        for peer in rule.get("from") or []:
            if "namespaceSelector" in peer:
                in_namespace = selector_matches(peer["namespaceSelector"], namespace_labels)
            else:
                in_namespace = pod_namespace == policy["metadata"]["namespace"]
            if in_namespace and selector_matches(peer.get("podSelector") or {}, pod_labels):
                return True
    return False


def wrapped_taskrun_pod_labels(run: str, task: str) -> dict[str, str]:
    """A TaskRun pod's labels as Tekton makes them: the PipelineRun's labels (which the
    resolver's answer carries into it) plus Tekton's own."""
    pipeline: dict = {"metadata": {"name": "build"}, "spec": {"tasks": [{"name": task}]}}
    lifecycle.mark(pipeline, Retention(), [])
    return {**pipeline["metadata"]["labels"], "tekton.dev/pipeline": "build", "tekton.dev/pipelineRun": run,
            "tekton.dev/pipelineTask": task, "tekton.dev/taskRun": f"{run}-{task}",
            "app.kubernetes.io/managed-by": "tekton-pipelines"}


def test_the_network_policy_admits_the_controller_and_the_pods_of_wrapped_runs_only(with_registry):
    policy = by_kind(with_registry, "NetworkPolicy")["wrap-registry"]
    registry_pod = by_kind(with_registry, "Deployment")["wrap-registry"]["spec"]["template"]
    assert selects(policy["spec"]["podSelector"]["matchLabels"], registry_pod["metadata"]["labels"])
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    (rule,) = policy["spec"]["ingress"]
    assert [p["port"] for p in rule["ports"]] == [int(port_of_config(with_registry))]

    controller = by_kind(with_registry, "Deployment")["wrapresolver"]
    controller_labels = controller["spec"]["template"]["metadata"]["labels"]
    assert admitted(policy, controller_labels, controller["metadata"]["namespace"])
    assert admitted(policy, wrapped_taskrun_pod_labels("build-1", "compile"), "team-a")

    unwrapped = {k: v for k, v in wrapped_taskrun_pod_labels("build-1", "compile").items()
                 if k != lifecycle.LABEL_STORAGE}
    assert not admitted(policy, unwrapped, "team-a")  # a TaskRun of a run that does not use wrap
    assert not admitted(policy, {lifecycle.LABEL_STORAGE: lifecycle.LABEL_STORAGE_VALUE}, "team-a")  # not a TaskRun
    assert not admitted(policy, controller_labels, "team-a")  # the controller's labels, another namespace
    assert not admitted(policy, {"app": "anything"}, NAMESPACE)


# ---- zot's retention, with zot's rules ----

def go_duration(text: str) -> timedelta:
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?", text)
    assert parts and text, f"not a Go duration zot reads: {text!r}"
    hours, minutes, seconds = (int(p or 0) for p in parts.groups())
    return timedelta(hours=hours, minutes=minutes, seconds=seconds)


def glob_matches(pattern: str, name: str) -> bool:
    """doublestar's glob, as zot matches `repositories`: `**` crosses slashes, `*` does not."""
    regex = "".join(".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part)
                    for part in re.split(r"(\*\*|\*)", pattern))
    return re.fullmatch(regex, name) is not None


def zot_keeps(config: dict, repository: str, tag: str, pushed_ago: timedelta) -> bool:
    """Whether zot's retention (storage.retention, zot 2.1) keeps a tag.

    The first policy whose `repositories` glob matches the repository applies; without
    `keepTags` every tag is kept. With it, the tag goes by the first entry whose `patterns`
    (regular expressions, searched) match it, and is kept if any of that entry's rules
    holds, or by its name alone when it has none; a tag no entry matches is deleted.
    """
    policy = next((p for p in config["storage"]["retention"]["policies"]
                   if any(glob_matches(g, repository) for g in p["repositories"])), None)
    if policy is None or not policy.get("keepTags"):
        return True
    entry = next((e for e in policy["keepTags"]
                  if not e.get("patterns") or any(re.search(p, tag) for p in e["patterns"])), None)
    if entry is None:
        return False
    assert not {"mostRecentlyPushedCount", "mostRecentlyPulledCount"} & entry.keys(), "not modelled here"
    rules = [pushed_ago < go_duration(value) for key, value in entry.items() if key in ("pushedWithin", "pulledWithin")]
    return any(rules) if rules else True


def test_the_registry_expires_wrap_states_after_a_delay_and_keeps_every_other_tag(with_registry):
    config = registry_config(with_registry)
    state = producer_ref("3f2b9c1e-0d4a-4f43-9a57-6c1d2e3f4a5b", "compile")
    hashed = producer_ref("u" * 60, "a-task-name-long-enough-to-be-hashed-" * 3)
    repository = "team-a/build-1-src"
    policy = config["storage"]["retention"]["policies"][0]
    assert policy.get("keepTags"), "no keepTags: zot keeps every tag, and wrap-* states pile up"
    delay = go_duration(policy["keepTags"][0]["pushedWithin"])
    # A safety net, not the policy: longer than any run should take, so a state is never
    # expired under a run still using it.
    assert delay >= timedelta(days=1)
    for tag in (state, hashed):
        assert zot_keeps(config, repository, tag, timedelta(hours=1))
        assert zot_keeps(config, repository, tag, delay - timedelta(minutes=1))
        assert not zot_keeps(config, repository, tag, delay + timedelta(minutes=1))
    for published in ("latest", "main", "v1.2.3", "cache", "build-1"):
        assert zot_keeps(config, repository, published, timedelta(days=3650)), published
        assert zot_keeps(config, "other/nested/repo", published, timedelta(days=3650)), published
    # Untagged manifests (what a deleted tag leaves) and referrers are collected too.
    assert policy["deleteUntagged"] is True
    assert config["storage"]["gc"] is True


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


def overlay_of(tmp_path: Path, components: list[str]) -> Path:
    """An overlay of config/ with these components, as a cluster admin would write it."""
    overlay = tmp_path / "overlay"
    overlay.mkdir()

    def relative(path: str) -> str:  # kustomize takes only relative paths
        return os.path.relpath(ROOT / path, overlay)

    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": NAMESPACE,
        "resources": [relative("config")], "components": [relative(c) for c in components],
    }))
    return overlay


def test_the_pvc_component_moves_the_registry_data_onto_a_claim(tmp_path: Path):
    objects = kustomize(overlay_of(tmp_path, ["config/components/registry", "config/components/registry-pvc"]))
    claim = by_kind(objects, "PersistentVolumeClaim")["wrap-registry-data"]
    pod = by_kind(objects, "Deployment")["wrap-registry"]["spec"]["template"]["spec"]
    data = {v["name"]: v for v in pod["volumes"]}["data"]
    assert data == {"name": "data", "persistentVolumeClaim": {"claimName": claim["metadata"]["name"]}}


def test_the_controller_probes_readiness_and_liveness_apart_on_the_port_it_serves_them(base):
    pod = by_kind(base, "Deployment")["wrapresolver"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    args = container["args"]
    address = args[args.index("--health-address") + 1]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    for probe in ("readinessProbe", "livenessProbe"):
        assert ports[container[probe]["httpGet"]["port"]] == int(address.rpartition(":")[2])


def test_the_credentials_component_gives_the_controller_a_docker_config_the_oci_backend_reads(
    base, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
):
    import base64

    from wrapresolver.backends.oci.auth import credentials_for

    objects = kustomize(overlay_of(tmp_path, ["config/components/storage-credentials"]))
    changed = [o for o in objects if o not in base]
    assert [(o["kind"], o["metadata"]["name"]) for o in changed] == [("Deployment", "wrapresolver")]
    pod = changed[0]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == env["DOCKER_CONFIG"])
    secret = volumes[mount["name"]]["secret"]
    assert secret["optional"] is True and mount["readOnly"] is True  # a Secret not created yet is no outage
    (item,) = secret["items"]
    assert item["key"] == ".dockerconfigjson"  # the key of `kubectl create secret docker-registry`
    # What the kubelet projects there, read by the OCI backend's own lookup.
    projected = tmp_path / env["DOCKER_CONFIG"].lstrip("/")
    projected.mkdir(parents=True)
    auth = base64.b64encode(b"ci-gc:delete-token").decode()
    (projected / item["path"]).write_text(json.dumps({"auths": {"registry.example.com": {"auth": auth}}}))
    monkeypatch.setenv("DOCKER_CONFIG", str(projected))
    creds = credentials_for("registry.example.com")
    assert (creds.username, creds.password) == ("ci-gc", "delete-token")
    (source,) = container["envFrom"]
    assert source["secretRef"]["optional"] is True  # AWS_*, RSYNC_PASSWORD, a plugin's variables
