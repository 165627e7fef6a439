import pytest

from wrapresolver.backends.registry import REGISTRY
from wrapresolver.core.params import (
    DEFAULT_STEP_IMAGE,
    PipelineRef,
    RunContext,
    WrapRequest,
    parse_request,
    wrapped_workspaces,
)
from wrapresolver.errors import ParamError

CONTEXT = RunContext(name="run-1", namespace="ci", uid="u-1")


def params(**values):
    return [{"name": name, "value": value} for name, value in values.items()]


def parse(config=None, context=CONTEXT, **values):
    return parse_request(params(**values), config or {}, context, REGISTRY)


def pipeline(*workspaces):
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "Pipeline",
        "metadata": {"name": "build"},
        "spec": {"workspaces": [{"name": w} for w in workspaces], "tasks": []},
    }


def pipelinerun(**bindings):
    return {
        "apiVersion": "tekton.dev/v1",
        "kind": "PipelineRun",
        "metadata": {"name": "run-1"},
        "spec": {"workspaces": [{"name": n, **b} for n, b in bindings.items()]},
    }


def request(workspaces=(), target="oci://reg/ci/<<workspace>>", pipelinerun=None):
    return WrapRequest(
        pipelineref=PipelineRef(name="build"),
        workspaces=tuple(workspaces),
        target=target,
        backend="oci",
        context=RunContext(name="run-1", namespace="ci", pipelinerun=pipelinerun),
    )


# ---- parse_request ----

def test_minimal_request_is_typed():
    req = parse(pipelineref="build", target="oci://registry.example/ci/<<workspace>>")
    assert req.pipelineref == PipelineRef(name="build")
    assert req.target == "oci://registry.example/ci/<<workspace>>"
    assert req.backend == "oci"
    assert req.workspaces == ()
    assert req.base == ""
    assert req.step_image == DEFAULT_STEP_IMAGE
    assert req.context == CONTEXT


def test_workspaces_as_comma_string_or_array_are_the_same():
    a = parse(pipelineref="build", target="oci://r/x/<<workspace>>", workspaces="sources, cache")
    b = parse(pipelineref="build", target="oci://r/x/<<workspace>>", workspaces=["sources", "cache"])
    assert a.workspaces == b.workspaces == ("sources", "cache")


def test_empty_workspaces_param_is_rejected():
    for value in ("", " , ", []):
        with pytest.raises(ParamError, match=r"param `workspaces` is empty; name at least one"):
            parse(pipelineref="build", target="oci://r/x", workspaces=value)


def test_workspaces_of_the_wrong_type_are_rejected():
    with pytest.raises(ParamError, match=r"`workspaces` must be a comma-separated string or an array"):
        parse(pipelineref="build", target="oci://r/x", workspaces={"a": "b"})


def test_configmap_defaults_fill_any_missing_param():
    config = {
        "default-pipelineref": "build",
        "default-target": "registry.example/ci/<<workspace>>",
        "default-workspaces": "sources",
        "default-base": "registry.example/base:1",
        "step-image": "registry.example/wrapresolver:dev",
    }
    req = parse(config)
    assert req.pipelineref.name == "build"
    assert req.target == "registry.example/ci/<<workspace>>"
    assert req.workspaces == ("sources",)
    assert req.base == "registry.example/base:1"
    assert req.step_image == "registry.example/wrapresolver:dev"


def test_params_win_over_configmap_defaults():
    req = parse({"default-target": "oci://r/default"}, pipelineref="build", target="oci://r/mine")
    assert req.target == "oci://r/mine"


@pytest.mark.parametrize("param", ["pipelineref", "target"])
def test_missing_required_param_names_param_and_configmap_key(param):
    values = {"pipelineref": "build", "target": "oci://r/x"}
    del values[param]
    with pytest.raises(ParamError) as err:
        parse(**values)
    message = str(err.value)
    assert f"missing param `{param}`" in message
    assert f"`default-{param}`" in message
    assert "wrapresolver-config" in message


def test_duplicate_param_names_are_rejected():
    with pytest.raises(ParamError, match=r"param `target` is given more than once"):
        parse_request(
            [{"name": "pipelineref", "value": "build"}, {"name": "target", "value": "oci://r/a"},
             {"name": "target", "value": "oci://r/b"}],
            {},
            CONTEXT,
            REGISTRY,
        )


def test_param_without_name_is_rejected():
    with pytest.raises(ParamError, match=r"param #1 has no name"):
        parse_request([{"value": "x"}], {}, CONTEXT, REGISTRY)


