"""The answer as bytes: compact JSON for the ResolutionRequest, deterministic YAML for people.

Its own module because it is the hot path of large answers (docs/performance.md, "plan and
rewrite"): both writers were tuned with profiles, and neither knows anything of Tekton.
"""

from __future__ import annotations

import datetime
import io
import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import yaml

from wrapresolver.errors import RewriteError
from wrapresolver.pycollector import paused_gc


def to_json(obj: Any, pipeline: str = "") -> bytes:
    """The answer as the ResolutionRequest carries it: compact JSON, same object, same bytes.

    Tekton decodes `status.data` as JSON or YAML (tekton-facts §4), and JSON is the smaller
    and by far the faster of the two to write: block YAML indents every level and quotes
    every step argument that holds JSON, and libyaml's emitter took two thirds of the time
    of a 2,000-task request, where `json` needs less than a tenth of what it took. Key
    order is kept and the text is ASCII (`\\u` escapes), so any JSON or YAML reader reads
    it. `render` prints the same object as YAML for people.
    """
    try:
        return _ANSWER_JSON.encode(obj).encode("ascii")
    except (TypeError, ValueError) as exc:  # NaN/Infinity, or a value JSON has no form for
        name = f" {pipeline!r}" if pipeline else ""
        raise RewriteError(f"the rewritten Pipeline{name} cannot be written as JSON: {exc}") from None


def _plain(obj: Any) -> Any:
    """JSON for what a YAML file can hold besides plain data: dates as they were written."""
    if isinstance(obj, (datetime.date, datetime.time)):
        return obj.isoformat()
    if isinstance(obj, Mapping):
        return dict(obj)
    if isinstance(obj, (tuple, set, frozenset)):
        return list(obj)
    if isinstance(obj, bytes):
        raise TypeError("a binary value (YAML `!!binary`) has no place in a Tekton Pipeline")
    raise TypeError(f"a value of type {type(obj).__name__}")


_ANSWER_JSON = json.JSONEncoder(ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=_plain)


def to_yaml(obj: Any) -> bytes:
    """Deterministic YAML: same object, same bytes; key order kept, no anchors, scripts as blocks.

    The nodes are built here in one pass instead of by PyYAML's representer, whose
    per-object dispatch was most of the time for large Pipelines; the output is the same as
    `yaml.dump(..., default_flow_style=False, sort_keys=False, allow_unicode=True, width=4096)`.
    """
    stream = io.StringIO()
    dumper = _Dumper(stream, default_flow_style=False, allow_unicode=True, width=4096, sort_keys=False)
    dumper.tags_seen = {}
    # Millions of short-lived node objects and no cycles among them: the cyclic collector's
    # repeated passes over them took almost half the time of a 3 MiB answer.
    with paused_gc():
        try:
            dumper.open()
            dumper.serialize(_node(obj, dumper))
            dumper.close()
        finally:
            dumper.dispose()
    return stream.getvalue().encode("utf-8")


_STR, _MAP, _SEQ = "tag:yaml.org,2002:str", "tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"


def _node(obj: Any, dumper: Any) -> yaml.Node:
    """Plain mappings, sequences and scalars as YAML nodes, so the dumper never emits Python tags."""
    kind = type(obj)
    if kind is str:
        return _Scalar(_STR, obj, style="|" if "\n" in obj else None)
    if kind is dict or (kind is not list and isinstance(obj, Mapping)):
        items = []
        for k, v in obj.items():
            k = k if type(k) is str else str(k)
            key = _Scalar(_STR, k, style="|" if "\n" in k else None)
            if type(v) is str:
                items.append((key, _Scalar(_STR, v, style="|" if "\n" in v else None)))
            else:
                items.append((key, _node(v, dumper)))
        return _Mapping(_MAP, items, flow_style=False)
    if kind is list or kind is tuple:
        return _Sequence(_SEQ, [_node(v, dumper) for v in obj], flow_style=False)
    if isinstance(obj, str):
        return _Scalar(_STR, obj, style="|" if "\n" in obj else None)
    if isinstance(obj, (list, tuple)):
        return _Sequence(_SEQ, [_node(v, dumper) for v in obj], flow_style=False)
    return dumper.represent_data(obj)


_Scalar, _Mapping, _Sequence = yaml.ScalarNode, yaml.MappingNode, yaml.SequenceNode


# libyaml's emitter when PyYAML has it: a large Pipeline serialises several times faster.
# Lists come out the way `kubectl get -o yaml` writes them (`- ` at the key's indentation).
if TYPE_CHECKING:  # the C emitter has the same interface
    from yaml import SafeDumper as _BaseDumper
else:
    _BaseDumper = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


class _Dumper(_BaseDumper):
    def ignore_aliases(self, data: Any) -> bool:
        return True

    def resolve(self, kind: Any, value: Any, implicit: Any) -> str:
        # The emitter asks twice per scalar whether its plain form would read back as the
        # same type; the answer depends on the text alone and Pipelines repeat their texts.
        if kind is not _Scalar:
            return _BaseDumper.resolve(self, kind, value, implicit)
        key = (value, implicit)
        tag = self.tags_seen.get(key)
        if tag is None:
            tag = self.tags_seen[key] = _BaseDumper.resolve(self, kind, value, implicit)
        return tag
