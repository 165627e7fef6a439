"""What the commands that reach a stored target by hand (`gc`, `inspect`) share: how the
backend is named on the command line, and how their errors end the process.

One place, so the two commands take the same flags and end with the same exit codes
(2 for a usage error, the error's own code otherwise).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import Any

from wrapresolver.errors import ParamError, WrapError

USAGE_ERROR = 2


def add_backend_arguments(parser: Any) -> None:
    """`--backend` and the repeatable `--option NAME=VALUE`."""
    parser.add_argument("--backend", help="the backend, when the target's scheme does not say")
    parser.add_argument("--option", dest="options", action="append", default=[], metavar="NAME=VALUE",
                        help="a backend option, e.g. endpoint=https://minio.example (repeatable)")


def run_reporting(command: str, body: Callable[[argparse.Namespace], int], args: argparse.Namespace) -> int:
    """`body(args)`, with a failure the author can act on as one `wrap COMMAND: error:` line."""
    try:
        return body(args)
    except (ParamError, ValueError) as exc:
        print(f"wrap {command}: error: {exc}", file=sys.stderr)
        return USAGE_ERROR
    except WrapError as exc:
        print(f"wrap {command}: error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 1)