def test_target_must_be_a_string():
    with pytest.raises(ParamError, match=r"param `target` must be a string, got an array"):
        parse(pipelineref="build", target=["oci://r/a"])


# ---- pipelineref ----

def test_pipelineref_nested_resolver_with_param_list():
    text = (
        "resolver: git\n"
        "params:\n"
        "  - {name: url, value: https://git.example/ci.git}\n"
        "  - {name: pathInRepo, value: pipeline.yaml}\n"
    )
    req = parse(pipelineref=text, target="oci://r/x")
    assert req.pipelineref == PipelineRef(
        resolver="git",
        params=({"name": "url", "value": "https://git.example/ci.git"},
                {"name": "pathInRepo", "value": "pipeline.yaml"}),
    )


def test_pipelineref_nested_params_mapping_is_normalised_to_a_list():
    text = '{"resolver": "bundles", "params": {"bundle": "reg/p:1", "name": "build", "kind": "pipeline"}}'
    req = parse(pipelineref=text, target="oci://r/x")
    assert req.pipelineref.resolver == "bundles"
    assert req.pipelineref.params == (
        {"name": "bundle", "value": "reg/p:1"},
        {"name": "name", "value": "build"},
        {"name": "kind", "value": "pipeline"},
    )


def test_pipelineref_nested_scalar_values_become_strings():
    req = parse(pipelineref="resolver: git\nparams: {revision: 1.0, depth: 1}", target="oci://r/x")
    assert req.pipelineref.params == ({"name": "revision", "value": "1.0"}, {"name": "depth", "value": "1"})


def test_pipelineref_pointing_at_wrap_is_a_loop():
    with pytest.raises(ParamError, match=r"asks the `wrap` resolver again, which would loop"):
        parse(pipelineref="resolver: wrap\nparams: []", target="oci://r/x")


def test_pipelineref_that_is_no_name_nor_mapping_is_rejected():
    with pytest.raises(ParamError, match=r"not a valid Pipeline name .* nor a YAML mapping"):
        parse(pipelineref="Build_And_Test", target="oci://r/x")


def test_pipelineref_with_unsubstituted_variable_explains_tekton_substitution():
    with pytest.raises(ParamError, match=r"still holds a `\$\(\.\.\.\)` reference"):
        parse(pipelineref="$(params.pipeline)", target="oci://r/x")


def test_pipelineref_mapping_without_resolver_is_rejected():
    with pytest.raises(ParamError, match=r"mapping without `resolver`"):
        parse(pipelineref="params: [{name: a, value: b}]", target="oci://r/x")


def test_pipelineref_nested_duplicate_param_is_rejected():
    text = "resolver: git\nparams: [{name: url, value: a}, {name: url, value: b}]"
    with pytest.raises(ParamError, match=r"gives `url` more than once"):
        parse(pipelineref=text, target="oci://r/x")


# ---- backend selection ----

@pytest.mark.parametrize(
    ("target", "backend"),
    [
        ("oci://registry.example/ci/<<workspace>>", "oci"),
        ("registry.example/ci/<<workspace>>:v1", "oci"),
        ("s3://bucket/ci/<<workspace>>", "s3"),
        ("gs://bucket/ci/<<workspace>>", "gcs"),
        ("rsync://storage.example/ci/<<workspace>>", "rsync"),
        ("file:///var/cache/ci/<<workspace>>", "file"),
    ],
)
def test_backend_follows_the_target_scheme(target, backend):
    assert parse(pipelineref="build", target=target).backend == backend


def test_backend_param_wins_over_scheme():
    with pytest.raises(ParamError, match=r"is not a file:// URL"):
        parse(pipelineref="build", target="oci://registry.example/ci/x", backend="file")
    req = parse(pipelineref="build", target="registry.example/ci/x", backend="oci")
    assert req.backend == "oci"


def test_default_backend_applies_to_targets_without_scheme_only():
    # The file backend, chosen by default-backend, is the one that rejects a scheme-less target.
    with pytest.raises(ParamError, match=r"is not a file:// URL"):
        parse({"default-backend": "file"}, pipelineref="build", target="/var/cache/ci/<<workspace>>")
    req = parse({"default-backend": "file"}, pipelineref="build", target="s3://bucket/x")
    assert req.backend == "s3"


def test_unknown_backend_lists_installed_ones():
    with pytest.raises(ParamError, match=r"unknown backend 'azure'; installed backends: .*oci"):
        parse(pipelineref="build", target="oci://r/x", backend="azure")


