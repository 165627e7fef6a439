"""`wrapresolver gc` over a prefix: every repository or layout under it, on real servers; a missing one is an error."""

from __future__ import annotations

import io
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures.registry import Registry, TokenRegistry
from tests.fixtures.s3server import S3Server
from wrapresolver.backends import reclaim
from wrapresolver.backends.registry import get_backend
from wrapresolver.cli import main
from wrapresolver.core import oci_image
from wrapresolver.core.refs import producer_ref
from wrapresolver.core.values import Layer
from wrapresolver.steps.statedocs import put_state

OLD_RUN = "3c4d5e6f-0a51-4d38-9d7d-3c1b0f2a9e01"
NEW_RUN = "4d5e6f70-1b62-4e49-8e8e-4d2c1a3b0f02"


def write_state(backend: str, target: str, run: str, age: timedelta, options: dict[str, str] | None = None,
                published: bool = False) -> None:
    """One state as the store step writes it (a layer, then the manifest), `age` old."""
    with get_backend(backend).open(target, options or {}) as store:
        layer = store.put_blob(io.BytesIO(f"{target} {run}".encode() * 50), oci_image.layer_media_type("gzip"))
        notes = {oci_image.ANNOTATION_RUN: run, oci_image.ANNOTATION_TASK: "build",
                 oci_image.ANNOTATION_WORKSPACE: "src",
                 oci_image.ANNOTATION_CREATED: (datetime.now(UTC) - age).strftime("%Y-%m-%dT%H:%M:%SZ")}
        refs = [producer_ref(run, "build")]
        if published:
            notes[oci_image.ANNOTATION_PUBLISHED] = "true"
            refs = [f"run-{run[:8]}"]
        put_state(store, (Layer(layer, layer.digest),), notes, refs)


def names(backend: str, target: str, options: dict[str, str] | None = None) -> set[str]:
    with get_backend(backend).open(target, options or {}) as store:
        return {i.name for i in [*reclaim.stored_items(store), *reclaim.published_items(store)]}


def test_gc_of_a_registry_prefix_walks_the_catalog_and_collects_every_repository_under_it(
    registry: Registry, capsys: pytest.CaptureFixture[str],
) -> None:
    base = f"oci://{registry.host}/t/pfx-{uuid.uuid4().hex[:8]}"
    under = [f"{base}/a", f"{base}/team/b"]
    beside = f"{base}-other/c"  # shares the text of the prefix, not its path segment
    for target in [*under, beside]:
        write_state("oci", target, OLD_RUN, timedelta(days=30))
        write_state("oci", target, NEW_RUN, timedelta(hours=1))
    assert main(["gc", "--target", f"{base}/", "--older-than", "7d"]) == 0
    out = capsys.readouterr().out
    assert "2 target(s) under" in out
    for target in under:
        assert names("oci", target) == {producer_ref(NEW_RUN, "build")}
        assert "wrap gc: 1 deleted" in out and target in out
    assert names("oci", beside) == {producer_ref(OLD_RUN, "build"), producer_ref(NEW_RUN, "build")}


