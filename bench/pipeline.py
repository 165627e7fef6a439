#!/usr/bin/env python3
"""A whole Pipeline moving one workspace, three ways side by side, in one run.

    python bench/pipeline.py [--size-mb 1024] [--rounds 3] [--percent 3] [--chart docs/pipeline-bench.png]
                             [--approaches wrapresolver,prototype,by-hand] [--workdir DIR] [--keep]

Why: `bench/transfer.py` times one store and one fetch. What a pipeline author waits for is
the Pipeline: every task fetches before it works and stores after, fan-in tasks merge, and
the longest chain of the DAG decides when the run ends. This benchmark runs the same
8-task Pipeline three ways on the same data, on the same machine, in the same run:

    clone -> compile, lint, unit-test (in parallel) -> package -> scan -> deploy; finally: report

- `wrapresolver`: the Pipeline as `wrapresolver render` rewrites it (the injected
  `wrapresolver fetch`/`store` steps, OCI backend, default options: zstd layers, stores of
  the changed files only);
- `prototype`: the full-snapshot-per-task design of the first prototype, as plain scripts:
  every producer archives its whole workspace (`tar | zstd -1 -T0`, the same compressor as
  wrapresolver) and pushes it as one more layer of an image on top of its inputs' layers;
  every consumer pulls and extracts every layer of its inputs' images, in order;
- `by-hand`: the usual hand-written trusted-artifacts scripts: each producer uploads a full
  `tar -czf` of its workspace as a blob with curl (the digest goes to the next task as a
  Tekton result), each consumer downloads and extracts the archive of every input.

The workspace is `bench/transfer.py`'s generator (by default about 1 GiB: 20,000 small text
files, 40% incompressible data in 4 big files, 40% log-like text in 8 files). `clone` copies
it into its empty workspace; every other task appends a line to a few percent (`--percent`)
of the files, chosen at random per task (the same files in every approach and round), and
leaves a marker file; `report` fails unless every earlier task's marker reached it.

How: one `docker-registry` per round on a free loopback port, with a byte-counting TCP proxy
in front of it (zero-copy `os.splice`): what every approach sends and receives is counted
the same way, at the registry's door (HTTP headers included). Each Pipeline runs in
`wrapresolver.testing.executor` (every task in fresh empty directories, independent tasks at
the same time, as processes on this machine). Every step runs under a small timer (this
script's `step` mode): wall seconds and CPU seconds of the step's processes, measured around
the step's command (the timer's own start is not counted). Reported per approach:
- transfer s: the sum of the wall times of all fetch and store steps (parallel ones added up);
- transfer CPU s: their CPU time (user + system of the step's processes);
- uploaded / downloaded MB: bytes through the proxy towards / from the registry;
- critical path s: the longest chain of the DAG (`finally` after every task), each task
  weighted with the sum of its step times (transfer plus task work), and the transfer part
  of that chain;
- run s: the executor's wall time for the whole run (adds process starts and directories).
Medians over `--rounds`; the order of the approaches rotates from round to round. The
registry, the proxy and the executor share the machine's cores with the steps. The parallel
tasks compete for the same cores and disk, as they would not on separate nodes.

Prints a markdown table and writes a chart (`--chart`, PNG) when matplotlib is installed
(`pip install .[bench]`); without it the table is printed and the chart skipped.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import random
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO = Path(__file__).resolve().parent.parent
THIS = Path(__file__).resolve()
MiB = 1 << 20
APPROACHES = ("wrapresolver", "prototype", "by-hand")

# The Pipeline: (task, parents); `report` is the finally task.
TASKS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("clone", ()),
    ("compile", ("clone",)),
    ("lint", ("clone",)),
    ("unit-test", ("clone",)),
    ("package", ("compile", "lint", "unit-test")),
    ("scan", ("package",)),
    ("deploy", ("scan",)),
)
FINAL = "report"
FINAL_INPUTS = ("deploy",)
"""The finally task reads the last state of the chain, as wrapresolver's fallback does."""


def _transfer_module() -> ModuleType:
    """bench/transfer.py, for its workspace generator and registry start (one of each)."""
    spec = importlib.util.spec_from_file_location("bench_transfer", THIS.parent / "transfer.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_transfer"] = module  # dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


# ---- the step timer and the task work (this script, run as a step) ----

