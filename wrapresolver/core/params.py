"""The resolver params: parsed, merged with the ConfigMap defaults, validated, typed.

Param and config key names are the user-facing contract; they are constants here and
nowhere else.

Over 400 lines: every param's name, parsing and error message live here, so a contributor
adding or changing one reads one file (docs/contributing.md). Carried bases and the nested
`pipelineref` form are the next to move out, when they grow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from wrapresolver.core import safeyaml
from wrapresolver.core.backend import Backend, Backends
from wrapresolver.core.limits import shown
from wrapresolver.core.retention import PARAM_PUBLISH_RETENTION, PARAM_RETENTION, publish_retention_of, retention_of
from wrapresolver.core.stepspec import DEFAULT_MAX_LAYERS
from wrapresolver.core.template import (
    check_variables,
    expand_target,
    has_workspace_placeholder,
    split_scheme,
    unknown_placeholders,
)
from wrapresolver.errors import ParamError

# ---- param names (DESIGN §4.1) ----
PARAM_PIPELINEREF = "pipelineref"
PARAM_WORKSPACES = "workspaces"
PARAM_TARGET = "target"
PARAM_BACKEND = "backend"
PARAM_BASE = "base"
PARAM_BASE_MISSING = "base-missing"
BASE_MISSING_EMPTY = "empty"
BASE_MISSING_FAIL = "fail"
PARAM_MAX_LAYERS = "max-layers"
MAX_MAX_LAYERS = 1000

# ---- ConfigMap keys (wrapresolver-config) ----
CONFIG_DEFAULT_PREFIX = "default-"  # default-<param> is the default of any param
CONFIG_STEP_IMAGE = "step-image"
CONFIG_ALLOWED_NAMESPACES = "allowed-namespaces"
CONFIG_BLOCKED_NAMESPACES = "blocked-namespaces"
CONFIG_RESOLUTION_TIMEOUT = "resolution-timeout"
CONFIG_LOG_LEVEL = "log-level"
CONFIG_ALLOWED_TARGETS = "allowed-targets"
"""Comma-separated location prefixes states may go to (core.locations); unset: anywhere."""
CONFIG_TASK_RESOLUTION = "task-resolution"
"""`auto` (default), `inline` or `per-task`: how a wrapped task's spec reaches Tekton (core.pertask)."""
CONFIG_CHAINS_RESULTS = "chains-results"
"""`false` drops the results the injected steps declare for Tekton Chains (core.results); default true."""
CONFIG_KEYS = (
    CONFIG_STEP_IMAGE, CONFIG_ALLOWED_NAMESPACES, CONFIG_BLOCKED_NAMESPACES, CONFIG_RESOLUTION_TIMEOUT,
    CONFIG_LOG_LEVEL, CONFIG_ALLOWED_TARGETS, CONFIG_TASK_RESOLUTION, CONFIG_CHAINS_RESULTS,
)
"""Every ConfigMap key besides `default-<param>`: a key not here is warned about (core.checks).
A new key goes here too, or every resolution warns that the ConfigMap holds an unknown key."""

DEFAULT_STEP_IMAGE = "ghcr.io/wrapresolver/wrapresolver:0.1.0"


@dataclass(frozen=True)
class PipelineRef:
    """Where the Pipeline comes from: a name in the request's namespace, or another resolver."""

    name: str = ""
    resolver: str = ""
    params: tuple[Mapping, ...] = ()
    """The nested resolver's params as Tekton writes them: [{name, value}, ...]."""


@dataclass(frozen=True)
class RunContext:
    """What is known about the PipelineRun that asked (from ownerReferences or a file)."""

    name: str = ""
    namespace: str = ""
    uid: str = ""
    pipelinerun: Mapping | None = None
    """The owning PipelineRun object when it could be read (for default workspaces)."""
    pipeline: str = ""
    """The resolved Pipeline's name, for `<<pipeline>>` in targets; set once it is fetched."""