def test_gc_of_a_registry_prefix_follows_the_catalogs_pages(
    registry: Registry, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    from wrapresolver.backends import prefix_reclaim

    monkeypatch.setattr(prefix_reclaim, "PAGE", 1)  # one repository per page: the Link header leads on
    base = f"oci://{registry.host}/t/pages-{uuid.uuid4().hex[:8]}"
    for name in ("a", "b", "c"):
        write_state("oci", f"{base}/{name}", OLD_RUN, timedelta(days=30))
    assert main(["gc", "--target", f"{base}/", "--older-than", "7d", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "3 target(s) under" in out and out.count("would delete state") == 3


def test_gc_of_a_repository_that_does_not_exist_is_an_error_naming_it(
    registry: Registry, capsys: pytest.CaptureFixture[str],
) -> None:
    target = f"oci://{registry.host}/t/never-{uuid.uuid4().hex[:8]}"
    assert main(["gc", "--target", target, "--older-than", "7d"]) == 4
    err = capsys.readouterr().err
    assert "does not exist" in err and target.rsplit("/", 1)[-1] in err


def test_gc_of_a_prefix_with_nothing_under_it_is_an_error(registry: Registry, capsys: pytest.CaptureFixture[str]) -> None:
    prefix = f"oci://{registry.host}/t/empty-{uuid.uuid4().hex[:8]}/"
    assert main(["gc", "--target", prefix, "--older-than", "7d"]) == 4
    assert "no repository or stored layout under" in capsys.readouterr().err


def test_gc_of_a_file_prefix_collects_every_layout_under_it_and_a_missing_directory_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str],
) -> None:
    layouts = [tmp_path / "ci" / "a", tmp_path / "ci" / "deep" / "b"]
    beside = tmp_path / "ci-other" / "c"
    for root in [*layouts, beside]:
        write_state("file", f"file://{root}", OLD_RUN, timedelta(days=30))
    assert main(["gc", "--target", f"file://{tmp_path}/ci/", "--older-than", "7d"]) == 0
    assert "2 target(s) under" in capsys.readouterr().out
    assert all(names("file", f"file://{root}") == set() for root in layouts)
    assert names("file", f"file://{beside}") == {producer_ref(OLD_RUN, "build")}
    assert main(["gc", "--target", f"file://{tmp_path}/nowhere", "--older-than", "7d"]) == 4
    assert "nowhere" in capsys.readouterr().err


def test_gc_of_an_s3_prefix_collects_every_layout_under_it(
    s3_server: S3Server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in s3_server.env().items():
        monkeypatch.setenv(name, value)
    bucket = s3_server.new_bucket()
    options = s3_server.options()
    flags = [arg for k, v in options.items() for arg in ("--option", f"{k}={v}")]
    under = [f"s3://{bucket}/ci/a", f"s3://{bucket}/ci/team/b"]
    beside = f"s3://{bucket}/ci-other/c"
    for target in [*under, beside]:
        write_state("s3", target, OLD_RUN, timedelta(days=30), options)
    assert main(["gc", "--target", f"s3://{bucket}/ci/", "--older-than", "7d", *flags]) == 0
    assert "2 target(s) under" in capsys.readouterr().out
    assert all(names("s3", t, options) == set() for t in under)
    assert names("s3", beside, options) == {producer_ref(OLD_RUN, "build")}


def test_published_results_under_other_tags_are_kept_unless_gc_is_asked_for_them(
    registry: Registry, capsys: pytest.CaptureFixture[str],
) -> None:
    target = f"oci://{registry.host}/t/published-{uuid.uuid4().hex[:8]}"
    write_state("oci", target, OLD_RUN, timedelta(days=30), published=True)
    published = f"run-{OLD_RUN[:8]}"
    assert main(["gc", "--target", target, "--older-than", "7d"]) == 0
    assert "0 deleted" in capsys.readouterr().out and published in names("oci", target)
    assert main(["gc", "--target", target, "--older-than", "7d", "--published"]) == 0
    assert f"deleting published {published}" in capsys.readouterr().out
    assert names("oci", target) == set()


def test_a_registry_that_will_not_show_its_catalog_is_an_error_that_says_so(
    token_registry: TokenRegistry, capsys: pytest.CaptureFixture[str],
) -> None:
    # The token service grants pull and push, never `registry:catalog:*`: the catalog answers 401.
    host = token_registry.registry.host
    assert main(["gc", "--target", f"oci://{host}/t/", "--older-than", "7d"]) != 0
    err = capsys.readouterr().err
    assert f"registry {host} has no catalog" in err and "once per repository" in err


def test_gc_of_a_gcs_prefix_collects_every_layout_under_it(
    gcs_server, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    gcs_server.use(monkeypatch)
    bucket = gcs_server.new_bucket()
    under = [f"gs://{bucket}/ci/a", f"gs://{bucket}/ci/team/b"]
    beside = f"gs://{bucket}/ci-other/c"
    for target in [*under, beside]:
        write_state("gcs", target, OLD_RUN, timedelta(days=30))
    assert main(["gc", "--target", f"gs://{bucket}/ci/", "--older-than", "7d"]) == 0
    assert "2 target(s) under" in capsys.readouterr().out
    assert all(names("gcs", t) == set() for t in under)
    assert names("gcs", beside) == {producer_ref(OLD_RUN, "build")}
