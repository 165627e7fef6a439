#!/usr/bin/env python3
"""Extracting one layer: `zstd -d | tar -x`, our restore, and compiled in-process extractors.

    python bench/extractors.py [--tree small-files|bench] [--files 100000] [--size-mb 1024]
                               [--repeat 3] [--workdir DIR] [--keep]

Why: on a `node_modules`-like tree our fetch takes about twice the time of `zstd -d | tar -x`
(docs/performance.md), and the accounting there says the Python per entry is what costs.
The obvious way out is a compiled extractor. This benchmark asks whether one would get a
fetch to tar's time at all, before anyone rebuilds the extraction around it: it times,
side by side on the same layer blob, in one run,
- `zstd -d -c BLOB | tar -xf -` (the baseline: two processes, one per core), and the same
  with the two digests our restore checks computed on the way by `tee` and `sha256sum` (the
  blob's and the plain tar's, the diff_id): what verifying costs by hand;
- our restore (`pull` from a `file://` store: digest and diff_id checked, every extraction
  rule of docs/security.md, the fetch record built from what was written);
- fastar (Rust's `tar` crate, the crate cargo unpacks crates with) and libarchive-c
  (libarchive through ctypes, with its SECURE_NODOTDOT, SECURE_SYMLINKS and
  SECURE_NOABSOLUTEPATHS flags), each unpacking the same blob in one process, when
  installed (`pip install fastar libarchive-c`; libarchive-c needs the system libarchive).
  Neither implements our rules (OCI whiteouts, the sub-path view, the limits, no devices,
  set-id bits dropped, the fetch record) nor checks a digest: they are an upper bound on
  what replacing our extraction with them could give, not a candidate as they are.
Every tool extracts the very same bytes: the layer blob our store wrote. Each run is a child
process started after `sync`, into a new directory on `--workdir`, timed inside the child
(interpreter start and imports excluded); the rounds alternate the tools, and the table
shows medians, the CPU time (user + system, all processes of the job) and the peak RSS.
As root, tar, libarchive (EXTRACT_OWNER) and our restore give entries their recorded
owners; fastar does not chown.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

THIS = Path(__file__).resolve()
REPO = THIS.parent.parent


def _transfer_module() -> ModuleType:
    """bench/transfer.py, for its workspace generators and machine lines (one of each)."""
    spec = importlib.util.spec_from_file_location("bench_transfer", THIS.parent / "transfer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_transfer"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


CHILD = r"""
import json, os, resource, subprocess, sys, time
job = json.loads(sys.argv[1])
tool, blob, dest = job["tool"], job["blob"], job["dest"]

def hwm():
    with open("/proc/self/status") as lines:
        return max([int(l.split()[1]) for l in lines if l.startswith("VmHWM:")] or [0])

if tool == "tar":
    start = time.perf_counter()
    subprocess.run(f"zstd -d -q -c {blob} | tar -xf - -C {dest}", shell=True, check=True)
elif tool == "tar+sha256":
    # What our restore checks, by hand: the blob's digest and the plain tar's (the diff_id).
    start = time.perf_counter()
    subprocess.run(
        f"tee >(sha256sum > {dest}.blob.sha) < {blob} | zstd -d -q -c | tee >(sha256sum > {dest}.tar.sha)"
        f" | tar -xf - -C {dest}; while [ ! -s {dest}.tar.sha ] || [ ! -s {dest}.blob.sha ]; do sleep 0.01; done",
        shell=True, check=True, executable="/bin/bash")
    with open(f"{dest}.blob.sha") as got:
        if got.read().split()[0] != os.path.basename(blob):  # the layout names a blob by its digest
            raise SystemExit("the blob's sha256 is not its name")
elif tool == "wrapresolver":
    from pathlib import Path
    from wrapresolver.backends.registry import get_backend
    from wrapresolver.steps.open_target import open_steps
    store = open_steps(get_backend("file"), job["target"], {})
    start = time.perf_counter()
    store.pull(Path(dest))
elif tool == "fastar":
    import fastar
    start = time.perf_counter()
    with fastar.open(blob, "r:zst") as archive:
        archive.unpack(dest)
elif tool == "libarchive-c":
    import libarchive
    from libarchive import extract
    flags = (extract.EXTRACT_TIME | extract.EXTRACT_PERM | extract.EXTRACT_SECURE_NODOTDOT
             | extract.EXTRACT_SECURE_SYMLINKS | extract.EXTRACT_SECURE_NOABSOLUTEPATHS)
    if os.geteuid() == 0:
        flags |= extract.EXTRACT_OWNER
    os.chdir(dest)
    start = time.perf_counter()
    libarchive.extract_file(blob, flags=flags)
seconds = time.perf_counter() - start
mine, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
print(json.dumps({"seconds": seconds, "user": mine.ru_utime + kids.ru_utime, "sys": mine.ru_stime + kids.ru_stime,
                  "rss_kb": max(hwm(), kids.ru_maxrss)}))