def step_main(argv: list[str]) -> int:
    """`step LOG [--task T --name N --kind K] -- COMMAND...`: run COMMAND, log its times.

    Without --task the command is an injected `wrapresolver fetch|store|publish`: the task
    is read from its `--workspace` JSON and the kind is `transfer`.
    """
    log, rest = argv[0], argv[1:]
    split = rest.index("--")
    opts, command = rest[:split], rest[split + 1:]
    info = dict(zip(opts[0::2], opts[1::2], strict=True))
    task, name, kind = info.get("--task", ""), info.get("--name", ""), info.get("--kind", "work")
    if not task and "wrapresolver" in command:
        name = command[command.index("wrapresolver") + 1]
        task = json.loads(command[command.index("--workspace") + 1])["task"]
        kind = "transfer"
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start_wall, start = time.time(), time.perf_counter()
    code = subprocess.run(command).returncode
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    line = json.dumps({"task": task, "step": name, "kind": kind, "start": start_wall, "seconds": seconds,
                       "cpu": cpu, "code": code}) + "\n"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())  # one small O_APPEND write: lines of parallel steps do not mix
    finally:
        os.close(fd)
    return code


def mutate_main(argv: list[str]) -> int:
    """`mutate WS TASK SEED PERCENT [EXPECTED,...]`: a task's work on its workspace.

    Appends a line to PERCENT% of the files (chosen by TASK and SEED, so the same files in
    every approach), writes `tasks/TASK.done`, and fails when an expected marker is missing.
    """
    ws, task, seed, percent = Path(argv[0]), argv[1], int(argv[2]), float(argv[3])
    expected = [e for e in (argv[4] if len(argv) > 4 else "").split(",") if e]
    missing = [e for e in expected if not (ws / "tasks" / f"{e}.done").is_file()]
    if missing:
        print(f"markers missing: {', '.join(missing)}", file=sys.stderr)
        return 1
    paths = sorted(
        os.path.join(d, f) for d, dirs, files in os.walk(ws) for f in files
        if not os.path.relpath(d, ws).startswith("tasks")
    )
    rng = random.Random(f"{seed}:{task}")
    for path in rng.sample(paths, max(1, round(len(paths) * percent / 100))):
        with open(path, "ab") as out:
            out.write(f"changed by {task}\n".encode())
    (ws / "tasks").mkdir(exist_ok=True)
    (ws / "tasks" / f"{task}.done").write_text(task + "\n")
    return 0


# ---- the byte-counting proxy in front of the registry ----

