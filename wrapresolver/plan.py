"""The plan: who produces and who consumes one wrapped workspace, and in which order.

Pure: a Pipeline spec in, values out. The rewrite turns a `WorkspacePlan` into the args of
the injected steps; the fetch step turns the `graph` back into concrete states at run time,
when it knows which producers really stored something (a skipped or failed producer has
no reference, and its consumers fall back to that producer's own inputs).

Why "nearest upstream producers" and not "every producer before me": the nearest ones
already contain the states of their own ancestors (each producer stores its input plus its
changes), so fetching more would apply the same layers twice.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from wrapresolver.core.stepspec import ProducerNode
from wrapresolver.errors import RewriteError

_TASK_REF_RE = re.compile(r"\$\(tasks\.([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.(?:results|matrix)\b")


@dataclass(frozen=True)
class Binding:
    """How one pipeline task binds the workspace."""

    task: str
    task_workspace: str
    """The workspace's name inside the task (`output` for `{name: output, workspace: src}`)."""
    sub_path: str = ""
    read_only: bool = False
    is_finally: bool = False
    matrix: bool = False


@dataclass(frozen=True)
class WorkspacePlan:
    """Everything the rewrite needs to wire one wrapped workspace."""

    workspace: str
    order: tuple[str, ...]
    """Every pipeline task, DAG tasks in deterministic topological order, then `finally`."""
    bindings: Mapping[str, Binding]
    """Consumers (every task binding the workspace) by task name."""
    producers: tuple[str, ...]
    """Consumers that store, in `order`."""
    inputs: Mapping[str, tuple[str, ...]]
    """Per consumer: the producers whose merged output it starts from, in merge order."""
    graph: Mapping[str, ProducerNode]
    """Every producer with its own inputs and its position in `order`."""
    publisher: str = ""
    """The producer whose store step also writes the exact target; empty when a publish task must."""
    publish_inputs: tuple[str, ...] = ()
    """What a separate publish task merges into the exact target (the leaf DAG producers)."""
    final_producers: tuple[str, ...] = ()
    """Producers in `finally` (not part of what a separate publish task writes)."""

    @property
    def consumers(self) -> tuple[str, ...]:
        return tuple(t for t in self.order if t in self.bindings)

    def graph_for(self, inputs: Iterable[str]) -> dict[str, ProducerNode]:
        """The part of `graph` reachable from `inputs`: what a fetch needs for fallbacks."""
        out: dict[str, ProducerNode] = {}
        pending = list(inputs)
        while pending:
            name = pending.pop()
            if name in out:
                continue
            node = self.graph[name]
            out[name] = node
            pending.extend(node.inputs)
        return out

    @property
    def needs_publish_task(self) -> bool:
        return bool(self.producers) and not self.publisher


@dataclass(frozen=True)
class Dag:
    """Ordering of the pipeline's tasks: the edges Tekton itself derives."""

    order: tuple[str, ...]
    finally_tasks: tuple[str, ...]
    parents: Mapping[str, frozenset[str]]
    ancestors: Mapping[str, frozenset[str]] = field(default_factory=dict)