@dataclass(frozen=True)
class WrapRequest:
    """A validated resolution request for the `wrap` resolver."""

    pipelineref: PipelineRef
    workspaces: tuple[str, ...]
    """Pipeline workspaces to wrap; empty means "decide from the PipelineRun" (see wrapped_workspaces)."""
    target: str
    """The target template, before `<<workspace>>` substitution."""
    backend: str
    """The backend name, from the `backend` param or the target's scheme."""
    base: str = ""
    """One base for every wrapped workspace (`<<workspace>>` templated), or empty."""
    options: Mapping[str, str] = field(default_factory=dict)
    """Backend options (every param that is not one of the names above)."""
    step_image: str = DEFAULT_STEP_IMAGE
    context: RunContext = field(default_factory=RunContext)
    bases: Mapping[str, str] | None = None
    """The per-workspace form of `base` (`cache=oci://reg/ci/cache,sources=`): a workspace
    it does not name starts empty. None when `base` is one reference for all."""
    base_required: bool = False
    """`base-missing: fail`: a base that does not exist fails the fetch instead of starting empty."""
    max_layers: int = DEFAULT_MAX_LAYERS
    """`max-layers`: the most layers a published state keeps before it is squashed; 0 never."""
    chains_results: bool = True
    """The ConfigMap's `chains-results`: declare the injected steps' results for Tekton Chains."""


CORE_PARAMS = (
    PARAM_PIPELINEREF, PARAM_WORKSPACES, PARAM_TARGET, PARAM_BACKEND, PARAM_BASE, PARAM_RETENTION, PARAM_BASE_MISSING,
    PARAM_PUBLISH_RETENTION, PARAM_MAX_LAYERS,
)
"""Params the resolver itself reads; every other param is a backend option."""

CONFIGMAP_NAME = "wrapresolver-config"
DEFAULT_BACKEND = "oci"
"""The backend of a target without a scheme (`registry.example/ci/cache`)."""
RESOLVER_NAME = "wrap"

_DNS1123_LABEL = r"[a-z0-9]([-a-z0-9]*[a-z0-9])?"
_DNS1123_SUBDOMAIN_RE = re.compile(rf"^{_DNS1123_LABEL}(\.{_DNS1123_LABEL})*$")


def config_key(param: str) -> str:
    """The ConfigMap key holding the default of `param`."""
    return CONFIG_DEFAULT_PREFIX + param


def parse_request(
    params: Sequence[Mapping], config: Mapping[str, str], context: RunContext, backends: Backends,
) -> WrapRequest:
    """Merge the request's params with the ConfigMap defaults and validate them.

    `backends` finds the backend the params choose (the installed ones, handed in so that
    this module loads no plugin). Raises `ParamError` naming the param (and the ConfigMap
    key that could default it).
    """
    given = _params_by_name(params)
    values = _with_defaults(given, config)

    pipelineref = _parse_pipelineref(_require(values, PARAM_PIPELINEREF))
    target = _string(PARAM_TARGET, _require(values, PARAM_TARGET)).strip()
    if not target:
        raise ParamError(_missing_message(PARAM_TARGET))
    if PARAM_TARGET in given:
        check_variables(f"param `{PARAM_TARGET}`", target)
    else:
        check_variables(f"`{config_key(PARAM_TARGET)}` of the ConfigMap {CONFIGMAP_NAME}", target, from_config=True)
    unknown = unknown_placeholders(target)
    if unknown:
        raise ParamError(
            f"param `{PARAM_TARGET}` {shown(target)} holds {', '.join(shown(u, 40) for u in unknown[:3])}, "
            f"which is not a placeholder the wrap resolver knows; the known ones are `<<workspace>>` "
            f"(or `{{{{workspace}}}}`) and `<<pipeline>>`"
        )
    workspaces: tuple[str, ...] = ()
    if PARAM_WORKSPACES in values:
        workspaces = _parse_workspaces(values[PARAM_WORKSPACES])
    base, bases = parse_base(values.get(PARAM_BASE, ""))
    base_required = _parse_base_missing(values.get(PARAM_BASE_MISSING, BASE_MISSING_EMPTY))
    max_layers = parse_max_layers(values.get(PARAM_MAX_LAYERS, str(DEFAULT_MAX_LAYERS)))

    backend = _select_backend(given, config, target, backends)
    options = _backend_options(backend, given, config)
    retention_of(params, config)  # validated here; carried out by the controller (core.retention)
    publish_retention_of(params, config)
    for workspace in workspaces or ("workspace",):
        validate_target(backend, expand_target(target, workspace, context))

    return WrapRequest(
        pipelineref=pipelineref,
        workspaces=workspaces,
        target=target,
        backend=backend.name,
        base=base,
        options=options,
        step_image=(config.get(CONFIG_STEP_IMAGE) or "").strip() or DEFAULT_STEP_IMAGE,
        context=context,
        bases=bases,
        base_required=base_required,
        max_layers=max_layers,
        chains_results=parse_chains_results(config),
    )


