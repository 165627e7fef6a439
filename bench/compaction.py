#!/usr/bin/env python3
"""The fetch of a carried cache after 1, 10 and 100 runs, with and without compaction.

    python bench/compaction.py [--runs 100] [--at 1,10,100] [--max-layers 0,16,4,64]
                               [--files 1000] [--rounds 3] [--backends file,oci] [--workdir DIR]

Why: a carried cache gains one layer per run, and every fetch downloads and applies all of
them; `max-layers` bounds that by squashing the published state, at the price of a store
that uploads the whole cache once every `max-layers` runs. This shows both sides, to
choose the default.

How: one cache per (backend, max-layers): `--files` files (about 4 KiB each on average,
module-cache-like: a few directories deep, 10% incompressible) stored as the first run's
state; then each run does what the injected steps do, in this process: fetch from the
published state (`base`), change the cache (rewrite 2% of the files, add 1%, delete 1%),
store with `publish` and the given `max_layers` (0: never squash). After the runs named in
`--at`, the published cache is fetched `--rounds` times into a fresh directory (the page
cache warm, no `sync` between: on a machine shared with other jobs a sync waits for their
writes too). Shown: the layer count, the bytes the fetch downloads, the medians of its
wall-clock and CPU time (this process and the fetch's writer process), and the median and
slowest store over all runs so far (the slowest is a compacting one where compaction
happened). `file://` needs no server; `oci://` gets a local `docker-registry` started by
`bench/transfer.py`'s helper.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "bench")]

from transfer import Remote, Unavailable, file_remote, oci_remote  # noqa: E402

from wrapresolver.backends.registry import get_backend  # noqa: E402
from wrapresolver.core.stepspec import WorkspaceTransfer  # noqa: E402
from wrapresolver.steps.open_target import open_steps  # noqa: E402

REMOTES = {"file": file_remote, "oci": oci_remote}


def cache_file(rng: random.Random) -> bytes:
    if rng.random() < 0.1:
        return os.urandom(rng.randint(1024, 16384))
    words = [rng.choice(("module", "func", "return", "import", "package", "type", "struct", "err"))
             for _ in range(rng.randint(100, 1500))]
    return " ".join(words).encode()


def generate(root: Path, files: int, rng: random.Random) -> list[str]:
    names = []
    for i in range(files):
        rel = f"mod{i % 40:02d}/v{i % 7}/pkg{i % 13}/file{i}.go"
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(cache_file(rng))
        names.append(rel)
    return names


def change(root: Path, names: list[str], rng: random.Random, run: int) -> None:
    """Rewrite 2% of the files, add 1%, delete 1%: a cache that a build keeps warm."""
    count = max(1, len(names) // 100)
    for rel in rng.sample(names, 2 * count):
        (root / rel).write_bytes(cache_file(rng))
    for rel in rng.sample(names, count):
        (root / rel).unlink()
        names.remove(rel)
    for i in range(count):
        rel = f"mod{rng.randrange(40):02d}/new/r{run}-{i}.go"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(cache_file(rng))
        names.append(rel)


def spec(remote: Remote, target: str, run: str, **kw) -> WorkspaceTransfer:
    return WorkspaceTransfer(workspace="cache", target=target, run=run, task="build", backend=remote.backend,
                             base=target, options=remote.options, **kw)


def cpu_seconds() -> float:
    """CPU time of this process and of its children that ended (the fetch's writer process):
    on a machine other jobs load, a steadier measure of the work than the wall clock."""
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def published(remote: Remote, target: str) -> tuple[int, int]:
    """Layers and their total size in the published state."""
    with get_backend(remote.backend).open(target, remote.options) as blobs:
        data = blobs.get_manifest(blobs.target_ref)
    layers = json.loads(data)["layers"] if data else []
    return len(layers), sum(layer["size"] for layer in layers)


def series(remote: Remote, target: str, work: Path, args, max_layers: int) -> Iterator[dict]:
    rng = random.Random(27)
    steps = open_steps(get_backend(remote.backend), target, remote.options)
    first = work / "first"
    first.mkdir()
    names = generate(first, args.files, rng)
    steps.push(first)
    stores: list[float] = []
    at = set(args.at)
    for number in range(1, args.runs + 1):
        run = f"run{number}"
        ws, state = work / "ws", work / "state"
        for d in (ws, state):
            shutil.rmtree(d, ignore_errors=True)
        steps.fetch(spec(remote, target, run), ws, state)
        change(ws, names, rng, number)
        start = time.perf_counter()
        steps.store(spec(remote, target, run, publish=True, max_layers=max_layers), ws, state)
        stores.append(time.perf_counter() - start)
        if number in at:
            times, cpus = [], []
            for _ in range(args.rounds):
                dest = work / "measure"
                shutil.rmtree(dest, ignore_errors=True)
                start, cpu = time.perf_counter(), cpu_seconds()
                steps.pull(dest)
                times.append(time.perf_counter() - start)
                cpus.append(cpu_seconds() - cpu)
            layers, size = published(remote, target)
            yield {"backend": remote.backend, "max_layers": max_layers, "runs": number, "layers": layers,
                   "fetched_mb": size / 1e6, "fetch_s": statistics.median(times),
                   "fetch_cpu_s": statistics.median(cpus),
                   "store_median_s": statistics.median(stores), "store_max_s": max(stores)}
    steps.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--at", default="1,10,100")
    parser.add_argument("--max-layers", default="0,16,4,64")
    parser.add_argument("--files", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--backends", default="file,oci")
    parser.add_argument("--workdir", default="")
    args = parser.parse_args()
    args.at = [int(x) for x in args.at.split(",")]
    work_root = Path(tempfile.mkdtemp(prefix="wrap-compaction-", dir=args.workdir or None))
    fs = subprocess.run(["stat", "-f", "-c", "%T", str(work_root)], capture_output=True, text=True).stdout.strip()
    print(f"# {args.files} files, {args.runs} runs, median of {args.rounds} fetches; work dir on {fs}", flush=True)
    print("| backend | max-layers | after runs | layers | fetched MB | fetch s | fetch CPU s | store s median / slowest |")
    print("|---|---|---|---|---|---|---|---|", flush=True)
    try:
        for backend in args.backends.split(","):
            for max_layers in (int(x) for x in args.max_layers.split(",")):
                place = work_root / f"{backend}-{max_layers}"
                place.mkdir()
                try:
                    context: AbstractContextManager[Remote] = REMOTES[backend](place / "server")
                    with context as remote:
                        target = remote.targets[1]
                        for row in series(remote, target, place, args, max_layers):
                            print(f"| {row['backend']} | {row['max_layers'] or 'off'} | {row['runs']} | "
                                  f"{row['layers']} | {row['fetched_mb']:.1f} | {row['fetch_s']:.2f} | {row['fetch_cpu_s']:.2f} | "
                                  f"{row['store_median_s']:.2f} / {row['store_max_s']:.2f} |", flush=True)
                except Unavailable as exc:
                    print(f"| {backend} | skipped: {exc} |")
                shutil.rmtree(place, ignore_errors=True)
    finally:
        shutil.rmtree(work_root, ignore_errors=True)


if __name__ == "__main__":
    main()
