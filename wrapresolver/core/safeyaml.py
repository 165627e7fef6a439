"""The one way this project reads YAML: safe tags only, and bounded work.

A few hundred bytes of anchors and aliases can stand for millions of nodes ("billion
laughs"): PyYAML builds them as shared objects cheaply, but everything after it (the rewrite,
the dump, a deep copy) expands them. And a deeply nested text makes PyYAML's recursive
composer overflow the stack. So every text is checked while it is composed, before any
Python object is built: its size, the number of aliases, the nesting depth, and the number
of nodes with every alias expanded (limits in `wrapresolver.limits`, each with its
environment variable). Recursive aliases are refused outright: no Tekton object is a cycle.

Used by `render` (files), the `pipelineref` param, and the controller (nested-resolver data).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import yaml

from wrapresolver.core.limits import YAML_MAX_ALIASES, YAML_MAX_BYTES, YAML_MAX_DEPTH, YAML_MAX_NODES, LimitError

YAMLError = yaml.YAMLError


class _BoundedLoader(yaml.SafeLoader):
    """SafeLoader whose composer counts depth and aliases as it goes."""

    def __init__(self, stream: str | bytes, origin: str) -> None:
        super().__init__(stream)
        self.origin = origin
        self.max_depth = YAML_MAX_DEPTH.int_value()
        self.max_aliases = YAML_MAX_ALIASES.int_value()
        self.depth = 0
        self.aliases = 0

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            self.aliases += 1
            if self.aliases > self.max_aliases:
                raise LimitError(f"{self.origin} uses more than {self.max_aliases} YAML aliases "
                                 f"({YAML_MAX_ALIASES.where()})")
            return super().compose_node(parent, index)
        self.depth += 1
        try:
            if self.depth > self.max_depth:
                mark = self.peek_event().start_mark
                raise LimitError(f"{self.origin} nests YAML deeper than {self.max_depth} levels at line "
                                 f"{mark.line + 1} ({YAML_MAX_DEPTH.where()})")
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _expanded_size(root: yaml.Node, origin: str, limit: int) -> int:
    """Nodes of `root` with every alias expanded; iterative, each distinct node visited once."""
    sizes: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            total = 1 + sum(sizes[id(child)] for child in _children(node))
            if total > limit:
                raise LimitError(f"{origin} expands to more than {limit} YAML nodes once its aliases "
                                 f"are resolved ({YAML_MAX_NODES.where()})")
            sizes[key] = total
            continue
        if key in sizes:
            continue
        if key in on_path:
            raise LimitError(f"{origin} holds a recursive YAML alias (a node that contains itself); "
                             "a Tekton object is never a cycle")
        on_path.add(key)
        stack.append((node, True))
        for child in _children(node):
            child_key = id(child)
            if child_key in on_path:
                raise LimitError(f"{origin} holds a recursive YAML alias (a node that contains itself); "
                                 "a Tekton object is never a cycle")
            if child_key not in sizes:
                stack.append((child, False))
    return sizes[id(root)]


def _children(node: yaml.Node) -> Iterator[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        yield from node.value
    elif isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield key
            yield value


def _check_size(text: str | bytes, origin: str) -> None:
    limit = YAML_MAX_BYTES.int_value()
    if len(text) > limit:
        raise LimitError(f"{origin} is {len(text)} bytes of YAML, more than {limit} ({YAML_MAX_BYTES.where()})")


def load_all(text: str | bytes, origin: str = "the YAML input") -> list[Any]:
    """Every document of `text`, as plain Python values; `LimitError` or `yaml.YAMLError` if refused."""
    _check_size(text, origin)
    loader = _BoundedLoader(text, origin)
    max_nodes = YAML_MAX_NODES.int_value()
    documents: list[Any] = []
    try:
        while loader.check_node():
            node = loader.get_node()
            _expanded_size(node, origin, max_nodes)
            documents.append(loader.construct_document(node))
    finally:
        loader.dispose()
    return documents


def load(text: str | bytes, origin: str = "the YAML input") -> Any:
    """The single document of `text` (None when empty); refuses a stream of several."""
    documents = load_all(text, origin)
    if len(documents) > 1:
        raise yaml.YAMLError(f"{origin} holds {len(documents)} YAML documents where one is expected")
    return documents[0] if documents else None


def check_tree(obj: Any, origin: str) -> None:
    """The same node and depth limits for an object that arrived as JSON (the API server).

    Shared sub-objects count each time they appear, as they would once serialised.
    Iterative, so a deep object cannot overflow the stack here.
    """
    max_nodes, max_depth = YAML_MAX_NODES.int_value(), YAML_MAX_DEPTH.int_value()
    count = 0
    stack: list[tuple[Any, int]] = [(obj, 1)]
    while stack:
        value, depth = stack.pop()
        count += 1
        if count > max_nodes:
            raise LimitError(f"{origin} has more than {max_nodes} nodes ({YAML_MAX_NODES.where()})")
        if isinstance(value, (dict, list)):
            if depth > max_depth:
                raise LimitError(f"{origin} nests deeper than {max_depth} levels ({YAML_MAX_DEPTH.where()})")
            items = value.values() if isinstance(value, dict) else value
            stack.extend((item, depth + 1) for item in items)