def build_dag(spec: Mapping) -> Dag:
    """Edges from `runAfter` and `$(tasks.X.results...)` in params, when and matrix.

    The order is Kahn's algorithm with ties broken by the position in `tasks:`, so the
    same Pipeline always gives the same order (it decides the merge order of fan-in).
    Invalid graphs are Tekton's to reject too, but we must not loop or guess: a cycle or an
    unknown task is a `RewriteError`.
    """
    tasks = [t for t in (spec.get("tasks") or []) if isinstance(t, Mapping)]
    finally_tasks = [t for t in (spec.get("finally") or []) if isinstance(t, Mapping)]
    names = [str(t.get("name", "")) for t in tasks]
    known = set(names)
    position = {name: i for i, name in enumerate(names)}
    parents: dict[str, frozenset[str]] = {}
    for task in tasks:
        name = str(task.get("name", ""))
        deps = set(str(d) for d in (task.get("runAfter") or []))
        deps |= result_references(task)
        unknown = sorted(deps - known)
        if unknown:
            raise RewriteError(
                f"pipeline task {name!r} runs after {', '.join(map(repr, unknown))}, which the "
                f"Pipeline does not have (check runAfter and $(tasks.X.results...) references)"
            )
        parents[name] = frozenset(deps)

    order: list[str] = []
    placed: set[str] = set()
    remaining = list(names)
    while remaining:
        ready = [n for n in remaining if parents[n] <= placed]
        if not ready:
            raise RewriteError(
                f"the Pipeline's tasks form a cycle through runAfter or result references: "
                f"{', '.join(sorted(remaining, key=position.__getitem__))}"
            )
        # Only the first ready task is placed per round: ties keep their listed order.
        chosen = min(ready, key=position.__getitem__)
        order.append(chosen)
        placed.add(chosen)
        remaining.remove(chosen)

    ancestors: dict[str, frozenset[str]] = {}
    for name in order:
        acc: set[str] = set(parents[name])
        for parent in parents[name]:
            acc |= ancestors[parent]
        ancestors[name] = frozenset(acc)

    final_names = tuple(str(t.get("name", "")) for t in finally_tasks)
    for name in final_names:
        parents[name] = frozenset()
        ancestors[name] = frozenset(order)
    return Dag(tuple(order), final_names, parents, ancestors)


def result_references(task: Mapping) -> set[str]:
    """Tasks whose results (or matrix length) this task reads in params, when or matrix."""
    found: set[str] = set()
    for part in (task.get("params"), task.get("when"), task.get("matrix")):
        for text in _strings(part):
            found.update(m.group(1) for m in _TASK_REF_RE.finditer(text))
    return found


def _strings(value: Any) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


def has_when(task: Mapping) -> bool:
    return bool(task.get("when"))


def plan_workspace(
    spec: Mapping, dag: Dag, workspace: str, bindings: Mapping[str, Binding]
) -> WorkspacePlan:
    """The producer/consumer plan of `workspace` given how each task binds it."""
    all_tasks = {str(t.get("name", "")): t for t in _all_tasks(spec)}
    order = dag.order + dag.finally_tasks
    index = {name: i for i, name in enumerate(order)}

    producers = tuple(
        name for name in order
        if name in bindings and not bindings[name].read_only and not bindings[name].matrix
    )
    dag_producers = [p for p in producers if not bindings[p].is_finally]
    final_producers = tuple(p for p in producers if bindings[p].is_finally)
    leaves = _maximal(dag_producers, dag.ancestors, index)

    inputs: dict[str, tuple[str, ...]] = {}
    for name in order:
        if name not in bindings:
            continue
        if bindings[name].is_finally:
            inputs[name] = leaves
        else:
            upstream = [p for p in dag_producers if p in dag.ancestors[name]]
            inputs[name] = _maximal(upstream, dag.ancestors, index)

    graph = {p: ProducerNode(inputs=inputs[p], order=index[p]) for p in producers}

    publisher = ""
    if len(final_producers) == 1 and not has_when(all_tasks[final_producers[0]]):
        publisher = final_producers[0]
    elif not final_producers and len(leaves) == 1:
        leaf = leaves[0]
        guarded = [t for t in (leaf, *dag.ancestors[leaf]) if has_when(all_tasks[t])]
        if not guarded:
            publisher = leaf
    return WorkspacePlan(
        workspace=workspace,
        order=order,
        bindings=dict(bindings),
        producers=producers,
        inputs=inputs,
        graph=graph,
        publisher=publisher,
        publish_inputs=leaves if not publisher else (),
        final_producers=final_producers,
    )


def _maximal(candidates: Sequence[str], ancestors: Mapping[str, frozenset[str]], index: Mapping[str, int]) -> tuple[str, ...]:
    """Candidates that are not an ancestor of another candidate, in topological order."""
    chosen = [
        c for c in candidates
        if not any(c in ancestors[other] for other in candidates if other != c)
    ]
    return tuple(sorted(chosen, key=index.__getitem__))


def _all_tasks(spec: Mapping) -> list[Mapping]:
    return [t for t in (spec.get("tasks") or []) + (spec.get("finally") or []) if isinstance(t, Mapping)]
