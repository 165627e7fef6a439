"""What the answer tells the controller about a run's storage, through the PipelineRun.

Tekton merges the resolved Pipeline's `metadata.labels` and `annotations` into the
PipelineRun (PipelineRun values win), so the rewritten Pipeline carries:

    label      wrapresolver.dev/storage: managed     the controller's watch selector
    annotation wrapresolver.dev/retention            the run's policy (core.retention), canonical
    annotation wrapresolver.dev/storage              JSON: one entry per wrapped workspace,
                                                     {workspace, backend, target, options, tasks}

`target` is the workspace's location as the steps get it, with `$(context.pipelineRun.uid)`
left in when the resolver did not know the uid; `tasks` are the Pipeline's tasks, so the
run's states are chosen by exact reference names (`core.refs.producer_ref(uid, task)`).
Pure: a function of the request and the Pipeline.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from wrapresolver.core.retention import Retention

LABEL_STORAGE = "wrapresolver.dev/storage"
LABEL_STORAGE_VALUE = "managed"
ANNOTATION_RETENTION = "wrapresolver.dev/retention"
ANNOTATION_STORAGE = "wrapresolver.dev/storage"


def storage_entries(
    workspaces: Sequence[str], targets: Mapping[str, str], backend: str, options: Mapping[str, str],
    pipeline: Mapping,
) -> list[dict[str, Any]]:
    spec = pipeline.get("spec") or {}
    tasks = [str(t.get("name")) for t in [*(spec.get("tasks") or []), *(spec.get("finally") or [])]
             if isinstance(t, Mapping) and t.get("name")]
    return [
        {"workspace": ws, "backend": backend, "target": targets[ws], "options": dict(options), "tasks": tasks}
        for ws in workspaces
    ]


def mark(rewritten: dict, retention: Retention, entries: list[dict[str, Any]]) -> None:
    """Put the label and annotations on the rewritten Pipeline (in place)."""
    meta = rewritten.setdefault("metadata", {})
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    labels[LABEL_STORAGE] = LABEL_STORAGE_VALUE
    annotations[ANNOTATION_RETENTION] = retention.text()
    annotations[ANNOTATION_STORAGE] = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    meta["labels"], meta["annotations"] = labels, annotations


def read_storage(annotations: Mapping[str, str]) -> list[dict[str, Any]]:
    """The entries back from a PipelineRun's annotations; [] when absent or unreadable."""
    try:
        entries = json.loads(annotations.get(ANNOTATION_STORAGE) or "[]")
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict) and e.get("target")] if isinstance(entries, list) else []
