"""The rewrite, case by case (DESIGN §3 "Tekton details that must keep working").

Each case in tests/core/golden/cases/ is rendered and compared with tests/core/golden/expected/
(regenerate with WRAPRESOLVER_UPDATE_GOLDEN=1 and review the diff), checked against
Tekton's structural rules, and then asserted on for the behaviour it exists to show, so a
wrong golden file cannot hide a regression.
"""

from __future__ import annotations

import copy
import json
import os
import re
from pathlib import Path

import pytest
import yaml

from tests import tekton_rules
from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.errors import RewriteError
from wrapresolver.render import render as render_files

RUN_UID = "0d9c6a52-1111-4c2e-9e1b-4a0c8a7f0001"
"""The uid the cases' PipelineRun carries; render uses a uid only when it is given explicitly."""


def render(docs, **kwargs):
    return render_files(docs, uid=RUN_UID, **kwargs)

_INJECTED_RESULT = re.compile(r"^wrap-.+-ARTIFACT_(INPUTS|OUTPUTS)$")
"""The results the injected steps declare (a user result of the same name moves ours aside)."""

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(p.stem for p in (GOLDEN / "cases").glob("*.yaml"))
UPDATE = os.environ.get("WRAPRESOLVER_UPDATE_GOLDEN") == "1"


def documents(case: str) -> list[dict]:
    return [d for d in yaml.safe_load_all((GOLDEN / "cases" / f"{case}.yaml").read_text()) if d]


def rendered(case: str, **params: str) -> dict:
    return yaml.safe_load(render(documents(case), params=params))


def tasks_of(pipeline: dict) -> dict[str, dict]:
    spec = pipeline["spec"]
    return {t["name"]: t for t in spec["tasks"] + spec.get("finally", [])}


def wrap_steps(ptask: dict) -> list[dict]:
    return [s for s in ptask["taskSpec"]["steps"] if s.get("command") == ["wrapresolver"]]


def transfers(step: dict) -> list[WorkspaceTransfer]:
    args = step["args"]
    return [WorkspaceTransfer.from_json(args[i + 1]) for i, a in enumerate(args) if a == "--workspace"]


def fetch_of(ptask: dict) -> WorkspaceTransfer:
    (spec,) = transfers(ptask["taskSpec"]["steps"][0])
    return spec


def store_of(ptask: dict) -> WorkspaceTransfer | None:
    last = ptask["taskSpec"]["steps"][-1]
    if last.get("args", [None])[0] != "store":
        return None
    (spec,) = transfers(last)
    return spec


@pytest.mark.parametrize("case", CASES)
def test_golden_output_is_stable_and_valid(case):
    data = render(documents(case))
    expected = GOLDEN / "expected" / f"{case}.yaml"
    if UPDATE:
        expected.parent.mkdir(exist_ok=True)
        expected.write_bytes(data)
    assert data.decode() == expected.read_text(), "regenerate with WRAPRESOLVER_UPDATE_GOLDEN=1 and review"
    assert tekton_rules.problems(yaml.safe_load(data)) == []


@pytest.mark.parametrize("case", CASES)
def test_input_apiversion_is_kept(case):
    pipeline = next(d for d in documents(case) if d["kind"] == "Pipeline")
    assert rendered(case)["apiVersion"] == pipeline["apiVersion"]


def test_linear_chain_each_task_fetches_the_previous_producer():
    t = tasks_of(rendered("linear"))
    assert fetch_of(t["clone"]).inputs == ()
    assert fetch_of(t["build"]).inputs == ("clone",)
    assert fetch_of(t["test"]).inputs == ("build",)
    assert [s["name"] for s in t["build"]["taskSpec"]["steps"]] == ["wrap-fetch", "build", "wrap-store"]
    # The last producer writes the user's exact target itself; nothing is added to finally.
    assert store_of(t["test"]).publish and not store_of(t["build"]).publish
    assert "finally" not in rendered("linear")["spec"]


def test_target_and_run_are_filled_from_the_pipelinerun():
    spec = fetch_of(tasks_of(rendered("linear"))["build"])
    assert spec.target == "oci://registry.example/ci/linear-run-src"
    assert spec.run == "0d9c6a52-1111-4c2e-9e1b-4a0c8a7f0001"
    assert spec.path == "$(workspaces.src.path)" and spec.backend == "oci"


