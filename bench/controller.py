"""Benchmark: N ResolutionRequests created at once against the in-process test API server.

Starts one real `wrapresolver controller` process (or --replicas of them), creates the
requests as fast as the API server takes them, and reports creation-to-answer latency
(p50/p99/max) and throughput. Goal: p99 < 1 s for 500 requests, none unanswered.

    python bench/controller.py [--requests 500] [--replicas 1] [--crds DIR]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--crds", type=Path, default=REPO.parent / "shared" / "corpus" / "crds",
                        help="directory of Tekton's CRD files (config/300-crds of tektoncd/pipeline)")
    args = parser.parse_args()

    fixtures = _cluster_fixtures()
    Cluster, Controller, wait_for = fixtures.Cluster, fixtures.Controller, fixtures.wait_for
    tmp = Path(tempfile.mkdtemp(prefix="wrapresolver-bench-"))
    # Tekton's CRD files when they are there; the test server's stand-ins otherwise.
    cluster = Cluster(args.crds if args.crds.is_dir() else None, tmp / "kubeconfig")
    cluster.configure({"default-target": "oci://registry.example/ci/$(context.pipelineRun.name)-<<workspace>>"})
    cluster.pipeline("build")
    answered_at: dict[str, float] = {}
    record = cluster.api._record

    def stamping_record(rtype, kind, obj, old):
        if rtype.plural == "resolutionrequests" and (obj.get("status") or {}).get("conditions"):
            answered_at.setdefault(obj["metadata"]["name"], time.monotonic())
        record(rtype, kind, obj, old)

    cluster.api._record = stamping_record  # type: ignore[method-assign]
    controllers = [Controller(cluster, tmp / f"controller-{i}.log").start() for i in range(args.replicas)]
    try:
        created_at: dict[str, float] = {}
        start = time.monotonic()
        for i in range(args.requests):
            name = f"bench-{i:04d}"
            created_at[name] = time.monotonic()
            cluster.request(name, {"pipelineref": "build"}, run=f"run-{i:04d}")
        created = time.monotonic() - start
        try:
            wait_for(lambda: len(answered_at) >= args.requests, "every answer", timeout=120)
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
    print(f"requests: {args.requests}  replicas: {args.replicas}  created in {created:.2f}s")
    print(f"answered: {len(latencies)}  failed: {failed}  unanswered: {unanswered}")
    print(f"creation-to-answer p50 {q[49]*1000:.0f} ms  p99 {q[98]*1000:.0f} ms  max {latencies[-1]*1000:.0f} ms")
    print(f"throughput: {len(latencies) / (end - start):.0f} requests/s (first creation to last answer)")
    return 0 if unanswered == 0 and failed == 0 and q[98] < 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
