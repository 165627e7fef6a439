"""`wrapresolver inspect`: what a run stored at a target, grouped by run, or one run's data flow.

    wrapresolver inspect --target T [--run UID] [-o table|json]
    wrapresolver inspect --target T [--run UID] --format dot | dot -Tsvg > flow.svg

lists every stored state at the target (run, task, workspace, reference, digest, size,
layers, created, the producers it merged) and the published state; `--format dot` prints
the data flow of one run as a Graphviz digraph. The reading is in
`wrapresolver.steps.taskstates`.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from wrapresolver.errors import ParamError
from wrapresolver.storagecli import add_backend_arguments, run_reporting


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "inspect", help="list the states stored at a target by run, or draw one run's data flow",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target", required=True, help="one workspace's storage target (oci://, s3://, gs://, rsync://, file://)")
    parser.add_argument("--run", default="", help="only this run's states (its PipelineRun UID)")
    parser.add_argument("-o", "--output", choices=("table", "json"), default="table", help="table (default) or json")
    parser.add_argument("--format", choices=("dot",), help="dot: the run's data flow as a Graphviz digraph")
    add_backend_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_reporting("inspect", _inspect, args)


def _inspect(args: argparse.Namespace) -> int:
    from wrapresolver.backends.registry import REGISTRY
    from wrapresolver.core.template import split_scheme, unknown_placeholders
    from wrapresolver.steps import taskstates
    from wrapresolver.steps.cli import option_flags

    placeholders = unknown_placeholders(args.target, known=())
    if placeholders:
        raise ParamError(
            f"--target still holds {placeholders[0]}; a target here is one workspace's: write it with the "
            f"workspace's name in place (`wrapresolver run` prints each one)"
        )
    backend = REGISTRY.for_target(split_scheme(args.target)[0], args.backend or "")
    backend.validate_target(args.target)
    options = backend.validate_options(option_flags(args.options))
    store = backend.open(args.target, options)
    try:
        states = taskstates.list_states(store, args.run)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    if args.format == "dot":
        runs = sorted({s.run for s in states if s.run})
        if not runs:
            raise ParamError(f"no run's states at {args.target}" + (f" for run {args.run}" if args.run else ""))
        if len(runs) > 1:
            raise ParamError(f"{len(runs)} runs have states at {args.target} ({', '.join(runs[:5])}"
                             f"{', ...' if len(runs) > 5 else ''}); choose one with --run UID")
        print(taskstates.dot(states, runs[0], args.target))
        return 0
    if args.output == "json":
        print(json.dumps(taskstates.as_json(args.target, states), indent=2))
        return 0
    if not states:
        print(f"no stored states at {args.target}" + (f" for run {args.run}" if args.run else ""))
        return 0
    print(taskstates.table(states))
    return 0
