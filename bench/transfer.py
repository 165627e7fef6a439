#!/usr/bin/env python3
"""Workspace data path throughput, side by side with tar|zstd and tar|gzip, in one run.

    python bench/transfer.py [--size-mb 1024] [--repeat 1] [--backends file,oci] [--workdir DIR] [--keep]

Why: the injected steps move whole workspaces between tasks, so their speed and memory
decide whether wrapping is cheaper than a PersistentVolumeClaim. The only fair yardstick is
what a person would script by hand, measured on the same data, on the same machine, in the
same run.

How: generates one workspace (by default about 1 GiB: 20,000 small text files in nested
directories, about 40% incompressible data in a few big files and about 40% repetitive
log-like text; everything scales with `--size-mb`), then times
- baselines: `tar -cf - | zstd -T0 -3` and `tar -cf - | gzip -1` (pigz if installed) to a
  file and back, the archive fsynced (`sync FILE`) as the file backend fsyncs its blobs;
- wrapresolver through the public API the injected steps use: `push`/`pull` of the whole
  tree as one layer (`file://`, and `oci://` on a local `docker-registry` when installed),
  and the pipeline case: task A stores the whole tree, task B fetches it, changes 1% of the
  files and stores only those (compared with re-archiving B's whole tree).
Every operation runs in its own child process, after a `sync` so that earlier writes are
not charged to it: the time is measured around the operation inside the child (interpreter
start and imports excluded), the peak RSS is the child's (for shell pipelines, the largest
process of the pipeline). With `--repeat N` the whole series runs N times on the same
workspace and the table shows the median time and the highest RSS. Prints a markdown table
with the ratio of each time to `tar|zstd` doing the same job. The page cache is warm for
every row (the workspace was just written).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent
MiB = 1 << 20

# ---- the generated workspace ----

WORDS = (
    "alpha beta gamma delta build test lint cache module import return value config error "
    "request response handler server client token buffer stream layer digest manifest index "
    "pipeline task workspace volume claim result param step image registry secret"
).split()
LEVELS = ("DEBUG", "INFO", "INFO", "INFO", "WARN", "ERROR")


@dataclass
class WorkspaceStats:
    files: int = 0
    dirs: int = 0
    bytes: int = 0
    random_bytes: int = 0
    log_bytes: int = 0
    small_bytes: int = 0

    def line(self) -> str:
        return (
            f"{self.files} files in {self.dirs} directories, {self.bytes / MiB:.0f} MiB "
            f"({self.small_bytes / MiB:.0f} MiB small text files, {self.random_bytes / MiB:.0f} MiB "
            f"incompressible, {self.log_bytes / MiB:.0f} MiB log-like)"
        )


def _text_file(rng: random.Random, size: int) -> bytes:
    """Source-like text: lines of random words, compresses about 3-4x."""
    out: list[str] = []
    n = 0
    while n < size:
        line = " ".join(rng.choices(WORDS, k=rng.randint(3, 12))) + f" = {rng.randint(0, 99999)}\n"
        out.append(line)
        n += len(line)
    return "".join(out).encode()[:size]


def _log_chunk(rng: random.Random, start: int, lines: int) -> bytes:
    """Log-like text: timestamps, levels, a few message templates, request ids."""
    out = []
    for i in range(start, start + lines):
        out.append(
            f"2024-05-{1 + i // 86_400_000 % 28:02d}T{i // 3_600_000 % 24:02d}:{i // 60_000 % 60:02d}:"
            f"{i // 1000 % 60:02d}.{i % 1000:03d}Z {rng.choice(LEVELS):5} [{rng.choice(WORDS)}] "
            f"req={rng.getrandbits(32):08x} {rng.choice(WORDS)} {rng.choice(WORDS)} took {rng.randint(1, 900)}ms\n"
        )
    return "".join(out).encode()


def _write_log(rng: random.Random, path: Path, size: int) -> None:
    written, line_no = 0, 0
    with open(path, "wb") as out:
        while written < size:
            chunk = _log_chunk(rng, line_no, 20_000)[: size - written]
            out.write(chunk)
            written += len(chunk)
            line_no += 20_000


def _write_random(path: Path, size: int) -> None:
    with open(path, "wb") as out:
        for offset in range(0, size, 8 * MiB):
            out.write(os.urandom(min(8 * MiB, size - offset)))


def _write_small_files(rng: random.Random, root: Path, count: int, total: int, stats: WorkspaceStats) -> None:
    """`count` text files, 16 per directory, under src/pkgNN/modN/subN; sizes skewed small."""
    mean = max(64, total // max(count, 1))
    for i in range(count):
        d = i // 16
        directory = root / "src" / f"pkg{d // 64:02d}" / f"mod{d // 8 % 8}" / f"sub{d % 8}"
        if not directory.exists():
            directory.mkdir(parents=True)
        size = max(16, int(rng.expovariate(1 / mean)))
        (directory / f"file{i:05d}.txt").write_bytes(_text_file(rng, size))
        stats.small_bytes += size
        stats.files += 1


def generate(root: Path, size_mb: int, seed: int) -> WorkspaceStats:
    """20,000 small files per GiB (20%), 40% in 4 random big files, 40% in 8 log files."""
    rng = random.Random(seed)
    total = size_mb * MiB
    stats = WorkspaceStats()
    _write_small_files(rng, root, max(100, 20_000 * size_mb // 1024), total // 5, stats)
    (root / "artifacts").mkdir()
    (root / "logs").mkdir()
    for i in range(4):
        size = total * 4 // 10 // 4
        _write_random(root / "artifacts" / f"blob{i}.bin", size)
        stats.random_bytes += size
        stats.files += 1
    for i in range(8):
        size = total * 4 // 10 // 8
        _write_log(rng, root / "logs" / f"service{i}.log", size)
        stats.log_bytes += size
        stats.files += 1
    stats.bytes = stats.small_bytes + stats.random_bytes + stats.log_bytes
    stats.dirs = sum(1 for p in root.rglob("*") if p.is_dir())
    return stats


def change_one_percent(root: Path, seed: int) -> tuple[int, int]:
    """Rewrite 1% of the regular files (chosen at random) a little: (files, bytes now in them)."""
    rng = random.Random(seed + 1)
    paths = sorted(p for p in root.rglob("*") if p.is_file())
    chosen = rng.sample(paths, max(1, len(paths) // 100))
    nbytes = 0
    for path in chosen:
        with open(path, "ab") as out:
            out.write(b"changed by task B\n")
        nbytes += path.stat().st_size
    return len(chosen), nbytes


# ---- measuring in child processes ----

SHELL_CHILD = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
subprocess.run(["bash", "-o", "pipefail", "-c", sys.argv[1]], check=True)
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_kb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}))
"""

