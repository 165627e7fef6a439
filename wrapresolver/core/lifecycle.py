"""What the answer tells the controller about a run's storage, through the PipelineRun.

Tekton merges the resolved Pipeline's `metadata.labels` and `annotations` into the
PipelineRun (PipelineRun values win), so the rewritten Pipeline carries:

    label      wrapresolver.dev/storage: managed     the controller's watch selector
    annotation wrapresolver.dev/retention            the run's policy (core.retention), canonical
    annotation wrapresolver.dev/publish-retention    the policy of what the run published, canonical
    annotation wrapresolver.dev/storage              JSON: one entry per wrapped workspace,
                                                     {workspace, backend, target, options, tasks,
                                                     carried}
    annotation wrapresolver.dev/signature            `v1:` + HMAC-SHA256 over the three above and
                                                     the run's uid (with the controller's key)

`target` is the workspace's location as the steps get it, with `$(context.pipelineRun.uid)`
left in when the resolver did not know the uid; `tasks` are the Pipeline's tasks, so the
run's states are chosen by exact reference names (`core.refs.producer_ref(uid, task)`).
`carried` is true when the workspace starts from a base in the same repository as its
target (a carried cache): publish-retention never deletes what such a run published.

The signature is how the controller knows it wrote the annotations: Tekton lets a
PipelineRun's own annotations win over the resolved Pipeline's, so any author can write
`wrapresolver.dev/storage`. The HMAC binds the annotations to the run's uid with a key only
the controller holds (a Secret in its namespace); the controller reclaims nothing for a run
whose signature is missing or wrong, and a valid annotation copied to another run does not
verify there. Pure: a function of the request, the Pipeline and the key.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Collection, Mapping, Sequence
from typing import Any

from wrapresolver.core.retention import KEEP, Retention

LABEL_STORAGE = "wrapresolver.dev/storage"
LABEL_STORAGE_VALUE = "managed"
ANNOTATION_RETENTION = "wrapresolver.dev/retention"
ANNOTATION_STORAGE = "wrapresolver.dev/storage"
ANNOTATION_PUBLISH_RETENTION = "wrapresolver.dev/publish-retention"
ANNOTATION_SIGNATURE = "wrapresolver.dev/signature"
SIGNED = (ANNOTATION_STORAGE, ANNOTATION_RETENTION, ANNOTATION_PUBLISH_RETENTION)
"""What the signature covers, with the run's uid."""
SIGNATURE_VERSION = "v1"


def storage_entries(
    workspaces: Sequence[str], targets: Mapping[str, str], backend: str, options: Mapping[str, str],
    pipeline: Mapping, carried: Collection[str] = (),
) -> list[dict[str, Any]]:
    spec = pipeline.get("spec") or {}
    tasks = [str(t.get("name")) for t in [*(spec.get("tasks") or []), *(spec.get("finally") or [])]
             if isinstance(t, Mapping) and t.get("name")]
    return [
        {"workspace": ws, "backend": backend, "target": targets[ws], "options": dict(options), "tasks": tasks,
         **({"carried": True} if ws in carried else {})}
        for ws in workspaces
    ]


def mark(rewritten: dict, retention: Retention, entries: list[dict[str, Any]],
         publish: Retention | None = None, key: bytes = b"", uid: str = "") -> None:
    """Put the label and annotations on the rewritten Pipeline (in place).

    With a key and the run's uid, also the signature; without them (`render` offline, a
    request no PipelineRun owns) the controller will reclaim nothing for the run.
    """
    meta = rewritten.setdefault("metadata", {})
    labels = meta.get("labels") if isinstance(meta.get("labels"), dict) else {}
    annotations = meta.get("annotations") if isinstance(meta.get("annotations"), dict) else {}
    labels[LABEL_STORAGE] = LABEL_STORAGE_VALUE
    annotations[ANNOTATION_RETENTION] = retention.text()
    annotations[ANNOTATION_STORAGE] = json.dumps(entries, sort_keys=True, separators=(",", ":"))
    if publish is not None and publish.policy != KEEP:
        annotations[ANNOTATION_PUBLISH_RETENTION] = publish.text()
    if key and uid:
        annotations[ANNOTATION_SIGNATURE] = sign(key, uid, annotations)
    meta["labels"], meta["annotations"] = labels, annotations


def sign(key: bytes, uid: str, annotations: Mapping[str, str]) -> str:
    """`v1:<hex>`: HMAC-SHA256 of the uid and the signed annotations, each length-framed by JSON."""
    message = json.dumps([SIGNATURE_VERSION, uid, *(str(annotations.get(name, "")) for name in SIGNED)],
                         separators=(",", ":"))
    return f"{SIGNATURE_VERSION}:" + hmac.new(key, message.encode(), hashlib.sha256).hexdigest()


def signature_problem(key: bytes, uid: str, annotations: Mapping[str, str]) -> str:
    """'' when the annotations carry a valid signature for run `uid`, else why not."""
    given = str(annotations.get(ANNOTATION_SIGNATURE) or "")
    if not key:
        return "the controller has no signing key (it could not read or create its Secret)"
    if not given:
        return f"annotation {ANNOTATION_SIGNATURE} is missing (not written by this controller)"
    if not hmac.compare_digest(given, sign(key, uid, annotations)):
        return (f"annotation {ANNOTATION_SIGNATURE} does not match (changed after resolution, copied from "
                f"another run, or signed with a key this controller no longer has)")
    return ""


def read_storage(annotations: Mapping[str, str]) -> list[dict[str, Any]]:
    """The entries back from a PipelineRun's annotations; [] when absent or unreadable."""
    try:
        entries = json.loads(annotations.get(ANNOTATION_STORAGE) or "[]")
    except ValueError:
        return []
    return [e for e in entries if isinstance(e, dict) and e.get("target")] if isinstance(entries, list) else []
