import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapresolver.core.plan import Binding, build_dag, plan_workspace, result_references
from wrapresolver.core.stepspec import ProducerNode
from wrapresolver.errors import RewriteError


def task(name, run_after=(), binds=True, read_only=False, when=None, params=None, matrix=None, on_error=None):
    t = {"name": name, "taskSpec": {"steps": [{"image": "x", "script": "true"}]}}
    if run_after:
        t["runAfter"] = list(run_after)
    if when:
        t["when"] = when
    if on_error:
        t["onError"] = on_error
    if params:
        t["params"] = params
    if matrix:
        t["matrix"] = matrix
    t["_binds"], t["_ro"] = binds, read_only
    return t


def plan(tasks, final=()):
    spec = {"tasks": tasks, "finally": list(final)}
    dag = build_dag(spec)
    finals = {t["name"] for t in final}
    bindings = {
        t["name"]: Binding(t["name"], "ws", read_only=t["_ro"], is_finally=t["name"] in finals,
                           matrix=bool(t.get("matrix")))
        for t in list(tasks) + list(final) if t["_binds"]
    }
    return plan_workspace(spec, dag, "src", bindings)


def test_linear_chain_fetches_only_the_previous_producer():
    p = plan([task("a"), task("b", ["a"]), task("c", ["b"])])
    assert p.producers == ("a", "b", "c")
    assert p.inputs == {"a": (), "b": ("a",), "c": ("b",)}
    assert p.graph["c"] == ProducerNode(inputs=("b",), order=2)
    assert p.publisher == "c" and not p.needs_publish_task


def test_fan_in_merges_parallel_branches_in_listed_order():
    p = plan([task("clone"), task("right", ["clone"]), task("left", ["clone"]), task("join", ["left", "right"])])
    # Ties in the topological order keep the order of `tasks:`: right was listed first.
    assert p.order == ("clone", "right", "left", "join")
    assert p.inputs["join"] == ("right", "left")
    assert p.inputs["right"] == p.inputs["left"] == ("clone",)


def test_result_references_order_tasks_like_run_after():
    p = plan([
        task("b", params=[{"name": "x", "value": "$(tasks.a.results.sha)"}]),
        task("a"),
        task("c", when=[{"input": "$(tasks.b.results.ok)", "operator": "in", "values": ["y"]}]),
    ])
    assert p.order == ("a", "b", "c")
    assert p.inputs == {"a": (), "b": ("a",), "c": ("b",)}


def test_result_references_are_found_in_params_when_and_matrix():
    t = {
        "params": [{"name": "p", "value": ["$(tasks.one.results.r)", "lit"]}],
        "when": [{"input": "x", "operator": "in", "values": ["$(tasks.two.results.r[*])"]}],
        "matrix": {"params": [{"name": "m", "value": "$(tasks.three.results.list[*])"}]},
    }
    assert result_references(t) == {"one", "two", "three"}


def test_a_consumer_skips_over_read_only_tasks_to_the_nearest_producer():
    p = plan([task("a"), task("lint", ["a"], read_only=True), task("b", ["lint"])])
    assert p.producers == ("a", "b")
    assert p.inputs["lint"] == ("a",) and p.inputs["b"] == ("a",)


def test_tasks_not_binding_the_workspace_still_order_it():
    p = plan([task("a"), task("gate", ["a"], binds=False), task("b", ["gate"])])
    assert "gate" not in p.bindings
    assert p.inputs["b"] == ("a",)


def test_ancestors_of_a_nearest_producer_are_not_fetched_twice():
    p = plan([task("a"), task("b", ["a"]), task("c", ["a", "b"])])
    assert p.inputs["c"] == ("b",)


def test_graph_lets_a_consumer_fall_back_past_a_skipped_producer():
    when = [{"input": "$(params.x)", "operator": "in", "values": ["y"]}]
    p = plan([task("a"), task("maybe", ["a"], when=when), task("b", ["maybe"])])
    assert p.inputs["b"] == ("maybe",)
    # a has no `when`: if b runs, a has stored, so b needs no fallback past it.
    assert p.fallback_graph("b") == {
        "maybe": ProducerNode(inputs=("a",), order=1),
        "a": ProducerNode(inputs=(), order=0, skippable=False),
    }


WHEN = [{"input": "$(params.x)", "operator": "in", "values": ["y"]}]


def chain(n, guarded=()):
    return [task(f"t{i}", [f"t{i - 1}"] if i else (), when=WHEN if i in guarded else None) for i in range(n)]


def test_producers_that_always_run_carry_no_fallback_into_dag_fetches():
    p = plan(chain(6))
    assert p.skippable == frozenset()
    assert all(p.fallback_graph(f"t{i}") == {} for i in range(6))


