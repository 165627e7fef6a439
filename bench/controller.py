"""Benchmark: N ResolutionRequests created at once against the in-process test API server.

Starts one real `wrapresolver controller` process (or --replicas of them), creates the
requests as fast as the API server takes them, and reports creation-to-answer latency
(p50/p99/max) and throughput. Goal: p99 < 1 s for 500 requests, none unanswered.

    python bench/controller.py [--requests 500] [--replicas 1] [--crds DIR] [--mode pipeline|per-task|created]

`--mode per-task`: the requests are the per-task requests of a few PipelineRuns instead
(`--runs`, 5 by default, of one Pipeline of requests/runs parallel wrapped tasks, answered
per-task: `task-resolution: per-task`). The runs' Pipeline requests are answered first,
untimed, and so are the task requests the controller then creates answered itself; then
every task's request is created again at once under other names, as Tekton makes one when
it finds none (a `matrix` task's TaskRuns, or Tekton first), with the params Tekton
substitutes, each owned by its PipelineRun, and answered from the controller's answer cache.

`--mode created`: one PipelineRun of one Pipeline of `--requests` wrapped tasks, answered
per-task; the controller then creates every task's request answered under the name Tekton
gives it (controller.taskrequests). Reported: the Pipeline request's answer time, and the
time from its creation until every task's request existed answered, the moment Tekton's
reconciler can go through all of them in one round.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def _cluster_fixtures():
    """The suite's in-process API server and controller processes (the repository root on sys.path)."""
    sys.path.insert(0, str(REPO))
    from tests.controller import conftest

    return conftest


