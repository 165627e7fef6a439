"""The layering holds: import-linter checks the contracts written in pyproject.toml, they
bite when an import goes against the order, no two packages import each other, and a
backend's resolver half never loads its client library."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import grimp
import pytest

REPO = Path(__file__).resolve().parent.parent
CONTRACTS = (
    "Layers: commands and the controller, the resolver, the steps, the backends, the toolkit, the core",
    "Backends are independent of each other",
    "The pure core does no I/O: no I/O library",
    "Only the controller talks to the cluster",
)


def _lint_imports(cwd: Path) -> subprocess.CompletedProcess:
    command = shutil.which("lint-imports") or f"{Path(sys.executable).parent}/lint-imports"
    return subprocess.run([command, "--no-cache"], cwd=cwd, capture_output=True, text=True, timeout=300,
                          env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(cwd)})


def test_every_layering_contract_is_kept() -> None:
    result = _lint_imports(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"{len(CONTRACTS)} kept, 0 broken" in result.stdout
    for name in CONTRACTS:
        assert name in " ".join(result.stdout.split()), name


@pytest.mark.parametrize(("module", "added_import", "contract"), [
    ("wrapresolver/transfer/deeptree.py", "from wrapresolver.backends import base", CONTRACTS[0]),
    ("wrapresolver/backends/base.py", "from wrapresolver.steps import runner", CONTRACTS[0]),
    ("wrapresolver/core/values.py", "from wrapresolver.transfer import streams", CONTRACTS[0]),
    ("wrapresolver/backends/s3.py", "from wrapresolver.backends.gcs import GcsStore", CONTRACTS[1]),
    ("wrapresolver/steps/fill.py", "import kubernetes", CONTRACTS[3]),
])
def test_an_import_against_the_order_breaks_its_contract(tmp_path: Path, module: str, added_import: str,
                                                       contract: str) -> None:
    """The contracts are not vacuous: a copy of the package with one bad import fails them."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "wrapresolver", copy / "wrapresolver")
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    path = copy / module
    path.write_text(path.read_text() + f"\n{added_import}  # noqa\n")
    result = _lint_imports(copy)
    assert result.returncode != 0
    broken = " ".join(result.stdout.split())
    assert f"{contract} BROKEN" in broken, result.stdout


def test_a_new_module_must_be_placed_in_a_layer(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "wrapresolver", copy / "wrapresolver")
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    (copy / "wrapresolver" / "unplaced.py").write_text('"""A module nobody put in a layer."""\n')
    result = _lint_imports(copy)
    assert result.returncode != 0
    assert "unplaced" in result.stdout + result.stderr


def test_no_two_packages_import_each_other() -> None:
    """A cycle between two top-level packages or modules of wrapresolver, in either direction,
    through imports at module level or inside functions."""
    graph = grimp.build_graph("wrapresolver")
    tops = {m.split(".")[1] for m in graph.modules if m.count(".") >= 1}
    cycles = []
    for a in sorted(tops):
        for b in sorted(tops):
            if a < b and graph.chain_exists(f"wrapresolver.{a}", f"wrapresolver.{b}", as_packages=True) \
                    and graph.chain_exists(f"wrapresolver.{b}", f"wrapresolver.{a}", as_packages=True):
                cycles.append((a, b))
    assert cycles == []


def _backend_names() -> list[str]:
    from wrapresolver.backends.registry import REGISTRY

    return sorted(REGISTRY.names())


@pytest.mark.parametrize("name", _backend_names())
def test_a_backends_resolver_half_imports_no_client_library(name: str) -> None:
    """The resolver validates targets and options and asks what a step needs of every backend
    in every request; the client library (boto3, google-cloud-storage, httpx...) is the
    steps' and is imported only inside `open`. Checked in a fresh interpreter: every module
    loaded by the resolver half is the standard library's, ours, or one the resolver itself
    already needs."""
    code = textwrap.dedent(f"""
        import sys
        import wrapresolver.resolve, wrapresolver.core.rewrite
        from wrapresolver.backends.registry import REGISTRY
        before = set(sys.modules)
        backend = REGISTRY.by_name({name!r})
        scheme = backend.schemes[0]
        for target in (scheme + "://example.invalid/ci/src", scheme + ":///ci/src"):
            try:
                backend.validate_target(target)
            except Exception:
                pass
        try:
            backend.step_requirements(backend.validate_options({{}}))
        except Exception:
            pass
        own = {{"wrapresolver", type(backend).__module__.split(".")[0]}}  # a plugin's own package
        new = {{m.split(".")[0] for m in set(sys.modules) - before}}
        print(sorted(m for m in new if m not in sys.stdlib_module_names and m not in own))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.strip()
    assert out == "[]"


def test_every_module_over_400_lines_says_why_in_its_docstring() -> None:
    """docs/contributing.md's rule: split a long module by what its parts do, or say why not."""
    import ast

    unexplained = []
    for path in sorted((REPO / "wrapresolver").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 400 and "400 lines" not in (ast.get_docstring(ast.parse(text)) or ""):
            unexplained.append(str(path.relative_to(REPO)))
    assert unexplained == []
