#!/usr/bin/env python3
"""What the resolution-time checks (core/checks.py, the variables of target and base) add to a
resolution, side by side with the rewrite they run before, on the generated Pipelines of
bench/rewrite.py.

    python bench/checks.py [--rounds 3] [--seed 1] [--case chain-2000-5 ...]

Timed per round, in the same process and order: the checks alone (every pipeline task's
bindings, against the Pipeline and against its embedded taskSpec, the run's bindings, a ConfigMap of the usual keys plus one typo, the target's
`$(...)` variables), then `rewrite_pipeline` plus the answer's JSON as bench/rewrite.py
times them. Printed: the median of each (wall clock) and the checks as a share of both.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from rewrite import CASES, generate  # noqa: E402  (the sibling benchmark's Pipelines)

from wrapresolver.backends.registry import get_backend  # noqa: E402
from wrapresolver.core import checks, rewrite  # noqa: E402
from wrapresolver.core.params import PipelineRef, RunContext, WrapRequest  # noqa: E402
from wrapresolver.core.template import check_variables  # noqa: E402
from wrapresolver.pycollector import paused_gc  # noqa: E402
from wrapresolver.resolve import backend_option_names  # noqa: E402
from wrapresolver.serialize import to_json  # noqa: E402

TARGET = "file:///srv/ci/$(context.pipelineRun.name)-<<workspace>>"
CONFIG = {"default-target": TARGET, "step-image": "registry.example/wrapresolver:1", "log-level": "info",
          "default-compresion": "gzip"}


def run_case(case: str, rounds: int, seed: int) -> tuple[float, float]:
    shape, tasks, workspaces = case.split("-")
    pipeline = generate(shape, int(tasks), int(workspaces), seed)
    names = tuple(w["name"] for w in pipeline["spec"]["workspaces"])
    run = {"spec": {"workspaces": [{"name": n, "emptyDir": {}} for n in names]}}
    context = RunContext(name="bench", namespace="ci", uid="0000-bench", pipelinerun=run)
    backend = get_backend("file")
    request = WrapRequest(pipelineref=PipelineRef(name="big"), workspaces=names, target=TARGET, backend="file",
                          context=context)
    checked, rewritten = [], []
    for _ in range(rounds):
        start = time.perf_counter()
        check_variables("param `target`", TARGET)
        checks.check_pipeline_bindings(pipeline)
        checks.unknown_config_notices(CONFIG, backend_option_names())
        checks.volume_bound_notices(context, names)
        checks.embedded_binding_notices(pipeline)
        checked.append(time.perf_counter() - start)
        start = time.perf_counter()
        with paused_gc():
            to_json(rewrite.rewrite_pipeline(pipeline, {}, request, names, backend))
        rewritten.append(time.perf_counter() - start)
    return statistics.median(checked), statistics.median(rewritten)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--case", action="append", choices=CASES)
    args = parser.parse_args()
    print(f"{'case':<16} {'checks ms':>10} {'rewrite+json ms':>16} {'checks share':>13}")
    for case in args.case or CASES:
        check_s, rewrite_s = run_case(case, args.rounds, args.seed)
        print(f"{case:<16} {check_s * 1000:>10.2f} {rewrite_s * 1000:>16.1f} "
              f"{check_s / (check_s + rewrite_s):>12.1%}")


if __name__ == "__main__":
    main()
