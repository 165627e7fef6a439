#!/usr/bin/env python3
"""`wrapresolver inspect` against its baseline, the listing `gc` does, on many stored states.

    python bench/inspect_listing.py [--states 300] [--rounds 3] [--backends file,oci]

Why: `gc --dry-run` lists a target's states from the store's listing alone (`stored_items`);
`inspect` reads each state's manifest and config besides (digest, layers, inputs), two more
reads per state, one after the other. This measures what that costs, side by side in one
run, on a target holding `--states` states of one small layer each (made with
`engine.store_ref`, as a producer's store would name them): the baseline is
`reclaim.stored_items`; the measured calls are `taskstates.list_states`, which reads the
states one by one (what `inspect` does), and the alternative of `READERS` threads each with
a store of its own; all in this process, the store opened once per call as the commands do. One `docker-registry` on a loopback port
for `oci`; a directory under the system temp dir for `file`. Medians over `--rounds`.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

READERS = 8


def fill(backend: str, target: str, states: int, seed: Path) -> str:
    from wrapresolver.backends.registry import get_backend
    from wrapresolver.core.refs import producer_ref
    from wrapresolver.steps.engine import store_ref

    run = str(uuid.uuid4())
    with get_backend(backend).open(target, {}) as store:
        for i in range(states):
            (seed / "file").write_text(f"state {i}\n")
            store_ref(store, seed, producer_ref(run, f"task-{i}"))
    return run


def readers(store: object, open_store, count: int = READERS) -> list:
    """The alternative measured: the states read by `count` threads, each with a store of its own
    (a plugin's store need not be thread-safe), as `list_states` could do it."""
    from concurrent.futures import ThreadPoolExecutor

    from wrapresolver.backends import reclaim
    from wrapresolver.steps import taskstates

    items = [i for i in reclaim.stored_items(store) if i.kind == reclaim.STATE]

    def describe(index: int) -> list:
        mine = store if index == 0 else open_store()
        try:
            return [taskstates._describe(mine, item) for item in items[index::count]]
        finally:
            if mine is not store:
                mine.close()

    with ThreadPoolExecutor(max_workers=count) as pool:
        return [s for part in pool.map(describe, range(count)) for s in part]


def timed(backend: str, target: str, what: str) -> tuple[float, int]:
    from wrapresolver.backends import reclaim
    from wrapresolver.backends.registry import get_backend
    from wrapresolver.steps import taskstates

    start = time.perf_counter()
    with get_backend(backend).open(target, {}) as store:
        if what == "gc listing":
            found = reclaim.stored_items(store)
        elif what == "inspect, one by one":
            found = taskstates.list_states(store)
        else:
            found = readers(store, lambda: get_backend(backend).open(target, {}))
    return time.perf_counter() - start, len(found)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--states", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="file,oci")
    args = parser.parse_args()
    from tests.fixtures.registry import start_plain

    rows = []
    with tempfile.TemporaryDirectory(prefix="wrap-bench-inspect-") as tmp:
        root = Path(tmp)
        registry = None
        for backend in args.backends.split(","):
            if backend == "oci":
                registry = start_plain(root / "registry")
                target = f"oci://{registry.host}/bench/inspect"
            else:
                target = f"file://{root}/store"
            seed = root / f"seed-{backend}"
            seed.mkdir()
            fill(backend, target, args.states, seed)
            for what in ("gc listing", "inspect, one by one", f"inspect, {READERS} readers"):
                times, count = [], 0
                for _ in range(args.rounds):
                    seconds, count = timed(backend, target, what)
                    times.append(seconds)
                rows.append((backend, what, count, statistics.median(times)))
        if registry is not None:
            registry.stop()
    print(f"{args.states} states, median of {args.rounds} rounds\n")
    print("| backend | call | items | seconds | ms per state |")
    print("|---|---|---|---|---|")
    for backend, what, count, seconds in rows:
        print(f"| {backend} | {what} | {count} | {seconds:.3f} | {seconds * 1000 / max(count, 1):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
