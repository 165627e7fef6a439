"""The contract between the rewrite (resolution time) and the injected steps (run time).

The rewrite serialises one `WorkspaceTransfer` per wrapped workspace into the args of the
injected `wrap-fetch` / `wrap-store` steps (and of the `wrap-publish` finally task) as
compact JSON: `wrapresolver fetch --workspace '<json>' --workspace '<json>' ...`.
Values may still hold Tekton variables (`$(workspaces.src.path)`,
`$(context.pipelineRun.uid)`): Tekton substitutes them inside the embedded taskSpec before
the step starts (tekton-facts §5), so the step sees real values.

Keep this module pure and stable: a rewritten Pipeline resolved by one version of the
controller may run with a step image of the next one, so fields are only ever added, with
defaults, never renamed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Mapping, TypeVar

T = TypeVar("T")

SPEC_VERSION = 1


@dataclass(frozen=True)
class ProducerNode:
    """A producer of the workspace, as the fetch step needs it for run-time fallbacks."""

    inputs: tuple[str, ...] = ()
    """Nearest upstream producers, in merge order (what this producer itself fetched)."""
    order: int = 0
    """Position in the deterministic topological order of the Pipeline (merge order)."""


@dataclass(frozen=True)
class Inputs(Generic[T]):
    """What a task starts from at run time: the states found, in merge order."""

    states: tuple[tuple[str, T], ...]
    """(producer, its stored state), in the Pipeline's order: later ones win conflicts."""
    fell_back: tuple[str, ...]
    """Producers without a stored state (skipped by `when`, failed) replaced by their inputs."""

    def notes(self) -> list[str]:
        return [f"{p} has no stored state, fell back to its inputs" for p in self.fell_back]


_REQUIRED = ("workspace", "target", "run", "task", "backend")
_STRINGS = ("workspace", "target", "run", "task", "backend", "path", "bound", "sub_path", "base")


