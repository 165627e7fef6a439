"""The results budget holds for what the steps really write, the published target's mark included (pure)."""

from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from wrapresolver.core.refs import producer_ref, state_uri
from wrapresolver.core.results import RESULTS_BUDGET, declare_results
from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.core.values import Artifact

UID = "0d9c6a52-1111-4c2e-9e1b-4a0c8a7f0001"


@given(lengths=st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=8),
       publish=st.lists(st.booleans(), min_size=8, max_size=8), publish_task=st.booleans())
def test_declared_results_fit_the_budget_as_written_with_the_build_artifact_mark(lengths, publish, publish_task):
    specs = [WorkspaceTransfer(workspace=f"w{i}", target="oci://r.example/" + "a" * n, run="$(context.pipelineRun.uid)",
                               task="build", backend="oci", inputs=("clone",), publish=publish[i])
             for i, n in enumerate(lengths)]
    task_spec: dict = {}
    declare_results(task_spec, [] if publish_task else specs, specs, publish_task=publish_task)
    by_workspace = {s.workspace: s for s in specs}
    used = 0
    for result in task_spec.get("results") or []:
        spec = by_workspace[result["name"].split("-")[1]]
        output = result["name"].endswith("-ARTIFACT_OUTPUTS")
        published = output and (publish_task or "-published-" in result["name"])
        uri = spec.target if published else state_uri("oci", spec.target, producer_ref(UID, "build"))
        value = Artifact(uri, "sha256:" + "0" * 64, build_artifact=published).to_result()
        # What Tekton puts in the termination message for each: {key, value, type}.
        used += len(json.dumps({"key": result["name"], "value": value, "type": 1}))
    assert used <= RESULTS_BUDGET
