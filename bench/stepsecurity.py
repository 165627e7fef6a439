#!/usr/bin/env python3
"""What deciding the injected steps' securityContext adds to a rewrite, side by side in one process.

    python bench/stepsecurity.py [--rounds 5] [--seed 1] [--case chain-2000-1 ...]

The Pipelines are bench/rewrite.py's, as generated (steps that state no securityContext)
and with `--restricted`'s settings (two steps per task hardened for Pod Security
"restricted", differing, and a PipelineRun whose pod template sets `runAsNonRoot` and
`seccompProfile`). Each round times `rewrite_pipeline` plus the JSON of the answer twice,
in alternating order: as it is, and with core/stepsecurity.py replaced by "write no
securityContext", which is what the version before it wrote for both kinds of task (it
copied a securityContext only when every step had the same one). One process, so both
sides share the interpreter, the machine's load and the collector's state. Printed: the
median CPU and wall time of each side, the difference of the CPU medians, and the answer's
size on each side.
"""

from __future__ import annotations

import argparse
import statistics
import time

from rewrite import RESTRICTED_RUN, generate  # bench/rewrite.py, beside this file

from wrapresolver.backends.registry import get_backend
from wrapresolver.core import rewrite, stepsecurity
from wrapresolver.core.params import PipelineRef, RunContext, WrapRequest
from wrapresolver.pycollector import paused_gc
from wrapresolver.serialize import to_json

CASES = ["chain-2000-1", "random-2000-5"]
_UNSET = stepsecurity.InjectedSecurity(None, {}, ())


def _unset(*args: object, **kwargs: object) -> stepsecurity.InjectedSecurity:
    return _UNSET


def run_case(case: str, restricted: bool, rounds: int, seed: int) -> dict:
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
    real = (stepsecurity.for_task, stepsecurity.for_publish)
    cpu: dict[str, list[float]] = {"now": [], "unset": []}
    wall: dict[str, list[float]] = {"now": [], "unset": []}
    size: dict[str, int] = {}
    try:
        for i in range(rounds):
            for side in (("now", "unset") if i % 2 == 0 else ("unset", "now")):
                stepsecurity.for_task, stepsecurity.for_publish = real if side == "now" else (_unset, _unset)
                start, start_cpu = time.perf_counter(), time.process_time()
                with paused_gc():  # as `resolve` does
                    data = to_json(rewrite.rewrite_pipeline(pipeline, {}, request, names, backend))
                wall[side].append(time.perf_counter() - start)
                cpu[side].append(time.process_time() - start_cpu)
                size[side] = len(data)
    finally:
        stepsecurity.for_task, stepsecurity.for_publish = real
    return {"cpu": {k: statistics.median(v) for k, v in cpu.items()},
            "wall": {k: statistics.median(v) for k, v in wall.items()}, "size": size}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--case", action="append", choices=CASES, help="one case (repeatable); default: all")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    print(f"seed {args.seed}, {args.rounds} rounds each side, alternating; time = rewrite_pipeline + JSON")
    print("| case | steps | CPU now | CPU unset | added CPU | wall now | wall unset | answer now | answer unset |")
    print("|---|---|---|---|---|---|---|---|---|")
    for case in args.case or CASES:
        for restricted in (False, True):
            r = run_case(case, restricted, args.rounds, args.seed)
            cpu, wall, size = r["cpu"], r["wall"], r["size"]
            print(f"| {case} | {'restricted' if restricted else 'no securityContext'} | "
                  f"{cpu['now'] * 1000:.0f} ms | {cpu['unset'] * 1000:.0f} ms | "
                  f"{(cpu['now'] - cpu['unset']) * 1000:+.0f} ms | {wall['now'] * 1000:.0f} ms | "
                  f"{wall['unset'] * 1000:.0f} ms | {size['now'] / 1024:.0f} KiB | {size['unset'] / 1024:.0f} KiB |",
                  flush=True)


if __name__ == "__main__":
    main()
