"""Where fetch writes a readOnly workspace: the directory of the volume that the task's read-only mount shows."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapresolver.core.stepspec import WorkspaceTransfer
from wrapresolver.errors import TransferError
from wrapresolver.steps.fill import fetch_destination, shown_directory


def spec(**fields: str) -> WorkspaceTransfer:
    return WorkspaceTransfer(workspace="src", target="file:///s", run="r", task="lint", backend="file", **fields)


def test_a_writable_workspace_is_fetched_where_it_is_mounted(tmp_path: Path) -> None:
    assert fetch_destination(spec(path=str(tmp_path))) == tmp_path


def test_an_unbound_read_only_workspace_is_not_looked_for(tmp_path: Path) -> None:
    assert fetch_destination(spec(path="", fill=str(tmp_path / "nowhere"), bound="false")) == Path("")


def test_the_binding_sub_path_is_found_first(tmp_path: Path) -> None:
    (tmp_path / "vol" / "reports").mkdir(parents=True)
    (tmp_path / "vol" / "other").mkdir()
    found = fetch_destination(spec(path=str(tmp_path / "vol" / "reports"), fill=str(tmp_path / "vol"),
                                   sub_path="reports"))
    assert found == tmp_path / "vol" / "reports"


def test_a_sub_path_the_pipeline_run_added_is_found_although_the_resolver_did_not_know_it(tmp_path: Path) -> None:
    view = tmp_path / "vol" / "run-level" / "reports"
    view.mkdir(parents=True)
    assert shown_directory(tmp_path / "vol", view, "reports", "src") == view


def test_a_volume_without_the_shown_directory_fails_naming_the_workspace_and_both_mounts(tmp_path: Path) -> None:
    (tmp_path / "vol" / "a").mkdir(parents=True)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    with pytest.raises(TransferError, match=r"workspace 'src'.*vol.*elsewhere.*step image is as new as the resolver"):
        shown_directory(tmp_path / "vol", elsewhere, "", "src")


def test_a_read_only_mount_that_is_not_there_fails_saying_it_is_not_mounted(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match=r"workspace 'src'.*cannot be read.*not mounted into the fetch step"):
        shown_directory(tmp_path, tmp_path / "missing", "", "src")


NAMES = st.text(alphabet="abcxyz019-_.", min_size=1, max_size=8).filter(lambda n: n not in (".", ".."))


@settings(max_examples=40, deadline=None)
@given(chain=st.lists(NAMES, min_size=0, max_size=6), known=st.integers(min_value=0, max_value=6),
       siblings=st.lists(NAMES, max_size=5))
def test_whatever_sub_path_the_volume_is_mounted_at_the_search_finds_that_directory(chain, known, siblings) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        volume = Path(tmp)
        for name in siblings:
            (volume / name).mkdir(exist_ok=True)
        view = volume.joinpath(*chain)
        view.mkdir(parents=True, exist_ok=True)
        told = "/".join(chain[len(chain) - min(known, len(chain)):])  # the binding's part; the run's is unknown
        assert shown_directory(volume, view, told, "src") == view
