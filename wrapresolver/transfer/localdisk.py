"""The step's own disk: OS errors worded for pipeline authors, and where fetch leaves its record.

Shared by every data path (the layered engine and whole-directory backends), so a full
emptyDir reads the same whichever backend moved the workspace.
"""

from __future__ import annotations

import errno
import hashlib
import os
import re
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from wrapresolver.errors import DiskFullError, TransferError, WrapError
from wrapresolver.stepspec import WorkspaceTransfer


@contextmanager
def os_errors(action: str, workspace: str, path: Path) -> Iterator[None]:
    """Disk-full and other OS errors as messages that say which workspace and directory."""
    try:
        yield
    except WrapError:
        raise
    except OSError as exc:
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise DiskFullError(
                f"no space left on device while {action} workspace {workspace!r} "
                f"{'into' if action == 'fetching' else 'from'} {path}: give the task's emptyDir "
                f"(sizeLimit) or the node's ephemeral storage more room, or make the workspace smaller"
            ) from exc
        if exc.errno in (errno.EACCES, errno.EPERM):
            raise TransferError(
                f"{action} workspace {workspace!r} at {path} failed: {exc}. {identity_hint(exc.filename)}"
            ) from exc
        raise TransferError(f"{action} workspace {workspace!r} at {path} failed: {exc}") from exc


def identity_hint(filename: object) -> str:
    """Who we are and who owns what we may not touch: the usual cause is two identities in one task.

    The injected steps run as the task's steps do only when the task says so
    (docs/semantics.md, "Who owns the files").
    """
    who = f"this step runs as uid {os.geteuid()} gid {os.getegid()}"
    try:
        st = os.lstat(filename) if isinstance(filename, (str, bytes, os.PathLike)) else None
    except OSError:
        st = None
    owner = f"; {filename} belongs to uid {st.st_uid} gid {st.st_gid} with mode {st.st_mode & 0o7777:04o}" if st else ""
    return (f"{who}{owner}. Run the task's steps and the injected steps as one user: set "
            f"stepTemplate.securityContext.runAsUser (or runAsUser in the PipelineRun's "
            f"taskRunTemplate.podTemplate.securityContext)")


def record_stem(state_dir: Path, spec: WorkspaceTransfer) -> Path:
    """Where fetch leaves what store needs for this binding (add a suffix per file).

    One task may bind the same workspace twice (two subPaths): key on workspace, sub_path
    and path together.
    """
    key = hashlib.sha256(f"{spec.workspace}\0{spec.sub_path}\0{spec.path}".encode()).hexdigest()[:12]
    return state_dir / (re.sub(r"[^A-Za-z0-9_.-]", "_", spec.workspace)[:60] + "-" + key)
