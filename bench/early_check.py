#!/usr/bin/env python3
"""What the early check adds to a fetch step: the fetch with and without it, side by side.

    python bench/early_check.py [--rounds 5] [--files 200] [--workdir DIR]

Why: the fetch step checks, before the task's own steps run, that the task can use its
target (docs/steps.md, "What fetch checks before the task runs"). That must stay cheap
next to the fetch itself, which every task waits for.

How: starts a plain-HTTP Debian `docker-registry` on a free loopback port, stores one
producer's state (`--files` small files in nested directories), then times, each round in
a fresh child process (as every step is one: new connections, no cached token), the fetch
of four kinds of task, each without the check (the same store, its `probe` answering "not
checked" without a request: what a backend without a probe does) and with it:

- first: the first task of a run, which stores (no inputs: nothing read before; the check
  reads and writes);
- next: a task after the producer that stores too (its inputs are read anyway; the check
  writes);
- reader: a task with no inputs that does not store (the check reads);
- consumer: a task after the producer that does not store (nothing is checked; the same
  path both ways, shown as the control).

The time is measured inside the child around `open_steps` and `fetch` (interpreter start
and imports excluded): wall-clock, and the child's CPU time, which a machine busy with
other work inflates less. The HTTP requests the child sends are counted too (a connection
attempt that fails counts as one). Rounds alternate the two variants so drift hits both;
the table shows the median of `--rounds` rounds, and the difference of the medians.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KINDS = {
    # kind: (inputs, stores)
    "first": ((), True),
    "next": (("producer",), True),
    "reader": ((), False),
    "consumer": (("producer",), False),
}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_registry(root: Path) -> tuple[subprocess.Popen, str]:
    if shutil.which("docker-registry") is None:
        sys.exit("docker-registry is not installed (Debian package docker-registry)")
    port = free_port()
    (root / "data").mkdir(parents=True)
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\nlog: {level: warn, accesslog: {disabled: true}}\n"
        f"storage:\n  filesystem: {{rootdirectory: {root / 'data'}}}\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: bench\n"
    )
    log = open(root / "registry.log", "wb")
    process = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/v2/", timeout=1).close()
            return process, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    process.kill()
    sys.exit("docker-registry did not start within 20 s")


def spec_json(target: str, run: str, task: str, inputs: tuple[str, ...], stores: bool, path: Path) -> str:
    from wrapresolver.core.stepspec import WorkspaceTransfer

    return WorkspaceTransfer(
        workspace="src", target=target, run=run, task=task, backend="oci", inputs=inputs, stores=stores,
        path=str(path),
    ).to_json()


def seed(target: str, run: str, src: Path, files: int) -> None:
    """The producer's state: `files` small files, 20 to a directory."""
    from wrapresolver.backends.registry import get_backend
    from wrapresolver.core.stepspec import WorkspaceTransfer
    from wrapresolver.steps.open_target import open_steps

    for i in range(files):
        path = src / f"d{i // 20:03d}" / f"f{i:05d}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"file {i}\n" * 40)
    spec = WorkspaceTransfer(workspace="src", target=target, run=run, task="producer", backend="oci", path=str(src))
    with open_steps(get_backend("oci"), target, {}) as steps:
        steps.store(spec, src, src.parent / "producer-state")


def child(spec_text: str, checked: bool, state: str) -> None:
    """One fetch, timed, in this fresh process; prints {"seconds", "cpu", "requests"}."""
    import httpx

    import wrapresolver.backends.oci.store  # noqa: F401 - imports are not what is measured
    import wrapresolver.steps.engine  # noqa: F401
    from wrapresolver.backends.oci import blobget
    from wrapresolver.backends.registry import get_backend
    from wrapresolver.core.stepspec import WorkspaceTransfer
    from wrapresolver.steps.open_target import open_steps

    requests = 0

    def counted(original):
        def call(*args, **kwargs):
            nonlocal requests
            requests += 1
            return original(*args, **kwargs)
        return call

    httpx.Client.send = counted(httpx.Client.send)  # type: ignore[method-assign]
    blobget.get = counted(blobget.get)  # blob reads go through http.client
    spec = WorkspaceTransfer.from_json(spec_text)
    get_backend("oci")
    start, cpu = time.perf_counter(), time.process_time()
    with open_steps(get_backend("oci"), spec.target, {}) as steps:
        if not checked:
            steps.inner.probe = lambda *, read, write: False  # type: ignore[method-assign]
        steps.fetch(spec, Path(spec.path), Path(state))
    print(json.dumps({"seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
                      "requests": requests}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--files", type=int, default=200)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--child", nargs=3, metavar=("SPEC", "CHECKED", "STATE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    if args.child:
        child(args.child[0], args.child[1] == "1", args.child[2])
        return
    if args.rounds < 3:
        parser.error("--rounds must be at least 3 (the table shows medians)")
    work = Path(tempfile.mkdtemp(prefix="wrap-bench-early-", dir=args.workdir))
    process, host = start_registry(work / "registry")
    env = {**os.environ, "DOCKER_CONFIG": str(work / "no-docker-config"), "PYTHONPATH": str(REPO)}
    os.environ["DOCKER_CONFIG"] = env["DOCKER_CONFIG"]
    try:
        run = uuid.uuid4().hex
        target = f"oci://{host}/bench/early-src"
        seed(target, run, work / "seed" / "src", args.files)
        times: dict[tuple[str, bool], list[dict]] = {}
        for round_ in range(args.rounds):
            for kind, (inputs, stores) in KINDS.items():
                order = (False, True) if round_ % 2 == 0 else (True, False)
                for checked in order:
                    where = work / f"r{round_}-{kind}-{int(checked)}"
                    text = spec_json(target, run, f"task-{kind}", inputs, stores, where / "ws")
                    done = subprocess.run(
                        [sys.executable, __file__, "--child", text, "1" if checked else "0", str(where / "state")],
                        env=env, capture_output=True, text=True, check=False,
                    )
                    if done.returncode != 0:
                        sys.exit(f"the fetch failed: {done.stderr[-2000:]}")
                    times.setdefault((kind, checked), []).append(json.loads(done.stdout))
                    shutil.rmtree(where)
        print(f"python bench/early_check.py --rounds {args.rounds} --files {args.files}")
        print(f"{platform.node()}: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"{_first_line(['docker-registry', '--version'])}\n")
        print("| task | checks | requests without / with | wall without | wall with | added | CPU without | CPU with | added |")
        print("|---|---|---|---|---|---|---|---|---|")
        what = {"first": "read, write", "next": "write", "reader": "read", "consumer": "nothing"}
        for kind in KINDS:
            row = [kind, what[kind]]
            before, after = times[(kind, False)], times[(kind, True)]
            row.append(f"{_median(before, 'requests', 1):.0f} / {_median(after, 'requests', 1):.0f}")
            for key in ("seconds", "cpu"):
                without, with_check = _median(before, key), _median(after, key)
                row += [f"{without:.1f} ms", f"{with_check:.1f} ms", f"{with_check - without:+.1f} ms"]
            print("| " + " | ".join(row) + " |")
    finally:
        process.terminate()
        process.wait(10)
        shutil.rmtree(work, ignore_errors=True)


def _median(runs: list[dict], key: str, scale: float = 1000) -> float:
    return statistics.median(run[key] for run in runs) * scale


def _first_line(argv: list[str]) -> str:
    try:
        return subprocess.run(argv, capture_output=True, text=True, check=False).stdout.strip().splitlines()[0]
    except (OSError, IndexError):
        return " ".join(argv[:1])


if __name__ == "__main__":
    main()
