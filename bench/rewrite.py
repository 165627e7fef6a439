#!/usr/bin/env python3
"""Time to plan and rewrite a large generated Pipeline, as the controller does per request.

    python bench/rewrite.py [--tasks 200] [--workspaces 5] [--repeat 20] [--seed 1]

A random DAG: each task runs after up to 3 random earlier tasks (some through result
references instead of runAfter), binds 1-3 of the workspaces (a third of the bindings
readOnly), a tenth of the tasks have a `when`, and 3 finally tasks. Prints the median and
the worst of `--repeat` runs of `rewrite.rewrite_pipeline` (which builds the DAG, plans
every workspace and rewrites), then the size of the result. Goal: under 100 ms.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from wrapresolver import rewrite
from wrapresolver.backends.registry import get_backend
from wrapresolver.core.params import PipelineRef, RunContext, WrapRequest
from wrapresolver.resolve import to_yaml


def generate(tasks: int, workspaces: int, seed: int) -> dict:
    rng = random.Random(seed)
    names = [f"ws{i}" for i in range(workspaces)]
    out = []
    for i in range(tasks):
        bound = rng.sample(names, rng.randint(1, min(3, workspaces)))
        t: dict = {"name": f"t{i:03d}"}
        if i:
            parents = rng.sample(range(i), min(i, rng.randint(1, 3)))
            via_results = [p for p in parents if rng.random() < 0.3]
            after = [p for p in parents if p not in via_results]
            if after:
                t["runAfter"] = [f"t{p:03d}" for p in after]
            if via_results:
                t["params"] = [{"name": f"in{p}", "value": f"$(tasks.t{p:03d}.results.out)"} for p in via_results]
        if rng.random() < 0.1:
            t["when"] = [{"input": "$(params.flag)", "operator": "in", "values": ["yes"]}]
        t["workspaces"] = [{"name": w, "workspace": w} for w in bound]
        t["taskSpec"] = {
            "params": [{"name": p["name"]} for p in t.get("params", [])],
            "results": [{"name": "out"}],
            "workspaces": [{"name": w, "readOnly": rng.random() < 0.33} for w in bound],
            "steps": [{"name": "work", "image": "alpine", "script": f"echo {i} > $(results.out.path)"}],
        }
        out.append(t)
    final = [
        {"name": f"final{j}", "workspaces": [{"name": names[j % workspaces], "workspace": names[j % workspaces]}],
         "taskSpec": {"workspaces": [{"name": names[j % workspaces]}],
                      "steps": [{"name": "report", "image": "alpine", "script": "ls"}]}}
        for j in range(3)
    ]
    return {
        "apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "big"},
        "spec": {"params": [{"name": "flag", "default": "no"}],
                 "workspaces": [{"name": w} for w in names], "tasks": out, "finally": final},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=200)
    parser.add_argument("--workspaces", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    pipeline = generate(args.tasks, args.workspaces, args.seed)
    names = tuple(w["name"] for w in pipeline["spec"]["workspaces"])
    backend = get_backend("file")
    request = WrapRequest(
        pipelineref=PipelineRef(name="big"), workspaces=names,
        target="file:///srv/ci/$(context.pipelineRun.name)-<<workspace>>", backend="file",
        context=RunContext(name="bench", namespace="ci", uid="0000-bench"),
    )
    times = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        out = rewrite.rewrite_pipeline(pipeline, {}, request, names, backend)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    data = to_yaml(out)
    dump = time.perf_counter() - start
    print(f"pipeline: {args.tasks} tasks + 3 finally, {args.workspaces} wrapped workspaces, seed {args.seed}")
    print(f"plan + rewrite: median {statistics.median(times) * 1000:.1f} ms, "
          f"max {max(times) * 1000:.1f} ms over {args.repeat} runs (goal < 100 ms)")
    print(f"YAML serialisation of the answer: {dump * 1000:.1f} ms, {len(data) / 1024:.0f} KiB")


if __name__ == "__main__":
    main()