def test_fan_in_merges_branches_in_listed_order_and_publishes_from_finally():
    out = rendered("fan-in")
    t = tasks_of(out)
    assert fetch_of(t["package"]).inputs == ("unit", "lint")
    # No task here has a `when` or `onError: continue`: if package runs, both stored.
    assert not any(node.skippable for node in fetch_of(t["package"]).graph.values())
    assert '"fallback"' not in wrap_steps(t["package"])[0]["args"][-1]
    # package and docs are both leaves: a finally task publishes their merge.
    publish = t["wrap-publish"]
    assert publish["when"] == [{"input": "$(tasks.status)", "operator": "in", "values": ["Succeeded", "Completed"]}]
    (spec,) = transfers(publish["taskSpec"]["steps"][0])
    assert spec.inputs == ("package", "docs") and spec.publish and spec.task == "wrap-publish"
    # The publish task runs after failures too: it may fall back past every DAG producer.
    assert {n for n, node in spec.graph.items() if node.skippable} == {"clone", "unit", "lint", "package", "docs"}
    assert not any(store_of(t[n]).publish for n in ("clone", "unit", "lint", "package", "docs"))


def test_skipped_producer_leaves_a_fallback_to_its_input():
    t = tasks_of(rendered("when-skipped"))
    spec = fetch_of(t["deploy"])
    assert spec.inputs == ("sign",)
    assert spec.graph["sign"].inputs == ("build",)
    # deploy's chain has a `when`: it cannot know it is last, so a publish task does it.
    assert "wrap-publish" in t and not store_of(t["deploy"]).publish


def test_finally_writer_sees_the_dag_and_publishes():
    t = tasks_of(rendered("finally"))
    assert fetch_of(t["report"]).inputs == ("build",)
    assert store_of(t["report"]).publish
    assert fetch_of(t["notify"]).inputs == ("build",) and store_of(t["notify"]) is None
    assert "wrap-publish" not in t


def test_read_only_workspace_stays_read_only_and_is_never_stored():
    t = tasks_of(rendered("readonly"))
    decl = t["scan"]["taskSpec"]["workspaces"][0]
    assert decl == {"name": "src", "readOnly": True, "description": "Scanned, never changed."}
    assert [s["name"] for s in wrap_steps(t["scan"])] == ["wrap-fetch"]
    assert store_of(t["write"]).publish  # the only producer


def test_fetch_fills_a_read_only_workspace_through_a_writable_mount_of_its_volume_only_it_has():
    t = tasks_of(rendered("readonly"))
    fetch_step, *user_steps = t["scan"]["taskSpec"]["steps"]
    spec = fetch_of(t["scan"])
    assert spec.path == "$(workspaces.src.path)"  # the read-only view the task sees
    assert spec.fill == "/wrap-fill/src"
    assert {"name": "$(workspaces.src.volume)", "mountPath": "/wrap-fill/src"} in fetch_step["volumeMounts"]
    assert "$(workspaces" not in json.dumps([s.get("volumeMounts") for s in user_steps])
    assert "stepTemplate" not in t["scan"]["taskSpec"]
    assert fetch_of(t["write"]).fill == ""  # a writable workspace is fetched where it is mounted


def test_read_only_pipeline_task_binding_makes_the_workspace_read_only():
    docs = documents("readonly")
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    scan = pipeline["spec"]["tasks"][1]
    scan["taskSpec"]["workspaces"][0].pop("readOnly")
    scan["workspaces"] = [{"name": "src", "workspace": "src", "readOnly": True}]
    out = yaml.safe_load(render(docs))
    t = tasks_of(out)
    assert t["scan"]["taskSpec"]["workspaces"][0]["readOnly"] is True
    assert t["scan"]["workspaces"] == [{"name": "src", "workspace": "src"}]  # not a field Tekton keeps
    assert fetch_of(t["scan"]).fill == "/wrap-fill/src"
    assert store_of(t["scan"]) is None and store_of(t["write"]).publish
    assert tekton_rules.problems(out) == []


def test_read_only_pipeline_task_binding_lets_a_matrix_task_read_a_wrapped_workspace():
    docs = documents("matrix-readonly")
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    test = pipeline["spec"]["tasks"][1]
    test["taskSpec"]["workspaces"] = [{"name": "src"}]
    test["workspaces"] = [{"name": "src", "workspace": "src", "readOnly": True}]
    t = tasks_of(yaml.safe_load(render(docs)))
    assert [s["name"] for s in wrap_steps(t["test"])] == ["wrap-fetch"]


