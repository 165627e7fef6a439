"""Errors whose text is what a pipeline author reads.

Every failure the resolver reports ends as `Succeeded=False` on the ResolutionRequest with
`reason` and `str(error)` as message, and from there on the PipelineRun. So the message must
name the thing to fix (the param, the workspace, the task) in the author's own words.
"""

from __future__ import annotations


class WrapError(Exception):
    """A failure with a message a pipeline author can act on."""

    reason: str = "ResolutionFailed"

    def __init__(self, message: str, *, reason: str | None = None) -> None:
        super().__init__(message)
        if reason is not None:
            self.reason = reason


class ParamError(WrapError):
    """The resolver params (or the ConfigMap defaults merged into them) are invalid."""

    reason = "InvalidParams"


class SourceError(WrapError):
    """The Pipeline or a Task could not be fetched (not found, forbidden namespace, nested resolver failed)."""

    reason = "SourceFailed"


class RewriteError(WrapError):
    """The Pipeline cannot be rewritten as asked (e.g. storing from a matrix task)."""

    reason = "InvalidPipeline"


class TransferError(WrapError):
    """A fetch/store/publish step failed; `exit_code` tells the category to scripts and logs.

    Exit codes: 2 usage, 3 auth, 4 not found, 5 network, 6 disk full, 7 integrity
    (digest mismatch), 8 unsafe archive entry, 1 anything else.
    """

    reason = "TransferFailed"
    exit_code: int = 1

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(message)
        if exit_code is not None:
            self.exit_code = exit_code


class AuthError(TransferError):
    exit_code = 3


class NotFoundError(TransferError):
    exit_code = 4


class NetworkError(TransferError):
    exit_code = 5


class DiskFullError(TransferError):
    exit_code = 6


class IntegrityError(TransferError):
    exit_code = 7


class UnsafeArchiveError(TransferError):
    exit_code = 8