WRAP_CHILD = """
import json, resource, sys, time
from pathlib import Path
from wrapresolver.backends.base import get_backend
from wrapresolver.stepspec import WorkspaceTransfer
from wrapresolver.transfer import engine
job = json.loads(sys.argv[1])
store = get_backend(job["backend"]).open(job["target"], job["options"])
spec = WorkspaceTransfer.from_json(job["spec"]) if job.get("spec") else None
start = time.perf_counter()
if job["op"] == "push":
    report = store.push(Path(job["dir"]))
elif job["op"] == "pull":
    report = store.pull(Path(job["dir"]))
elif job["op"] == "store":
    report = engine.store(store, spec, Path(job["dir"]), Path(job["state"]))
else:
    report = engine.fetch(store, spec, Path(job["dir"]), Path(job["state"]))
seconds = time.perf_counter() - start
store.close()
print(json.dumps({"seconds": seconds, "rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "stored": report.bytes, "line": report.line()}))
"""


@dataclass
class Row:
    operation: str
    tool: str
    seconds: float
    raw_bytes: int
    stored_bytes: int | None
    rss_kb: int
    baseline: str = ""
    note: str = ""
    extra: dict = field(default_factory=dict)


def _child(code: str, arg: str) -> dict:
    os.sync()  # earlier writes are flushed before the clock starts, not charged to this job
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    done = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_shell(command: str) -> dict:
    return _child(SHELL_CHILD, command)


def run_wrap(op: str, backend: str, target: str, directory: Path, options: dict | None = None,
             spec: str = "", state: Path | None = None) -> dict:
    job = {"op": op, "backend": backend, "target": target, "dir": str(directory),
           "options": options or {}, "spec": spec, "state": str(state or "")}
    return _child(WRAP_CHILD, json.dumps(job))


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# ---- the measured jobs ----