def test_read_only_workspace_of_an_optional_pipeline_workspace_is_checked_by_a_store_step_instead():
    docs = documents("readonly")
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    pipeline["spec"]["workspaces"] = [{"name": "src", "optional": True}]
    out = yaml.safe_load(render(docs))
    t = tasks_of(out)
    steps = t["scan"]["taskSpec"]["steps"]
    assert "readOnly" not in t["scan"]["taskSpec"]["workspaces"][0]  # the fetch step writes into it
    assert "$(workspaces" not in json.dumps([s.get("volumeMounts") for s in steps])  # no volume it may lack
    assert fetch_of(t["scan"]).fill == ""
    check = store_of(t["scan"])
    assert check.read_only and not check.publish and check.path == "$(workspaces.src.path)"
    assert [s["name"] for s in steps] == ["wrap-fetch", "scan", "wrap-store"]
    assert not store_of(t["write"]).read_only
    assert tekton_rules.problems(out) == []


def test_an_isolated_read_only_workspace_is_listed_by_the_fetch_step_which_also_mounts_its_volume():
    docs = documents("isolated")
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    push = pipeline["spec"]["tasks"][0]["taskSpec"]
    push["workspaces"][0]["readOnly"] = True
    push["steps"][1]["workspaces"] = [{"name": "src", "mountPath": "/src"}]
    out = yaml.safe_load(render(docs))
    (fetch_step,) = wrap_steps(tasks_of(out)["push"])
    assert fetch_step["workspaces"] == [{"name": "src"}]  # Tekton mounts the read-only view it looks for
    assert {"name": "$(workspaces.src.volume)", "mountPath": "/wrap-fill/src"} in fetch_step["volumeMounts"]
    assert tasks_of(out)["push"]["taskSpec"]["steps"][2]["workspaces"] == [{"name": "src", "mountPath": "/src"}]
    assert tekton_rules.problems(out) == []


def test_fill_mount_path_avoids_a_path_the_task_already_mounts():
    docs = documents("readonly")
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    scan = pipeline["spec"]["tasks"][1]["taskSpec"]
    scan["volumes"] = [{"name": "tools", "emptyDir": {}}]
    scan["steps"][0]["volumeMounts"] = [{"name": "tools", "mountPath": "/wrap-fill/src"}]
    out = yaml.safe_load(render(docs))
    t = tasks_of(out)
    assert fetch_of(t["scan"]).fill == "/wrap-fill-2/src"
    assert {"name": "$(workspaces.src.volume)", "mountPath": "/wrap-fill-2/src"} in wrap_steps(t["scan"])[0]["volumeMounts"]
    assert tekton_rules.problems(out) == []


def test_sub_path_binding_limits_fetch_and_store_to_the_prefix():
    t = tasks_of(rendered("subpath"))
    assert fetch_of(t["writer"]).sub_path == "$(params.dir)"
    assert store_of(t["writer"]).sub_path == "$(params.dir)"
    assert fetch_of(t["reader"]).sub_path == "" and fetch_of(t["reader"]).inputs == ("writer",)
    assert t["writer"]["workspaces"] == [{"name": "out", "workspace": "data", "subPath": "$(params.dir)"}]


def test_custom_mount_path_is_reached_through_the_workspace_variable():
    t = tasks_of(rendered("mountpath"))
    assert fetch_of(t["go-build"]).path == "$(workspaces.source.path)"
    assert t["go-build"]["taskSpec"]["workspaces"] == [{"name": "source", "mountPath": "/go/src/example.com/app"}]


def test_optional_workspace_carries_its_bound_variable():
    t = tasks_of(rendered("optional"))
    specs = {s.workspace: s for s in transfers(t["build"]["taskSpec"]["steps"][0])}
    assert specs["cache"].bound == "$(workspaces.cache.bound)"
    assert specs["src"].bound == "true"
    assert set(specs) == {"src", "cache"}  # `extra` is not a wrapped workspace


def test_isolated_workspaces_are_listed_on_the_injected_steps():
    t = tasks_of(rendered("isolated"))
    for step in wrap_steps(t["push"]):
        assert step["workspaces"] == [{"name": "src"}]
    user = {s["name"]: s for s in t["push"]["taskSpec"]["steps"]}
    assert user["login"]["workspaces"] == [{"name": "creds"}]


