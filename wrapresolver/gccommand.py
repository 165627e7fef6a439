"""`wrapresolver gc`: reclaim what no controller saw, by age.

    wrapresolver gc --target T --older-than 7d [--published] [--dry-run]
    wrapresolver gc --target oci://registry.example/ci/ --older-than 7d

A target ending in `/` is a prefix: every repository (OCI, from the registry's catalog) or
stored layout (file://, s3://, gs://) under it is reclaimed in turn (backends.prefix_reclaim).
A single target that does not exist is an error naming it, not `0 deleted`.

lists the target's run states, aborted uploads (`uploads/` staging objects, `.tmp-` blobs)
and partial rsync state directories older than the limit, prints each with its size, and
deletes them (with `--dry-run`, only prints). The published target is never listed. An item
whose age the store cannot tell (a state written before states carried
`org.opencontainers.image.created`) is reported and kept; `--run UID` deletes one run's
states whatever their age. A target holds states of runs still going: the limit must be
longer than the longest run (states are written as tasks end, so a run's states are at
most its duration old while it goes).

Published results are kept unless `--published` is given: then those older than the limit
(or of `--run`) go too, for targets with run-unique tags (`...:$(context.pipelineRun.name)`).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from wrapresolver.errors import NotFoundError, ParamError, WrapError
from wrapresolver.storagecli import add_backend_arguments, run_reporting


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "gc", help="delete old run states and leftovers at a target (never the published target)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--target", required=True,
                        help="the storage target (oci://, s3://, gs://, rsync://, file://), or a prefix ending "
                             "in '/' (oci://registry/ci/): every repository or layout under it")
    parser.add_argument("--older-than", help="age limit, e.g. 7d, 12h, 1d12h")
    parser.add_argument("--run", help="instead of an age: every state of this run (its PipelineRun UID)")
    parser.add_argument("--published", action="store_true",
                        help="also published results (run-unique target tags) of that age or run; never by default")
    parser.add_argument("--dry-run", action="store_true", help="print what would be deleted, delete nothing")
    add_backend_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    return run_reporting("gc", _reclaim, args)


def _reclaim(args: argparse.Namespace) -> int:
    from wrapresolver.backends import prefix_reclaim
    from wrapresolver.backends.registry import REGISTRY
    from wrapresolver.core.retention import parse_duration
    from wrapresolver.core.template import split_scheme
    from wrapresolver.steps.cli import option_flags

    if bool(args.older_than) == bool(args.run):
        raise ParamError("give exactly one of --older-than DURATION or --run UID")
    seconds = parse_duration(args.older_than) if args.older_than else 0.0
    options = option_flags(args.options)
    backend = REGISTRY.for_target(split_scheme(args.target)[0], args.backend or "")
    if not prefix_reclaim.is_prefix(args.target):
        backend.validate_target(args.target)
        options = backend.validate_options(options)
        return _reclaim_one(args, backend, args.target, options, seconds, must_exist=True)
    options = backend.validate_options(options)
    targets = prefix_reclaim.targets_under(backend, args.target, options)
    if not targets:
        raise NotFoundError(f"no repository or stored layout under {args.target!r}: check the prefix")
    print(f"wrap gc: {len(targets)} target(s) under {args.target}")
    worst = 0
    for target in targets:
        try:
            worst = max(worst, _reclaim_one(args, backend, target, options, seconds, must_exist=False))
        except WrapError as exc:  # one unreadable repository does not stop the others
            print(f"wrap gc: error: {target}: {exc}", file=sys.stderr)
            worst = max(worst, 1)
    return worst


def _reclaim_one(args: argparse.Namespace, backend: Any, target: str, options: dict[str, str], seconds: float,
                 must_exist: bool) -> int:
    from wrapresolver.backends import reclaim

    store = backend.open(target, options)
    now = time.time()
    try:
        items = reclaim.stored_items(store)
        if must_exist and not items and reclaim.target_exists(store) is False:
            raise NotFoundError(f"nothing is stored at {target!r}: the repository or directory does not exist; "
                                f"check the target (a prefix ends with '/')")
        if args.published:
            items += reclaim.published_items(store)
        if args.run:
            chosen = reclaim.run_items(items, args.run)
            chosen += [i for i in items if i.kind == reclaim.PUBLISHED and i.run == args.run]
            unknown = list[reclaim.StoredItem]()
        else:
            chosen, unknown = reclaim.older_than(items, seconds, now)
        for item in unknown:
            print(f"kept {item.kind} {item.name}: its age is unknown (delete it with --run)")
        verb = "would delete" if args.dry_run else "deleting"
        for item in chosen:
            print(f"{verb} {_describe(item, now)}")
        if args.dry_run:
            total = sum(i.size or 0 for i in chosen)
            print(f"wrap gc: {len(chosen)} would be deleted ({total} bytes listed) at {target}")
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
    print(f"wrap gc: {result.summary()} at {target}")
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
