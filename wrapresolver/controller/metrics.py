"""Prometheus metrics, served on their own port (`--metrics-port`)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram, start_http_server

REQUESTS = Counter(
    "wrapresolver_requests_total",
    "ResolutionRequests answered by this replica, by outcome (succeeded, failed).",
    ["outcome"])
FAILURES = Counter(
    "wrapresolver_failures_total",
    "Failed ResolutionRequests by the reason written on the request's Succeeded condition.",
    ["reason"])
SKIPPED = Counter(
    "wrapresolver_skipped_total",
    "Requests seen already answered (by this replica earlier, another replica, or Tekton's timeout).")
LATENCY = Histogram(
    "wrapresolver_resolution_seconds",
    "Time from picking a request up to its answer written, by outcome.",
    ["outcome"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60))
IN_FLIGHT = Gauge("wrapresolver_requests_in_flight", "Requests being resolved right now.")


def serve(port: int, address: str = "0.0.0.0") -> None:
    """Serve /metrics from a background thread (prometheus_client's own server); 0 disables."""
    if port:
        start_http_server(port, addr=address)

# ---- the retention policy (controller/retention.py) ----
RECLAIMED_STATES = Counter(
    "wrapresolver_reclaimed_states_total",
    "Intermediate states of ended runs deleted by this replica.")
RECLAIMED_BYTES = Counter(
    "wrapresolver_reclaimed_bytes_total",
    "Bytes of those states (on registries: made collectable by the registry's garbage collection).")
RECLAIM_FAILURES = Counter(
    "wrapresolver_reclaim_failures_total",
    "States of ended runs that could not be deleted (refused, unreachable, no delete side).")