def test_a_when_in_the_middle_of_a_chain_gives_only_its_neighbours_a_fallback():
    p = plan(chain(8, guarded={3}))
    assert p.skippable == {"t3"}
    assert p.fallback_graph("t4") == {
        "t3": ProducerNode(inputs=("t2",), order=3),
        "t2": ProducerNode(order=2, skippable=False),
    }
    assert p.fallback_graph("t5") == {} and p.fallback_graph("t3") == {}


def test_consecutive_whens_fall_back_through_all_of_them():
    p = plan(chain(5, guarded={2, 3}))
    assert set(p.fallback_graph("t4")) == {"t3", "t2", "t1"}
    assert p.fallback_graph("t4")["t1"].skippable is False


def test_on_error_continue_makes_a_producer_skippable_but_stop_and_fail_does_not():
    p = plan([task("a"), task("b", ["a"], on_error="continue"), task("c", ["b"]),
              task("d", ["c"], on_error="stopAndFail"), task("e", ["d"])])
    assert p.skippable == {"b"}
    assert p.fallback_graph("c")["b"].inputs == ("a",) and p.fallback_graph("e") == {}
    # The single leaf is not guarded by a when, but a leaf that may fail and go on is.
    q = plan([task("a"), task("b", ["a"], on_error="$(params.mode)")])
    assert q.skippable == {"b"} and q.publisher == ""


def test_finally_falls_back_past_any_dag_producer_since_it_runs_after_failures():
    p = plan(chain(4), final=[task("report", read_only=True)])
    assert p.inputs["report"] == ("t3",)
    graph = p.fallback_graph("report")
    assert graph == {f"t{i}": ProducerNode(inputs=(f"t{i - 1}",) if i else (), order=i) for i in range(4)}


@st.composite
def _random_dags(draw):
    """Tasks t0..tn-1, each after up to 3 earlier ones, most binding the workspace."""
    n = draw(st.integers(1, 25))
    tasks = []
    for i in range(n):
        after = draw(st.lists(st.integers(0, i - 1), max_size=min(i, 3), unique=True)) if i else []
        tasks.append(task(f"t{i}", [f"t{j}" for j in after], binds=draw(st.booleans()) or i == 0,
                          read_only=draw(st.integers(0, 9)) < 3))
    return tasks


@settings(max_examples=60, deadline=None)
@given(_random_dags())
def test_nearest_producers_match_the_definition_on_random_dags(tasks):
    p = plan(tasks)
    parents = {t["name"]: set(t.get("runAfter", ())) for t in tasks}

    def ancestors(name: str) -> set[str]:
        seen: set[str] = set()
        pending = list(parents[name])
        while pending:
            parent = pending.pop()
            if parent not in seen:
                seen.add(parent)
                pending.extend(parents[parent])
        return seen

    for name, found in p.inputs.items():
        upstream = [q for q in p.producers if q in ancestors(name)]
        expected = [q for q in upstream if not any(q in ancestors(o) for o in upstream if o != q)]
        assert found == tuple(sorted(expected, key=p.order.index)), (tasks, name)


def test_finally_sees_all_leaf_producers():
    p = plan([task("a"), task("x", ["a"]), task("y", ["a"])], final=[task("report", read_only=True)])
    assert p.inputs["report"] == ("x", "y")
    # Two leaves: no single store step knows it is last, so a publish task is needed.
    assert p.publisher == "" and p.publish_inputs == ("x", "y") and p.needs_publish_task


def test_single_finally_producer_publishes_its_own_state():
    p = plan([task("a"), task("b", ["a"])], final=[task("notes")])
    assert p.inputs["notes"] == ("b",)
    assert p.publisher == "notes" and not p.needs_publish_task


def test_a_guarded_leaf_does_not_publish_itself():
    when = [{"input": "$(params.deploy)", "operator": "in", "values": ["true"]}]
    p = plan([task("a", when=when), task("b", ["a"])])
    # b runs even when a is skipped, but a skipped leaf would publish nothing: use a publish task.
    assert p.publisher == "" and p.publish_inputs == ("b",)


def test_matrix_tasks_only_consume():
    p = plan([task("a"), task("m", ["a"], matrix={"params": [{"name": "v", "value": ["1", "2"]}]})])
    assert p.producers == ("a",)
    assert p.inputs["m"] == ("a",)


def test_no_producer_means_nothing_to_publish():
    p = plan([task("a", read_only=True)])
    assert p.producers == () and not p.needs_publish_task and p.inputs["a"] == ()


def test_cycles_are_reported_with_the_tasks_involved():
    with pytest.raises(RewriteError, match="cycle.*a, b"):
        plan([task("a", ["b"]), task("b", ["a"])])


def test_unknown_run_after_names_the_task():
    with pytest.raises(RewriteError, match="'b' runs after 'nope'"):
        plan([task("b", ["nope"])])


def test_same_pipeline_gives_the_same_plan():
    tasks = [task("a"), task("c", ["a"]), task("b", ["a"]), task("d", ["b", "c"])]
    assert plan(tasks) == plan(tasks)