def parse_chains_results(config: Mapping[str, str]) -> bool:
    """The ConfigMap's `chains-results`: true unless `false`; anything else is refused, not guessed."""
    value = str(config.get(CONFIG_CHAINS_RESULTS) or "true").strip().lower()
    if value not in ("true", "false"):
        raise ParamError(f"`{CONFIG_CHAINS_RESULTS}` of the ConfigMap {CONFIGMAP_NAME} is {shown(value)}; "
                         f"it is `true` (default: the injected steps report what they moved to Tekton Chains) "
                         f"or `false`")
    return value == "true"


def wrapped_workspaces(request: WrapRequest, pipeline: Mapping) -> tuple[str, ...]:
    """The pipeline workspaces to wrap, checked against what the Pipeline declares."""
    name = _object_name(pipeline)
    declared = [
        ws.get("name", "")
        for ws in (_spec(pipeline).get("workspaces") or [])
        if isinstance(ws, Mapping)
    ]
    declared_text = ", ".join(declared) if declared else "none"
    if request.workspaces:
        unknown = [ws for ws in request.workspaces if ws not in declared]
        if unknown:
            raise ParamError(
                f"param `{PARAM_WORKSPACES}` names {_quoted(unknown)}, which Pipeline {name!r} "
                f"does not declare; its workspaces are: {declared_text}"
            )
        chosen = request.workspaces
    else:
        chosen = _emptydir_workspaces(request.context, declared, name)

    if len(chosen) > 1 and not has_workspace_placeholder(request.target):
        raise ParamError(
            f"{len(chosen)} workspaces are wrapped ({', '.join(chosen)}) but param "
            f"`{PARAM_TARGET}` {request.target!r} has no `<<workspace>>`: they would all be "
            f"stored at the same place; add `<<workspace>>` to the target, e.g. "
            f"{request.target.rstrip('/')}-<<workspace>>"
        )
    return chosen


def check_targets(request: WrapRequest, workspaces: Sequence[str], backend: Backend) -> None:
    """Let the backend reject each workspace's concrete target before anything runs."""
    for workspace in workspaces:
        validate_target(backend, expand_target(request.target, workspace, request.context))


def validate_target(backend: Backend, target: str) -> None:
    """The backend's own check; a `ValueError` from its URL parsing becomes a `ParamError`.

    Backends (plugins included) parse targets with the standard library, which raises
    `ValueError` on some malformed input (`urlsplit("s3://]")`): still the author's input.
    """
    try:
        backend.validate_target(target)
    except ParamError:
        raise
    except ValueError as exc:
        raise ParamError(
            f"param `{PARAM_TARGET}` {shown(target)} is not a valid {backend.name} target: {exc}"
        ) from None


# ---- bases (carried workspaces) ----

_BASE_ITEM_RE = re.compile(rf"^\s*(?P<workspace>{_DNS1123_LABEL})\s*=(?P<ref>.*)$", re.DOTALL)


def parse_base(value: object) -> tuple[str, dict[str, str] | None]:
    """`base` as (one reference for all, None) or ("", {workspace: reference}).

    The per-workspace form is a comma-separated list of `workspace=reference` (or an object
    param). It is told apart from one reference by its first item: a workspace name and `=`
    before any `/` or `:`, which no reference starts with (`s3://b/date=1` is one reference).
    An empty reference (`sources=`) says the workspace starts empty, like leaving it out.
    """
    if isinstance(value, Mapping):
        items = [(str(k).strip(), v) for k, v in value.items()]
    else:
        text = _string(PARAM_BASE, value).strip()
        if not _BASE_ITEM_RE.match(text):
            return text, None
        items = []
        for part in text.split(","):
            if not part.strip():
                continue
            match = _BASE_ITEM_RE.match(part)
            if not match:
                raise ParamError(
                    f"param `{PARAM_BASE}` mixes the per-workspace form with {part.strip()!r}; write "
                    f"every item as `workspace=reference`, e.g. `cache=oci://registry.example/ci/cache`"
                )
            items.append((match.group("workspace"), match.group("ref")))
    bases: dict[str, str] = {}
    for name, ref in items:
        if not isinstance(ref, str):
            raise ParamError(f"param `{PARAM_BASE}`: the base of workspace {name!r} must be a string")
        if name in bases:
            raise ParamError(f"param `{PARAM_BASE}` names workspace {name!r} twice; keep one")
        bases[name] = ref.strip()
    return "", bases


