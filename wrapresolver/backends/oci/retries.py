"""Every request to a registry goes through one retry loop, and every failure is worded here.

Two HTTP clients send requests (httpx for the API, `http.client` for blob reads: blobget.py
says why), each with its own exceptions and answer type. They share one loop: a send
function turns its client's "no answer" into `NoAnswer` (stalled or not), and the loop
decides what to retry, how long to wait and what to say. A failed answer, whichever client
got it, becomes the error a pipeline author reads in `failure`, from its status and the
registry's own error text.

Retries: refused or reset connections, 429 and 5xx, with bounded exponential backoff
(about 8 s in all by default), and only for requests whose body can be sent again. A
registry that accepts connections and then says nothing is not retried: the stall itself
is the answer (network failure, exit 5), after one timeout.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import TypeVar

from wrapresolver.core.limits import IO_TIMEOUT, io_timeout
from wrapresolver.errors import AuthError, NetworkError, NotFoundError, TransferError, WrapError

RETRY_STATUS = {429, 500, 502, 503, 504}

Answer = TypeVar("Answer")


class NoAnswer(Exception):
    """A request that got no answer: `stalled` when the server took it and then said nothing."""

    def __init__(self, cause: BaseException, *, stalled: bool) -> None:
        super().__init__(f"{type(cause).__name__}: {cause or 'connection failed'}")
        self.stalled = stalled


def backoff_sleep(backoff: float, attempt: int) -> None:
    """Exponential, capped at 8 s, with jitter so parallel steps do not retry in step."""
    time.sleep(min(backoff * (2 ** attempt), 8.0) * (0.5 + random.random() / 2))


def retrying(
    send: Callable[[], Answer], status: Callable[[Answer], int], discard: Callable[[Answer], None], *,
    registry: str, doing: str, attempts: int, sleep: Callable[[int], None],
) -> Answer:
    """`send()` until it answers with a status worth keeping, at most `attempts` times.

    A stall raises at once; no answer after the last attempt raises `NetworkError`; a
    retryable status on the last attempt is returned for the caller to word (`failure`).
    `discard` releases an answer that is retried; `doing` names the request in messages.
    """
    for attempt in range(attempts):
        try:
            answer = send()
        except NoAnswer as exc:
            if exc.stalled:
                raise NetworkError(stall_message(registry, doing)) from None
            if attempt + 1 >= attempts:
                raise NetworkError(
                    f"cannot reach registry {registry} ({doing}): {exc} after {attempts} attempt(s)"
                ) from None
            sleep(attempt)
            continue
        if status(answer) in RETRY_STATUS and attempt + 1 < attempts:
            discard(answer)
            sleep(attempt)
            continue
        return answer
    raise AssertionError("unreachable")  # pragma: no cover


def stall_message(registry: str, doing: str) -> str:
    return (f"registry {registry} did not answer {doing} within {io_timeout():g} s "
            f"({IO_TIMEOUT.where()}); it accepts connections but does not respond")


def error_text(body: bytes, reason: str) -> str:
    """The registry's own error text (`errors[0]` of its JSON answer), else the body, short."""
    try:
        errors = json.loads(body).get("errors") or []
        if errors:
            first = errors[0]
            return f"{first.get('code', '')}: {first.get('message', '')}".strip(": ")
    except (ValueError, AttributeError):
        pass
    return (body.decode("utf-8", "replace") or reason or "")[:200].strip()


def failure(status: int, detail: str, *, registry: str, repository: str, what: str, action: str,
            where_credentials: str) -> WrapError:
    """A failed answer as the error a pipeline author reads: `action` (pull, push, read...) of `what`."""
    if status == 401:
        return AuthError(f"registry {registry} refused to let us {action} {what} (401 {detail}). {where_credentials}")
    if status == 403:
        return AuthError(
            f"registry {registry} denied {action} access to {what} (403 {detail}); "
            f"the credentials are valid but lack {action} permission on {repository}"
        )
    if status == 404:
        return NotFoundError(f"{what} does not exist in {registry}/{repository} ({detail})")
    if status in RETRY_STATUS:
        return NetworkError(f"registry {registry} kept failing with {status} for {what} ({detail})")
    return TransferError(f"registry {registry} answered {status} to {action} {what}: {detail}")
