"""`wrapresolver gc`: reclaim what no controller saw, by age.

    wrapresolver gc --target T --older-than 7d [--dry-run]

lists the target's run states, aborted uploads (`uploads/` staging objects, `.tmp-` blobs)
and partial rsync state directories older than the limit, prints each with its size, and
deletes them (with `--dry-run`, only prints). The published target is never listed. An item
whose age the store cannot tell (a state written before states carried
`org.opencontainers.image.created`) is reported and kept; `--run UID` deletes one run's
states whatever their age. A target holds states of runs still going: the limit must be
longer than the longest run (states are written as tasks end, so a run's states are at
most its duration old while it goes).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from wrapresolver.errors import ParamError, WrapError

USAGE_ERROR = 2


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gc", help="delete old run states and leftovers at a target (never the published target)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target", required=True, help="the storage target (oci://, s3://, gs://, rsync://, file://)")
    parser.add_argument("--older-than", help="age limit, e.g. 7d, 12h, 1d12h")
    parser.add_argument("--run", help="instead of an age: every state of this run (its PipelineRun UID)")
    parser.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    parser.add_argument("--backend", help="the backend, when the target's scheme does not say")
    parser.add_argument("--option", dest="options", action="append", default=[], metavar="NAME=VALUE",
                        help="a backend option, e.g. endpoint=https://minio.example (repeatable)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    try:
        return _collect(args)
    except (ParamError, ValueError) as exc:
        print(f"wrap gc: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except WrapError as exc:
        print(f"wrap gc: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)


def _collect(args: argparse.Namespace) -> int:
    from wrapresolver.backends import reclaim
    from wrapresolver.backends.registry import REGISTRY
    from wrapresolver.core.retention import parse_duration
    from wrapresolver.core.template import split_scheme
    from wrapresolver.transfer.cli import option_flags

    if bool(args.older_than) == bool(args.run):
        raise ParamError("give exactly one of --older-than DURATION or --run UID")
    options = option_flags(args.options)
    backend = REGISTRY.for_target(split_scheme(args.target)[0], args.backend or "")
    backend.validate_target(args.target)
    options = backend.validate_options(options)
    store = backend.open(args.target, options)
    now = time.time()
    try:
        items = reclaim.stored_items(store)
        if args.run:
            chosen, unknown = reclaim.run_items(items, args.run), list[reclaim.StoredItem]()
        else:
            chosen, unknown = reclaim.older_than(items, parse_duration(args.older_than), now)
        for item in unknown:
            print(f"kept {item.kind} {item.name}: its age is unknown (delete it with --run)")
        verb = "would delete" if args.dry_run else "deleting"
        for item in chosen:
            print(f"{verb} {_describe(item, now)}")
        if args.dry_run:
            total = sum(i.size or 0 for i in chosen)
            print(f"wrap gc: {len(chosen)} would be deleted ({total} bytes listed) at {args.target}")
            return 0
        result = reclaim.delete_items(store, chosen)
    finally:
        close = getattr(store, "close", None)
        if close is not None:
            close()
    for note in result.notes:
        print(f"note: {note}")
    for kept in result.kept:
        print(f"kept {kept}")
    for failure in result.failures:
        print(f"failed {failure}", file=sys.stderr)
    print(f"wrap gc: {result.summary()} at {args.target}")
    return 1 if result.failures else 0


def _describe(item: Any, now: float) -> str:
    parts = [f"{item.kind} {item.name}"]
    details = []
    if item.run:
        details.append(f"run {item.run}")
    if item.size is not None:
        details.append(f"{item.size} bytes")
    if item.created is not None:
        details.append(f"{_age(now - item.created)} old")
    if details:
        parts.append(f"({', '.join(details)})")
    return " ".join(parts)


def _age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f}{unit}"
    return f"{max(seconds, 0):.0f}s"
