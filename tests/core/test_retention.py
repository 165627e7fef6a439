"""The retention policy: spellings, defaults, and when a run's states are due."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wrapresolver.core.retention import (
    DELETE_ON_COMPLETION,
    DELETE_ON_SUCCESS,
    KEEP,
    KEEP_FOR,
    Retention,
    parse_duration,
    parse_retention,
    retention_of,
)
from wrapresolver.errors import ParamError


@given(st.lists(st.tuples(st.integers(0, 10_000), st.sampled_from("smhdw")), min_size=1, max_size=4))
def test_a_duration_is_the_sum_of_its_parts(parts: list[tuple[int, str]]) -> None:
    seconds = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    text = "".join(f"{n}{u}" for n, u in parts)
    assert parse_duration(text) == sum(n * seconds[u] for n, u in parts)


@pytest.mark.parametrize("text", ["", "7", "d", "7 d", "1.5h", "7days", "-1d", "7d junk"])
def test_what_is_not_a_duration_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="is not a duration"):
        parse_duration(text)


@pytest.mark.parametrize(("spelled", "policy", "delay", "canonical"), [
    ("delete-on-completion", DELETE_ON_COMPLETION, 0, "delete-on-completion"),
    ("delete-on-success", DELETE_ON_SUCCESS, 0, "delete-on-success"),
    ("keep", KEEP, 0, "keep"),
    ("keep-for 12h", KEEP_FOR, 43200, "keep-for 12h"),
    ("  keep-for   7d ", KEEP_FOR, 604800, "keep-for 7d"),
    ("", DELETE_ON_COMPLETION, 0, "delete-on-completion"),
])
def test_each_policy_parses_to_its_canonical_spelling(spelled: str, policy: str, delay: float, canonical: str) -> None:
    parsed = parse_retention(spelled)
    assert (parsed.policy, parsed.delay, parsed.text()) == (policy, delay, canonical)


@pytest.mark.parametrize(("spelled", "message"), [
    ("delete", "write one of: delete-on-completion"),
    ("keep 7d", "write one of"),
    ("keep-for", "needs one duration"),
    ("keep-for soon", "is not a duration"),
    (7, "must be a string"),
])
def test_a_wrong_policy_names_the_choices(spelled: object, message: str) -> None:
    with pytest.raises(ParamError, match=message):
        parse_retention(spelled)


def test_the_param_wins_over_the_configmap_default_which_wins_over_the_builtin_default() -> None:
    config = {"default-retention": "keep-for 1d"}
    assert retention_of([{"name": "retention", "value": "keep"}], config).policy == KEEP
    assert retention_of([{"name": "target", "value": "x"}], config).text() == "keep-for 1d"
    assert retention_of([], {}).policy == DELETE_ON_COMPLETION
    with pytest.raises(ParamError, match="`default-retention` in the ConfigMap"):
        retention_of([], {"default-retention": "forever"})


@pytest.mark.parametrize(("policy", "outcome", "deleted", "due"), [
    ("delete-on-completion", "succeeded", False, 0.0),
    ("delete-on-completion", "failed", False, 0.0),
    ("delete-on-completion", "running", False, None),
    ("delete-on-completion", "running", True, 0.0),
    ("delete-on-success", "succeeded", False, 0.0),
    ("delete-on-success", "failed", False, None),
    ("delete-on-success", "failed", True, 0.0),
    ("keep-for 2h", "failed", False, 7200.0),
    ("keep-for 2h", "running", True, 0.0),
    ("keep", "succeeded", False, None),
    ("keep", "succeeded", True, None),
])
def test_a_run_still_going_is_never_due_and_keep_never_is(policy: str, outcome: str, deleted: bool, due: float | None) -> None:
    assert parse_retention(policy).due(outcome, deleted) == due


def test_the_default_is_delete_on_completion() -> None:
    assert Retention().text() == "delete-on-completion"
