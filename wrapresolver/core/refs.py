"""Names of stored states: deterministic, run-unique, valid for every backend.

One reference per (run, workspace, producer task). The workspace is part of the target
(`<<workspace>>` is required in `target` when several workspaces are wrapped), so the
reference name only needs the run and the task. Names follow the strictest rule among the
backends, the OCI tag grammar `[A-Za-z0-9_][A-Za-z0-9._-]{0,127}`, so S3 keys, GCS object
names and directory names can use them unchanged.
"""

from __future__ import annotations

import hashlib
import re

MAX_TAG = 128
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
"""The OCI tag grammar (distribution-spec): every reference name, and an OCI or file:// target's tag."""
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")
RUN_UID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
"""A run id of fixed length (a Kubernetes UID): only such an id may select states by prefix."""
_UID_PRODUCER_REF = re.compile(rf"^wrap-({RUN_UID.pattern[1:-1]})-(.+)$")


def producer_ref(run: str, task: str) -> str:
    """The reference a producer task stores its state under, e.g. `wrap-<uid>-build`.

    Long or unusual names are hashed rather than truncated, so two different (run, task)
    pairs never share a name.
    """
    name = f"wrap-{run}-{task}"
    if TAG.match(name) and len(name) <= MAX_TAG:
        return name
    digest = hashlib.sha256(f"{run}\0{task}".encode()).hexdigest()[:40]
    readable = _UNSAFE.sub("_", task)[: MAX_TAG - len("wrap--") - 40]
    return f"wrap-{digest}-{readable}".rstrip("-")


def state_uri(backend: str, target: str, ref: str) -> str:
    """Where the state under reference `ref` of `target` lives, as one URI for provenance.

    For OCI it is the repository with `ref` as its tag (`oci://reg/ci/src:wrap-<uid>-build`,
    what `crane`/`oras` pull); for every other backend the target with the reference as
    its fragment (`s3://bucket/ci/src#wrap-<uid>-build`).
    """
    if backend != "oci":
        return f"{target}#{ref}"
    scheme = "oci://" if target.startswith("oci://") else ""
    rest = target[len(scheme):].split("@", 1)[0]
    slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > slash:
        rest = rest[:colon]
    return f"{scheme}{rest}:{ref}"


def is_valid_tag(name: str) -> bool:
    return bool(TAG.match(name))


def is_run_uid(run: str) -> bool:
    return bool(RUN_UID.match(run))


def uid_run_and_task(ref: str) -> tuple[str, str] | None:
    """(run, task) of a `producer_ref` whose run is a UID and whose name was not hashed; else None."""
    named = _UID_PRODUCER_REF.match(ref)
    return (named.group(1), named.group(2)) if named else None
