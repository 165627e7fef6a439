#!/usr/bin/env python3
"""Time and answer size of planning and rewriting large generated Pipelines.

    python bench/rewrite.py [--rounds 3] [--seed 1] [--case chain-2000-1 ...] [--restricted]

Each case is a generated Pipeline, `<shape>-<tasks>-<workspaces>`:
- `chain`: task i runs after task i-1;
- `random`: each task runs after up to 3 random earlier tasks (30% of the edges through
  result references instead of runAfter).
In both, every task binds 1-3 of the wrapped workspaces (a third of the bindings
readOnly), a tenth of the tasks have a `when`, and 3 `finally` tasks bind one workspace
each. Timed, per round: `rewrite_pipeline` (builds the DAG, plans every workspace, injects
the steps) plus the serialisation of the answer (compact JSON, `resolve.to_json`), with
the cyclic garbage collector paused, as the controller does per request. Printed: the
median and the worst round (wall clock), the median CPU time of the process (what the
figures mean when other work shares the cores), the answer's size, its bytes per task,
what the rewrite added per task (against the input Pipeline as the same JSON), whether a
ResolutionRequest could hold it, and, untimed, the size of the same answer as block YAML
(what `wrapresolver render` prints).

`--restricted` gives every task a second step and both steps the settings Pod Security
"restricted" needs, differing between them (one has a read-only root), and the request a
PipelineRun whose pod template sets `runAsNonRoot` and `seccompProfile`: the most work the
injected steps' securityContext takes (core/stepsecurity.py). The column "securityContext"
is the CPU time of deciding it for every task alone (median of the rounds, included in the
time above; "-" for a version without core/stepsecurity.py).
"""

from __future__ import annotations

import argparse
import random
import statistics
import time

from wrapresolver.backends.registry import get_backend
from wrapresolver.core import rewrite
from wrapresolver.core.params import PipelineRef, RunContext, WrapRequest
from wrapresolver.errors import WrapError
from wrapresolver.pycollector import paused_gc
from wrapresolver.resolve import check_answer_size, to_json, to_yaml

CASES = [f"{shape}-{tasks}-{ws}" for shape in ("chain", "random") for tasks in (200, 2000) for ws in (1, 5)]


HARDENED = {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}, "runAsUser": 1000}
RESTRICTED_RUN = {"apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "bench"}, "spec": {
    "taskRunTemplate": {"podTemplate": {"securityContext": {"runAsNonRoot": True,
                                                            "seccompProfile": {"type": "RuntimeDefault"}}}}}}


def generate(shape: str, tasks: int, workspaces: int, seed: int, restricted: bool = False) -> dict:
    rng = random.Random(seed)
    names = [f"ws{i}" for i in range(workspaces)]
    out = []
    for i in range(tasks):
        bound = rng.sample(names, rng.randint(1, min(3, workspaces)))
        t: dict = {"name": f"t{i:04d}"}
        if i:
            if shape == "chain":
                parents = [i - 1]
            else:
                parents = rng.sample(range(i), min(i, rng.randint(1, 3)))
            via_results = [p for p in parents if rng.random() < 0.3]
            after = [p for p in parents if p not in via_results]
            if after:
                t["runAfter"] = [f"t{p:04d}" for p in after]
            if via_results:
                t["params"] = [{"name": f"in{p}", "value": f"$(tasks.t{p:04d}.results.out)"} for p in via_results]
        if rng.random() < 0.1:
            t["when"] = [{"input": "$(params.flag)", "operator": "in", "values": ["yes"]}]
        t["workspaces"] = [{"name": w, "workspace": w} for w in bound]
        t["taskSpec"] = {
            "params": [{"name": p["name"]} for p in t.get("params", [])],
            "results": [{"name": "out"}],
            "workspaces": [{"name": w, "readOnly": rng.random() < 0.33} for w in bound],
            "steps": [{"name": "work", "image": "alpine", "script": f"echo {i} > $(results.out.path)"}],
        }
        if restricted:
            t["taskSpec"]["steps"][0]["securityContext"] = dict(HARDENED)
            t["taskSpec"]["steps"].append({"name": "check", "image": "alpine", "script": "true",
                                           "securityContext": {**HARDENED, "readOnlyRootFilesystem": True}})
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


def run_case(case: str, rounds: int, seed: int, restricted: bool = False) -> dict:
    shape, tasks, workspaces = case.split("-")
    pipeline = generate(shape, int(tasks), int(workspaces), seed, restricted)
    names = tuple(w["name"] for w in pipeline["spec"]["workspaces"])
    backend = get_backend("file")
    request = WrapRequest(
        pipelineref=PipelineRef(name="big"), workspaces=names,
        target="file:///srv/ci/$(context.pipelineRun.name)-<<workspace>>", backend="file",
        context=RunContext(name="bench", namespace="ci", uid="0000-bench",
                           pipelinerun=RESTRICTED_RUN if restricted else None),
    )
    times, cpu = [], []
    data = b""
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        with paused_gc():  # as `resolve` does
            out = rewrite.rewrite_pipeline(pipeline, {}, request, names, backend)
            data = to_json(out)
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    security = _security_cpu(pipeline, request.context.pipelinerun, rounds)
    try:
        check_answer_size(data, "big")
        fits = "yes"
    except WrapError:
        fits = "no"
    count = int(tasks) + 3
    given = len(to_json(pipeline))
    as_yaml = len(to_yaml(out))
    return {
        "case": case, "median": statistics.median(times), "max": max(times), "cpu": statistics.median(cpu),
        "bytes": len(data),
        "per_task": len(data) / count, "added_per_task": (len(data) - given) / count, "fits": fits,
        "yaml": as_yaml, "security": security,
    }


def _security_cpu(pipeline: dict, run: dict | None, rounds: int) -> float | None:
    try:
        from wrapresolver.core import podsecurity, stepsecurity
    except ImportError:  # a version before it
        return None
    tasks = pipeline["spec"]["tasks"] + pipeline["spec"]["finally"]
    cpu = []
    for _ in range(rounds):
        start = time.process_time()
        for t in tasks:
            stepsecurity.for_task(t["name"], t["taskSpec"], podsecurity.pod_context(run, t["name"]),
                                  ["wrap-fetch", "wrap-store"])
        cpu.append(time.process_time() - start)
    return statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", action="append", choices=CASES, help="one case (repeatable); default: all")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--restricted", action="store_true", help="steps hardened for Pod Security restricted")
    args = parser.parse_args()
    print(f"seed {args.seed}, {args.rounds} rounds{', restricted' if args.restricted else ''}; "
          f"time = rewrite_pipeline + JSON of the answer")
    print("| case | median | max | CPU (median) | answer | bytes/task | added by the rewrite/task "
          "| fits a ResolutionRequest | as YAML | securityContext (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for case in args.case or CASES:
        r = run_case(case, args.rounds, args.seed, args.restricted)
        print(f"| {r['case']} | {r['median'] * 1000:.0f} ms | {r['max'] * 1000:.0f} ms | {r['cpu'] * 1000:.0f} ms | "
              f"{r['bytes'] / 1024:.0f} KiB | {r['per_task']:.0f} | {r['added_per_task']:.0f} | {r['fits']} | "
              f"{r['yaml'] / 1024:.0f} KiB | "
              f"{'-' if r['security'] is None else format(r['security'] * 1000, '.0f') + ' ms'} |",
              flush=True)


if __name__ == "__main__":
    main()
