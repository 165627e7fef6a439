"""`wrapresolver controller`: answer ResolutionRequests of type `wrap`.

Kept import-light: kopf and the Kubernetes client are imported only when the command runs,
so `wrapresolver fetch` in a task's step does not pay for them.
"""

from __future__ import annotations

import argparse
import os
import sys

DEFAULT_CONFIG_NAMESPACE = "tekton-pipelines-resolvers"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "controller", help="run the resolver controller (in a cluster or from a kubeconfig)",
        description="Answer every ResolutionRequest labelled resolution.tekton.dev/type=wrap. In a pod it uses "
                    "the service account; elsewhere the kubeconfig ($KUBECONFIG, ~/.kube/config or --kubeconfig).")
    p.add_argument("--kubeconfig", help="kubeconfig file (default: in-cluster service account, else $KUBECONFIG)")
    p.add_argument("--context", help="kubeconfig context (default: the current context)")
    p.add_argument("--namespace", "-n", action="append", default=[], dest="namespaces", metavar="NAMESPACE",
                   help="answer requests only in this namespace (repeatable; default: all namespaces; "
                        "env WRAPRESOLVER_NAMESPACES, comma-separated)")
    p.add_argument("--config-namespace", default=None,
                   help="namespace of the ConfigMap wrapresolver-config (default: $SYSTEM_NAMESPACE, the pod's "
                        f"namespace, the kubeconfig context's namespace, else {DEFAULT_CONFIG_NAMESPACE})")
    p.add_argument("--health-address", default="0.0.0.0:8080",
                   help="host:port of the probes: /healthz (liveness) and /readyz (readiness: the watch of "
                        "ResolutionRequests is up) ('' disables; default %(default)s)")
    p.add_argument("--metrics-port", type=int, default=int(os.environ.get("WRAPRESOLVER_METRICS_PORT", "9090")),
                   help="port of the Prometheus /metrics endpoint (0 disables; default %(default)s)")
    p.add_argument("--log-format", choices=("json", "text"), default="json")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import asyncio

    from wrapresolver.controller import handlers, health, logs, metrics
    from wrapresolver.controller.kube import Credentials

    logs.setup(args.log_format)
    try:
        creds = Credentials.load(args.kubeconfig, args.context)
    except (OSError, ValueError) as exc:
        print(f"wrapresolver controller: {exc}", file=sys.stderr)
        return 2
    namespaces = list(args.namespaces) or [
        n.strip() for n in os.environ.get("WRAPRESOLVER_NAMESPACES", "").split(",") if n.strip()]
    config_namespace = (args.config_namespace or os.environ.get("SYSTEM_NAMESPACE")
                        or creds.namespace or DEFAULT_CONFIG_NAMESPACE)
    if args.health_address and not _host_port(args.health_address):
        print(f"wrapresolver controller: --health-address {args.health_address!r} is not host:port "
              f"(for example 0.0.0.0:8080), or '' to serve no probes", file=sys.stderr)
        return 2
    metrics.serve(args.metrics_port)
    try:
        asyncio.run(handlers.run(creds, config_namespace=config_namespace, namespaces=namespaces,
                                 health_address=args.health_address or None))
    except KeyboardInterrupt:
        pass
    except health.ProbeAddressError as exc:
        print(f"wrapresolver controller: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        refused = _refusal(exc)
        if refused is None:
            raise
        print(f"wrapresolver controller: {refused}", file=sys.stderr)
        return 1
    return 0


def _refusal(exc: BaseException) -> str | None:
    """A 401/403 kopf gave up on (its watch ends the operator then), said as what to fix.

    kopf's API error classes are not public, hence the match by module and name; anything
    else is left to the last-resort handler.
    """
    codes = {"APIForbiddenError": "403 Forbidden", "APIUnauthorizedError": "401 Unauthorized"}
    kind = type(exc)
    if not kind.__module__.startswith("kopf.") or kind.__name__ not in codes:
        return None
    detail = str(exc.args[0]) if exc.args else str(exc)
    return (f"the API server refused the controller after kopf's retries ({codes[kind.__name__]}: {detail[:300]}); "
            f"check its ServiceAccount and the RBAC in config/rbac.yaml, then restart it")


def _host_port(address: str) -> bool:
    host, sep, port = address.rpartition(":")
    return bool(sep) and port.isdigit() and 0 < int(port) < 65536
