"""Benchmark: what finding a readOnly workspace's directory adds to a fetch.

The fetch of a readOnly workspace first looks, under its writable mount of the volume, for
the directory the task's read-only mount shows (steps/fill.py); then it fetches as any
other. This runs, side by side in each round, a fetch of a stored state of --files files
from a file:// target (the baseline) and that search in the two shapes it meets: the
binding's subPath known (one stat), and a subPath the PipelineRun added (a breadth-first
walk of the fresh volume). Medians over --rounds rounds.

    python bench/readonly_fill.py [--files 2000] [--size 1024] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wrapresolver.backends.registry import get_backend  # noqa: E402
from wrapresolver.steps.fill import shown_directory  # noqa: E402
from wrapresolver.steps.open_target import open_steps  # noqa: E402


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="wrap-bench-fill-"))
    try:
        seed = tmp / "seed"
        for i in range(args.files):
            path = seed / f"d{i % 50:02}" / f"f{i:05}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(args.size))
        target = f"file://{tmp}/store/src"
        with open_steps(get_backend("file"), target, {}) as steps:
            steps.push(seed)
        fetch, known, added = [], [], []
        for n in range(args.rounds):
            dest = tmp / f"fetch-{n}"
            with open_steps(get_backend("file"), target, {}) as steps:
                fetch.append(timed(lambda: steps.pull(dest)))  # noqa: B023
            volume = tmp / f"volume-{n}"
            view = volume / "run-level" / "reports"
            view.mkdir(parents=True)
            known.append(timed(lambda: shown_directory(volume, view, "run-level/reports", "src")))  # noqa: B023
            added.append(timed(lambda: shown_directory(volume, view, "reports", "src")))  # noqa: B023
            shutil.rmtree(dest)
        print(f"{args.files} files of {args.size} bytes, {args.rounds} rounds, medians:")
        print(f"  fetch (baseline)                       {statistics.median(fetch) * 1000:10.2f} ms")
        print(f"  find the directory, subPath known      {statistics.median(known) * 1e6:10.1f} us")
        print(f"  find the directory, run-level subPath  {statistics.median(added) * 1e6:10.1f} us")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
