"""The recommended target: one repository per Pipeline and workspace, one tag per run (`<<pipeline>>`)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from wrapresolver.cli import main

ROOT = Path(__file__).resolve().parent.parent
FILES = ["-f", str(ROOT / "examples" / "pipeline.yaml"), "-f", str(ROOT / "examples" / "pipelinerun.yaml")]
RECOMMENDED = "oci://registry.example/ci/<<pipeline>>-<<workspace>>:$(context.pipelineRun.name)"


def rendered_args(capsys, *argv: str) -> str:
    assert main(["render", *FILES, *argv]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    doc = yaml.safe_load(out)
    return "\n".join(str(a) for t in doc["spec"]["tasks"] + doc["spec"].get("finally", [])
                     for s in t["taskSpec"]["steps"] for a in s.get("args") or [])


def test_pipeline_placeholder_names_the_repository_after_the_pipeline_and_the_run_is_the_tag(capsys) -> None:
    args = rendered_args(capsys, "--param", f"target={RECOMMENDED}")
    assert "registry.example/ci/build-and-test-sources:build-and-test-run" in args
    assert "registry.example/ci/build-and-test-cache:build-and-test-run" in args
    assert "<<pipeline>>" not in args


def test_the_shipped_configmap_recommends_the_per_pipeline_target(capsys) -> None:
    text = (ROOT / "config" / "configmap.yaml").read_text()
    match = re.search(r'^\s*#\s*default-target:\s*"([^"]+)"', text, re.MULTILINE)
    assert match and "<<pipeline>>" in match.group(1) and match.group(1).endswith(":$(context.pipelineRun.name)")
    pipelinerun = yaml.safe_load((ROOT / "examples" / "pipelinerun.yaml").read_text())
    params = [p for p in pipelinerun["spec"]["pipelineRef"]["params"] if p["name"] != "target"]
    assert main(["render", "-f", str(ROOT / "examples" / "pipeline.yaml"), "--config",
                 f"default-target={match.group(1)}", "--param", f"pipelineref={params[0]['value']}",
                 "--param", "workspaces=sources"]) == 0
    out = capsys.readouterr().out
    assert "/build-and-test-sources:" in out


def test_a_misspelt_pipeline_placeholder_is_refused_naming_the_known_ones(capsys) -> None:
    assert main(["render", *FILES, "--param", "target=oci://registry.example/ci/<<pipline>>-<<workspace>>"]) != 0
    err = capsys.readouterr().err
    assert "<<pipline>>" in err and "<<pipeline>>" in err