def _string_tuple(value: Any, field_name: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ValueError(f"--workspace field `{field_name}` must be a list of strings")
    return tuple(value)


@dataclass(frozen=True)
class WorkspaceTransfer:
    """Everything one injected step needs to move one wrapped workspace of one task."""

    workspace: str
    """The pipeline workspace name (W)."""
    target: str
    """The user's target for W, workspace already substituted (`oci://reg/ci/run-src`)."""
    run: str
    """Run-unique part of every stored reference (`$(context.pipelineRun.uid)` usually)."""
    task: str
    """The pipeline task this step runs in (for `publish`: the publish task's name)."""
    backend: str
    """Backend name (entry point in `wrapresolver.backends`)."""
    path: str = ""
    """Where the workspace is mounted in the step: `$(workspaces.<task-ws>.path)`."""
    bound: str = "true"
    """`$(workspaces.<task-ws>.bound)` for optional task workspaces: "false" means skip."""
    sub_path: str = ""
    """The binding's subPath: the task sees (and stores) only this prefix of W."""
    inputs: tuple[str, ...] = ()
    """Producers whose merged output this task starts from, in merge order; empty: `base`."""
    graph: Mapping[str, ProducerNode] = field(default_factory=dict)
    """Every producer reachable through `inputs`, so a skipped/failed one can fall back."""
    base: str = ""
    """Initial content when no producer ran before (backend-specific reference), or empty."""
    options: Mapping[str, str] = field(default_factory=dict)
    """Backend options, validated at resolution time."""
    publish: bool = False
    """After storing, also write the final state of W to the exact `target`."""

    def to_json(self) -> str:
        """Compact, key-sorted JSON: the same plan always gives the same bytes."""
        data = {
            "backend": self.backend, "base": self.base, "bound": self.bound,
            "graph": {
                name: {"inputs": list(node.inputs), "order": node.order}
                for name, node in sorted(self.graph.items())
            },
            "inputs": list(self.inputs), "options": dict(sorted(self.options.items())),
            "path": self.path, "publish": self.publish, "run": self.run, "sub_path": self.sub_path,
            "target": self.target, "task": self.task, "v": SPEC_VERSION, "workspace": self.workspace,
        }
        return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> "WorkspaceTransfer":
        """Parse one `--workspace` argument; `ValueError` naming the problem if it is not one.

        The text is a step argument anyone editing the Pipeline can change, so every field is
        checked for its type here and nothing reaches the backends half-formed.
        """
        from wrapresolver.limits import JSON_MAX_BYTES, LimitError, shown

        limit = JSON_MAX_BYTES.int_value()
        if len(text) > limit:
            raise LimitError(f"--workspace JSON is {len(text)} bytes, more than {limit} ({JSON_MAX_BYTES.where()})")
        try:
            data = json.loads(text)
        except RecursionError:
            raise ValueError("--workspace JSON nests too deeply to be a workspace spec") from None
        except ValueError as exc:
            raise ValueError(f"--workspace is not valid JSON ({exc}): {shown(text, 80)}") from None
        if not isinstance(data, dict):
            raise ValueError(f"--workspace must be a JSON object with `workspace`, `target`, ..., got "
                             f"{type(data).__name__}: {shown(text, 80)}")
        version = data.pop("v", SPEC_VERSION)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"--workspace field `v` must be an integer, got {shown(version, 40)}")
        if version > SPEC_VERSION:
            raise ValueError(
                f"workspace spec version {version} is newer than this step image understands "
                f"({SPEC_VERSION}); use a step image at least as new as the resolver"
            )
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in data.items() if k in known}
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise ValueError(f"--workspace JSON lacks {', '.join(f'`{m}`' for m in missing)}")
        for name in _STRINGS:
            if name in data and not isinstance(data[name], str):
                raise ValueError(f"--workspace field `{name}` must be a string, got {shown(data[name], 40)}")
        if "publish" in data and not isinstance(data["publish"], bool):
            raise ValueError(f"--workspace field `publish` must be true or false, got {shown(data['publish'], 40)}")
        data["inputs"] = _string_tuple(data.get("inputs", []), "inputs")
        graph = data.get("graph", {})
        if not isinstance(graph, dict):
            raise ValueError("--workspace field `graph` must be an object of producers")
        nodes: dict[str, ProducerNode] = {}
        for name, node in graph.items():
            if not isinstance(node, dict):
                raise ValueError(f"--workspace graph entry {shown(name, 60)} must be an object")
            order = node.get("order", 0)
            if not isinstance(order, int) or isinstance(order, bool):
                raise ValueError(f"--workspace graph entry {shown(name, 60)}: `order` must be an integer")
            nodes[name] = ProducerNode(inputs=_string_tuple(node.get("inputs", []), f"graph.{name}.inputs"),
                                       order=order)
        data["graph"] = nodes
        options = data.get("options", {})
        if not isinstance(options, dict) or not all(isinstance(v, str) for v in options.values()):
            raise ValueError("--workspace field `options` must be an object of strings")
        data["options"] = dict(options)
        return cls(**data)

    def resolve_inputs(self, lookup: Callable[[str], T | None]) -> Inputs[T]:
        """Apply the run-time fallback rule (DESIGN §3) with `lookup(producer)` -> state or None.

        A producer with no stored state (skipped by `when`, or failed before its store)
        is replaced by its own inputs, recursively, through `graph`. The states found are
        ordered by the producers' position in the Pipeline, so every backend merges fan-in
        the same way. Written once here so the layered engine and whole-directory
        backends cannot disagree.
        """
        found: dict[str, T] = {}
        missing: list[str] = []
        visited: set[str] = set()

        def visit(producer: str) -> None:
            if producer in visited:
                return
            visited.add(producer)
            state = lookup(producer)
            if state is not None:
                found[producer] = state
                return
            missing.append(producer)
            node = self.graph.get(producer)
            for upstream in node.inputs if node else ():
                visit(upstream)

        for producer in self.inputs:
            visit(producer)
        seen = {name: i for i, name in enumerate(found)}
        order = sorted(found, key=lambda p: (self.graph[p].order if p in self.graph else 1 << 30, seen[p]))
        return Inputs(tuple((p, found[p]) for p in order), tuple(missing))