class CountingProxy:
    """TCP relay on a free loopback port, counting bytes each way (os.splice, no copies)."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.uploaded = 0
        self.downloaded = 0
        self._lock = threading.Lock()
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=128)
        self.port = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def counts(self) -> tuple[int, int]:
        with self._lock:
            return self.uploaded, self.downloaded

    def close(self) -> None:
        self._listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            except OSError:
                client.close()
                continue
            pair = {"open": 2, "lock": threading.Lock()}
            threading.Thread(target=self._pump, args=(client, upstream, True, pair), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, False, pair), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, up: bool, pair: dict) -> None:
        read_end, write_end = os.pipe()
        try:
            while True:
                n = os.splice(src.fileno(), write_end, MiB)
                if n == 0:
                    break
                with self._lock:
                    if up:
                        self.uploaded += n
                    else:
                        self.downloaded += n
                while n:
                    n -= os.splice(read_end, dst.fileno(), n)
        except OSError:
            pass
        finally:
            os.close(read_end)
            os.close(write_end)
            try:
                dst.shutdown(socket.SHUT_WR)
            except OSError:
                pass
            with pair["lock"]:
                pair["open"] -= 1
                last = pair["open"] == 0
            if last:
                src.close()
                dst.close()


# ---- the Pipeline, three ways ----

def _timed(log: Path, task: str, name: str, kind: str, command: list[str]) -> list[str]:
    return [sys.executable, str(THIS), "step", str(log), "--task", task, "--name", name, "--kind", kind,
            "--", *command]


def _work_step(task: str, source: Path, seed: int, percent: float, log: Path) -> dict:
    ws = "$(workspaces.src.path)"
    if task == "clone":
        command = ["bash", "-c", f"cp -a {source}/. {ws}/ && mkdir -p {ws}/tasks && echo clone > {ws}/tasks/clone.done"]
    else:
        expected = ",".join(t for t, _ in TASKS) if task == FINAL else ""
        command = [sys.executable, str(THIS), "mutate", ws, task, str(seed), str(percent), expected]
    return {"name": "work", "image": "bench", "command": _timed(log, task, "work", "work", command)}


def base_pipeline(source: Path, seed: int, percent: float, log: Path) -> dict:
    """The Pipeline as its author writes it: the work only, one workspace `src`."""
    def task(name: str, parents: tuple[str, ...]) -> dict:
        out: dict[str, Any] = {
            "name": name,
            "workspaces": [{"name": "src", "workspace": "src"}],
            "taskSpec": {"workspaces": [{"name": "src"}], "steps": [_work_step(name, source, seed, percent, log)]},
        }
        if parents:
            out["runAfter"] = list(parents)
        return out

    return {
        "apiVersion": "tekton.dev/v1", "kind": "Pipeline", "metadata": {"name": "bench"},
        "spec": {
            "workspaces": [{"name": "src"}],
            "tasks": [task(name, parents) for name, parents in TASKS],
            "finally": [task(FINAL, ())],
        },
    }


def wrapresolver_pipeline(base: dict, registry: str, repo: str) -> dict:
    """What the resolver answers for the base Pipeline with an `oci://` target."""
    import yaml

    from wrapresolver.render import render

    run = {
        "apiVersion": "tekton.dev/v1", "kind": "PipelineRun", "metadata": {"name": "bench-run"},
        "spec": {
            "pipelineRef": {"resolver": "wrap", "params": [
                {"name": "pipelineref", "value": "bench"},
                {"name": "target", "value": f"oci://{registry}/{repo}/<<workspace>>"},
            ]},
            "workspaces": [{"name": "src", "emptyDir": {}}],
        },
    }
    return yaml.safe_load(render([base, run], ["bench", "bench"]))


SHELL_COMMON = r"""
set -euo pipefail
reg=http://{registry}; repo={repo}; ws="$(workspaces.src.path)"
upload() {{  # FILE DIGEST: the blob upload API, monolithic (POST, then PUT with the digest)
  if curl -sf -o /dev/null -I "$reg/v2/$repo/blobs/$2"; then return; fi
  loc=$(curl -sf -D - -o /dev/null -X POST "$reg/v2/$repo/blobs/uploads/" | tr -d '\r' | sed -n 's/^[Ll]ocation: //p')
  case "$loc" in http*) ;; *) loc="$reg$loc" ;; esac
  sep='?'; case "$loc" in *\?*) sep='&' ;; esac
  curl -sf -o /dev/null -H 'Content-Type: application/octet-stream' -T "$1" "$loc${{sep}}digest=$2"
}}
digest_of() {{ echo "sha256:$(sha256sum "$1" | cut -d' ' -f1)"; }}
"""

PROTOTYPE_LAYERS = r"""
manifest_type=application/vnd.oci.image.manifest.v1+json
layers='[]'
for input in {inputs}; do  # every layer of every input image, first seen first
  got=$(curl -sf -H "Accept: $manifest_type" "$reg/v2/$repo/manifests/$input" | jq -c '.layers')
  layers=$(jq -cn --argjson a "$layers" --argjson b "$got" '$a + ($b | map(select(. as $l | $a | index([$l]) | not)))')
done
"""

PROTOTYPE_FETCH = r"""
for d in $(echo "$layers" | jq -r '.[].digest'); do
  curl -sf "$reg/v2/$repo/blobs/$d" | zstd -d -q -c | tar -xf - -C "$ws"
done
"""

PROTOTYPE_STORE = r"""
tar -cf - -C "$ws" . | zstd -1 -T0 -q -c > layer
layer=$(digest_of layer); upload layer "$layer"
echo '{{"architecture":"amd64","os":"linux","rootfs":{{"type":"layers","diff_ids":[]}}}}' > config
config=$(digest_of config); upload config "$config"
jq -n --argjson layers "$layers" --arg c "$config" --argjson cs "$(stat -c %s config)" \
  --arg l "$layer" --argjson ls "$(stat -c %s layer)" '{{
    schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
    config: {{mediaType: "application/vnd.oci.image.config.v1+json", digest: $c, size: $cs}},
    layers: ($layers + [{{mediaType: "application/vnd.oci.image.layer.v1.tar+zstd", digest: $l, size: $ls}}])
  }}' > manifest