def test_step_template_security_context_is_inherited_not_overridden():
    t = tasks_of(rendered("steptemplate"))
    for step in wrap_steps(t["build"]):
        assert "securityContext" not in step  # the stepTemplate's applies
        assert "workingDir" not in step and step["image"]
    assert t["build"]["taskSpec"]["sidecars"][0]["name"] == "dind"
    assert [v["name"] for v in t["build"]["taskSpec"]["volumes"]] == ["docker", "wrap-state"]
    # Without a stepTemplate, the securityContext every step shares is copied onto ours.
    for step in wrap_steps(t["per-step"]):
        assert step["securityContext"] == {"runAsUser": 65532}


def test_restricted_injected_steps_get_what_every_step_has_and_the_step_template_does_not_give():
    out = rendered("restricted")
    t = tasks_of(out)
    for step in wrap_steps(t["build"]):  # allowPrivilegeEscalation comes from the stepTemplate
        assert step["securityContext"] == {"capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
    for step in wrap_steps(t["test"]):
        assert step["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}
    (publish,) = t["wrap-publish"]["taskSpec"]["steps"]  # seccomp: only build's steps state one; the pod's applies
    assert publish["securityContext"] == {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}}


def test_matrix_task_may_read_a_wrapped_workspace():
    t = tasks_of(rendered("matrix-readonly"))
    assert [s["name"] for s in wrap_steps(t["test"])] == ["wrap-fetch"]
    assert fetch_of(t["test"]).inputs == ("build",)


def test_matrix_task_writing_a_wrapped_workspace_is_rejected():
    docs = documents("matrix-readonly")
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    test = pipeline["spec"]["tasks"][1]
    test["taskSpec"]["workspaces"] = [{"name": "src"}]
    with pytest.raises(RewriteError, match=r"'test' has a matrix and writes wrapped workspace 'src'.*readOnly: true"):
        render(docs)


def test_injected_step_and_volume_names_never_collide():
    t = tasks_of(rendered("step-collision"))
    names = [s["name"] for s in t["odd"]["taskSpec"]["steps"]]
    assert names == ["wrap-fetch-2", "wrap-fetch", "wrap-store", "wrap-store-2", "wrap-store-3"]
    assert [v["name"] for v in t["odd"]["taskSpec"]["volumes"]] == ["wrap-state", "wrap-state-2"]
    assert wrap_steps(t["odd"])[0]["volumeMounts"][0]["name"] == "wrap-state-2"


def test_injected_steps_name_the_state_dir_only_when_it_is_not_the_commands_default():
    t = tasks_of(rendered("linear"))
    for step in wrap_steps(t["build"]):
        assert "--state-dir" not in step["args"]
        assert step["volumeMounts"][0]["mountPath"] == "/wrap-state"
    docs = documents("linear")
    build = next(d for d in docs if d["kind"] == "Pipeline")["spec"]["tasks"][1]
    build["taskSpec"]["steps"][0]["volumeMounts"] = [{"name": "mine", "mountPath": "/wrap-state"}]
    build["taskSpec"]["volumes"] = [{"name": "mine", "emptyDir": {}}]
    moved = tasks_of(yaml.safe_load(render(docs)))[build["name"]]
    for step in wrap_steps(moved):
        assert step["args"][1:3] == ["--state-dir", "/wrap-state-2"]
        assert step["volumeMounts"][0]["mountPath"] == "/wrap-state-2"


def test_injected_steps_work_from_the_root_only_against_a_step_template_working_dir():
    """A stepTemplate `workingDir` would apply to our steps too, and may lie inside a workspace fetch replaces."""
    docs = documents("linear")
    build = next(d for d in docs if d["kind"] == "Pipeline")["spec"]["tasks"][1]
    build["taskSpec"]["stepTemplate"] = {"workingDir": "$(workspaces.src.path)/app"}
    t = tasks_of(yaml.safe_load(render(docs)))
    assert [s.get("workingDir") for s in wrap_steps(t[build["name"]])] == ["/", "/"]
    assert all("workingDir" not in s for name in t if name != build["name"] for s in wrap_steps(t[name]))


def test_v1beta1_pipeline_embeds_tasks_in_v1beta1_form():
    out = rendered("v1beta1")
    assert out["apiVersion"] == "tekton.dev/v1beta1"
    t = tasks_of(out)
    compile_step = t["compile"]["taskSpec"]["steps"][1]
    assert compile_step["resources"] == {"requests": {"cpu": "500m"}} and "computeResources" not in compile_step
    assert t["lint"]["taskSpec"]["steps"][1]["resources"] == {"limits": {"memory": "64Mi"}}
    assert t["compile"]["taskSpec"]["metadata"] == {"labels": {"app.kubernetes.io/version": "0.1"}}
    assert "taskRef" not in t["compile"] and "taskRef" not in t["lint"]


def test_embedding_keeps_the_tasks_own_default_over_a_same_named_pipeline_param():
    t = tasks_of(rendered("v1beta1"))
    # Embedded, the Pipeline's `flags` would override the Task's default: it is pinned.
    assert t["compile"]["params"] == [{"name": "flags", "value": "-O2"}]


def test_cluster_tasks_are_embedded_only_when_they_bind_a_wrapped_workspace():
    t = tasks_of(rendered("taskref"))
    assert "taskSpec" in t["fetch"] and "taskRef" not in t["fetch"]
    assert t["notify"]["taskRef"] == {"name": "say"}
    assert list(t["fetch"]) == ["name", "taskSpec", "params", "workspaces"]  # taskRef's place
    assert fetch_of(t["count"]).path == "$(workspaces.input.path)"
    assert fetch_of(t["count"]).inputs == ("fetch",)


def test_propagated_workspace_becomes_an_explicit_binding():
    t = tasks_of(rendered("propagated"))
    assert t["t1"]["workspaces"] == [{"name": "shared-data", "workspace": "shared-data"}]
    assert t["t1"]["taskSpec"]["workspaces"] == [{"name": "shared-data"}]
    assert store_of(t["t1"]).publish


def test_custom_task_binding_a_wrapped_workspace_is_rejected():
    docs = documents("linear")
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    pipeline["spec"]["tasks"][1] = {
        "name": "build", "runAfter": ["clone"],
        "taskRef": {"apiVersion": "example.dev/v1", "kind": "Wait"},
        "workspaces": [{"name": "src", "workspace": "src"}],
    }
    with pytest.raises(RewriteError, match="'build' is a custom task"):
        render(docs)


def test_pipeline_in_pipeline_binding_a_wrapped_workspace_is_rejected():
    docs = documents("linear")
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    pipeline["spec"]["tasks"][1] = {
        "name": "build", "pipelineRef": {"name": "child"}, "workspaces": [{"name": "src", "workspace": "src"}],
    }
    with pytest.raises(RewriteError, match="pipelines in pipelines"):
        render(docs)


def test_two_bindings_of_one_wrapped_workspace_in_a_task_are_rejected():
    docs = documents("linear")
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    pipeline["spec"]["tasks"][0]["workspaces"].append({"name": "again", "workspace": "src"})
    pipeline["spec"]["tasks"][0]["taskSpec"]["workspaces"].append({"name": "again"})
    with pytest.raises(RewriteError, match="binds wrapped workspace 'src' twice"):
        render(docs)


def test_several_workspaces_share_one_fetch_and_one_store_step():
    out = yaml.safe_load(render([d for d in yaml.safe_load_all(
        (Path(__file__).resolve().parents[2] / "examples" / "pipeline.yaml").read_text()) if d],
        params={"target": "oci://registry.example/ci/<<workspace>>", "workspaces": "sources,cache"}))
    t = tasks_of(out)
    fetch = t["build"]["taskSpec"]["steps"][0]
    assert [s.workspace for s in transfers(fetch)] == ["sources", "cache"]
    store = t["build"]["taskSpec"]["steps"][-1]
    assert [s.workspace for s in transfers(store)] == ["cache"]  # sources is read-only there


def test_untouched_fields_survive_byte_for_byte():
    for case in CASES:
        original = next(d for d in documents(case) if d["kind"] == "Pipeline")
        out = rendered(case)
        assert strip_rewrite(out, original) == original, case


def strip_rewrite(out: dict, original: dict) -> dict:
    """Undo what the rewrite owns; what remains must equal the input."""
    out = copy.deepcopy(out)
    meta = out["metadata"]
    for key, owned in (("labels", ("wrapresolver.dev/storage",)),
                       ("annotations", ("wrapresolver.dev/storage", "wrapresolver.dev/retention"))):
        for name in owned:
            meta.get(key, {}).pop(name, None)
        if key in meta and not meta[key] and key not in original["metadata"]:
            del meta[key]
    spec = out["spec"]
    spec["finally"] = [t for t in spec.get("finally", []) if not t["name"].startswith("wrap-publish")]
    if not spec["finally"]:
        del spec["finally"]
    before = {t["name"]: t for t in original["spec"]["tasks"] + original["spec"].get("finally", [])}
    for t in spec["tasks"] + spec.get("finally", []):
        src = before[t["name"]]
        if "taskRef" in src and "taskSpec" in t:
            t["taskSpec"] = None  # inlined: compared against the Task in test_taskref_inlining
            t["taskRef"] = src["taskRef"]
            t.pop("taskSpec")
            t["params"] = [p for p in t.get("params", []) if p in src.get("params", [])]
            if not t["params"] and "params" not in src:
                del t["params"]
            out_keys = list(src)
            spec_tasks = spec["tasks"] if t in spec["tasks"] else spec["finally"]
            spec_tasks[spec_tasks.index(t)] = {k: t[k] for k in out_keys}
            continue
        if "taskSpec" not in t:
            continue
        ts = t["taskSpec"]
        ts["steps"] = [s for s in ts["steps"] if s.get("command") != ["wrapresolver"]]
        ts["volumes"] = [v for v in ts.get("volumes", []) if not v["name"].startswith("wrap-state")
                         or v in (src.get("taskSpec", {}).get("volumes") or [])]
        if not ts["volumes"] and "volumes" not in src.get("taskSpec", {}):
            del ts["volumes"]
        ts["results"] = [r for r in ts.get("results", []) if not _INJECTED_RESULT.match(str(r.get("name", "")))
                         or r in (src.get("taskSpec", {}).get("results") or [])]
        if not ts["results"] and "results" not in src.get("taskSpec", {}):
            del ts["results"]
        src_decls = {d["name"]: d for d in src.get("taskSpec", {}).get("workspaces", [])}
        if "workspaces" in ts:
            kept = []
            for d in ts["workspaces"]:
                was = src_decls.get(d["name"])
                if was is None:
                    continue  # added for a propagated workspace
                kept.append(d)
            ts["workspaces"] = kept
            if not kept and "workspaces" not in src.get("taskSpec", {}):
                del ts["workspaces"]
        if "workspaces" in t and "workspaces" not in src:
            del t["workspaces"]
    return out


# ---- results for Chains ----

def declared_results(ptask: dict) -> dict[str, dict]:
    return {r["name"]: r for r in ptask["taskSpec"].get("results", [])}


def result_names(spec: WorkspaceTransfer) -> list[str]:
    return [p[len("$(results."):-len(".path)")] for p in spec.results]


@pytest.mark.parametrize("case", CASES)
def test_every_result_a_step_writes_is_a_declared_chains_object_result(case):
    out = rendered(case)
    for ptask in tasks_of(out).values():
        if "taskSpec" not in ptask:
            continue
        declared = declared_results(ptask)
        for step in wrap_steps(ptask):
            suffix = "ARTIFACT_INPUTS" if step["args"][0] == "fetch" else "ARTIFACT_OUTPUTS"
            for spec in transfers(step):
                for name in result_names(spec):
                    assert name.endswith(f"-{suffix}"), name
                    assert declared[name]["type"] == "object"
                    assert declared[name]["properties"] == {"uri": {"type": "string"}, "digest": {"type": "string"}}


@pytest.mark.parametrize("case", CASES)
def test_results_add_no_reference_between_tasks(case):
    original = next(d for d in documents(case) if d["kind"] == "Pipeline")
    out = rendered(case)
    references = lambda obj: set(re.findall(r"\$\(tasks\.[^)]*results[^)]*\)", json.dumps(obj)))  # noqa: E731
    assert references(out) == references(original)


def test_each_producer_declares_its_output_and_each_consumer_one_input_per_merged_state():
    out = tasks_of(rendered("fan-in"))
    assert set(declared_results(out["clone"])) == {"wrap-src-ARTIFACT_OUTPUTS"}
    assert set(declared_results(out["unit"])) == {"wrap-src-ARTIFACT_INPUTS", "wrap-src-ARTIFACT_OUTPUTS"}
    assert result_names(fetch_of(out["package"])) == ["wrap-src-ARTIFACT_INPUTS", "wrap-src-2-ARTIFACT_INPUTS"]
    publish = out["wrap-publish"]
    (spec,) = transfers(publish["taskSpec"]["steps"][0])
    assert spec.publish and result_names(spec) == ["wrap-src-ARTIFACT_OUTPUTS"]
    assert set(declared_results(publish)) == {"wrap-src-ARTIFACT_OUTPUTS"}


def test_a_matrixed_task_declares_no_object_result():
    out = tasks_of(rendered("matrix-readonly"))
    assert "results" not in out["test"]["taskSpec"]
    assert fetch_of(out["test"]).results == ()


def test_a_user_result_of_the_same_name_keeps_its_name_and_ours_moves_aside():
    docs = documents("linear")
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    first = pipeline["spec"]["tasks"][0]
    mine = {"name": "wrap-src-ARTIFACT_OUTPUTS", "description": "the user's own"}
    first["taskSpec"]["results"] = [mine]
    out = tasks_of(yaml.safe_load(render(docs)))[first["name"]]
    names = list(declared_results(out))
    assert names[0] == "wrap-src-ARTIFACT_OUTPUTS" and declared_results(out)[names[0]] == mine
    ours = result_names(store_of(out))
    assert ours != ["wrap-src-ARTIFACT_OUTPUTS"] and ours[0].endswith("-ARTIFACT_OUTPUTS") and ours[0] in names


def test_many_workspaces_in_one_task_stay_within_the_results_budget_outputs_first():
    from wrapresolver.core.refs import producer_ref, state_uri
    from wrapresolver.core.results import RESULTS_BUDGET, declare_results
    from wrapresolver.core.values import Artifact

    specs = [WorkspaceTransfer(workspace=f"ws{i}", target=f"oci://registry.example/a/long/repository/path/ws{i}",
                               run="$(context.pipelineRun.uid)", task="build", backend="oci", inputs=("clone",))
             for i in range(12)]
    task_spec: dict = {}
    fetches, stores = declare_results(task_spec, specs, specs)
    declared = task_spec["results"]
    # What Tekton really puts in the termination message for each: {key, value, type}.
    uid = "0d9c6a52-1111-4c2e-9e1b-4a0c8a7f0001"
    by_workspace = {s.workspace: s for s in specs}
    used = 0
    for result in declared:
        spec = by_workspace[result["name"].split("-")[1]]
        uri = state_uri("oci", spec.target, producer_ref(uid, "build"))
        value = Artifact(uri, "sha256:" + "0" * 64).to_result()
        used += len(json.dumps({"key": result["name"], "value": value, "type": 1}))
    assert used <= RESULTS_BUDGET
    assert 0 < len(declared) < 24
    written = [n for s in stores for n in result_names(s)]
    read = [n for s in fetches for n in result_names(s)]
    assert len(written) >= len(read)  # outputs are granted first


@pytest.mark.parametrize("mounted, fill", [
    ("/wrap-fill", "/wrap-fill-2/src"),
    ("/", "/wrap-fill/src"),
    ("/wrap-fill/src/cache", "/wrap-fill-2/src"),
    ("/wrap-fill-2", "/wrap-fill/src"),  # a sibling, not a parent
])
def test_fill_mount_is_never_inside_or_around_another_mount_of_the_task(mounted, fill):
    docs = documents("readonly")
    pipeline = next(d for d in docs if d["kind"] == "Pipeline")
    scan = pipeline["spec"]["tasks"][1]["taskSpec"]
    scan["volumes"] = [{"name": "tools", "emptyDir": {}}]
    scan["steps"][0]["volumeMounts"] = [{"name": "tools", "mountPath": mounted}]
    assert fetch_of(tasks_of(yaml.safe_load(render(docs)))["scan"]).fill == fill


def test_max_layers_goes_only_to_the_steps_that_publish():
    t = tasks_of(rendered("fan-in", **{"max-layers": "4"}))
    (spec,) = transfers(t["wrap-publish"]["taskSpec"]["steps"][0])
    assert spec.max_layers == 4
    assert all('max_layers' not in json.dumps(step["args"]) for n in ("clone", "unit", "package") for step in wrap_steps(t[n]))
    linear = tasks_of(rendered("finally", **{"max-layers": "4"}))
    assert store_of(linear["report"]).max_layers == 4 and store_of(linear["report"]).publish
