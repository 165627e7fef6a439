"""Ordinary mistakes `wrapresolver render` (a process, as an author runs it) refuses or warns about.

Each test is one mistake of docs/pipeline-authors.md "Mistakes we catch": the message is
asserted on the words that name the thing and the fix.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from tests.fixtures.cli import wrapresolver

PIPELINE = """
apiVersion: tekton.dev/v1
kind: Pipeline
metadata: {name: ci}
spec:
  workspaces: [{name: sources}, {name: reports}]
  tasks:
    - name: clone
      workspaces: [{name: out, workspace: sources}]
      taskSpec:
        workspaces: [{name: out}]
        steps: [{name: s, image: alpine, script: "touch $(workspaces.out.path)/a"}]
    - name: test
      runAfter: [clone]
      workspaces: [{name: src, workspace: SOURCES_BINDING}, {name: reports, workspace: reports}]
      taskRef: {name: run-tests}
"""

TASK = """
apiVersion: tekton.dev/v1
kind: Task
metadata: {name: run-tests}
spec:
  workspaces: [{name: src}, {name: reports, optional: true}]
  steps: [{name: s, image: alpine, script: "ls $(workspaces.src.path)"}]
"""

RUN = """
apiVersion: tekton.dev/v1
kind: PipelineRun
metadata: {name: ci-run}
spec:
  params: [{name: team, value: blue}]
  pipelineRef:
    resolver: wrap
    params:
      - {name: pipelineref, value: ci}
      - {name: target, value: "oci://registry.example/$(params.team)/<<workspace>>"}
  workspaces:
    - {name: sources, emptyDir: {}}
    - {name: reports, emptyDir: {}}