curl -sf -o /dev/null -X PUT -H "Content-Type: $manifest_type" --data-binary @manifest "$reg/v2/$repo/manifests/{task}"
"""

BY_HAND_FETCH = r"""
for d in {digests}; do curl -sf "$reg/v2/$repo/blobs/$d" | tar -xzf - -C "$ws"; done
"""

BY_HAND_STORE = r"""
tar -czf artifact.tgz -C "$ws" .
digest=$(digest_of artifact.tgz); upload artifact.tgz "$digest"
printf %s "$digest" > "$(results.artifact.path)"
"""


def _inputs(name: str) -> tuple[str, ...]:
    return FINAL_INPUTS if name == FINAL else dict(TASKS)[name]


def _script_step(log: Path, task: str, name: str, script: str) -> dict:
    return {"name": name, "image": "bench", "command": _timed(log, task, name, "transfer", ["bash", "-c", script])}


def prototype_pipeline(base: dict, registry: str, repo: str, log: Path) -> dict:
    """Each producer: its whole tree as one more layer on its inputs' image; consumers pull all layers."""
    out = json.loads(json.dumps(base))
    common = SHELL_COMMON.format(registry=registry, repo=repo)
    for task in out["spec"]["tasks"] + out["spec"]["finally"]:
        name, steps = task["name"], task["taskSpec"]["steps"]
        inputs = " ".join(_inputs(name))
        layers = PROTOTYPE_LAYERS.format(inputs=inputs)
        if inputs:
            steps.insert(0, _script_step(log, name, "fetch", common + layers + PROTOTYPE_FETCH))
        steps.append(_script_step(log, name, "store", common + layers + PROTOTYPE_STORE.format(task=name)))
    return out


def by_hand_pipeline(base: dict, registry: str, repo: str, log: Path) -> dict:
    """Each producer: a full tar.gz blob, its digest a result; consumers extract every input's."""
    out = json.loads(json.dumps(base))
    common = SHELL_COMMON.format(registry=registry, repo=repo)
    for task in out["spec"]["tasks"] + out["spec"]["finally"]:
        name, spec = task["name"], task["taskSpec"]
        inputs = _inputs(name)
        if inputs:
            task["params"] = [{"name": f"in-{i}", "value": f"$(tasks.{i}.results.artifact)"} for i in inputs]
            spec["params"] = [{"name": f"in-{i}", "type": "string"} for i in inputs]
            digests = " ".join(f"$(params.in-{i})" for i in inputs)
            spec["steps"].insert(0, _script_step(log, name, "fetch", common + BY_HAND_FETCH.format(digests=digests)))
        spec["results"] = [{"name": "artifact", "type": "string"}]
        spec["steps"].append(_script_step(log, name, "store", common + BY_HAND_STORE))
    return out


# ---- one run and its figures ----

@dataclass
class Figures:
    approach: str
    transfer_s: float
    transfer_cpu_s: float
    uploaded: int
    downloaded: int
    critical_s: float
    critical_transfer_s: float
    run_s: float
    extra: dict = field(default_factory=dict)


def critical_path(spec: Mapping, durations: Mapping[str, tuple[float, float]]) -> tuple[float, float, list[str]]:
    """(seconds, transfer seconds, tasks) of the longest chain; `finally` tasks after all others."""
    from wrapresolver.core.plan import build_dag

    dag = build_dag(spec)
    best: dict[str, tuple[float, float, list[str]]] = {}
    for name in dag.order:
        total, transfer = durations.get(name, (0.0, 0.0))
        before = max((best[p] for p in dag.parents[name]), key=lambda b: b[0], default=(0.0, 0.0, []))
        best[name] = (before[0] + total, before[1] + transfer, [*before[2], name])
    last = max(best.values(), key=lambda b: b[0], default=(0.0, 0.0, []))
    finals = [str(t["name"]) for t in spec.get("finally") or []]
    longest = max(((last[0] + durations.get(f, (0.0, 0.0))[0], last[1] + durations.get(f, (0.0, 0.0))[1],
                    [*last[2], f]) for f in finals), key=lambda b: b[0], default=last)
    return longest


