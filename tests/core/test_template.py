import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wrapresolver.core.params import RunContext
from wrapresolver.core.template import (
    RUN_UID_VARIABLE,
    check_variables,
    expand_target,
    has_workspace_placeholder,
    run_id,
    split_scheme,
)
from wrapresolver.errors import ParamError

KNOWN = RunContext(name="run-1", namespace="ci", uid="0b1c")


def test_both_workspace_spellings_are_replaced():
    assert expand_target("oci://reg/ci/<<workspace>>", "src", RunContext()) == "oci://reg/ci/src"
    assert expand_target("oci://reg/ci/{{workspace}}", "src", RunContext()) == "oci://reg/ci/src"
    assert expand_target("s3://b/<<workspace>>/{{workspace}}", "w", RunContext()) == "s3://b/w/w"


def test_known_run_context_is_substituted():
    template = "oci://reg/$(context.pipelineRun.namespace)/$(context.pipelineRun.name)-<<workspace>>:$(context.pipelineRun.uid)"
    assert expand_target(template, "cache", KNOWN) == "oci://reg/ci/run-1-cache:0b1c"


def test_unknown_run_context_is_left_for_tekton():
    template = "oci://reg/$(context.pipelineRun.name)-<<workspace>>"
    assert expand_target(template, "src", RunContext(namespace="ci")) == "oci://reg/$(context.pipelineRun.name)-src"


def test_other_tekton_variables_are_left_as_they_are():
    template = "oci://$(params.registry)/$(context.pipeline.name)/$(context.pipelineRun.unknown)-<<workspace>>"
    assert expand_target(template, "src", KNOWN) == (
        "oci://$(params.registry)/$(context.pipeline.name)/$(context.pipelineRun.unknown)-src"
    )


def test_target_without_placeholder_is_unchanged():
    assert expand_target("oci://reg/ci/shared:tag", "src", RunContext()) == "oci://reg/ci/shared:tag"
    assert not has_workspace_placeholder("oci://reg/ci/shared:tag")
    assert has_workspace_placeholder("oci://reg/ci/{{workspace}}")


def test_split_scheme():
    assert split_scheme("oci://reg/ci/x:1") == ("oci", "reg/ci/x:1")
    assert split_scheme("S3://bucket/prefix") == ("s3", "bucket/prefix")
    assert split_scheme("gs://bucket") == ("gs", "bucket")
    assert split_scheme("file:///var/cache/ws") == ("file", "/var/cache/ws")
    assert split_scheme("registry.example:5000/ci/x:1") == ("", "registry.example:5000/ci/x:1")
    assert split_scheme("localhost/x") == ("", "localhost/x")


def test_run_id_is_the_uid_or_tekton_variable():
    assert run_id(KNOWN) == "0b1c"
    assert run_id(RunContext(name="run-1")) == RUN_UID_VARIABLE == "$(context.pipelineRun.uid)"


@given(st.text(alphabet=st.characters(blacklist_characters="$"), max_size=60))
def test_a_target_without_tekton_variables_passes_the_variable_check(text):
    check_variables("param `target`", text)


@given(st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True), st.sampled_from(["params.{}", "params['{}']", 'params["{}"]']))
def test_every_spelling_of_a_param_left_in_a_target_is_refused_naming_it(name, spelling):
    with pytest.raises(ParamError, match=rf"does not set param '{re.escape(name)}'"):
        check_variables("param `target`", f"oci://registry.example/$({spelling.format(name)})-<<workspace>>")


@pytest.mark.parametrize("variable", ["context.pipelineRun.name", "context.pipelineRun.namespace",
                                      "context.pipelineRun.uid", "context.pipeline.name"])
def test_the_run_wide_context_variables_pass_the_variable_check(variable):
    check_variables("param `target`", f"oci://registry.example/$({variable})-<<workspace>>")