"""

TOOLS = ("tar", "tar+sha256", "wrapresolver", "fastar", "libarchive-c")
MODULES = {"fastar": "fastar", "libarchive-c": "libarchive"}


@dataclass
class Runs:
    tool: str
    seconds: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)
    rss_kb: int = 0


def available(tool: str) -> str:
    """'' when `tool` can run here, else why not."""
    if tool in ("tar", "tar+sha256"):
        needs = ("tar", "zstd", "tee", "sha256sum", "bash")
        return "" if all(shutil.which(cmd) for cmd in needs) else f"one of {', '.join(needs)} is not installed"
    module = MODULES.get(tool)
    if module is None:
        return ""
    try:
        if importlib.util.find_spec(module) is None:
            return f"not installed (pip install {tool})"
        if tool == "libarchive-c":
            __import__(module)  # loads the system libarchive
    except (ImportError, OSError) as exc:
        return f"cannot load: {exc}"
    return ""


def run(tool: str, blob: Path, target: str, dest: Path) -> dict:
    if dest.exists():
        shutil.rmtree(dest)
    for leftover in dest.parent.glob(dest.name + ".*.sha"):
        leftover.unlink()
    dest.mkdir(parents=True)
    os.sync()  # the previous tool's writes are flushed before this one's clock starts
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    job = {"tool": tool, "blob": str(blob), "target": target, "dest": str(dest)}
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(job)], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{tool} failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def layer_blob(store_root: Path) -> Path:
    """The one layer blob of the store (the largest blob: the others are a config and manifests)."""
    blobs = [p for p in (store_root / "blobs").rglob("*") if p.is_file()]
    return max(blobs, key=lambda p: p.stat().st_size)


def table(results: list[Runs], skipped: dict[str, str]) -> str:
    base = statistics.median(results[0].seconds)
    lines = ["| tool | seconds (median) | range | vs zstd -d \\| tar -x | CPU s (user + sys) | peak RSS MB |",
             "|---|---|---|---|---|---|"]
    for r in results:
        median = statistics.median(r.seconds)
        lines.append(f"| {r.tool} | {median:.2f} | {min(r.seconds):.2f}-{max(r.seconds):.2f} | "
                     f"{median / base:.2f}x | {statistics.median(r.cpu):.2f} | {r.rss_kb / 1024:.0f} |")
    for tool, why in skipped.items():
        lines.append(f"| {tool} | skipped: {why} | | | | |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", choices=("small-files", "bench"), default="small-files")
    parser.add_argument("--files", type=int, default=100_000, help="files of --tree small-files (default 100000)")
    parser.add_argument("--size-mb", type=int, default=1024, help="size of --tree bench in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3, help="rounds; the table shows medians (default 3)")
    parser.add_argument("--workdir", type=Path, help="where to generate and extract (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory at the end")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    transfer = _transfer_module()

    work = Path(tempfile.mkdtemp(prefix="wrap-extract-", dir=args.workdir))
    try:
        ws = work / "ws"
        ws.mkdir()
        if args.tree == "small-files":
            stats = transfer.generate_small_files(ws, args.files, args.seed)
        else:
            stats = transfer.generate(ws, args.size_mb, args.seed)
        print(f"machine: {transfer.machine_line()}")
        print(f"work dir file system: {transfer.filesystem_line(work)}")
        print(f"workspace: {stats.line()}")
        target = f"file://{work / 'layout'}"
        pushed = subprocess.run(
            [sys.executable, "-c",
             "import sys; from pathlib import Path; from wrapresolver.backends.registry import get_backend; "
             "from wrapresolver.steps.open_target import open_steps; "
             "s = open_steps(get_backend('file'), sys.argv[1], {}); print(s.push(Path(sys.argv[2]), {}).line())",
             target, str(ws)],
            capture_output=True, text=True, env=dict(os.environ, PYTHONPATH=str(REPO)), check=True)
        print(f"layer: {pushed.stdout.strip()}")
        blob = layer_blob(work / "layout")
        print(f"every tool extracts {blob.stat().st_size} bytes of one zstd layer blob\n")

        skipped = {tool: why for tool in TOOLS if (why := available(tool))}
        if "tar" in skipped:
            raise SystemExit(f"the baseline cannot run: {skipped['tar']}")
        results = [Runs(tool) for tool in TOOLS if tool not in skipped]
        for round_no in range(args.repeat):
            for r in results:
                got = run(r.tool, blob, target, work / "dest")
                r.seconds.append(got["seconds"])
                r.cpu.append(got["user"] + got["sys"])
                r.rss_kb = max(r.rss_kb, got["rss_kb"])
            print(f"round {round_no + 1}: " + ", ".join(f"{r.tool} {r.seconds[-1]:.2f}s" for r in results),
                  flush=True)
        print()
        print(f"medians of {args.repeat} rounds, {args.tree} tree:\n")
        print(table(results, skipped))
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
