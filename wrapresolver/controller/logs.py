"""Structured logs: one JSON object per line, with the request's namespace/name/owner."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from typing import Any

FIELDS = ("namespace", "request", "owner", "outcome", "reason", "seconds", "workspaces", "backend",
          "configmap", "resourceVersion")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {"time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
                 "level": record.levelname.lower(), "logger": record.name, "message": record.getMessage()}
        for key in FIELDS:
            if key in record.__dict__:
                entry[key] = record.__dict__[key]
        ref = record.__dict__.get("k8s_ref")  # kopf's own object reference on its log records
        if isinstance(ref, dict) and "namespace" not in entry:
            entry.update(namespace=ref.get("namespace"), request=ref.get("name"))
        if record.exc_info:
            entry["error"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def setup(fmt: str = "json", level: str = "INFO") -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else
                         logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    logging.getLogger("wrapresolver").setLevel(level)
    # kopf reports every handler call at info level: thousands of lines under load.
    for noisy in ("httpx", "httpcore", "aiohttp.access", "kopf"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
