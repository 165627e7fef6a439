"""`wrapresolver fetch | store | publish`: the injected steps, and the same by hand.

Injected form (what the rewrite writes into `wrap-fetch` / `wrap-store` / `wrap-publish`):

    wrapresolver fetch --state-dir /wrap-state --workspace '<json>' [--workspace '<json>' ...]

Each `--workspace` is a `WorkspaceTransfer`; the workspaces of one task move in parallel
threads (fewer containers than one step per workspace, and a slow bucket does not hold up
a fast registry). By hand, a person can look at what a run stored or seed a `base`:

    wrapresolver fetch --target oci://registry.example/ci/run-src --path ./src
    wrapresolver store --path ./seed --target oci://registry.example/ci/base:v1
    wrapresolver fetch --target oci://registry.example/ci/run-src --run UID --task build [--input] --path ./b

Output: one line per workspace (files, bytes, layers, seconds, MB/s), progress lines every
few seconds on long transfers, and on failure one `error:` line per workspace with the
message a pipeline author acts on. The exit code says what kind of failure it was (see
`wrapresolver.errors.TransferError`): 2 usage, 3 auth, 4 not found, 5 network, 6 disk full,
7 integrity, 8 unsafe archive, 1 anything else.
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from wrapresolver import lastresort
from wrapresolver.core.limits import cap_line, shown
from wrapresolver.core.stepspec import STATE_DIR, WorkspaceTransfer
from wrapresolver.core.values import TransferReport
from wrapresolver.errors import ParamError, TransferError, WrapError
from wrapresolver.steps import fill

USAGE_ERROR = 2
_print_lock = threading.Lock()


def say(line: str, stream=None) -> None:
    """One whole line at a time: parallel workspaces never interleave mid-line; never a flood."""
    with _print_lock:
        print(cap_line(line), file=stream or sys.stdout, flush=True)


def register(subparsers: Any) -> None:
    for action, help_text in (
        ("fetch", "restore wrapped workspaces (injected first step), or a target into --path"),
        ("store", "save what the task changed (injected last step), or --path to a target"),
        ("publish", "write the final state of wrapped workspaces to their exact targets"),
    ):
        parser = subparsers.add_parser(action, help=help_text, description=__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter)
        parser.add_argument("--workspace", dest="workspaces", action="append", default=[], metavar="JSON",
                            help="one wrapped workspace, as the resolver serialised it (repeatable)")
        if action != "publish":
            parser.add_argument("--state-dir", type=Path, default=Path(STATE_DIR),
                                help="where fetch leaves what store needs (an emptyDir shared by both steps)")
            parser.add_argument("--path", type=Path, help="by hand: the local directory")
            parser.add_argument("--target", help="by hand: the storage target (oci://, s3://, gs://, rsync://, file://)")
            parser.add_argument("--backend", help="by hand: the backend, when the target's scheme does not say")
            parser.add_argument("--option", dest="options", action="append", default=[], metavar="NAME=VALUE",
                                help="by hand: a backend option, e.g. compression=gzip (repeatable)")
            parser.add_argument("--sub-path", default="", help="by hand, fetch: only this directory of the state")
            if action == "fetch":
                parser.add_argument("--run", default="", help="by hand: a run's state instead of the target's (its UID)")
                parser.add_argument("--task", default="", help="by hand, with --run: the state this task stored")
                parser.add_argument("--input", action="store_true",
                                    help="with --run/--task: what the task started from (its merged input), not what it stored")
        parser.set_defaults(func=run, action=action)


def run(args: argparse.Namespace) -> int:
    try:
        if args.workspaces:
            if getattr(args, "target", None) or getattr(args, "path", None):
                raise ParamError("use either --workspace (injected form) or --target/--path (by hand), not both")
            specs = [WorkspaceTransfer.from_json(text) for text in args.workspaces]
            return run_injected(args.action, specs, getattr(args, "state_dir", None))
        if args.action == "publish":
            raise ParamError("publish needs at least one --workspace")
        if not args.target or not args.path:
            raise ParamError(f"{args.action} by hand needs --target and --path (or --workspace JSON)")
        return run_by_hand(args)
    except (ParamError, ValueError) as exc:
        say(f"wrap {args.action}: error: {exc}", sys.stderr)
        return USAGE_ERROR
    except WrapError as exc:
        say(f"wrap {args.action}: error: {exc}", sys.stderr)
        return getattr(exc, "exit_code", 1)


# ---- injected form ----

def run_injected(action: str, specs: Sequence[WorkspaceTransfer], state_dir: Path | None) -> int:
    def one(spec: WorkspaceTransfer) -> int:
        try:
            report = transfer(action, spec, state_dir, progress=lambda r: say(r.line() + " ..."))
        except ParamError as exc:
            say(f"wrap {action} {spec.workspace}: error: {exc}", sys.stderr)
            return USAGE_ERROR
        except WrapError as exc:
            say(f"wrap {action} {spec.workspace}: error: {exc}", sys.stderr)
            return getattr(exc, "exit_code", 1)
        except Exception as exc:  # a bug: one line (the traceback with --debug), fail the step
            trace = lastresort.details(exc)
            if trace:
                with _print_lock:
                    sys.stderr.write(trace)
            say(lastresort.error_line(f"wrap {action} {spec.workspace}: ", exc), sys.stderr)
            return lastresort.UNEXPECTED_EXIT
        say(report.line())
        return 0

    if len(specs) == 1:
        codes = [one(specs[0])]
    else:
        with ThreadPoolExecutor(max_workers=min(8, len(specs))) as pool:
            codes = list(pool.map(one, specs))
    failed = [code for code in codes if code]
    return failed[0] if failed else 0


def transfer(
    action: str, spec: WorkspaceTransfer, state_dir: Path | None,
    progress: Callable[[TransferReport], None] | None = None,
) -> TransferReport:
    """Run one workspace's fetch, store or publish through its backend."""
    from wrapresolver.backends.registry import get_backend
    from wrapresolver.steps.open_target import open_steps

    if action != "publish" and not spec.path:
        raise ParamError(f"workspace {spec.workspace!r} has no path to {action}")
    if action != "publish" and os.path.lexists(spec.path) and not os.path.isdir(spec.path):
        raise ParamError(f"workspace {spec.workspace!r}: path {shown(spec.path)} is not a directory")
    backend = get_backend(spec.backend)
    state = Path(state_dir or STATE_DIR)
    with open_steps(backend, spec.target, spec.options) as steps:
        if action == "fetch":
            return steps.fetch(spec, fill.fetch_destination(spec), state, progress)
        if action == "store":
            return steps.store(spec, Path(spec.path), state, progress)
        return steps.publish(spec, progress)