def compressors() -> list[tuple[str, str, str]]:
    """(label, compress command, decompress command) of the baselines."""
    out = [("tar|zstd -T0 -3", "zstd -T0 -3 -q -c", "zstd -d -q -c")]
    if shutil.which("pigz"):
        out.append(("tar|pigz -1", "pigz -1 -c", "pigz -d -c"))
    else:
        out.append(("tar|gzip -1", "gzip -1 -c", "gzip -d -c"))
    return out


def baselines(ws: Path, work: Path, raw: int) -> list[Row]:
    rows = []
    for label, compress, decompress in compressors():
        archive = work / ("out.tar." + label.split("|")[1].split()[0])
        got = run_shell(f"tar -cf - -C {ws} . | {compress} > {archive} && sync {archive}")
        rows.append(Row("store whole tree", label, got["seconds"], raw, archive.stat().st_size, got["rss_kb"]))
        dest = fresh_dir(work / "restore")
        got = run_shell(f"{decompress} {archive} | tar -xf - -C {dest}")
        rows.append(Row("restore whole tree", label, got["seconds"], raw, archive.stat().st_size, got["rss_kb"]))
        archive.unlink()
    shutil.rmtree(work / "restore")
    return rows


def push_pull(ws: Path, work: Path, raw: int, backend: str, target: str, options: dict,
              stored_size: Callable[[dict], int]) -> list[Row]:
    tool = f"wrapresolver {backend}"
    got = run_wrap("push", backend, target, ws, options)
    rows = [Row("store whole tree", tool, got["seconds"], raw, stored_size(got), got["rss_kb"], note=got["line"])]
    dest = fresh_dir(work / "pull")
    got = run_wrap("pull", backend, target, dest, options)
    rows.append(Row("restore whole tree", tool, got["seconds"], raw, rows[0].stored_bytes, got["rss_kb"], note=got["line"]))
    shutil.rmtree(dest)
    return rows


def _spec(task: str, target: str, backend: str, inputs: tuple[str, ...]) -> str:
    from wrapresolver.stepspec import ProducerNode, WorkspaceTransfer

    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1)}
    return WorkspaceTransfer(
        workspace="src", target=target, run="bench-run", task=task, backend=backend,
        inputs=inputs, graph=graph, options={"compression": "zstd"},
    ).to_json()


def pipeline_case(ws: Path, work: Path, raw: int, seed: int) -> list[Row]:
    """Task A stores the whole tree; B fetches, changes 1% of the files and stores the change."""
    target = f"file://{work / 'layout-pipeline'}"
    tool = "wrapresolver file"
    got = run_wrap("store", "file", target, ws, {}, _spec("a", target, "file", ()), fresh_dir(work / "state-a"))
    rows = [Row("task A: store (no fetch record)", tool, got["seconds"], raw, got["stored"], got["rss_kb"],
                baseline="store whole tree", note=got["line"])]
    dest = fresh_dir(work / "ws-b")
    spec_b = _spec("b", target, "file", ("a",))
    got = run_wrap("fetch", "file", target, dest, {}, spec_b, fresh_dir(work / "state-b"))
    rows.append(Row("task B: fetch", tool, got["seconds"], raw, None, got["rss_kb"],
                    baseline="restore whole tree", note=got["line"]))
    files, changed = change_one_percent(dest, seed)
    raw_b = dir_bytes(dest)
    got = run_wrap("store", "file", target, dest, {}, spec_b, work / "state-b")
    rows.append(Row(f"task B: store after changing 1% ({files} files)", tool, got["seconds"], raw_b,
                    got["stored"], got["rss_kb"], baseline="re-archive B", note=got["line"],
                    extra={"changed_bytes": changed}))
    archive = work / "b.tar.zst"
    got = run_shell(f"tar -cf - -C {dest} . | zstd -T0 -3 -q -c > {archive} && sync {archive}")
    rows.append(Row("re-archive B", "tar|zstd -T0 -3", got["seconds"], raw_b, archive.stat().st_size, got["rss_kb"]))
    archive.unlink()
    shutil.rmtree(dest)
    return rows