def run_once(approach: str, pipeline: dict, proxy: CountingProxy, log: Path, work: Path, env: dict) -> Figures:
    from wrapresolver.testing.executor import SUCCEEDED, LocalExecutor

    if log.exists():
        log.unlink()
    up0, down0 = proxy.counts()
    executor = LocalExecutor(
        pipeline, name="bench-run", workdir=work, env=env, step_timeout=3600,
        python=[sys.executable, str(THIS), "step", str(log), "--", sys.executable],
    )
    start = time.perf_counter()
    result = executor.run()
    run_s = time.perf_counter() - start
    if result.status != SUCCEEDED or any(t.status != SUCCEEDED for t in result.tasks.values()):
        raise RuntimeError(f"{approach}: the Pipeline did not succeed\n{result.log()[-6000:]}")
    time.sleep(0.2)  # the relay threads count the last bytes of closed connections
    up1, down1 = proxy.counts()
    steps = [json.loads(line) for line in log.read_text().splitlines()]
    durations: dict[str, tuple[float, float]] = {}
    for s in steps:
        total, transfer = durations.get(s["task"], (0.0, 0.0))
        durations[s["task"]] = (total + s["seconds"], transfer + (s["seconds"] if s["kind"] == "transfer" else 0.0))
    critical, critical_transfer, chain = critical_path(pipeline["spec"], durations)
    transfers = [s for s in steps if s["kind"] == "transfer"]
    return Figures(
        approach, sum(s["seconds"] for s in transfers), sum(s["cpu"] for s in transfers),
        up1 - up0, down1 - down0, critical, critical_transfer, run_s,
        {"chain": chain, "steps": len(transfers)},
    )


def build(approach: str, base: dict, registry: str, repo: str, log: Path) -> dict:
    """The base Pipeline with one approach's transfer steps, storing in `registry/repo`."""
    if approach == "wrapresolver":
        return wrapresolver_pipeline(base, registry, repo)
    if approach == "prototype":
        return prototype_pipeline(base, registry, repo, log)
    return by_hand_pipeline(base, registry, repo, log)


def one_round(index: int, approaches: list[str], source: Path, work: Path, args: argparse.Namespace,
              transfer: ModuleType) -> list[Figures]:
    root = work / f"round-{index}"
    root.mkdir()
    out = []
    with transfer.oci_remote(root / "registry") as remote:
        upstream = int(remote.targets[0].split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[1])
        proxy = CountingProxy(upstream)
        registry = f"127.0.0.1:{proxy.port}"
        env = {"DOCKER_CONFIG": str(root / "no-docker-config")}
        try:
            order = approaches[index % len(approaches):] + approaches[:index % len(approaches)]
            for approach in order:
                log = root / f"{approach}.steps.jsonl"
                pipeline = build(approach, base_pipeline(source, args.seed, args.percent, log), registry,
                                 f"{approach}-{index}", log)
                os.sync()  # earlier writes are not charged to this approach
                figures = run_once(approach, pipeline, proxy, log, root / f"run-{approach}", env)
                print(f"  round {index + 1}, {approach}: transfer {figures.transfer_s:.1f} s, critical path "
                      f"{figures.critical_s:.1f} s, up {figures.uploaded / 1e6:.0f} MB, down "
                      f"{figures.downloaded / 1e6:.0f} MB, run {figures.run_s:.1f} s; load {_load()}", flush=True)
                out.append(figures)
                if not args.keep:  # a task's workspace each: eight copies of the tree
                    shutil.rmtree(root / f"run-{approach}", ignore_errors=True)
        finally:
            proxy.close()
    if not args.keep:
        shutil.rmtree(root, ignore_errors=True)
    return out


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def combine(rounds: list[list[Figures]], approaches: list[str]) -> list[Figures]:
    """The median of every figure over the rounds, per approach."""
    out = []
    for approach in approaches:
        got = [f for r in rounds for f in r if f.approach == approach]

        def med(attr: str, got: list[Figures] = got) -> Any:
            return statistics.median(getattr(f, attr) for f in got)

        spread = {a: (min(getattr(f, a) for f in got), max(getattr(f, a) for f in got))
                  for a in ("transfer_s", "critical_s")}
        out.append(Figures(approach, med("transfer_s"), med("transfer_cpu_s"), int(med("uploaded")),
                           int(med("downloaded")), med("critical_s"), med("critical_transfer_s"), med("run_s"),
                           {"spread": spread, "chain": got[0].extra["chain"], "steps": got[0].extra["steps"]}))
    return out


