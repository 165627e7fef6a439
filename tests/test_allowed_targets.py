"""`allowed-targets` refuses a target or base outside the admin's prefixes at resolution (offline render)."""

from __future__ import annotations

from pathlib import Path

from wrapresolver.cli import main

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
FILES = ["-f", str(EXAMPLES / "pipeline.yaml"), "-f", str(EXAMPLES / "pipelinerun.yaml")]


def render(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["render", *FILES, *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_render_refuses_a_target_outside_allowed_targets_naming_the_key_and_accepts_one_inside(capsys) -> None:
    code, out, err = render(capsys, "--config", "allowed-targets=oci://registry.internal/ci/,s3://ci-states/")
    assert code != 0 and out == ""
    assert "param `target` of workspace 'sources'" in err
    assert "outside `allowed-targets`" in err and "oci://registry.internal/ci/" in err
    code, out, err = render(capsys, "--config", "allowed-targets=oci://registry.example/ci")
    assert (code, err) == (0, "") and "registry.example/ci/build-and-test-sources:build-and-test-run" in out


def test_render_refuses_a_base_outside_allowed_targets(capsys) -> None:
    code, _, err = render(capsys, "--config", "allowed-targets=oci://registry.example/ci/",
                          "--param", "base=cache=oci://registry.example/elsewhere/cache")
    assert code != 0
    assert "param `base` of workspace 'cache'" in err and "outside `allowed-targets`" in err


def test_a_lookalike_host_or_segment_is_refused_at_render(capsys) -> None:
    for target in ("oci://registry.example.evil.com/ci/<<workspace>>", "oci://registry.example/ci-evil/<<workspace>>"):
        code, _, err = render(capsys, "--config", "allowed-targets=oci://registry.example/ci",
                              "--param", f"target={target}")
        assert code != 0 and "outside `allowed-targets`" in err, target
