"""Live settings from wrapresolver-config: durations, namespace rules, bad values."""

from __future__ import annotations

import pytest

from wrapresolver.controller.config import DEFAULT_RESOLUTION_TIMEOUT, Settings, parse_duration


@pytest.mark.parametrize("text, seconds", [("60s", 60), ("2m", 120), ("1m30s", 90), ("45", 45), ("500ms", 0.5)])
def test_resolution_timeout_accepts_go_durations_and_plain_seconds(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "soon", "5 minutes", "1d"])
def test_a_malformed_duration_is_rejected(text):
    with pytest.raises(ValueError):
        parse_duration(text)


def test_an_invalid_timeout_or_log_level_falls_back_to_the_default():
    settings = Settings.from_configmap({"data": {"resolution-timeout": "soon", "log-level": "loud"}})
    assert settings.resolution_timeout == DEFAULT_RESOLUTION_TIMEOUT
    assert settings.log_level == "INFO"


def test_a_missing_configmap_means_every_default():
    settings = Settings.from_configmap(None)
    assert settings == Settings()
    assert settings.namespace_allowed("anything")


@pytest.mark.parametrize("allowed, blocked, namespace, ok", [
    ("", "", "team-a", True),
    ("", "team-a", "team-a", False),
    ("", "team-a, team-b", "team-b", False),
    ("team-a", "", "team-b", False),
    ("team-a", "", "team-a", True),
    ("team-a", "*", "team-a", True),
    ("", "*", "team-a", False),
    ("team-a", "team-a", "team-a", False),
])
def test_namespace_rules_follow_the_tekton_cluster_resolver(allowed, blocked, namespace, ok):
    settings = Settings.from_configmap({"data": {"allowed-namespaces": allowed, "blocked-namespaces": blocked}})
    assert settings.namespace_allowed(namespace) is ok
