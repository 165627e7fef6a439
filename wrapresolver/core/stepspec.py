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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

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
    def from_json(cls, text: str) -> WorkspaceTransfer:
        data: dict[str, Any] = json.loads(text)
        version = data.pop("v", SPEC_VERSION)
        if version > SPEC_VERSION:
            raise ValueError(
                f"workspace spec version {version} is newer than this step image understands "
                f"({SPEC_VERSION}); use a step image at least as new as the resolver"
            )
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in data.items() if k in known}
        data["inputs"] = tuple(data.get("inputs", ()))
        data["graph"] = {
            name: ProducerNode(inputs=tuple(node.get("inputs", ())), order=int(node.get("order", 0)))
            for name, node in data.get("graph", {}).items()
        }
        data["options"] = dict(data.get("options", {}))
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
