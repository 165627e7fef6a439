"""`wrapresolver convert`: a PipelineRun that does not use the wrap resolver, made to use it.

Reads the file and prints the converted objects; what it changes, and why, is
`wrapresolver.core.conversion`'s (and docs/pipeline-authors.md's).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from typing import Any

from wrapresolver.core.conversion import convert_run
from wrapresolver.errors import ParamError


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "convert",
        help="print a PipelineRun converted to the wrap resolver (and its embedded Pipeline as an object)",
        description=(
            "Convert a PipelineRun with an embedded pipelineSpec, or with a plain pipelineRef, to "
            "one that uses the wrap resolver. Prints the Pipeline object (for an embedded spec) and "
            "the converted PipelineRun as YAML: `kubectl create -f -` of the output is the whole "
            "conversion."
        ),
    )
    parser.add_argument("-f", "--filename", dest="file", required=True, metavar="FILE",
                        help="the PipelineRun YAML (`-` reads stdin)")
    parser.add_argument("--name", default="", help="the name of the Pipeline made from an embedded pipelineSpec")
    parser.add_argument("--target", default="",
                        help="the wrap resolver's `target` param (default: the cluster's default-target)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wrapresolver.core.limits import cap_line
    from wrapresolver.errors import WrapError
    from wrapresolver.render import read_documents

    try:
        documents, _ = read_documents([args.file])
        text = convert(documents, name=args.name, target=args.target)
    except WrapError as exc:
        print(cap_line(f"error: {exc}"), file=sys.stderr)
        return 1
    sys.stdout.write(text)
    sys.stdout.flush()
    return 0


def convert(documents: Sequence[Mapping], *, name: str = "", target: str = "") -> str:
    """The converted objects as YAML documents, after comments saying what was chosen."""
    from wrapresolver.serialize import to_yaml

    runs = [d for d in documents if d.get("kind") == "PipelineRun"]
    if len(runs) != 1:
        raise ParamError(
            f"convert needs exactly one PipelineRun in the file, found {len(runs)}; "
            f"pass a file holding the one to convert"
        )
    pipeline, new_run, notes = convert_run(runs[0], name=name, target=target)
    out = [f"# {line}\n" for line in notes]
    for obj in (pipeline, new_run):
        if obj is not None:
            out.append("---\n" + to_yaml(obj).decode("utf-8"))
    return "".join(out)