# ---- by hand ----

def option_flags(items: list[str]) -> dict[str, str]:
    """`--option NAME=VALUE` flags (backend options by hand), as a dict."""
    options: dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name:
            raise ParamError(f"--option {item!r} is not NAME=VALUE")
        options[name] = value
    return options


def run_by_hand(args: argparse.Namespace) -> int:
    from wrapresolver.backends.registry import REGISTRY
    from wrapresolver.core.template import split_scheme, unknown_placeholders
    from wrapresolver.steps.open_target import open_steps

    options = option_flags(args.options)
    backend = REGISTRY.for_target(split_scheme(args.target)[0], args.backend or "")
    placeholders = unknown_placeholders(args.target, known=())
    if placeholders:
        raise ParamError(
            f"--target {shown(args.target)} still holds {shown(placeholders[0], 40)}; by hand, write the "
            f"concrete target (placeholders such as <<workspace>> are the resolver's, in its `target` param)"
        )
    backend.validate_target(args.target)
    options = backend.validate_options(options)
    path: Path = args.path
    if os.path.lexists(path) and not path.is_dir():
        raise ParamError(f"--path {shown(str(path))} is not a directory; {args.action} by hand needs one")
    if args.action == "fetch" and (getattr(args, "run", "") or getattr(args, "task", "") or getattr(args, "input", False)):
        return _fetch_task(args, backend, options, path)
    with open_steps(backend, args.target, options) as store:
        if args.action == "fetch":
            if path.exists() and any(path.iterdir()):
                raise ParamError(f"--path {path} is not empty; fetch restores into an empty directory")
            report = store.pull(path, args.sub_path)
        else:
            if not path.is_dir():
                raise TransferError(f"--path {path} is not a directory", exit_code=4)
            report = store.push(path, options)
    say(report.line())
    return 0


def _fetch_task(args: argparse.Namespace, backend: Any, options: dict[str, str], path: Path) -> int:
    """`fetch --run UID --task NAME [--input]`: what one task of a run stored, or started from."""
    from wrapresolver.backends.base import BlobStore
    from wrapresolver.steps.taskstates import fetch_task

    if not args.run or not args.task:
        raise ParamError("fetch by task needs both --run UID and --task NAME (--input: what the task started from)")
    if path.exists() and any(path.iterdir()):
        raise ParamError(f"--path {path} is not empty; fetch restores into an empty directory")
    store = backend.open(args.target, options)
    try:
        if not isinstance(store, BlobStore):
            raise TransferError(
                f"backend {backend.name!r} stores whole trees, not layered states: fetch --run/--task needs a "
                f"layered backend (oci, s3, gcs, file); look at the run's directories on the server instead"
            )
        report = fetch_task(store, args.run, args.task, args.input, path, args.sub_path)
    finally:
        store.close()
    say(report.line())
    return 0
