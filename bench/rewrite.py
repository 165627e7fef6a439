#!/usr/bin/env python3
"""Time and answer size of planning and rewriting large generated Pipelines.

    python bench/rewrite.py [--rounds 3] [--seed 1] [--case chain-2000-1 ...] [--restricted] [--config K=V]

Each case is a generated Pipeline, `<shape>-<tasks>-<workspaces>` (200 tasks with 1 and 5
wrapped workspaces, 2,000 with 1, 1,000 with 5):
- `chain`: task i runs after task i-1;
- `random`: each task runs after up to 3 random earlier tasks (30% of the edges through
  result references instead of runAfter).
In both, every task binds 1-3 of the wrapped workspaces (a third of the bindings
readOnly), a tenth of the tasks have a `when`, and 3 `finally` tasks bind one workspace
each. Timed, per round: `resolve()` of the Pipeline request from a `FileSource`, with the
default settings (`task-resolution: auto`): parsing the params, the rewrite (DAG, plans,
injected steps), the JSON of the inline answer, and, when that is over the 512 KiB budget,
the per-task Pipeline answer and every Task answer the run's per-task requests will get
(kept in an `AnswerCache`), as the controller does per request. Printed: the median and the
worst round (wall clock), the median CPU time of the process (what the figures mean when
other work shares the cores), the answer's size, its bytes per task, the mode (inline or
per-task), whether a ResolutionRequest could hold it, the size the inline answer would have
had, the largest Task answer, the mean time of a per-task request answered from the
cache (up to 200 of them, each a `resolve()` call), and what the PipelineRun would store
(`core.pertask.stored_estimate`: the spec with each taskRef's params substituted plus one
`childReferences` entry per TaskRun; for an inline answer, the answer and those entries).

`--restricted` gives every task a second step and both steps the settings Pod Security
"restricted" needs, differing between them (one has a read-only root), and the request a
PipelineRun whose pod template sets `runAsNonRoot` and `seccompProfile`: the most work the
injected steps' securityContext takes (core/stepsecurity.py). The column "securityContext"
is the CPU time of deciding it for every task alone (median of the rounds, included in the
time above; "-" for a version without core/stepsecurity.py).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import statistics
import time

from wrapresolver import resolve as resolve_module
from wrapresolver.answercache import AnswerCache
from wrapresolver.core import pertask
from wrapresolver.core.params import RunContext
from wrapresolver.errors import WrapError
from wrapresolver.resolve import ANNOTATION_TASK_RESOLUTION, MAX_OBJECT_BYTES, REQUEST_ROOM, resolve
from wrapresolver.sources import FileSource

CASES = [f"{shape}-{tasks}-{ws}" for shape in ("chain", "random")
         for tasks, ws in ((200, 1), (200, 5), (2000, 1), (1000, 5))]


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


def run_case(case: str, rounds: int, seed: int, restricted: bool = False, config: dict | None = None) -> dict:
    config = dict(config or {})
    shape, tasks, workspaces = case.split("-")
    pipeline = generate(shape, int(tasks), int(workspaces), seed, restricted)
    names = tuple(w["name"] for w in pipeline["spec"]["workspaces"])
    params = [{"name": "pipelineref", "value": "big"}, {"name": "workspaces", "value": ",".join(names)},
              {"name": "target", "value": "file:///srv/ci/$(context.pipelineRun.name)-<<workspace>>"}]
    context = RunContext(name="bench", namespace="ci", uid="0000-bench",
                         pipelinerun=RESTRICTED_RUN if restricted else None)
    source = FileSource([pipeline])
    times, cpu = [], []
    data, mode, answers = b"", "inline", AnswerCache()
    for _ in range(rounds):
        answers = AnswerCache()
        start, start_cpu = time.perf_counter(), time.process_time()
        try:
            resolution = asyncio.run(resolve(params, config, context, source, answers=answers))
        except WrapError as exc:
            if exc.reason != "AnswerTooLarge":
                raise
            data, mode = b"", "refused"
        else:
            data = resolution.data
            mode = resolution.annotations.get(ANNOTATION_TASK_RESOLUTION, "inline")
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    # The inline answer's size, whether or not it fits (resolve refuses what does not).
    inline = asyncio.run(resolve_module._inline_answer(params, config, context, source, "", b""))
    largest, task_time, stored = 0, 0.0, 0
    if mode == "per-task":
        tasks_held = answers.values()[0].tasks
        largest = max(len(d) for d in tasks_held.values())
        answer = json.loads(data)
        stored = pertask.stored_estimate(answer, len(data), list(tasks_held), pertask.request_text(params),
                                         "0" * 64)
        requests = [pertask.task_request(answer, name) for name in list(tasks_held)[:200]]
        start = time.perf_counter()
        for request in requests:
            asyncio.run(resolve(request, config, context, source, answers=answers))
        task_time = (time.perf_counter() - start) / len(requests)
    security = _security_cpu(pipeline, context.pipelinerun, rounds)
    count = int(tasks) + 3
    return {
        "case": case, "median": statistics.median(times), "max": max(times), "cpu": statistics.median(cpu),
        "bytes": len(data), "per_task": len(data) / count, "mode": mode,
        "fits": "yes" if data and _base64(len(data)) <= MAX_OBJECT_BYTES - REQUEST_ROOM else "no",
        "inline": len(inline.data), "largest": largest, "stored": stored or len(data) + count * pertask.CHILD_REFERENCE_BYTES, "task_time": task_time,
        "security": security,
    }


def _base64(n: int) -> int:
    return 4 * ((n + 2) // 3)


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
    parser.add_argument("--config", action="append", default=[], metavar="KEY=VALUE",
                        help="a wrapresolver-config entry, e.g. chains-results=false (repeatable)")
    args = parser.parse_args()
    print(f"seed {args.seed}, {args.rounds} rounds{', restricted' if args.restricted else ''}; "
          f"time = resolve() of the Pipeline request (parse, rewrite, JSON; per-task: the Pipeline answer "
          f"and every Task answer), settings {args.config or 'default (task-resolution auto)'}")
    print("| case | median | max | CPU (median) | answer | bytes/task | mode | fits a ResolutionRequest "
          "| inline answer | largest Task answer | task request (cached) | PipelineRun stores (est.) "
          "| securityContext (CPU) |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for case in args.case or CASES:
        r = run_case(case, args.rounds, args.seed, args.restricted, dict(c.split("=", 1) for c in args.config))
        print(f"| {r['case']} | {r['median'] * 1000:.0f} ms | {r['max'] * 1000:.0f} ms | {r['cpu'] * 1000:.0f} ms | "
              f"{r['bytes'] / 1024:.0f} KiB | {r['per_task']:.0f} | {r['mode']} | {r['fits']} | "
              f"{r['inline'] / 1024:.0f} KiB | "
              f"{format(r['largest'] / 1024, '.1f') + ' KiB' if r['largest'] else '-'} | "
              f"{format(r['task_time'] * 1000, '.2f') + ' ms' if r['task_time'] else '-'} | "
              f"{r['stored'] / 1024:.0f} KiB | "
              f"{'-' if r['security'] is None else format(r['security'] * 1000, '.0f') + ' ms'} |",
              flush=True)


if __name__ == "__main__":
    main()