def test_unknown_scheme_lists_known_schemes():
    with pytest.raises(ParamError, match=r"no installed backend handles targets of scheme 'ftp'.*oci://"):
        parse(pipelineref="build", target="ftp://host/x")


def test_unknown_option_names_param_and_backend():
    with pytest.raises(ParamError, match=r"unknown param\(s\) colour for backend 'oci'"):
        parse(pipelineref="build", target="oci://r/x", colour="blue")


def test_backend_options_come_from_params_and_matching_defaults():
    from wrapresolver.backends.registry import get_backend

    oci = get_backend("oci")
    if not oci.options:
        pytest.skip("the oci backend declares no options")
    option = sorted(oci.options)[0]
    config = {f"default-{option}": "from-config", "default-not-an-oci-option": "ignored"}
    req = parse(config, pipelineref="build", target="oci://r/x")
    assert req.options.get(option) is not None
    assert "not-an-oci-option" not in req.options


def test_backend_option_must_be_a_string():
    with pytest.raises(ParamError, match=r"param `colour` must be a string"):
        parse(pipelineref="build", target="oci://r/x", colour=["a"])


# ---- wrapped_workspaces ----

def test_explicit_workspaces_must_be_declared_by_the_pipeline():
    with pytest.raises(ParamError) as err:
        wrapped_workspaces(request(["sources", "cahce"]), pipeline("sources", "cache"))
    message = str(err.value)
    assert "'cahce'" in message and "does not declare" in message
    assert "its workspaces are: sources, cache" in message


def test_explicit_workspaces_keep_their_order():
    assert wrapped_workspaces(request(["cache", "sources"]), pipeline("sources", "cache")) == ("cache", "sources")


def test_default_workspaces_are_the_emptydir_bindings_of_the_pipelinerun():
    run = pipelinerun(cache={"persistentVolumeClaim": {"claimName": "c"}}, sources={"emptyDir": {}})
    assert wrapped_workspaces(request(pipelinerun=run), pipeline("sources", "cache")) == ("sources",)


def test_default_workspaces_without_pipelinerun_asks_for_the_param():
    with pytest.raises(ParamError, match=r"PipelineRun is not known.*set param `workspaces`"):
        wrapped_workspaces(request(), pipeline("sources"))


def test_default_workspaces_with_no_emptydir_binding_asks_for_the_param():
    run = pipelinerun(sources={"persistentVolumeClaim": {"claimName": "c"}})
    with pytest.raises(ParamError, match=r"binds none of the workspaces of Pipeline 'build' to emptyDir; set param `workspaces`"):
        wrapped_workspaces(request(pipelinerun=run), pipeline("sources"))


def test_several_workspaces_need_a_workspace_placeholder_in_target():
    with pytest.raises(ParamError, match=r"has no `<<workspace>>`.*stored at the same place"):
        wrapped_workspaces(request(["sources", "cache"], target="oci://r/ci/shared"), pipeline("sources", "cache"))
    prior_art = request(["sources", "cache"], target="oci://r/ci/{{workspace}}")
    assert wrapped_workspaces(prior_art, pipeline("sources", "cache")) == ("sources", "cache")


def test_one_workspace_needs_no_placeholder():
    assert wrapped_workspaces(request(["sources"], target="oci://r/ci/shared"), pipeline("sources")) == ("sources",)


# ---- base: one for all, per workspace, missing ----

def test_one_base_is_templated_per_workspace():
    from wrapresolver.core.params import base_of

    req = parse(pipelineref="build", target="oci://reg.example/ci/<<workspace>>",
                base="oci://reg.example/cache/<<workspace>>:$(context.pipelineRun.namespace)")
    assert req.bases is None
    assert base_of(req, "src") == "oci://reg.example/cache/src:ci"
    assert base_of(req, "cache") == "oci://reg.example/cache/cache:ci"


@pytest.mark.parametrize("value", [
    "cache=oci://reg.example/ci/cache:main,sources=",
    " cache = oci://reg.example/ci/cache:main , sources= ",
    {"cache": "oci://reg.example/ci/cache:main", "sources": ""},
])
def test_the_per_workspace_form_gives_each_workspace_its_own_base_and_the_rest_start_empty(value):
    from wrapresolver.core.params import base_of

    req = parse(pipelineref="build", target="oci://reg.example/ci/<<workspace>>", base=value)
    assert base_of(req, "cache") == "oci://reg.example/ci/cache:main"
    assert base_of(req, "sources") == ""
    assert base_of(req, "other") == ""


