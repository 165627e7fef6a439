"""The names the docs (docs/*.md and README.md) give are real: a reader who copies one gets it.

In each doc, every dotted `wrapresolver...` name in backticks imports (a module, or an attribute of
one) or is an entry-point group `pyproject.toml` declares, every `from wrapresolver... import ...` line of a code block runs, and every path
of this repository in backticks exists, every module path
`wrapresolver/...py` exists and every `wrapresolver <command>` shown as code is a subcommand
of `wrapresolver --help`; the configuration reference lists exactly the ConfigMap keys
core.checks.known_config_keys accepts, and its Events table every reason the controller can
emit.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = sorted(str(p.relative_to(ROOT)) for p in [*(ROOT / "docs").glob("*.md"), ROOT / "README.md"])
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
    paths = {span.split()[0].split("::")[0].rstrip("/") for span in code_spans((ROOT / doc).read_text())
             if span.startswith(TOP_DIRS) and "<" not in span and "*" not in span}
    missing = sorted(p for p in paths if not (ROOT / p).exists())
    assert not missing, f"{doc} names paths that do not exist: {missing}"


def test_what_a_plugin_imports_comes_from_the_base_module() -> None:
    from wrapresolver import errors
    from wrapresolver.backends import base, objectstore_reclaim, reclaim
    from wrapresolver.core import limits

    assert base.io_timeout is limits.io_timeout
    assert base.KeyInfo is objectstore_reclaim.KeyInfo
    assert (base.StoredItem, base.Reclaimed) == (reclaim.StoredItem, reclaim.Reclaimed)
    for name in ("AuthError", "NotFoundError", "NetworkError", "DiskFullError", "IntegrityError", "ParamError"):
        assert getattr(base, name) is getattr(errors, name)
        assert name in base.__all__
    assert {"io_timeout", "KeyInfo", "StoredItem", "Reclaimed"} <= set(base.__all__)


USER_DOCS = sorted([*(ROOT / "docs").glob("*.md"), ROOT / "README.md"])
"""Every page a reader follows: a module or command named anywhere there must be real."""


def code_text(text: str) -> list[str]:
    """The fenced code blocks and the inline code spans: where a name is meant to be copied."""
    blocks = re.findall(r"^```[^\n]*\n(.*?)^```", text, re.MULTILINE | re.DOTALL)
    prose = re.sub(r"^```[^\n]*\n.*?^```", "", text, flags=re.MULTILINE | re.DOTALL)
    return [*blocks, *re.findall(r"``?([^`\n]+)``?", prose)]


def subcommands() -> set[str]:
    """The COMMANDs `wrapresolver --help` lists."""
    from wrapresolver.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit):
        main(["--help"])
    listing = out.getvalue().split("positional arguments:", 1)[1].split("options:", 1)[0]
    return set(re.findall(r"^ {4}(\w[\w-]*)", listing, re.MULTILINE))


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: p.name)
def test_every_module_path_the_doc_names_exists(doc: Path) -> None:
    paths = set(re.findall(r"\bwrapresolver/[\w/]+\.py\b", doc.read_text()))
    missing = sorted(p for p in paths if not (ROOT / p).is_file())
    assert not missing, f"{doc.name} names modules that do not exist: {missing}"


@pytest.mark.parametrize("doc", USER_DOCS, ids=lambda p: p.name)
def test_every_wrapresolver_command_the_doc_shows_is_a_subcommand(doc: Path) -> None:
    named = {m.group(1) for code in code_text(doc.read_text())
             for m in re.finditer(r"(?:^|[\s;&|(\[`$])wrapresolver ([a-z][\w-]*)", code, re.MULTILINE)}
    unknown = sorted(named - subcommands())
    assert not unknown, f"{doc.name} shows `wrapresolver <command>` for commands that do not exist: {unknown}"


def test_the_configuration_reference_lists_exactly_the_keys_the_resolver_reads() -> None:
    from wrapresolver.core.checks import known_config_keys
    from wrapresolver.core.params import CONFIG_KEYS, CORE_PARAMS, config_key
    from wrapresolver.resolve import backend_option_names

    text = (ROOT / "docs" / "cluster-admins.md").read_text()
    section = text.split("## Configuration reference", 1)[1].split("\n## ", 1)[0]
    keys = set(re.findall(r"^\| `([a-z<>-]+)` \|", section, re.MULTILINE))
    listed = {k for k in keys if "<" not in k}
    unknown = sorted(listed - known_config_keys(backend_option_names()))
    assert not unknown, f"the configuration reference lists keys the resolver does not read: {unknown}"
    absent = sorted({*CONFIG_KEYS, *(config_key(p) for p in CORE_PARAMS)} - listed)
    assert not absent, f"the configuration reference leaves out keys the resolver reads: {absent}"
    assert "default-<option>" in keys, "the backend options' defaults are described too"


def test_the_events_table_lists_every_reason_the_controller_can_emit() -> None:
    from wrapresolver import errors
    from wrapresolver.core import checks, limits, pertask

    reasons = {v for k, v in vars(checks).items() if k.startswith("REASON_")}
    reasons |= {v for k, v in vars(pertask).items() if k.startswith("REASON_")}
    reasons |= {c.reason for c in (errors.WrapError, errors.ParamError, errors.SourceError, errors.RewriteError,
                                   limits.LimitError)}
    sources = [*(ROOT / "wrapresolver" / "controller").glob("*.py"), ROOT / "wrapresolver" / "resolve.py"]
    for path in sources:
        text = path.read_text()
        reasons |= set(re.findall(r'reason\s*=\s*"([A-Z]\w+)"', text))
        reasons |= set(re.findall(r'failure_status\(\s*"([A-Z]\w+)"', text))
        reasons |= set(re.findall(r'_warn\(kube, [^\n]*"([A-Z][a-z]\w+)",', text))
    assert {"PodSecurityRestricted", "StorageAnnotationIgnored", "StatesNotReclaimed", "NotFound"} <= reasons
    text = (ROOT / "docs" / "cluster-admins.md").read_text()
    table = text.split("- **Events**", 1)[1].split("\n- **", 1)[0]
    missing = sorted(r for r in reasons if f"`{r}`" not in table)
    assert not missing, f"cluster-admins.md's Events table leaves out reasons the controller emits: {missing}"
