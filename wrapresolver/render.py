"""`wrapresolver render`: what the resolver would answer, from local files, offline.

It runs the same `resolve` the controller runs, over a `FileSource`, after doing what
Tekton does before it creates a ResolutionRequest: replace `$(params.x)` in the
PipelineRun's `pipelineRef.params` with the PipelineRun's own `spec.params`, and
`$(context.pipelineRun.name|namespace)` with what its metadata says (tekton-facts §2); the
uid stays Tekton's variable unless `--uid` gives one (`render` says why). So an author can
see, and diff, the rewritten Pipeline before anything reaches a cluster. It prints it as
YAML; `--output json` prints the compact JSON the resolver answers, byte for byte.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from wrapresolver.core.params import PARAM_PIPELINEREF, RESOLVER_NAME

DEFAULT_NAMESPACE = "default"
PIPELINE_NAME_VARIABLE = "$(context.pipeline.name)"

_PARAM_REF = re.compile(
    r"""\$\(params(?:\.(?P<dot>[A-Za-z0-9_-]+)|\[(?P<q>["'])(?P<br>[^"']+)(?P=q)\])"""
    r"""(?:\.(?P<key>[A-Za-z0-9_-]+)|\[(?P<idx>[0-9]+|\*)\])?\)"""
)
_CONTEXT_REF = re.compile(r"\$\(context\.(?:pipelineRun\.(?P<field>name|namespace|uid)|pipeline\.name)\)")


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "render",
        help="print the Pipeline the wrap resolver would return, from local YAML files",
        description=(
            "Rewrite a Pipeline as the wrap resolver would, without a cluster or network. "
            "FILEs hold Pipelines, Tasks and optionally a PipelineRun using `resolver: wrap` "
            "(its params are used; --param wins)."
        ),
    )
    parser.add_argument(
        "-f", "--filename", dest="files", action="append", required=True, metavar="FILE",
        help="YAML file with Pipelines, Tasks, a PipelineRun; `-` reads stdin (repeatable)",
    )
    parser.add_argument(
        "--param", dest="params", action="append", default=[], type=_key_value, metavar="NAME=VALUE",
        help="a resolver param, overriding the PipelineRun's (repeatable)",
    )
    parser.add_argument(
        "--config", dest="config", action="append", default=[], type=_key_value, metavar="KEY=VALUE",
        help="a wrapresolver-config ConfigMap entry, e.g. default-target=... (repeatable)",
    )
    parser.add_argument(
        "--uid", default="",
        help="the uid of the PipelineRun to render for (default: left to Tekton; a uid in the file is not used)",
    )
    parser.add_argument(
        "--task", default="", metavar="NAME",
        help="print the Task the per-task request of pipeline task NAME is answered with (answers per-task "
             "unless --config task-resolution=inline)",
    )
    parser.add_argument(
        "-o", "--output", choices=("yaml", "json"), default="yaml",
        help="yaml (default): for reading and diffing; json: the exact bytes the resolver answers",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from wrapresolver.core.limits import cap_line
    from wrapresolver.errors import WrapError

    try:
        documents, origins = read_documents(args.files)
        warnings: list[str] = []
        data = render(
            documents, origins, params=dict(args.params), config=dict(args.config), output=args.output,
            uid=args.uid, warnings=warnings, task=args.task,
        )
    except WrapError as exc:
        print(cap_line(f"error: {exc}"), file=sys.stderr)
        return 1
    for warning in warnings:
        print(cap_line(f"warning: {warning}"), file=sys.stderr)
    sys.stdout.write(data.decode("utf-8"))
    sys.stdout.flush()
    return 0


def render(
    documents: Sequence[Mapping],
    origins: Sequence[str] = (),
    *,
    params: Mapping[str, str] | None = None,
    config: Mapping[str, str] | None = None,
    output: str = "yaml",
    uid: str = "",
    warnings: list[str] | None = None,
    task: str = "",
) -> bytes:
    """The rewritten Pipeline as YAML bytes; raises `WrapError` like the controller would.

    The resolver answers compact JSON; `output="json"` gives those exact bytes, the default
    the same object as YAML, key order kept, which is what a person reads and diffs. What is
    legal but probably not meant (the controller's Warning Events) is appended to `warnings`
    when given.

    A PipelineRun file's `metadata.uid` (as `kubectl get -o yaml` prints it) is not used: it
    names a run that already ran, and the run that will really run gets a new uid. Rendering
    with the copied one would hard-code that old run's uid into the step args, so a new run
    would read and overwrite the old run's stored states; it stays Tekton's variable instead,
    with a warning. `uid` (`--uid`) is the way to render for one given run.

    With `task`, the Pipeline is answered per-task (unless the config says `inline`) and
    what is returned is the Task that pipeline task's own request gets, made as the
    controller makes it from the request Tekton would send.
    """
    import asyncio
    import json

    from wrapresolver.core.conversion import conversion_hint
    from wrapresolver.core.params import CONFIG_TASK_RESOLUTION, RunContext, config_key
    from wrapresolver.core.pertask import MODE_PER_TASK, task_request
    from wrapresolver.resolve import resolve
    from wrapresolver.serialize import to_yaml
    from wrapresolver.sources import FileSource

    config = dict(config or {})
    source = FileSource(documents, origins)
    run_obj = _wrap_pipelinerun(documents)
    if run_obj is None:
        conversion_hint(documents, origins)  # a PipelineRun not using `resolver: wrap`: what to change
    said: list[str] = []
    copied_uid = str(((run_obj or {}).get("metadata") or {}).get("uid") or "")
    if run_obj is not None and copied_uid and not uid:
        said.append(
            f"PipelineRun {_run_name(run_obj)!r} carries metadata.uid "
            f"{copied_uid!r} (as `kubectl get -o yaml` prints it); render "
            f"ignores it and leaves $(context.pipelineRun.uid) for Tekton, since a new run gets a "
            f"new uid and must not reuse that run's stored states. Remove metadata.uid, "
            f"resourceVersion, creationTimestamp and status before creating the run from this file"
        )
    replacements = _replacements(run_obj, uid)
    raw = {**{str(p.get("name")): p.get("value") for p in _pipelineref_params(run_obj)}, **(params or {})}
    for name in sorted(n for n, v in raw.items() if PIPELINE_NAME_VARIABLE in str(v)):
        said.append(
            f"param `{name}` uses {PIPELINE_NAME_VARIABLE}, which Tekton replaces with an empty "
            f"string in resolver params (it has not fetched the Pipeline yet); write the "
            f"Pipeline's name instead"
        )
    request_params = [
        {"name": p.get("name"), "value": _substitute(p.get("value"), replacements)}
        for p in _pipelineref_params(run_obj)
    ]
    for name, value in (params or {}).items():
        value = _substitute(value, replacements)
        request_params = [p for p in request_params if p.get("name") != name]
        request_params.append({"name": name, "value": value})

    has_ref = any(p.get("name") == PARAM_PIPELINEREF for p in request_params)
    pipelines = source.names("Pipeline")
    if not has_ref and not config.get(config_key(PARAM_PIPELINEREF)) and len(pipelines) == 1:
        request_params.insert(0, {"name": PARAM_PIPELINEREF, "value": pipelines[0]})

    context = RunContext(namespace=DEFAULT_NAMESPACE, uid=uid)
    if run_obj is not None:
        metadata = run_obj.get("metadata") or {}
        context = RunContext(
            name=str(metadata.get("name") or ""),
            namespace=str(metadata.get("namespace") or DEFAULT_NAMESPACE),
            uid=uid,
            pipelinerun=run_obj,
        )
    if task:
        config.setdefault(CONFIG_TASK_RESOLUTION, MODE_PER_TASK)
    resolution = asyncio.run(resolve(request_params, config, context, source, config_name="--config"))
    if task:
        answer = json.loads(resolution.data)
        resolution = asyncio.run(resolve(task_request(answer, task), config, context, source,
                                         config_name="--config"))
        if not uid:
            said.append("the Task keeps $(context.pipelineRun.uid) where the resolver writes the run's uid "
                        "(Tekton substitutes no context variable in a referenced Task); --uid gives one")
    if warnings is not None:
        warnings.extend(said + [notice.message for notice in resolution.warnings])
    data = resolution.data
    return data if output == "json" else to_yaml(json.loads(data))


def read_documents(paths: Iterable[str]) -> tuple[list[Mapping], list[str]]:
    """Every YAML document of every file (`-` is stdin), `kind: List` flattened."""
    from wrapresolver.core import safeyaml
    from wrapresolver.core.limits import shown
    from wrapresolver.errors import SourceError

    documents: list[Mapping] = []
    origins: list[str] = []
    for path in paths:
        origin = "stdin" if path == "-" else path
        try:
            raw = _read_stdin() if path == "-" else Path(path).read_bytes()
        except OSError as exc:
            raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            line = raw.count(b"\n", 0, exc.start) + 1
            raise SourceError(
                f"{origin} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
                f"(line {line}) cannot be decoded; Tekton YAML is UTF-8"
            ) from None
        try:
            loaded = safeyaml.load_all(text, origin)
        except safeyaml.YAMLError as exc:
            raise SourceError(f"{origin} is not valid YAML: {' '.join(str(exc).split())}") from exc
        for doc in loaded:
            if doc is None:
                continue
            if not isinstance(doc, Mapping):
                raise SourceError(f"{origin} holds a YAML document that is not an object: {shown(doc, 60)}")
            items = doc.get("items") if doc.get("kind") == "List" else [doc]
            if not isinstance(items, list):
                raise SourceError(f"{origin} holds a `kind: List` whose `items` is not a list")
            for item in items or []:
                if isinstance(item, Mapping):
                    documents.append(item)
                    origins.append(origin)
    return documents, origins


def _read_stdin() -> bytes:
    buffer = getattr(sys.stdin, "buffer", None)
    if buffer is not None:
        return buffer.read()
    return sys.stdin.read().encode("utf-8", "surrogateescape")  # a text stream already decoded


def _wrap_pipelinerun(documents: Sequence[Mapping]) -> Mapping | None:
    from wrapresolver.errors import ParamError

    runs = [
        doc for doc in documents
        if doc.get("kind") == "PipelineRun"
        and isinstance(doc.get("spec"), Mapping)
        and isinstance(doc["spec"].get("pipelineRef"), Mapping)
        and doc["spec"]["pipelineRef"].get("resolver") == RESOLVER_NAME
    ]
    if len(runs) > 1:
        names = ", ".join(_run_name(r) for r in runs)
        raise ParamError(
            f"the files hold {len(runs)} PipelineRuns using `resolver: {RESOLVER_NAME}` ({names}); "
            f"pass only one"
        )
    return runs[0] if runs else None


def _pipelineref_params(run_obj: Mapping | None) -> list[Mapping]:
    if run_obj is None:
        return []
    params = run_obj["spec"]["pipelineRef"].get("params") or []
    return [p for p in params if isinstance(p, Mapping)] if isinstance(params, list) else []


def _run_name(run_obj: Mapping) -> str:
    metadata = run_obj.get("metadata") or {}
    return str(metadata.get("name") or metadata.get("generateName") or "?")


def _replacements(run_obj: Mapping | None, uid: str = "") -> tuple[dict[str, Any], dict[str, str]]:
    """The PipelineRun's params and known context values: Tekton's replacements before resolution.

    Pipeline param defaults are not among them: Tekton has not fetched the Pipeline yet.
    """
    if run_obj is None:
        return {}, {}
    values = {
        str(p["name"]): p.get("value")
        for p in (run_obj["spec"].get("params") or [])
        if isinstance(p, Mapping) and "name" in p
    }
    metadata = run_obj.get("metadata") or {}
    context = {
        "name": str(metadata.get("name") or ""),
        "namespace": str(metadata.get("namespace") or DEFAULT_NAMESPACE),
        "uid": uid,  # never the file's own (render)
    }
    return values, context


def _substitute(value: Any, replacements: tuple[dict[str, Any], dict[str, str]]) -> Any:
    if isinstance(value, str):
        return _substitute_string(value, replacements)
    if isinstance(value, list):
        out: list[Any] = []
        for item in value:
            replaced = _substitute(item, replacements)
            # `$(params.x[*])` as an array element expands in place, as Tekton does.
            out.extend(replaced if isinstance(replaced, list) and isinstance(item, str) else [replaced])
        return out
    if isinstance(value, Mapping):
        return {k: _substitute(v, replacements) for k, v in value.items()}
    return value


def _substitute_string(text: str, replacements: tuple[dict[str, Any], dict[str, str]]) -> Any:
    values, context = replacements
    whole = _PARAM_REF.fullmatch(text)
    if whole and whole.group("idx") == "*" and isinstance(values.get(_param_name(whole)), list):
        return list(values[_param_name(whole)])

    def param(match: re.Match[str]) -> str:
        value = values.get(_param_name(match))
        key, idx = match.group("key"), match.group("idx")
        if isinstance(value, str) and key is None and idx is None:
            return value
        if isinstance(value, list) and idx is not None and idx != "*" and int(idx) < len(value):
            return str(value[int(idx)])
        if isinstance(value, Mapping) and key is not None and key in value:
            return str(value[key])
        return match.group(0)

    def context_value(match: re.Match[str]) -> str:
        field = match.group("field")
        if field is None:
            return ""  # Tekton replaces $(context.pipeline.name) with "" here
        return context.get(field) or match.group(0)

    return _CONTEXT_REF.sub(context_value, _PARAM_REF.sub(param, text)) if context or values else text


def _param_name(match: re.Match[str]) -> str:
    return match.group("dot") or match.group("br")


def _key_value(text: str) -> tuple[str, str]:
    name, sep, value = text.partition("=")
    if not sep or not name.strip():
        raise argparse.ArgumentTypeError(f"expected NAME=VALUE, got {text!r}")
    return name.strip(), value