def test_a_reference_with_an_equals_sign_after_a_slash_is_one_base():
    req = parse(pipelineref="build", target="s3://bucket/ci/<<workspace>>", base="s3://bucket/date=2024/base")
    assert req.bases is None and req.base == "s3://bucket/date=2024/base"


@pytest.mark.parametrize("value, message", [
    ("cache=oci://reg.example/c,oci://reg.example/d", "mixes the per-workspace form"),
    ("cache=oci://reg.example/c,cache=oci://reg.example/d", "names workspace 'cache' twice"),
])
def test_a_malformed_per_workspace_base_is_refused_with_the_form_to_write(value, message):
    with pytest.raises(ParamError, match=message):
        parse(pipelineref="build", target="oci://reg.example/ci/<<workspace>>", base=value)


def test_a_per_workspace_base_naming_an_unwrapped_workspace_is_refused():
    from wrapresolver.core.params import check_bases

    req = parse(pipelineref="build", target="oci://reg.example/ci/<<workspace>>", base="cahce=oci://reg.example/c")
    with pytest.raises(ParamError, match="'cahce', which is not a wrapped workspace.*src, cache"):
        check_bases(req, ("src", "cache"), REGISTRY.by_name("oci"))


def test_a_base_the_backend_cannot_read_is_refused_naming_the_workspace():
    from wrapresolver.core.params import check_bases

    req = parse(pipelineref="build", target="file:///data/<<workspace>>", base="cache=file://relative/path")
    with pytest.raises(ParamError, match="param `base` of workspace 'cache'"):
        check_bases(req, ("cache",), REGISTRY.by_name("file"))


@pytest.mark.parametrize("value, required", [("empty", False), ("fail", True), ("FAIL", True)])
def test_base_missing_chooses_between_starting_empty_and_failing(value, required):
    req = parse(pipelineref="build", target="oci://reg.example/ci/x", base="oci://reg.example/b", **{"base-missing": value})
    assert req.base_required is required
    assert parse(pipelineref="build", target="oci://reg.example/ci/x").base_required is False


def test_an_unknown_base_missing_value_is_refused_with_both_choices():
    with pytest.raises(ParamError, match="'empty'.*'fail'"):
        parse(pipelineref="build", target="oci://reg.example/ci/x", **{"base-missing": "ignore"})


def test_a_misspelt_placeholder_in_a_base_is_refused_like_in_a_target():
    from wrapresolver.core.params import check_bases

    req = parse(pipelineref="build", target="oci://reg.example/ci/<<workspace>>", base="oci://reg.example/c/<<worksapce>>")
    with pytest.raises(ParamError, match="base.*<<worksapce>>.*not a placeholder"):
        check_bases(req, ("cache",), REGISTRY.by_name("oci"))


def test_retention_is_a_resolver_param_not_a_backend_option():
    request = parse(pipelineref="build", target="oci://reg/ci/app", retention="keep-for 2d")
    assert "retention" not in request.options


def test_a_wrong_retention_fails_the_request_naming_the_choices():
    with pytest.raises(ParamError, match="param `retention` is 'forever'; write one of"):
        parse(pipelineref="build", target="oci://reg/ci/app", retention="forever")
    with pytest.raises(ParamError, match="`default-retention` in the ConfigMap"):
        parse(config={"default-retention": "soon"}, pipelineref="build", target="oci://reg/ci/app")


def test_max_layers_defaults_to_16_and_comes_from_the_param_or_the_configmap():
    target = "oci://reg.example/ci/x"
    assert parse(pipelineref="build", target=target).max_layers == 16
    assert parse(pipelineref="build", target=target, **{"max-layers": "4"}).max_layers == 4
    assert parse({"default-max-layers": "0"}, pipelineref="build", target=target).max_layers == 0
    # The run's own param wins over the admin's default.
    assert parse({"default-max-layers": "0"}, pipelineref="build", target=target, **{"max-layers": "8"}).max_layers == 8
    # Not a backend option: a backend that validates its options strictly never sees it.
    assert "max-layers" not in parse(pipelineref="build", target=target, **{"max-layers": "4"}).options


@pytest.mark.parametrize("value", ["-1", "many", "1001", "2.5", ""])
def test_a_max_layers_that_is_not_a_whole_number_in_range_is_refused_naming_the_key(value):
    with pytest.raises(ParamError) as raised:
        parse(pipelineref="build", target="oci://reg.example/ci/x", **{"max-layers": value})
    assert "max-layers" in str(raised.value) and "0 to 1000" in str(raised.value)
    assert "default-max-layers" in str(raised.value)
