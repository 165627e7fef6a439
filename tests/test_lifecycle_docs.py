"""What the storage-lifecycle docs name exists: ConfigMap keys, modules, gc command lines, RBAC."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

from wrapresolver.cli import build_parser
from wrapresolver.controller.signing import SECRET_NAME
from wrapresolver.core import lifecycle
from wrapresolver.core.params import (
    CONFIG_ALLOWED_NAMESPACES,
    CONFIG_ALLOWED_TARGETS,
    CONFIG_BLOCKED_NAMESPACES,
    CONFIG_CHAINS_RESULTS,
    CONFIG_LOG_LEVEL,
    CONFIG_RESOLUTION_TIMEOUT,
    CONFIG_STEP_IMAGE,
    CONFIG_TASK_RESOLUTION,
    CORE_PARAMS,
    config_key,
)

ROOT = Path(__file__).resolve().parent.parent
DOCS = {name: (ROOT / "docs" / name).read_text() for name in ("cluster-admins.md", "security.md", "pipeline-authors.md")}
KNOWN_KEYS = {CONFIG_ALLOWED_NAMESPACES, CONFIG_ALLOWED_TARGETS, CONFIG_BLOCKED_NAMESPACES, CONFIG_LOG_LEVEL,
              CONFIG_RESOLUTION_TIMEOUT, CONFIG_STEP_IMAGE, CONFIG_TASK_RESOLUTION, CONFIG_CHAINS_RESULTS,
              *(config_key(p) for p in CORE_PARAMS)}


def test_every_key_of_the_configuration_reference_is_read_by_the_resolver() -> None:
    section = DOCS["cluster-admins.md"].split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    keys = re.findall(r"^\| `([a-z<>-]+)` \|", section, re.MULTILINE)
    assert "allowed-targets" in keys and "default-publish-retention" in keys
    assert [k for k in keys if "<" not in k and k not in KNOWN_KEYS] == []


def test_every_key_the_shipped_configmap_mentions_is_known() -> None:
    text = (ROOT / "config" / "configmap.yaml").read_text()
    named = set(re.findall(r"^\s*#?\s*([a-z][a-z-]+):", text, re.MULTILINE)) - {"apiVersion", "kind", "metadata",
                                                                                   "name", "data"}
    assert {"allowed-targets", "default-publish-retention", "default-target"} <= named
    assert named - KNOWN_KEYS == set()


@pytest.mark.parametrize("doc", sorted(DOCS))
def test_every_module_path_the_docs_name_exists(doc: str) -> None:
    for path in re.findall(r"`(wrapresolver/[\w/]+\.py)`", DOCS[doc]):
        assert (ROOT / path).is_file(), path
    for path in re.findall(r"`(tests/[\w/]+\.py)`", DOCS[doc]):
        assert (ROOT / path).is_file(), path


def test_every_gc_command_line_in_the_admin_guide_parses() -> None:
    lines = re.findall(r"^(wrapresolver gc [^#\n]*)", DOCS["cluster-admins.md"], re.MULTILINE)
    assert any("oci://registry.example/ci/ " in line + " " for line in lines) and any("--published" in line for line in lines)
    parser = build_parser()
    for line in lines:
        text = line.replace("<PipelineRun uid>", "UID").replace("[", "").replace("]", "")
        parser.parse_args(shlex.split(text)[1:])


def test_the_annotations_and_the_secret_the_docs_name_are_the_ones_written() -> None:
    for name in (lifecycle.ANNOTATION_SIGNATURE, SECRET_NAME):
        assert name in DOCS["cluster-admins.md"] and name in DOCS["security.md"]
    assert lifecycle.ANNOTATION_PUBLISH_RETENTION in DOCS["cluster-admins.md"]
    rules = [r for d in yaml.safe_load_all((ROOT / "config" / "rbac.yaml").read_text()) if d
             for r in d.get("rules") or []]
    assert {"resources": ["secrets"], "resourceNames": [SECRET_NAME], "verbs": ["get"], "apiGroups": [""]} in rules
