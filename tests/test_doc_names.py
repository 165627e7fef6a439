"""The names the operator and plugin docs give are real: a reader who copies one gets it.

Every dotted `wrapresolver...` name in backticks imports (a module, or an attribute of
one) or is an entry-point group `pyproject.toml` declares, every `from wrapresolver... import ...` line of a code block runs, and every path
of this repository in backticks exists.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ["docs/plugin-authors.md", "docs/cluster-admins.md"]
TOP_DIRS = ("wrapresolver/", "config/", "examples/", "scripts/", "images/", "docs/", "tests/", "bench/")


def resolves(dotted: str) -> bool:
    """A module, or an attribute reached from the longest importable module prefix."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ImportError:
            continue
        for name in parts[cut:]:
            if not hasattr(obj, name):
                return False
            obj = getattr(obj, name)
        return True
    return False


def code_spans(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


@pytest.mark.parametrize("doc", DOCS)
def test_every_dotted_wrapresolver_name_in_the_doc_imports(doc: str) -> None:
    names = {m.group(1) for span in code_spans((ROOT / doc).read_text())
             for m in [re.fullmatch(r"(wrapresolver(?:\.\w+)+)(?:\(\))?", span.strip())] if m}
    groups = set(re.findall(r'^\[project\.entry-points\."([\w.]+)"\]', (ROOT / "pyproject.toml").read_text(),
                            re.MULTILINE))
    missing = sorted(n for n in names if n not in groups and not resolves(n))
    assert not missing, f"{doc} names what does not exist: {missing}"


@pytest.mark.parametrize("doc", DOCS)
def test_every_import_line_in_the_doc_runs(doc: str) -> None:
    lines = re.findall(r"^\s*(from wrapresolver[\w.]* import [\w, ]+)$", (ROOT / doc).read_text(), re.MULTILINE)
    for line in lines:
        exec(line, {})  # noqa: S102 - the doc's own import lines, nothing else


@pytest.mark.parametrize("doc", DOCS)
def test_every_repository_path_in_the_doc_exists(doc: str) -> None:
    paths = {span.split()[0].rstrip("/") for span in code_spans((ROOT / doc).read_text())
             if span.startswith(TOP_DIRS) and "<" not in span and "*" not in span}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_what_a_plugin_imports_comes_from_the_base_module() -> None:
    from wrapresolver import errors
    from wrapresolver.backends import base, objectstore_gc, reclaim
    from wrapresolver.core import limits

    assert base.io_timeout is limits.io_timeout
    assert base.KeyInfo is objectstore_gc.KeyInfo
    assert (base.StoredItem, base.Reclaimed) == (reclaim.StoredItem, reclaim.Reclaimed)
    for name in ("AuthError", "NotFoundError", "NetworkError", "DiskFullError", "IntegrityError", "ParamError"):
        assert getattr(base, name) is getattr(errors, name)
        assert name in base.__all__
    assert {"io_timeout", "KeyInfo", "StoredItem", "Reclaimed"} <= set(base.__all__)