def _parse_base_missing(value: object) -> bool:
    text = _string(PARAM_BASE_MISSING, value).strip().lower()
    if text not in (BASE_MISSING_EMPTY, BASE_MISSING_FAIL):
        raise ParamError(
            f"param `{PARAM_BASE_MISSING}` must be {BASE_MISSING_EMPTY!r} (a base that does not exist "
            f"yet starts the workspace empty) or {BASE_MISSING_FAIL!r}, not {text!r}"
        )
    return text == BASE_MISSING_FAIL


def parse_max_layers(value: object) -> int:
    """`max-layers` as an integer from 0 (never squash) to MAX_MAX_LAYERS."""
    text = _string(PARAM_MAX_LAYERS, value).strip()
    if not re.fullmatch(r"[0-9]{1,9}", text) or int(text) > MAX_MAX_LAYERS:
        raise ParamError(
            f"param `{PARAM_MAX_LAYERS}` must be a whole number from 0 to {MAX_MAX_LAYERS}, not {shown(text, 40)}: "
            f"the most layers a published state keeps before the next store squashes it into one "
            f"(default {DEFAULT_MAX_LAYERS}; 0 never squashes); the ConfigMap key "
            f"`{config_key(PARAM_MAX_LAYERS)}` sets it for every run"
        )
    return int(text)


def base_template(request: WrapRequest, workspace: str) -> str:
    """The base of `workspace` before templating: its own in the per-workspace form, else the one."""
    if request.bases is not None:
        return request.bases.get(workspace, "")
    return request.base


def base_of(request: WrapRequest, workspace: str) -> str:
    """The concrete base of `workspace` (`<<workspace>>`, run context filled in), or ""."""
    template = base_template(request, workspace)
    return expand_target(template, workspace, request.context) if template else ""


def check_bases(request: WrapRequest, workspaces: Sequence[str], backend: Backend) -> None:
    """Per-workspace bases name wrapped workspaces; every base is a target of the backend."""
    if request.bases is not None:
        unknown = [name for name in request.bases if name not in workspaces]
        if unknown:
            raise ParamError(
                f"param `{PARAM_BASE}` names {_quoted(unknown)}, which is not a wrapped workspace; "
                f"the wrapped workspaces are: {', '.join(workspaces)}"
            )
    for workspace in workspaces:
        base = base_of(request, workspace)
        if not base:
            continue
        check_variables(f"param `{PARAM_BASE}` of workspace {workspace!r}", base_template(request, workspace))
        unknown = unknown_placeholders(base_template(request, workspace))
        if unknown:
            raise ParamError(
                f"param `{PARAM_BASE}` of workspace {workspace!r} holds "
                f"{', '.join(shown(u, 40) for u in unknown[:3])}, which is not a placeholder the wrap "
                f"resolver knows; the known ones are `<<workspace>>` (or `{{{{workspace}}}}`) and `<<pipeline>>`"
            )
        try:
            backend.validate_target(base)
        except ParamError as exc:
            raise ParamError(f"param `{PARAM_BASE}` of workspace {workspace!r}: {exc}") from exc


# ---- helpers ----

def _params_by_name(params: Sequence[Mapping]) -> dict[str, object]:
    if params is None:
        return {}
    if not isinstance(params, Sequence) or isinstance(params, (str, bytes)):
        raise ParamError("the request's params must be a list of {name, value}")
    out: dict[str, object] = {}
    for index, param in enumerate(params):
        if not isinstance(param, Mapping) or not isinstance(param.get("name"), str) or not param["name"]:
            raise ParamError(f"param #{index + 1} has no name; params are written as {{name, value}}")
        name = param["name"]
        if name in out:
            raise ParamError(f"param `{name}` is given more than once; keep one")
        if "value" not in param or param["value"] is None:
            raise ParamError(f"param `{name}` has no value")
        out[name] = param["value"]
    return out


def _with_defaults(given: Mapping[str, object], config: Mapping[str, str]) -> dict[str, object]:
    values: dict[str, object] = {}
    for param in CORE_PARAMS:
        if param in given:
            values[param] = given[param]
        elif (config.get(config_key(param)) or "").strip():
            values[param] = config[config_key(param)]
    return values


def _missing_message(param: str) -> str:
    return (
        f"missing param `{param}`: add it to the PipelineRun's pipelineRef.params, or ask the "
        f"cluster admin to set `{config_key(param)}` in the ConfigMap {CONFIGMAP_NAME}"
    )