def _task_requests(cluster, runs: int, requests: int, answered_at: dict, wait_for) -> list[tuple[str, dict, str]]:
    """Answer `runs` Pipeline requests per-task (untimed); the per-task requests Tekton would then create."""
    import base64
    import json

    from wrapresolver.core.pertask import task_request
    from wrapresolver.core.tektonnames import resolution_request_name, task_run_name

    for r in range(runs):
        cluster.request(f"pipeline-{r}", {"pipelineref": "wide"}, run=f"wide-{r}")
    wait_for(lambda: all(f"pipeline-{r}" in answered_at for r in range(runs)), "the Pipeline answers", timeout=120)
    out, created = [], []
    for r in range(runs):
        status = cluster.get(f"pipeline-{r}")["status"]
        answer = json.loads(base64.b64decode(status["data"]))
        for ptask in answer["spec"]["tasks"]:
            params = task_request(answer, ptask["name"])
            created.append(resolution_request_name("wrap", "default", task_run_name(f"wide-{r}", ptask["name"]), params))
            if len(out) < requests:
                out.append((f"task-{r}-{ptask['name']}", {p["name"]: p["value"] for p in params}, f"wide-{r}"))
    # The controller creates the runs' own task requests answered after each Pipeline answer
    # (controller.taskrequests): let that end first, so what is timed is requests alone.
    wait_for(lambda: all(n in answered_at for n in created), "the task requests the controller creates", timeout=300)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--mode", choices=("pipeline", "per-task", "created"), default="pipeline")
    parser.add_argument("--runs", type=int, default=5, help="per-task mode: PipelineRuns the requests belong to")
    parser.add_argument("--crds", type=Path, default=REPO.parent / "shared" / "corpus" / "crds",
                        help="directory of Tekton's CRD files (config/300-crds of tektoncd/pipeline)")
    args = parser.parse_args()

    if args.mode == "created":
        return _created(args)
    fixtures = _cluster_fixtures()
    Cluster, Controller, wait_for = fixtures.Cluster, fixtures.Controller, fixtures.wait_for
    tmp = Path(tempfile.mkdtemp(prefix="wrapresolver-bench-"))
    # Tekton's CRD files when they are there; the test server's stand-ins otherwise.
    cluster = Cluster(args.crds if args.crds.is_dir() else None, tmp / "kubeconfig")
    settings = {"default-target": "oci://registry.example/ci/$(context.pipelineRun.name)-<<workspace>>"}
    if args.mode == "per-task":
        settings["task-resolution"] = "per-task"
    cluster.configure(settings)
    cluster.pipeline("build")
    per_run = -(-args.requests // args.runs)
    cluster.pipeline("wide", tasks=[
        {"name": f"t{i:03d}", "workspaces": [{"name": "src", "workspace": "src"}],
         "taskSpec": {"workspaces": [{"name": "src"}], "steps": [{"name": "s", "image": "busybox", "script": "ls"}]}}
        for i in range(per_run)])
    answered_at: dict[str, float] = {}
    record = cluster.api._record

    def stamping_record(rtype, kind, obj, old):
        if rtype.plural == "resolutionrequests" and (obj.get("status") or {}).get("conditions"):
            answered_at.setdefault(obj["metadata"]["name"], time.monotonic())
        record(rtype, kind, obj, old)

    cluster.api._record = stamping_record  # type: ignore[method-assign]
    controllers = [Controller(cluster, tmp / f"controller-{i}.log").start() for i in range(args.replicas)]
    try:
        to_create = [(f"bench-{i:04d}", {"pipelineref": "build"}, f"run-{i:04d}") for i in range(args.requests)]
        if args.mode == "per-task":
            to_create = _task_requests(cluster, args.runs, args.requests, answered_at, wait_for)
            answered_at.clear()
        created_at: dict[str, float] = {}
        start = time.monotonic()
        for name, params, run in to_create:
            created_at[name] = time.monotonic()
            cluster.request(name, params, run=run)
        created = time.monotonic() - start
        try:
            wait_for(lambda: all(n in answered_at for n in created_at), "every answer", timeout=120)
        except AssertionError:
            pass
        end = max(answered_at.values(), default=start)
        latencies = sorted(answered_at[n] - created_at[n] for n in created_at if n in answered_at)
        failed = sum(1 for n in created_at if n in answered_at
                     and any(c["status"] == "False" for c in cluster.get(n)["status"]["conditions"]))
    finally:
        for ctl in controllers:
            ctl.stop()
        cluster.stop()
    unanswered = args.requests - len(latencies)
    q = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
    print(f"mode: {args.mode}{f' ({args.runs} PipelineRuns)' if args.mode == 'per-task' else ''}  "
          f"requests: {args.requests}  replicas: {args.replicas}  created in {created:.2f}s")
    print(f"answered: {len(latencies)}  failed: {failed}  unanswered: {unanswered}")
    print(f"creation-to-answer p50 {q[49]*1000:.0f} ms  p99 {q[98]*1000:.0f} ms  max {latencies[-1]*1000:.0f} ms")
    print(f"throughput: {len(latencies) / (end - start):.0f} requests/s (first creation to last answer)")
    return 0 if unanswered == 0 and failed == 0 and q[98] < 1.0 else 1


def _created(args: argparse.Namespace) -> int:
    """`--mode created`: how long until every task's request of a large per-task run exists answered."""
    import base64
    import json

    from wrapresolver.core.pertask import task_request
    from wrapresolver.core.tektonnames import resolution_request_name, task_run_name

    fixtures = _cluster_fixtures()
    tmp = Path(tempfile.mkdtemp(prefix="wrapresolver-bench-"))
    cluster = fixtures.Cluster(args.crds if args.crds.is_dir() else None, tmp / "kubeconfig")
    cluster.configure({"default-target": "oci://registry.example/ci/<<workspace>>", "task-resolution": "per-task"})
    cluster.pipeline("chain", tasks=[
        {"name": f"t{i:04d}", **({"runAfter": [f"t{i - 1:04d}"]} if i else {}),
         "workspaces": [{"name": "src", "workspace": "src"}],
         "taskSpec": {"workspaces": [{"name": "src"}], "steps": [{"name": "s", "image": "busybox", "script": "ls"}]}}
        for i in range(args.requests)])
    controller = fixtures.Controller(cluster, tmp / "controller.log").start()
    try:
        start = time.monotonic()
        cluster.request("chain-pipeline", {"pipelineref": "chain"}, run="chain-run")
        status = cluster.answer("chain-pipeline", timeout=300)
        answered = time.monotonic() - start
        answer = json.loads(base64.b64decode(status["data"]))
        names = [resolution_request_name("wrap", "default", task_run_name("chain-run", t["name"]),
                                         task_request(answer, t["name"])) for t in answer["spec"]["tasks"]]

        def all_answered() -> bool:
            found = {o["metadata"]["name"]: o for o in cluster.api.list(fixtures.RR, "resolutionrequests", "default")}
            return all((found.get(n, {}).get("status") or {}).get("data") for n in names)

        fixtures.wait_for(all_answered, "every task's request", timeout=600)
        done = time.monotonic() - start
    finally:
        controller.stop()
        cluster.stop()
    print(f"mode: created  tasks: {args.requests}")
    print(f"Pipeline request answered after {answered:.2f}s; every task's request existed answered after "
          f"{done:.2f}s ({args.requests / max(done - answered, 1e-9):.0f} task requests/s after the answer)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
