#!/usr/bin/env python3
"""What one run's reclaim costs on a registry, per-run repository against per-Pipeline repository.

    python bench/reclaim.py [--rounds 3] [--kept 10 100 400]

The recommended target keeps every run's published result as a tag of one repository per
Pipeline and workspace (`<<pipeline>>-<<workspace>>:$(context.pipelineRun.name)`), where the
previous recommendation made one repository per run. The delete side reads every tag's
manifest before it deletes by digest (so a digest a staying tag shares is never deleted),
so the cost of reclaiming one run grows with the tags that stay. Side by side, in one run
against one local `docker-registry` (Debian's distribution 2.8, delete enabled):

- baseline: a per-run repository: the run's two states and its published tag;
- recommended: a per-Pipeline repository that already holds `kept` published results of
  earlier runs, plus the run's two states and its published tag.

Timed per round (wall clock, a fresh run each round): the controller's states reclaim
(`controller.retention.collect`) and the publish-retention reclaim
(`controller.retention.collect_published`). Printed: the median and worst of the rounds,
and the requests the registry client sent for both (counted in the client).
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fixtures.registry import start_plain  # noqa: E402
from wrapresolver.backends.registry import get_backend  # noqa: E402
from wrapresolver.controller.retention import collect, collect_published  # noqa: E402
from wrapresolver.core import oci_image  # noqa: E402
from wrapresolver.core.refs import producer_ref  # noqa: E402
from wrapresolver.core.values import Layer  # noqa: E402
from wrapresolver.steps.statedocs import put_state  # noqa: E402

TASKS = ("clone", "build")


def write_run(target: str, run: str, tag: str) -> None:
    """Two states and a published result, as the steps write them (one small layer each)."""
    with get_backend("oci").open(target, {}) as store:
        for task in TASKS:
            layer = store.put_blob(io.BytesIO(f"{run} {task}".encode() * 64), oci_image.layer_media_type("gzip"))
            notes = {oci_image.ANNOTATION_RUN: run, oci_image.ANNOTATION_TASK: task,
                     oci_image.ANNOTATION_WORKSPACE: "src",
                     oci_image.ANNOTATION_CREATED: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
            put_state(store, (Layer(layer, layer.digest),), notes, [producer_ref(run, task)])
        put_state(store, (Layer(layer, layer.digest),), {**notes, oci_image.ANNOTATION_PUBLISHED: "true"}, [tag])


SENT = [0]


def count_requests() -> None:
    """Count every request the registry client sends (the test registry keeps no access log)."""
    from wrapresolver.backends.oci.client import RegistryClient

    original = RegistryClient.request

    def counted(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        SENT[0] += 1
        return original(self, *args, **kwargs)

    RegistryClient.request = counted  # type: ignore[method-assign]


def measure(base: str, rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"states": [], "published": [], "requests": []}
    for r in range(rounds):
        run = str(uuid.uuid4())
        target = f"{base}:run-{r}"
        write_run(target, run, f"run-{r}")
        entry = {"workspace": "src", "backend": "oci", "target": target, "options": {}, "tasks": list(TASKS)}
        sent = SENT[0]
        started = time.perf_counter()
        states = collect(run, [entry])
        middle = time.perf_counter()
        published = collect_published(run, [entry])
        ended = time.perf_counter()
        requests = SENT[0] - sent
        assert states.deleted == len(TASKS) and published.deleted == 1, (states, published)
        out["states"].append(middle - started)
        out["published"].append(ended - middle)
        out["requests"].append(requests)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--kept", type=int, nargs="+", default=[10, 100, 400])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="wrap-bench-reclaim-") as tmp:
        registry = start_plain(Path(tmp))
        count_requests()
        try:
            print(f"{'case':<34}{'states median':>15}{'worst':>9}{'published median':>18}{'worst':>9}{'requests':>10}")
            for kept in args.kept:
                baseline = f"oci://{registry.host}/bench/run-{uuid.uuid4().hex[:8]}-src"
                pipeline = f"oci://{registry.host}/bench/pipeline-{uuid.uuid4().hex[:8]}-src"
                for i in range(kept):
                    write_run(f"{pipeline}:old-{i}", str(uuid.uuid4()), f"old-{i}")
                    # the earlier runs' states are gone; only their published results stay
                with get_backend("oci").open(pipeline, {}) as store:
                    store.delete_items(store.stored_items())  # type: ignore[attr-defined]
                for name, base in (("baseline: per-run repository", baseline),
                                   (f"per-Pipeline, {kept} results kept", pipeline)):
                    figures = measure(base, args.rounds)
                    print(f"{name:<34}{statistics.median(figures['states']) * 1000:>13.1f}ms"
                          f"{max(figures['states']) * 1000:>7.1f}ms"
                          f"{statistics.median(figures['published']) * 1000:>16.1f}ms"
                          f"{max(figures['published']) * 1000:>7.1f}ms"
                          f"{statistics.median(figures['requests']):>10.0f}")
        finally:
            registry.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
