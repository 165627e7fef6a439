"""No PipelineRun can steer the controller: `allowed-targets`, and storage annotations it signed itself.

Each test plays Tekton's part on the in-process API server (resolve, merge the answer's
metadata into the PipelineRun), stores states at real file:// targets the way the injected
steps do, then ends or deletes the run and looks at what is left in storage and at the
Events on the PipelineRun.
"""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.controller.conftest import SYSTEM_NS, decoded, ensure_namespace, failure, wait_for
from tests.controller.test_retention import run_tasks, states
from wrapresolver.backends import reclaim
from wrapresolver.backends.file import LayoutStore
from wrapresolver.core.refs import producer_ref

PR = "tekton.dev/v1"
NS = "trust"
TASKS = [
    {"name": name, "workspaces": [{"name": "src", "workspace": "src"}], **({"runAfter": [after]} if after else {}),
     "taskSpec": {"workspaces": [{"name": "src"}], "steps": [{"name": "make", "image": "busybox", "script": "make"}]}}
    for name, after in (("clone", ""), ("build", "clone"))
]


@pytest.fixture(scope="module")
def roots(cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(the admin's storage, somewhere else) and a ConfigMap that allows only the first."""
    allowed, elsewhere = tmp_path_factory.mktemp("allowed"), tmp_path_factory.mktemp("elsewhere")
    cluster.configure({"default-target": f"file://{allowed}/<<workspace>>", "allowed-targets": f"file://{allowed}/"})
    ensure_namespace(cluster.api, NS)
    cluster.pipeline("two-steps", namespace=NS, tasks=TASKS)
    return allowed, elsewhere


def resolve_and_merge(cluster, name: str, **params: str) -> tuple[str, str, dict]:
    """Resolve, merge the answer's labels and annotations into the PipelineRun: (run, uid, annotations)."""
    cluster.request(name, {"pipelineref": "two-steps", **params}, namespace=NS)
    meta = decoded(cluster.answer(name, namespace=NS))["metadata"]
    run = f"run-{name}"
    pr = cluster.api.patch(PR, "pipelineruns", NS, run, {"metadata": {
        "labels": meta.get("labels", {}), "annotations": meta.get("annotations", {})}})
    return run, pr["metadata"]["uid"], meta["annotations"]


def published(root: Path) -> dict[str, str]:
    """Published reference -> the run that published it."""
    return {i.name: i.run for i in reclaim.published_items(LayoutStore(root / "src"))}


def refs_of(uid: str) -> set[str]:
    return {producer_ref(uid, "clone"), producer_ref(uid, "build")}


def finish(cluster, run: str) -> None:
    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    cluster.api.patch(PR, "pipelineruns", NS, run, {"status": {
        "conditions": [{"type": "Succeeded", "status": "True", "reason": "Succeeded"}],
        "completionTime": stamp}}, subresource="status")


def ignored_event(cluster, uid: str) -> dict:
    return wait_for(lambda: next((e for e in cluster.api.list("v1", "events", NS)
                                  if e["involvedObject"].get("uid") == uid
                                  and e["reason"] == "StorageAnnotationIgnored"), None),
                    "a StorageAnnotationIgnored Event")  # type: ignore[return-value]


def settle(cluster, roots: tuple[Path, Path], tmp: Path, name: str) -> None:
    """A signed run inside the allow list, collected: the controller has seen every event before it."""
    run, uid, _ = resolve_and_merge(cluster, name)
    run_tasks(roots[0], uid, tmp)
    finish(cluster, run)
    wait_for(lambda: not (refs_of(uid) & states(roots[0])), f"the states of {name} to go")


def test_the_controller_refuses_a_target_outside_allowed_targets_at_resolution(cluster, roots, start_controller):
    start_controller()
    cluster.request("outside", {"pipelineref": "two-steps", "target": "file:///tmp/elsewhere-<<workspace>>"},
                    namespace=NS)
    cond = failure(cluster.answer("outside", namespace=NS))
    assert cond["reason"] == "InvalidParams"
    assert "outside `allowed-targets`" in cond["message"] and "param `target` of workspace 'src'" in cond["message"]
    cluster.request("outside-base", {"pipelineref": "two-steps", "base": "file:///tmp/elsewhere-src"}, namespace=NS)
    cond = failure(cluster.answer("outside-base", namespace=NS))
    assert "param `base` of workspace 'src'" in cond["message"] and "allowed-targets" in cond["message"]


def test_the_answer_is_signed_with_a_key_the_controller_keeps_in_its_own_secret(cluster, roots, start_controller):
    start_controller()
    _, _, annotations = resolve_and_merge(cluster, "signed")
    assert annotations["wrapresolver.dev/signature"].startswith("v1:")
    secret = cluster.api.get("v1", "secrets", SYSTEM_NS, "wrapresolver-signing-key")
    assert len(base64.b64decode(secret["data"]["key"])) == 32


def test_an_annotation_pointed_elsewhere_after_resolution_is_ignored_with_a_warning(
    cluster, roots, start_controller, tmp_path: Path,
) -> None:
    allowed, elsewhere = roots
    start_controller()
    run, uid, annotations = resolve_and_merge(cluster, "tampered")
    run_tasks(elsewhere, uid, tmp_path)
    entries = json.loads(annotations["wrapresolver.dev/storage"])
    entries[0]["target"] = f"file://{elsewhere}/src"
    cluster.api.patch(PR, "pipelineruns", NS, run, {"metadata": {"annotations": {
        "wrapresolver.dev/storage": json.dumps(entries)}}})
    finish(cluster, run)
    event = ignored_event(cluster, uid)
    assert event["type"] == "Warning" and "does not match" in event["message"]
    settle(cluster, roots, tmp_path, "after-tampered")
    assert refs_of(uid) <= states(elsewhere)


def test_an_unsigned_annotation_written_by_the_author_is_ignored(cluster, roots, start_controller, tmp_path: Path):
    _, elsewhere = roots
    start_controller()
    pr = cluster.api.create(PR, "pipelineruns", NS, {"metadata": {
        "name": "run-unsigned", "labels": {"wrapresolver.dev/storage": "managed"},
        "annotations": {"wrapresolver.dev/storage": json.dumps([{
            "workspace": "src", "backend": "file", "target": f"file://{elsewhere}/src", "options": {},
            "tasks": ["clone", "build"]}])}}, "spec": {"pipelineRef": {"name": "x"}}})
    uid = pr["metadata"]["uid"]
    run_tasks(elsewhere, uid, tmp_path)
    finish(cluster, "run-unsigned")
    assert "is missing" in ignored_event(cluster, uid)["message"]
    settle(cluster, roots, tmp_path, "after-unsigned")
    assert refs_of(uid) <= states(elsewhere)


def test_a_signed_annotation_copied_to_another_run_is_ignored(cluster, roots, start_controller, tmp_path: Path):
    allowed, _ = roots
    start_controller()
    _, victim_uid, _ = resolve_and_merge(cluster, "victim")
    run_tasks(allowed, victim_uid, tmp_path)
    _, _, annotations = resolve_and_merge(cluster, "copier")
    copy = cluster.api.create(PR, "pipelineruns", NS, {"metadata": {
        "name": "run-copy", "labels": {"wrapresolver.dev/storage": "managed"}, "annotations": annotations},
        "spec": {"pipelineRef": {"name": "x"}}})
    finish(cluster, "run-copy")
    assert "does not match" in ignored_event(cluster, copy["metadata"]["uid"])["message"]
    assert refs_of(victim_uid) <= states(allowed)


def test_a_target_outside_a_narrowed_allow_list_is_not_reclaimed(cluster, roots, start_controller, tmp_path: Path):
    allowed, _ = roots
    start_controller()
    run, uid, _ = resolve_and_merge(cluster, "narrowed")
    run_tasks(allowed, uid, tmp_path)
    config = cluster.api.get("v1", "configmaps", SYSTEM_NS, "wrapresolver-config")["data"]
    cluster.configure({"allowed-targets": "oci://registry.internal/ci/"})
    try:
        finish(cluster, run)
        event = ignored_event(cluster, uid)
        assert "outside `allowed-targets`" in event["message"] and "oci://registry.internal/ci/" in event["message"]
    finally:
        cluster.configure(config)
    settle(cluster, roots, tmp_path, "after-narrowed")
    assert refs_of(uid) <= states(allowed)


def test_publish_retention_delete_with_run_removes_only_what_the_run_published(
    cluster, roots, start_controller, tmp_path: Path,
) -> None:
    allowed, _ = roots
    start_controller()
    target = f"file://{allowed}/<<workspace>>:$(context.pipelineRun.name)"
    first, first_uid, annotations = resolve_and_merge(cluster, "pub-first", target=target,
                                                      **{"publish-retention": "delete-with-run"})
    assert annotations["wrapresolver.dev/publish-retention"] == "delete-with-run"
    run_tasks(allowed, first_uid, tmp_path, tag="run-pub-first")
    second, second_uid, _ = resolve_and_merge(cluster, "pub-second", target=target,
                                              **{"publish-retention": "delete-with-run"})
    run_tasks(allowed, second_uid, tmp_path, tag="run-pub-second")
    finish(cluster, first)
    wait_for(lambda: not (refs_of(first_uid) & states(allowed)), "the first run's states to go")
    assert published(allowed).get("run-pub-first") == first_uid  # ended, not deleted: its result stays
    cluster.api.delete(PR, "pipelineruns", NS, first)
    wait_for(lambda: "run-pub-first" not in published(allowed), "the deleted run's published result to go")
    assert published(allowed).get("run-pub-second") == second_uid
    assert refs_of(second_uid) <= states(allowed)


def test_publish_retention_keeps_a_result_a_later_run_published_over_and_a_carried_workspaces(tmp_path: Path) -> None:
    from wrapresolver.controller.retention import reclaim_run_published

    root = tmp_path / "storage"
    first, second = "5e6f7081-0a51-4d38-9d7d-3c1b0f2a9e01", "6f708192-1b62-4e49-8e8e-4d2c1a3b0f02"
    run_tasks(root, first, tmp_path)
    run_tasks(root, second, tmp_path)  # publishes `latest` again, over the first run's
    entry = {"workspace": "src", "backend": "file", "target": f"file://{root}/src", "options": {}, "tasks": []}
    assert reclaim_run_published(first, [entry]).deleted == 0
    assert published(root) == {"latest": second}
    assert reclaim_run_published(second, [{**entry, "carried": True}]).deleted == 0
    assert published(root) == {"latest": second}
    assert reclaim_run_published(second, [entry]).deleted == 1
    assert published(root) == {}


def test_an_allowed_targets_entry_that_is_not_a_prefix_is_logged_when_the_configmap_is_applied(caplog) -> None:
    from wrapresolver.controller.config import Settings

    Settings.from_configmap({"data": {"allowed-targets": "registry.internal/ci,oci://registry.internal/ci"}})
    assert any("`allowed-targets`" in r.getMessage() and "has no scheme" in r.getMessage() for r in caplog.records)


def test_a_controller_that_may_not_read_its_key_still_answers_unsigned_and_says_why(
    cluster, roots, start_controller,
) -> None:
    import yaml

    from tests.fixtures.kubeapi import rules_from_manifests

    config = Path(__file__).resolve().parents[2] / "config"
    docs = list(yaml.safe_load_all((config / "rbac.yaml").read_text()))
    rules = [r for r in rules_from_manifests(docs, "wrapresolver") if "secrets" not in r.resources]
    secret = cluster.api.get("v1", "secrets", SYSTEM_NS, "wrapresolver-signing-key")
    cluster.api.delete("v1", "secrets", SYSTEM_NS, "wrapresolver-signing-key")
    cluster.api.rules = rules
    try:
        ctl = start_controller()
        _, _, annotations = resolve_and_merge(cluster, "no-key")
        assert "wrapresolver.dev/signature" not in annotations
        assert any("no signing key" in str(line.get("message")) for line in ctl.logs())
    finally:
        cluster.api.rules = None
        cluster.api.create("v1", "secrets", SYSTEM_NS, {"metadata": {"name": secret["metadata"]["name"]},
                                                         "data": secret["data"]})


def test_a_list_narrowed_while_a_collection_waits_is_honoured_when_it_runs(tmp_path: Path) -> None:
    """A keep-for delay runs long: the allow list is read again when the delete is due."""
    import asyncio
    from types import SimpleNamespace

    from wrapresolver.controller.config import Settings
    from wrapresolver.controller.retention import STATES, Reaper

    root, uid = tmp_path / "storage", "708192a3-0a51-4d38-9d7d-3c1b0f2a9e01"
    run_tasks(root, uid, tmp_path)
    live = SimpleNamespace(current=Settings.from_configmap({"data": {"allowed-targets": f"file://{root}/"}}))
    reaper = Reaper(kube=None, runtime=SimpleNamespace(signing_key=b"k" * 32, config=live))
    entry = {"workspace": "src", "backend": "file", "target": f"file://{root}/src", "options": {},
             "tasks": ["clone", "build"]}
    live.current = Settings.from_configmap({"data": {"allowed-targets": "oci://registry.internal/ci/"}})
    body = {"metadata": {"uid": uid, "name": "run", "namespace": NS}}
    asyncio.run(reaper._reclaim_at(0.0, STATES, uid, [entry], body, deleted=True))
    assert refs_of(uid) <= states(root)
    live.current = Settings.from_configmap({"data": {"allowed-targets": f"file://{root}/"}})
    asyncio.run(reaper._reclaim_at(0.0, STATES, uid, [entry], body, deleted=True))
    assert not refs_of(uid) & states(root)
