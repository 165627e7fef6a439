"""What happens to an exception nobody expected: one line, a known exit code, no traceback.

Every command (`render`, `fetch`, `store`, `publish`, `controller`) ends through `cli.main`,
which catches what the command itself did not. A bug or an input nobody foresaw then shows
as one `error:` line of bounded length and exit code `UNEXPECTED_EXIT` (1, "anything else"
in docs/steps.md), never as a traceback in a task's log. The traceback is printed as well
when debugging is switched on: `wrapresolver --debug ...` or `WRAPRESOLVER_DEBUG=1`.
"""

from __future__ import annotations

import os
import traceback

from wrapresolver.core.limits import cap_line

UNEXPECTED_EXIT = 1
DEBUG_ENV = "WRAPRESOLVER_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def describe(exc: BaseException) -> str:
    """`TypeName: message`, on one line; the message may come from hostile input, so capped."""
    text = str(exc) or "no message"
    return cap_line(f"{type(exc).__name__}: {text}", 500)


def error_line(prefix: str, exc: BaseException) -> str:
    hint = "" if debug_enabled() else f" (run with --debug or {DEBUG_ENV}=1 for the traceback)"
    return cap_line(f"{prefix}error: unexpected {describe(exc)}; this is a bug in wrapresolver{hint}")


def details(exc: BaseException) -> str:
    """The traceback, only when debugging is on; else ''."""
    if not debug_enabled():
        return ""
    return "".join(traceback.format_exception(exc))
