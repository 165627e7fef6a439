"""Where the fetch step writes a readOnly workspace: the directory its read-only mount shows.

Tekton mounts a workspace the Task declares `readOnly` read-only in every container, the
fetch step included. The rewrite gives the fetch step alone a second, writable mount of the
same volume (`WorkspaceTransfer.fill`), whole: the subPath Tekton mounts (the pipeline
task binding's joined to the PipelineRun's, which the resolver may not know) is a directory
inside it. Both mounts are bind mounts of one directory, so that directory is the one whose
device and inode number are those of the read-only mount; it is looked for where the
binding's subPath puts it, then in the volume's root, then breadth-first, because a fresh
emptyDir holds nothing but the subPath's directories at this point.
"""

from __future__ import annotations

import os
from collections import deque
from pathlib import Path

from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.errors import TransferError

SEARCH_LIMIT = 10_000
"""Directories looked at before giving up: a fresh emptyDir has a handful; a volume that
already holds data (a PVC) is not searched through."""


def fetch_destination(spec: WorkspaceTransfer) -> Path:
    """The directory the fetch step writes the workspace into."""
    if not spec.fill or spec.bound == "false":
        return Path(spec.path)
    return shown_directory(Path(spec.fill), Path(spec.path), spec.sub_path, spec.workspace)


def shown_directory(fill: Path, view: Path, sub_path: str, workspace: str) -> Path:
    """The directory under the writable mount `fill` that the read-only mount `view` shows."""
    try:
        wanted = _identity(view)
    except OSError as exc:
        raise TransferError(
            f"workspace {workspace!r}: the task's mount {view} cannot be read ({exc.strerror}); "
            f"the workspace is not mounted into the fetch step"
        ) from None
    candidates = [fill / sub_path.strip("/")] if sub_path.strip("/") else []
    candidates.append(fill)
    for candidate in candidates:
        if _same(candidate, wanted):
            return candidate
    seen = 0
    pending = deque([fill])
    while pending and seen < SEARCH_LIMIT:
        directory = pending.popleft()
        try:
            with os.scandir(directory) as entries:
                for entry in entries:
                    if not entry.is_dir(follow_symlinks=False):
                        continue
                    seen += 1
                    path = Path(entry.path)
                    if _same(path, wanted):
                        return path
                    pending.append(path)
        except OSError:
            continue
    raise TransferError(
        f"workspace {workspace!r}: the writable mount {fill} of the workspace's volume does not "
        f"hold the directory the task's read-only mount {view} shows (looked at {seen} "
        f"directories); the fetch step cannot fill it. Check that the step image is as new as "
        f"the resolver and that the workspace is bound to an emptyDir"
    )


def _identity(path: Path) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_dev, st.st_ino


def _same(path: Path, wanted: tuple[int, int]) -> bool:
    try:
        return _identity(path) == wanted
    except OSError:
        return False