"""


def render(tmp_path: Path, *args: str, pipeline: str = PIPELINE, task: str = TASK, run: str = RUN,
           binding: str = "sources"):
    files = {"pipeline.yaml": pipeline.replace("SOURCES_BINDING", binding), "task.yaml": task, "run.yaml": run}
    argv: list[str] = []
    for name, text in files.items():
        if text:
            (tmp_path / name).write_text(text)
            argv += ["-f", str(tmp_path / name)]
    return wrapresolver("render", *argv, *args)


def test_the_mistake_free_files_render_without_a_warning(tmp_path):
    proc = render(tmp_path)
    assert (proc.returncode, proc.stderr) == (0, "")


def test_a_binding_to_a_workspace_the_pipeline_does_not_declare_is_refused_with_the_closest_name(tmp_path):
    proc = render(tmp_path, binding="sorce")
    assert proc.returncode == 1 and proc.stdout == ""
    assert "pipeline task 'test' binds workspace 'sorce', which Pipeline 'ci' does not declare" in proc.stderr
    assert "did you mean 'sources'?" in proc.stderr
    assert "its workspaces are: sources, reports" in proc.stderr


def test_a_binding_name_the_task_does_not_declare_is_refused_instead_of_added(tmp_path):
    task = TASK.replace("[{name: src}, ", "[{name: source}, ")
    proc = render(tmp_path, task=task)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "pipeline task 'test' binds task workspace 'src', which Task 'run-tests' does not declare" in proc.stderr
    assert "did you mean 'source'?" in proc.stderr
    assert "Tekton would fail this task's TaskRun" in proc.stderr


def test_an_optional_task_workspace_left_unbound_is_accepted(tmp_path):
    pipeline = PIPELINE.replace(", {name: reports, workspace: reports}]", "]")
    proc = render(tmp_path, pipeline=pipeline)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr


def test_a_pipeline_param_with_a_reserved_name_is_refused_however_small_the_pipeline(tmp_path):
    pipeline = PIPELINE.replace("spec:\n", "spec:\n  params: [{name: wrap-pin, default: x}]\n", 1)
    proc = render(tmp_path, pipeline=pipeline)
    assert proc.returncode == 1 and proc.stdout == ""
    assert "Pipeline 'ci' declares param(s) 'wrap-pin'; the wrap resolver reserves these names" in proc.stderr
    assert "rename them" in proc.stderr


def test_a_workspace_named_twice_in_the_workspaces_param_is_refused(tmp_path):
    proc = render(tmp_path, "--param", "workspaces=sources,reports,sources")
    assert proc.returncode == 1
    assert "param `workspaces` names workspace 'sources' twice ('sources,reports,sources')" in proc.stderr
    assert "name each workspace once" in proc.stderr


def test_a_param_the_run_does_not_set_in_the_target_is_refused(tmp_path):
    proc = render(tmp_path, run=RUN.replace("[{name: team, value: blue}]", "[]"))
    assert proc.returncode == 1
    assert "param `target` holds `$(params.team)`, but the PipelineRun does not set param 'team'" in proc.stderr
    assert "add 'team' to the PipelineRun's `spec.params`" in proc.stderr


def test_a_param_the_run_sets_in_the_target_is_replaced(tmp_path):
    proc = render(tmp_path)
    assert proc.returncode == 0
    assert "oci://registry.example/blue/sources" in proc.stdout and "$(params.team)" not in proc.stdout


def test_a_misspelt_context_variable_in_the_target_is_refused_with_the_right_one(tmp_path):
    proc = render(tmp_path, "--param", "target=oci://registry.example/$(context.pipelineRun.nme)-<<workspace>>")
    assert proc.returncode == 1
    assert "`$(context.pipelineRun.nme)`, which is not a Tekton context variable" in proc.stderr
    assert "did you mean `$(context.pipelineRun.name)`?" in proc.stderr


def test_a_per_task_context_variable_in_the_target_is_refused(tmp_path):
    proc = render(tmp_path, "--param", "target=oci://registry.example/$(context.taskRun.name)-<<workspace>>")
    assert proc.returncode == 1
    assert "`$(context.taskRun.name)`, which differs from task to task" in proc.stderr


def test_an_undefined_param_in_the_base_is_refused(tmp_path):
    proc = render(tmp_path, "--param", "base=oci://registry.example/$(params.branch)/<<workspace>>")
    assert proc.returncode == 1
    assert "param `base` of workspace 'sources' holds `$(params.branch)`" in proc.stderr
    assert "does not set param 'branch'" in proc.stderr


def test_a_wrapped_workspace_on_a_volume_claim_template_is_warned_about(tmp_path):
    run = RUN.replace("{name: reports, emptyDir: {}}",
                      "{name: reports, volumeClaimTemplate: {spec: {accessModes: [ReadWriteOnce]}}}")
    proc = render(tmp_path, "--param", "workspaces=sources,reports", run=run)
    assert proc.returncode == 0 and proc.stdout
    assert proc.stderr.startswith("warning: workspace 'reports' is wrapped but the PipelineRun binds it to a "
                                  "volumeClaimTemplate")
    assert "bind 'reports' to `emptyDir: {}`" in proc.stderr


def test_a_wrapped_workspace_on_a_claim_is_warned_about(tmp_path):
    run = RUN.replace("{name: reports, emptyDir: {}}", "{name: reports, persistentVolumeClaim: {claimName: r}}")
    proc = render(tmp_path, "--param", "workspaces=sources,reports", run=run)
    assert proc.returncode == 0
    assert "workspace 'reports' is wrapped but the PipelineRun binds it to a persistentVolumeClaim" in proc.stderr


def test_an_unknown_config_key_is_warned_about_with_the_closest_key(tmp_path):
    proc = render(tmp_path, "--config", "default-compresion=gzip")
    assert proc.returncode == 0 and proc.stdout
    assert proc.stderr.startswith("warning: --config has key 'default-compresion', which the wrap resolver does not read")
    assert "did you mean 'default-compression'?" in proc.stderr


def test_every_key_of_the_shipped_configmap_is_known(tmp_path):
    """Keys added to config/configmap.yaml (set or commented out) must be known to the warning."""
    import re

    text = (Path(__file__).resolve().parent.parent / "config" / "configmap.yaml").read_text()
    data = text.split("\ndata:\n", 1)[1]
    keys = set(re.findall(r"^ {2}#? ?([a-z][a-z0-9-]+): ", data, re.MULTILINE))
    assert "default-target" in keys and "log-level" in keys
    args = [a for key in sorted(keys) for a in ("--config", f"{key}=")]
    proc = render(tmp_path, *args)
    assert (proc.returncode, proc.stderr) == (0, ""), proc.stderr


def test_a_copied_uid_is_warned_about_and_not_hard_coded(tmp_path):
    run = RUN.replace("metadata: {name: ci-run}", "metadata: {name: ci-run, uid: 5d1e2c4a-old-run}")
    proc = render(tmp_path, run=run)
    assert proc.returncode == 0
    assert "PipelineRun 'ci-run' carries metadata.uid '5d1e2c4a-old-run'" in proc.stderr
    assert "leaves $(context.pipelineRun.uid) for Tekton" in proc.stderr
    assert "5d1e2c4a-old-run" not in proc.stdout
    assert "$(context.pipelineRun.uid)" in proc.stdout


def test_a_run_with_an_embedded_pipeline_spec_is_told_to_convert(tmp_path):
    run = yaml.safe_load(RUN)
    run["spec"].pop("pipelineRef")
    run["spec"]["pipelineSpec"] = yaml.safe_load(PIPELINE.replace("SOURCES_BINDING", "sources"))["spec"]
    (tmp_path / "run.yaml").write_text(yaml.safe_dump(run))
    proc = wrapresolver("render", "-f", str(tmp_path / "run.yaml"))
    assert proc.returncode == 1
    assert "PipelineRun 'ci-run' embeds its Pipeline (spec.pipelineSpec)" in proc.stderr
    assert f"`wrapresolver convert -f {tmp_path / 'run.yaml'}`" in proc.stderr
    assert "missing param" not in proc.stderr


def test_a_run_of_a_pipeline_by_name_is_told_what_to_change(tmp_path):
    run = yaml.safe_load(RUN)
    run["spec"]["pipelineRef"] = {"name": "ci"}
    proc = render(tmp_path, run=yaml.safe_dump(run))
    assert proc.returncode == 1
    assert "PipelineRun 'ci-run' runs Pipeline 'ci' directly (pipelineRef.name)" in proc.stderr
    assert "change its pipelineRef to `{resolver: wrap, params: [{name: pipelineref, value: ci}" in proc.stderr
    assert "is not known" not in proc.stderr


def test_a_target_with_a_mistyped_scheme_gets_a_sensible_suggestion(tmp_path):
    for target in ("s3:/bucket/<<workspace>>", "oci://s3:/bucket/<<workspace>>"):
        proc = render(tmp_path, "--param", f"target={target}")
        assert proc.returncode == 1
        assert "looks like a `s3://` target" in proc.stderr and "write s3://bucket/" in proc.stderr, proc.stderr
        assert "registry.example/s3:" not in proc.stderr


def test_a_message_about_a_pipelines_workspaces_names_it_without_a_possessive_after_the_quote(tmp_path):
    run = RUN.replace("{name: sources, emptyDir: {}}", "{name: sources, persistentVolumeClaim: {claimName: s}}")
    run = run.replace("{name: reports, emptyDir: {}}", "{name: reports, persistentVolumeClaim: {claimName: r}}")
    proc = render(tmp_path, run=run)
    assert proc.returncode == 1
    assert "binds none of the workspaces of Pipeline 'ci' to emptyDir" in proc.stderr
    assert "'ci''s" not in proc.stderr


def test_a_finally_task_binding_an_undeclared_workspace_is_refused(tmp_path):
    pipeline = PIPELINE + """
  finally:
    - name: report
      workspaces: [{name: out, workspace: report}]
      taskSpec:
        workspaces: [{name: out}]
        steps: [{name: s, image: alpine, script: "true"}]