# ---- OCI registry ----

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_registry(root: Path) -> tuple[subprocess.Popen, str]:
    """A plain-HTTP docker-registry on a free loopback port, storing under `root`."""
    port = free_port()
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn, accesslog: {disabled: true}}\n"
        f"storage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n  delete: {{enabled: true}}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: wrapresolver-bench\n"
    )
    log = open(root / "registry.log", "ab")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited: {(root / 'registry.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError("docker-registry did not start within 20 s")


def oci_rows(ws: Path, work: Path, raw: int) -> tuple[list[Row], str]:
    if shutil.which("docker-registry") is None:
        return [], "oci: skipped, docker-registry is not installed"
    process, host = start_registry(fresh_dir(work / "registry"))
    try:
        return push_pull(ws, work, raw, "oci", f"oci://{host}/bench/ws", {}, lambda got: got["stored"]), ""
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(work / "registry", ignore_errors=True)


# ---- output ----

def machine_line() -> str:
    return (f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
            f"{tool_versions()}")


def tool_versions() -> str:
    out = []
    for cmd in (["tar", "--version"], ["zstd", "--version"], ["gzip", "--version"]):
        try:
            first = subprocess.run(cmd, capture_output=True, text=True).stdout.splitlines()[0]
        except (OSError, IndexError):
            continue
        out.append(first.replace("*** ", "").replace(" ***", "").split(", by")[0].strip())
    return "; ".join(out)


def table(rows: list[Row]) -> str:
    reference = {r.operation: r.seconds for r in rows if r.tool.startswith("tar|zstd")}
    lines = ["| operation | tool | seconds | MB/s | stored MB | peak RSS MB | time vs tar\\|zstd |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        base = reference.get(r.baseline or r.operation)
        ratio = f"{r.seconds / base:.2f}x" if base else "-"
        stored = f"{r.stored_bytes / 1e6:.1f}" if r.stored_bytes is not None else "-"
        lines.append(
            f"| {r.operation} | {r.tool.replace('|', chr(92) + '|')} | {r.seconds:.2f} | "
            f"{r.raw_bytes / 1e6 / r.seconds:.0f} | {stored} | {r.rss_kb / 1024:.0f} | {ratio} |"
        )
    return "\n".join(lines)


def suite(ws: Path, work: Path, raw: int, backends: set[str], seed: int) -> tuple[list[Row], list[str]]:
    """Every measured job once, always in the same order."""
    rows = baselines(ws, work, raw)
    notes: list[str] = []
    if "file" in backends:
        layout = work / "layout"
        rows += push_pull(ws, work, raw, "file", f"file://{layout}", {"compression": "zstd"},
                          lambda got: got["stored"])
        shutil.rmtree(layout)
        rows += pipeline_case(ws, work, raw, seed)
    if "oci" in backends:
        got, note = oci_rows(ws, work, raw)
        rows += got
        notes += [note] if note else []
    return rows, notes


def combine(rounds: list[list[Row]]) -> list[Row]:
    """Median time and highest RSS of each job over the rounds; the spread goes in the note."""
    out = []
    for same in zip(*rounds):
        times = sorted(r.seconds for r in same)
        row = same[0]
        row.seconds = statistics.median(times)
        row.rss_kb = max(r.rss_kb for r in same)
        if len(times) > 1:
            row.extra["spread"] = f"{times[0]:.2f}-{times[-1]:.2f} s over {len(times)} rounds"
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="workspace size in MiB (default 1024)")
    parser.add_argument("--backends", default="file,oci", help="comma-separated: file, oci (default both)")
    parser.add_argument("--workdir", type=Path, help="where to generate and store (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory at the end")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows the median time")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    backends = {b.strip() for b in args.backends.split(",") if b.strip()}

    work = Path(tempfile.mkdtemp(prefix="wrapresolver-transfer-", dir=args.workdir)).resolve()
    try:
        ws = work / "ws"
        ws.mkdir()
        start = time.perf_counter()
        stats = generate(ws, args.size_mb, args.seed)
        print(f"machine: {machine_line()}")
        print(f"workspace: {stats.line()}; generated in {time.perf_counter() - start:.0f}s")
        rounds = []
        for _ in range(max(1, args.repeat)):
            rows, notes = suite(ws, work, stats.bytes, backends, args.seed)
            rounds.append(rows)
        rows = combine(rounds)
        print()
        print(table(rows))
        print()
        for r in rows:
            if r.extra.get("spread"):
                print(f"- {r.tool}, {r.operation}: {r.extra['spread']}")
            if r.note:
                print(f"  {r.note}")
            if r.extra.get("changed_bytes"):
                print(f"  (the changed files hold {r.extra['changed_bytes'] / 1e6:.1f} MB)")
        for note in notes:
            print(f"- {note}")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