def _require(values: Mapping[str, object], param: str) -> object:
    if param not in values:
        raise ParamError(_missing_message(param))
    return values[param]


def _string(param: str, value: object) -> str:
    if not isinstance(value, str):
        kind = "an array" if isinstance(value, list) else "an object"
        raise ParamError(f"param `{param}` must be a string, got {kind}: {value!r}")
    return value


def _unsubstituted_hint(value: str) -> str:
    if "$(" not in value:
        return ""
    return (
        "; it still holds a `$(...)` reference: Tekton replaces only `$(params.x)` the "
        "PipelineRun itself supplies and `$(context.pipelineRun.*)` in resolver params"
    )


def _parse_pipelineref(value: object) -> PipelineRef:
    if isinstance(value, str):
        text = value.strip()
        if not text:
            raise ParamError(_missing_message(PARAM_PIPELINEREF))
        if _is_dns1123_subdomain(text):
            return PipelineRef(name=text)
        try:
            parsed = safeyaml.load(text, f"param `{PARAM_PIPELINEREF}`")
        except safeyaml.YAMLError as exc:
            raise ParamError(
                f"param `{PARAM_PIPELINEREF}` {text!r} is neither a Pipeline name nor valid YAML "
                f"of a resolver reference ({_first_line(exc)}){_unsubstituted_hint(text)}"
            ) from exc
        if not isinstance(parsed, Mapping):
            raise ParamError(
                f"param `{PARAM_PIPELINEREF}` {text!r} is not a valid Pipeline name (lowercase "
                f"letters, digits, '-' and '.', at most 253 characters) nor a YAML mapping "
                f"`{{resolver: <name>, params: [...]}}`{_unsubstituted_hint(text)}"
            )
        return _nested_ref(parsed)
    if isinstance(value, Mapping):
        return _nested_ref(value)
    raise ParamError(
        f"param `{PARAM_PIPELINEREF}` must be a Pipeline name or a resolver reference, got an array"
    )


def _nested_ref(ref: Mapping) -> PipelineRef:
    unknown = sorted(str(k) for k in ref if k not in ("name", "resolver", "params"))
    if unknown:
        raise ParamError(
            f"param `{PARAM_PIPELINEREF}` has unknown field(s) {', '.join(unknown)}; "
            f"a resolver reference has `resolver` and `params`"
        )
    resolver = ref.get("resolver")
    if resolver is None and isinstance(ref.get("name"), str):
        if "params" in ref:
            raise ParamError(f"param `{PARAM_PIPELINEREF}` has `params` but no `resolver`")
        return _parse_pipelineref(ref["name"])
    if not isinstance(resolver, str) or not resolver.strip():
        raise ParamError(
            f"param `{PARAM_PIPELINEREF}` is a mapping without `resolver`; write a Pipeline name "
            f"or `{{resolver: git, params: [...]}}`"
        )
    resolver = resolver.strip()
    if resolver == RESOLVER_NAME:
        raise ParamError(
            f"param `{PARAM_PIPELINEREF}` asks the `{RESOLVER_NAME}` resolver again, which would "
            f"loop; point it at where the Pipeline lives (a name, or e.g. `resolver: git`)"
        )
    return PipelineRef(resolver=resolver, params=_normalise_nested_params(ref.get("params")))


def _normalise_nested_params(params: object) -> tuple[Mapping, ...]:
    where = f"the `params` of param `{PARAM_PIPELINEREF}`"
    if params is None:
        return ()
    if isinstance(params, Mapping):
        return tuple({"name": str(k), "value": _nested_value(where, str(k), v)} for k, v in params.items())
    if not isinstance(params, list):
        raise ParamError(f"{where} must be a list of {{name, value}} or a mapping")
    seen: set[str] = set()
    out = []
    for param in params:
        if not isinstance(param, Mapping) or not isinstance(param.get("name"), str) or "value" not in param:
            raise ParamError(f"{where} must be a list of {{name, value}}; got {param!r}")
        if param["name"] in seen:
            raise ParamError(f"{where} gives `{param['name']}` more than once")
        seen.add(param["name"])
        out.append({"name": param["name"], "value": _nested_value(where, param["name"], param["value"])})
    return tuple(out)


