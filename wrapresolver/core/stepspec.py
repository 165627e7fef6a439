"""The contract between the rewrite (resolution time) and the injected steps (run time).

The rewrite serialises one `WorkspaceTransfer` per wrapped workspace into the args of the
injected `wrap-fetch` / `wrap-store` steps (and of the `wrap-publish` finally task) as
compact JSON: `wrapresolver fetch --workspace '<json>' --workspace '<json>' ...`.
Values may still hold Tekton variables (`$(workspaces.src.path)`,
`$(context.pipelineRun.uid)`): Tekton substitutes them inside the embedded taskSpec before
the step starts (tekton-facts §5), so the step sees real values.

Keep this module pure. Compatibility: a request is answered by a controller of one
version, and the step image it writes into the answer is, by default, the image of that
same version (`step-image` pins it), so the JSON is an internal format between the two
halves of one release. It still carries a version: a step image reads its own version and
every older one (an answer resolved just before an upgrade can run on the new image), and
refuses a newer one with a message naming the fix, instead of guessing.

Version 2 (this one) writes only what differs from the defaults, and a fetch carries only
the fallbacks it can need (see core/plan.py): `fallback` maps each producer that may have stored
nothing to its own inputs, `order` lists every producer the fetch may meet in merge order.
A producer without a stored state and without a `fallback` entry is an error then: the
plan says it always stores before this task runs. Version 1 carried `graph` with every
reachable producer and fell back through all of them.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from wrapresolver.core.limits import JSON_MAX_BYTES, LimitError, shown
from wrapresolver.errors import NotFoundError

T = TypeVar("T")

SPEC_VERSION = 2
DEFAULT_MAX_LAYERS = 16
"""The most layers a published state keeps before a store squashes it into one (the
`max-layers` param's default; docs/transfer.md "Compaction" says how it was chosen). A spec
without `max_layers`, from the resolver of an older release, gets it too."""
STATE_DIR = "/wrap-state"
"""Where the fetch step leaves its record for the store step (an emptyDir both mount)."""
_DEFAULTS: dict[str, Any] = {
    "base": "", "bound": "true", "sub_path": "", "path": "", "base_required": False, "fill": "",
    "max_layers": DEFAULT_MAX_LAYERS, "stores": False,
}
_SPEC_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


@dataclass(frozen=True)
class ProducerNode:
    """A producer of the workspace, as the fetch step needs it for run-time fallbacks."""

    inputs: tuple[str, ...] = ()
    """Nearest upstream producers, in merge order (what this producer itself fetched)."""
    order: int = 0
    """Position in the deterministic topological order of the Pipeline (merge order)."""
    skippable: bool = True
    """It may have stored nothing (skipped, failed): then fall back to `inputs`. When False
    its state must exist, and a missing one is an error rather than a silent older state."""


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
_STRINGS = ("workspace", "target", "run", "task", "backend", "path", "bound", "sub_path", "base", "fill")


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
    """The producers a skipped/failed input can fall back to; empty when none can be missing.
    A producer missing from it counts as having no inputs (specs made by hand)."""
    base: str = ""
    """Initial content when no producer ran before (backend-specific reference), or empty."""
    options: Mapping[str, str] = field(default_factory=dict)
    """Backend options, validated at resolution time."""
    publish: bool = False
    """After storing, also write the final state of W to the exact `target`."""
    base_required: bool = False
    """A `base` that does not exist fails the fetch; by default the workspace starts empty
    (the first run of a carried cache). Written only when set: older step images fail then."""
    max_layers: int = DEFAULT_MAX_LAYERS
    """With `publish`: when the published state would have more layers than this, the step
    stores the whole state as one layer instead (its chain squashed); 0 never squashes.
    Written only when not the default."""
    results: tuple[str, ...] = ()
    """Files (`$(results.<name>.path)`) to write the states this step consumed (fetch, in
    merge order) or stored (store, publish) to, one `Artifact` each; empty: none. Older
    step images ignore it and write nothing, which Tekton accepts."""
    fill: str = ""
    """Fetch of a `readOnly` task workspace: where the fetch step alone mounts the workspace's
    volume writable (`$(workspaces.<task-ws>.volume)`), since Tekton mounts `path` read-only
    in every container. Fetch writes into the directory of that volume which `path` shows.
    Empty: write into `path`. An older step image ignores it and fails on the read-only
    `path`, loudly."""
    read_only: bool = False
    """Store of a `readOnly` task workspace the rewrite could not keep read-only (its pipeline
    workspace is optional, so its volume may not exist): store nothing, and fail the task,
    naming what it wrote, if it changed anything since fetch. Written only when set."""
    stores: bool = False
    """Fetch only: this task's store step will write the workspace, so the fetch checks,
    before the task's own steps run, that the target may be written. Written only when
    set; older step images ignore it (and check nothing)."""

    def to_json(self) -> str:
        """Compact, key-sorted JSON without default values: the same plan always gives the same bytes."""
        data: dict[str, Any] = {
            "backend": self.backend, "run": self.run, "target": self.target, "task": self.task,
            "v": SPEC_VERSION, "workspace": self.workspace,
        }
        for name, default in _DEFAULTS.items():
            if getattr(self, name) != default:
                data[name] = getattr(self, name)
        if self.inputs:
            data["inputs"] = list(self.inputs)
        if self.graph:
            data["order"] = sorted(self.graph, key=lambda n: (self.graph[n].order, n))
            fallback = {name: list(node.inputs) for name, node in self.graph.items() if node.skippable}
            if fallback:
                data["fallback"] = fallback
        if self.options:
            data["options"] = dict(self.options)
        if self.publish:
            data["publish"] = True
        if self.read_only:
            data["read_only"] = True
        if self.results:
            data["results"] = list(self.results)
        return _SPEC_JSON.encode(data)

    def with_results(self, results: Sequence[str]) -> WorkspaceTransfer:
        """This transfer with `results` set: `dataclasses.replace` for the one field the
        rewrite sets last, without re-running `__init__` over every field (thousands of
        times in a large Pipeline)."""
        out = object.__new__(WorkspaceTransfer)
        out.__dict__.update(self.__dict__)
        object.__setattr__(out, "results", tuple(results))
        return out

    @classmethod
    def from_json(cls, text: str) -> WorkspaceTransfer:
        """Parse one `--workspace` argument; `ValueError` naming the problem if it is not one.

        The text is a step argument anyone editing the Pipeline can change, so every field is
        checked for its type here and nothing reaches the backends half-formed.
        """
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
        version = data.pop("v", 1)
        if not isinstance(version, int) or isinstance(version, bool):
            raise ValueError(f"--workspace field `v` must be an integer, got {shown(version, 40)}")
        if version > SPEC_VERSION:
            raise ValueError(
                f"workspace spec version {version} is newer than this step image understands "
                f"({SPEC_VERSION}); use a step image at least as new as the resolver"
            )
        missing = [name for name in _REQUIRED if name not in data]
        if missing:
            raise ValueError(f"--workspace JSON lacks {', '.join(f'`{m}`' for m in missing)}")
        for name in _STRINGS:
            if name in data and not isinstance(data[name], str):
                raise ValueError(f"--workspace field `{name}` must be a string, got {shown(data[name], 40)}")
        for name in ("publish", "base_required", "read_only", "stores"):
            if name in data and not isinstance(data[name], bool):
                raise ValueError(f"--workspace field `{name}` must be true or false, got {shown(data[name], 40)}")
        max_layers = data.get("max_layers", DEFAULT_MAX_LAYERS)
        if not isinstance(max_layers, int) or isinstance(max_layers, bool) or max_layers < 0:
            raise ValueError(f"--workspace field `max_layers` must be a whole number, got {shown(max_layers, 40)}")
        data["inputs"] = _string_tuple(data.get("inputs", []), "inputs")
        if version >= 2:
            fallback = data.pop("fallback", {})
            if not isinstance(fallback, dict):
                raise ValueError("--workspace field `fallback` must be an object of producers")
            graph = _graph_v2(
                data["inputs"], _string_tuple(data.pop("order", []), "order"),
                {name: _string_tuple(inputs, f"fallback.{name}") for name, inputs in fallback.items()},
            )
        else:
            graph = _graph_v1(data.get("graph", {}))
        known = set(cls.__dataclass_fields__)
        data = {k: v for k, v in data.items() if k in known}
        data["results"] = _string_tuple(data.get("results", []), "results")
        data["graph"] = graph
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
        backends cannot disagree. A producer `graph` marks as never skippable must have a
        state: without one the fetch fails instead of starting from an older state.
        """
        found: dict[str, T] = {}
        missing: list[str] = []
        visited: set[str] = set()
        pending = list(reversed(self.inputs))
        while pending:
            producer = pending.pop()
            if producer in visited:
                continue
            visited.add(producer)
            state = lookup(producer)
            if state is not None:
                found[producer] = state
                continue
            node = self.graph.get(producer)
            if node is not None and not node.skippable:
                raise NotFoundError(
                    f"workspace {self.workspace!r}: producer {producer!r} has no stored state in "
                    f"this run, although it always stores before task {self.task!r} runs (it has "
                    f"no `when` and no `onError: continue`); its reference was deleted or never "
                    f"written to this target: run the Pipeline again"
                )
            missing.append(producer)
            pending.extend(reversed(node.inputs if node else ()))
        seen = {name: i for i, name in enumerate(found)}
        order = sorted(found, key=lambda p: (self.graph[p].order if p in self.graph else 1 << 30, seen[p]))
        return Inputs(tuple((p, found[p]) for p in order), tuple(missing))


def _graph_v1(graph: Any) -> dict[str, ProducerNode]:
    """Version 1's `graph`: every reachable producer with its inputs and merge position."""
    if not isinstance(graph, dict):
        raise ValueError("--workspace field `graph` must be an object of producers")
    nodes: dict[str, ProducerNode] = {}
    for name, node in graph.items():
        if not isinstance(node, dict):
            raise ValueError(f"--workspace graph entry {shown(name, 60)} must be an object")
        order = node.get("order", 0)
        if not isinstance(order, int) or isinstance(order, bool):
            raise ValueError(f"--workspace graph entry {shown(name, 60)}: `order` must be an integer")
        nodes[name] = ProducerNode(inputs=_string_tuple(node.get("inputs", []), f"graph.{name}.inputs"), order=order)
    return nodes


def _graph_v2(inputs: Sequence[str], order: Sequence[str], fallback: Mapping[str, Sequence[str]]) -> dict[str, ProducerNode]:
    """Every producer named gets a node; only those with a `fallback` entry may be missing."""
    position = {str(name): i for i, name in enumerate(order)}
    unknown = sorted(set(fallback) - set(position))
    if unknown:
        raise ValueError(f"workspace spec: fallback names {', '.join(unknown)}, which `order` does not list")
    for name in inputs:
        position.setdefault(str(name), len(position))
    return {
        name: ProducerNode(
            inputs=tuple(fallback.get(name, ())), order=i, skippable=name in fallback,
        )
        for name, i in position.items()
    }