"""
    proc = render(tmp_path, "--param", "workspaces=sources", pipeline=pipeline)
    assert proc.returncode == 1
    assert "pipeline task 'report' binds workspace 'report', which Pipeline 'ci' does not declare" in proc.stderr
    assert "did you mean 'reports'?" in proc.stderr


def test_the_pipeline_name_variable_in_a_resolver_param_is_warned_about_as_tekton_empties_it(tmp_path):
    proc = render(tmp_path, "--param", "target=oci://registry.example/ci/p$(context.pipeline.name)-<<workspace>>")
    assert proc.returncode == 0
    assert "oci://registry.example/ci/p-sources" in proc.stdout, "replaced with an empty string, as Tekton does"
    assert ("warning: param `target` uses $(context.pipeline.name), which Tekton replaces with an empty string "
            "in resolver params") in proc.stderr
    assert "write the Pipeline's name instead" in proc.stderr


def test_a_config_key_starting_with_an_underscore_is_not_warned_about(tmp_path):
    proc = render(tmp_path, "--config", "_example=see the documentation")
    assert (proc.returncode, proc.stderr) == (0, "")


def test_the_uid_flag_renders_for_that_run_without_a_warning(tmp_path):
    run = RUN.replace("metadata: {name: ci-run}", "metadata: {name: ci-run, uid: 5d1e2c4a-old-run}")
    proc = render(tmp_path, "--uid", "7a7a-chosen", run=run)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert '"run":"7a7a-chosen"' in proc.stdout and "5d1e2c4a-old-run" not in proc.stdout


def test_a_param_in_the_configmaps_default_target_is_refused_naming_the_key(tmp_path):
    run = yaml.safe_load(RUN)
    run["spec"]["pipelineRef"]["params"] = [{"name": "pipelineref", "value": "ci"}]
    proc = render(tmp_path, "--config", "default-target=oci://registry.example/$(params.team)/<<workspace>>",
                  run=yaml.safe_dump(run))
    assert proc.returncode == 1
    assert "`default-target` of the ConfigMap wrapresolver-config holds `$(params.team)`, which nothing replaces" in proc.stderr
    assert "set `target` in the PipelineRun" in proc.stderr


def test_an_embedded_spec_bound_under_a_name_it_does_not_declare_is_warned_about(tmp_path):
    pipeline = PIPELINE.replace("workspaces: [{name: out, workspace: sources}]",
                                "workspaces: [{name: ou, workspace: sources}]")
    proc = render(tmp_path, pipeline=pipeline)
    assert proc.returncode == 0
    assert ("warning: pipeline task 'clone' binds task workspace 'ou', which its taskSpec does not declare, "
            "and leaves the declared 'out' unbound") in proc.stderr
    assert "did you mean 'out'?" in proc.stderr


def test_a_pipeline_declaring_a_workspace_twice_is_refused(tmp_path):
    pipeline = PIPELINE.replace("[{name: sources}, {name: reports}]", "[{name: sources}, {name: reports}, {name: sources}]")
    proc = render(tmp_path, pipeline=pipeline)
    assert proc.returncode == 1
    assert "Pipeline 'ci' declares workspace 'sources' more than once" in proc.stderr
