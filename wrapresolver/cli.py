"""`wrapresolver` command line: a thin dispatcher.

Each command module exposes `register(subparsers)`, adding its sub-commands with
`set_defaults(func=...)`; `func(args) -> int` is the exit code. Command modules keep their
top-level imports light (no kopf, boto3, ...), so `wrapresolver fetch` in a step image
starts fast and `wrapresolver render` needs no cluster libraries.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys

COMMAND_MODULES = (
    "wrapresolver.render",             # render
    "wrapresolver.steps.cli",          # fetch, store, publish
    "wrapresolver.controller.main",    # controller
    "wrapresolver.gccommand",          # gc
    "wrapresolver.convert",            # convert
    "wrapresolver.localrun",           # run
    "wrapresolver.inspection",         # inspect
)


def build_parser() -> argparse.ArgumentParser:
    from wrapresolver import __version__

    parser = argparse.ArgumentParser(
        prog="wrapresolver",
        description="Tekton workspaces shared through storage instead of PersistentVolumeClaims.",
    )
    parser.add_argument("--version", action="version", version=f"wrapresolver {__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="print the traceback of an unexpected error (same as WRAPRESOLVER_DEBUG=1)")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(name)
        except ImportError as exc:
            # An image without the controller extra still runs fetch/store and render.
            missing = getattr(exc, "name", "") or ""
            if missing.startswith("wrapresolver"):
                raise
            continue
        module.register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one command; an exception it did not handle ends as one `error:` line (lastresort)."""
    from wrapresolver import lastresort

    parser = build_parser()
    args = parser.parse_args(argv)
    if args.debug:
        os.environ[lastresort.DEBUG_ENV] = "1"
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the last resort: never a bare traceback
        trace = lastresort.details(exc)
        if trace:
            sys.stderr.write(trace)
        print(lastresort.error_line(f"wrapresolver {args.command}: ", exc), file=sys.stderr, flush=True)
        return lastresort.UNEXPECTED_EXIT


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