def table(figures: list[Figures]) -> str:
    lines = [
        "| approach | transfer s (sum) | transfer CPU s | uploaded MB | downloaded MB | critical path s "
        "| of it transfer s | run s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for f in figures:
        lines.append(
            f"| {f.approach} | {f.transfer_s:.1f} | {f.transfer_cpu_s:.1f} | {f.uploaded / 1e6:.0f} | "
            f"{f.downloaded / 1e6:.0f} | {f.critical_s:.1f} | {f.critical_transfer_s:.1f} | {f.run_s:.1f} |"
        )
    return "\n".join(lines)


def chart(figures: list[Figures], path: Path, title: str) -> str:
    """Seconds and bytes per approach as one PNG; a note instead when matplotlib is missing."""
    try:
        import matplotlib
    except ImportError:
        return "skipped the chart: matplotlib is not installed (pip install .[bench])"
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [f.approach for f in figures]
    x = range(len(names))
    width = 0.38
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    left.bar([i - width / 2 for i in x], [f.transfer_s for f in figures], width, label="transfer steps (sum)")
    left.bar([i + width / 2 for i in x], [f.critical_s for f in figures], width, label="critical path")
    left.set_ylabel("seconds (median)")
    left.set_title("time")
    right.bar([i - width / 2 for i in x], [f.uploaded / 1e9 for f in figures], width, label="uploaded")
    right.bar([i + width / 2 for i in x], [f.downloaded / 1e9 for f in figures], width, label="downloaded")
    right.set_ylabel("GB through the registry (median)")
    right.set_title("bytes")
    for axis in (left, right):
        axis.set_xticks(list(x), names)
        axis.legend()
        axis.grid(axis="y", alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return f"chart written to {path.relative_to(REPO) if path.is_relative_to(REPO) else path}"


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("step", "mutate"):
        sys.exit((step_main if sys.argv[1] == "step" else mutate_main)(sys.argv[2:]))
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--size-mb", type=int, default=1024, help="workspace size in MiB (default 1024)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds; the table shows medians (default 3)")
    parser.add_argument("--percent", type=float, default=3.0, help="files each task changes, in %% (default 3)")
    parser.add_argument("--approaches", default=",".join(APPROACHES), help=f"any of {', '.join(APPROACHES)}")
    parser.add_argument("--chart", type=Path, default=REPO / "docs" / "pipeline-bench.png",
                        help="the PNG to write (default docs/pipeline-bench.png)")
    parser.add_argument("--workdir", type=Path, help="where to generate and run (default: a new temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (the runs, the step logs, the registry data)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    approaches = [a for a in APPROACHES if a in {x.strip() for x in args.approaches.split(",")}]
    if not approaches:
        parser.error(f"no known approach in {args.approaches!r}; choose from {', '.join(APPROACHES)}")
    missing = [tool for tool in ("docker-registry", "curl", "jq", "zstd", "gzip", "tar") if shutil.which(tool) is None]
    if missing:
        sys.exit(f"needs {', '.join(missing)} on PATH")

    transfer = _transfer_module()
    began = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="wrapresolver-pipeline-", dir=args.workdir)).resolve()
    try:
        source = work / "source"
        source.mkdir()
        start = time.perf_counter()
        stats = transfer.generate(source, args.size_mb, args.seed)
        print(f"machine: {transfer.machine_line()}")
        print(f"work dir file system: {transfer.filesystem_line(work)}")
        print(transfer.environment_line())
        print(f"registry: {transfer._first_line(['docker-registry', '--version'])}; "
              f"{transfer._first_line(['curl', '--version'])}")
        print(f"workspace: {stats.line()}; generated in {time.perf_counter() - start:.0f}s; "
              f"each task changes {args.percent:g}% of the files; load {_load()}", flush=True)
        rounds = [one_round(i, approaches, source, work, args, transfer) for i in range(max(1, args.rounds))]
        figures = combine(rounds, approaches)
        print()
        print(table(figures))
        print()
        for f in figures:
            spread = f.extra["spread"]
            print(f"- {f.approach}: {f.extra['steps']} transfer steps; critical path {' -> '.join(f.extra['chain'])}"
                  + (f"; over {len(rounds)} rounds transfer {spread['transfer_s'][0]:.1f}-{spread['transfer_s'][1]:.1f}"
                     f" s, critical path {spread['critical_s'][0]:.1f}-{spread['critical_s'][1]:.1f} s"
                     if len(rounds) > 1 else ""))
        title = (f"bench/pipeline.py: 8-task Pipeline, {stats.bytes / MiB:.0f} MiB workspace, "
                 f"{args.percent:g}% of the files changed per task, median of {len(rounds)} round(s)")
        print(chart(figures, args.chart.resolve(), title))
        print(f"load average at the end: {_load()}; total run: {time.perf_counter() - began:.0f} s")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
