"""`wrapresolver` command line: a thin dispatcher.

Each command module exposes `register(subparsers)`, adding its sub-commands with
`set_defaults(func=...)`; `func(args) -> int` is the exit code. Command modules keep their
top-level imports light (no kopf, boto3, ...), so `wrapresolver fetch` in a step image
starts fast and `wrapresolver render` needs no cluster libraries.
"""

from __future__ import annotations

import argparse
import importlib
import sys

COMMAND_MODULES = (
    "wrapresolver.render",             # render
    "wrapresolver.transfer.cli",       # fetch, store, publish
    "wrapresolver.controller.main",    # controller
    "wrapresolver.collect",            # gc
)


def build_parser() -> argparse.ArgumentParser:
    from wrapresolver import __version__

    parser = argparse.ArgumentParser(
        prog="wrapresolver",
        description="Tekton workspaces shared through storage instead of PersistentVolumeClaims.",
    )
    parser.add_argument("--version", action="version", version=f"wrapresolver {__version__}")
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
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help(sys.stderr)
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