def _nested_value(where: str, name: str, value: object) -> object:
    # YAML reads `revision: 1.0` as a float; resolver params are strings, arrays or objects.
    if isinstance(value, (list, dict)):
        return value
    if value is None:
        raise ParamError(f"{where}: `{name}` has no value")
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _parse_workspaces(value: object) -> tuple[str, ...]:
    if isinstance(value, str):
        names = value.split(",")
    elif isinstance(value, list) and all(isinstance(v, str) for v in value):
        names = value
    else:
        raise ParamError(
            f"param `{PARAM_WORKSPACES}` must be a comma-separated string or an array of names"
        )
    out: list[str] = []
    for name in (n.strip() for n in names):
        if name in out:
            # Tekton refuses a workspace declared or bound twice; a repeated name here is a typo
            # for another workspace more often than a harmless repeat.
            raise ParamError(
                f"param `{PARAM_WORKSPACES}` names workspace {name!r} twice "
                f"({shown(','.join(n.strip() for n in names), 200)}); name each workspace once"
            )
        if name:
            out.append(name)
    if not out:
        raise ParamError(
            f"param `{PARAM_WORKSPACES}` is empty; name at least one pipeline workspace, or leave "
            f"the param out to wrap every workspace the PipelineRun binds to emptyDir"
        )
    return tuple(out)


def _select_backend(
    given: Mapping[str, object], config: Mapping[str, str], target: str, backends: Backends,
) -> Backend:
    if PARAM_BACKEND in given:
        name = _string(PARAM_BACKEND, given[PARAM_BACKEND]).strip()
        if not name:
            raise ParamError(f"param `{PARAM_BACKEND}` is empty; leave it out to choose by the target's scheme")
        return backends.by_name(name)
    scheme, _ = split_scheme(target)
    if scheme:
        return backends.by_scheme(scheme)
    default = (config.get(config_key(PARAM_BACKEND)) or "").strip()
    return backends.by_name(default or DEFAULT_BACKEND)


def _backend_options(backend: Backend, given: Mapping[str, object], config: Mapping[str, str]) -> dict[str, str]:
    # ConfigMap defaults apply only to options this backend has: an admin's
    # `default-compression` for OCI must not break requests that pick S3.
    options: dict[str, str] = {}
    for key, value in config.items():
        if key.startswith(CONFIG_DEFAULT_PREFIX):
            name = key[len(CONFIG_DEFAULT_PREFIX):]
            if name not in CORE_PARAMS and name in backend.options and str(value).strip():
                options[name] = str(value).strip()
    for name, raw in given.items():
        if name not in CORE_PARAMS:
            options[name] = _string(name, raw)
    return backend.validate_options(options)


def _emptydir_workspaces(context: RunContext, declared: Sequence[str], pipeline: str) -> tuple[str, ...]:
    hint = (
        f"set param `{PARAM_WORKSPACES}` (e.g. `{','.join(declared[:2]) or 'sources'}`) or "
        f"`{config_key(PARAM_WORKSPACES)}` in the ConfigMap {CONFIGMAP_NAME}"
    )
    run = context.pipelinerun
    if not isinstance(run, Mapping):
        raise ParamError(
            f"param `{PARAM_WORKSPACES}` is not set and the PipelineRun is not known, so the "
            f"workspaces bound to emptyDir cannot be found; {hint}"
        )
    bound = {
        b.get("name")
        for b in (_spec(run).get("workspaces") or [])
        if isinstance(b, Mapping) and "emptyDir" in b
    }
    chosen = tuple(ws for ws in declared if ws in bound)
    if not chosen:
        run_name = context.name or _object_name(run) or "the PipelineRun"
        raise ParamError(
            f"param `{PARAM_WORKSPACES}` is not set and {run_name} binds none of the workspaces "
            f"of Pipeline {pipeline!r} to emptyDir; {hint}"
        )
    return chosen


def _spec(obj: Mapping) -> Mapping:
    spec = obj.get("spec") if isinstance(obj, Mapping) else None
    return spec if isinstance(spec, Mapping) else {}


def _object_name(obj: Mapping) -> str:
    metadata = obj.get("metadata") if isinstance(obj, Mapping) else None
    if isinstance(metadata, Mapping):
        return str(metadata.get("name") or metadata.get("generateName") or "")
    return ""


def _is_dns1123_subdomain(text: str) -> bool:
    return len(text) <= 253 and bool(_DNS1123_SUBDOMAIN_RE.match(text))


def _quoted(names: Sequence[str]) -> str:
    return ", ".join(repr(n) for n in names)


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
