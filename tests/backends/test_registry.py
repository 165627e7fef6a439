"""The backend registry: by name and by scheme, lazily, with a plugin's own load error."""

import subprocess
import sys
from pathlib import Path

import pytest

from wrapresolver.backends import registry
from wrapresolver.backends.registry import REGISTRY, EntryPointRegistry
from wrapresolver.errors import ParamError


def test_every_scheme_entry_point_names_a_backend_that_claims_the_scheme() -> None:
    from importlib.metadata import entry_points

    for ep in entry_points(group=registry.SCHEME_GROUP):
        assert ep.name in REGISTRY.by_scheme(ep.name).schemes, ep


def test_every_scheme_of_an_installed_backend_has_its_entry_point() -> None:
    from importlib.metadata import entry_points

    declared = {ep.name for ep in entry_points(group=registry.SCHEME_GROUP)}
    for name in REGISTRY.names():
        assert set(REGISTRY.by_name(name).schemes) <= declared, name


def test_looking_up_a_scheme_imports_only_that_backend() -> None:
    code = (
        "import sys\n"
        "from wrapresolver.backends.registry import backend_for_scheme\n"
        "backend_for_scheme('s3')\n"
        "loaded = [m for m in sys.modules if m.startswith('wrapresolver.backends.')]\n"
        "print(sorted(loaded), 'boto3' in sys.modules)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "wrapresolver.backends.rsync" not in out and "wrapresolver.backends.gcs" not in out
    assert "wrapresolver.backends.s3" in out
    assert out.strip().endswith("False")  # the resolver half never imports the client library


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> EntryPointRegistry:
    """An installed distribution with one good backend and one whose module does not exist."""
    dist = tmp_path / "wrapresolver_test_plugins-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: wrapresolver-test-plugins\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(
        "[wrapresolver.test-backends]\n"
        "file = wrapresolver.backends.file:BACKEND\n"
        "broken = wrapresolver_no_such_plugin:BACKEND\n"
        "[wrapresolver.test-schemes]\n"
        "file = wrapresolver.backends.file:BACKEND\n"
        "brk = wrapresolver_no_such_plugin:BACKEND\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry._group.cache_clear()
    yield EntryPointRegistry("wrapresolver.test-backends", "wrapresolver.test-schemes")
    registry._group.cache_clear()


def test_a_broken_plugin_asked_for_by_name_reports_its_import_error(plugins: EntryPointRegistry) -> None:
    with pytest.raises(ParamError, match="backend 'broken' is installed .* but failed to load: No module named"):
        plugins.by_name("broken")


def test_a_broken_plugin_asked_for_by_scheme_reports_its_import_error(plugins: EntryPointRegistry) -> None:
    with pytest.raises(ParamError, match="brk:// targets is installed .* but failed to load: No module named"):
        plugins.by_scheme("brk")


def test_a_broken_plugin_does_not_hide_the_others(plugins: EntryPointRegistry) -> None:
    assert plugins.by_scheme("file").name == "file"
    assert plugins.by_name("file").name == "file"
    assert plugins.names() == ["broken", "file"]


def test_an_unclaimed_scheme_names_the_known_ones_and_the_plugin_that_failed(plugins: EntryPointRegistry) -> None:
    with pytest.raises(ParamError) as caught:
        plugins.by_scheme("ftp")
    message = str(caught.value)
    assert "no installed backend handles targets of scheme 'ftp'" in message
    assert "brk://, file://" in message
    assert "backend 'broken' failed to load: No module named 'wrapresolver_no_such_plugin'" in message
