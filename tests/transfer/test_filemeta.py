"""The recorded owner of every kind of entry, given as root; a root the kernel refuses chown
(no CAP_CHOWN) still extracts everything, the entries then stay its own, and it stops trying."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from wrapresolver.transfer.filemeta import try_chown

REPO = Path(__file__).resolve().parents[2]
EXTRACT = """
import json, sys, tarfile
from pathlib import Path
from tests.transfer.test_apply import apply_all, entry, tar_bytes
from wrapresolver.transfer.apply import INLINE_MAX

kind, dest = sys.argv[1], Path(sys.argv[2])
members = {
    "a large file, streamed by the extractor": [entry("big", data=b"x" * (INLINE_MAX + 1))],
    "a small file, written at drain": [entry("small", data=b"x")],
    "small files, written by the writer process": [entry(f"f{i}", data=b"x") for i in range(200)],
    "a symlink": [entry("link", tarfile.SYMTYPE, link="elsewhere")],
    "a directory, finished last": [entry("dir", tarfile.DIRTYPE, mode=0o750)],
}[kind]
for info, _ in members:
    info.uid = info.gid = 1234
extractor = apply_all(dest, tar_bytes(*members))
owners = sorted({(p.lstat().st_uid, p.lstat().st_gid) for p in dest.iterdir()})
entries = sum(1 for _ in dest.iterdir())
print(json.dumps({"restore_owners": extractor.restore_owners, "owners": owners, "entries": entries}))
"""
KINDS = ["a large file, streamed by the extractor", "a small file, written at drain",
         "small files, written by the writer process", "a symlink", "a directory, finished last"]

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="giving recorded owners needs root")


def extract_as_root(tmp_path: Path, kind: str, can_chown: bool) -> dict:
    dest = tmp_path / "ws"
    dest.mkdir()
    command = [sys.executable, "-c", EXTRACT, kind, str(dest)]
    if not can_chown:
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            pytest.skip("setpriv (util-linux) is needed to drop CAP_CHOWN")
        command = [setpriv, "--bounding-set=-chown", *command]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@needs_root
@pytest.mark.parametrize("kind", KINDS)
def test_as_root_every_kind_of_entry_gets_its_recorded_owner(tmp_path: Path, kind: str) -> None:
    result = extract_as_root(tmp_path, kind, can_chown=True)
    assert result["owners"] == [[1234, 1234]]
    assert result["restore_owners"] is True


@needs_root
@pytest.mark.parametrize("kind", KINDS)
def test_a_root_without_cap_chown_extracts_every_kind_of_entry_as_its_own_and_stops_trying(
        tmp_path: Path, kind: str) -> None:
    result = extract_as_root(tmp_path, kind, can_chown=False)
    assert result["owners"] == [[0, 0]]
    assert result["entries"] == (200 if kind.startswith("small files") else 1)
    assert result["restore_owners"] is False


def test_a_chown_error_other_than_a_refusal_is_raised(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        try_chown(os.lchown, str(tmp_path / "missing"), (os.geteuid(), os.getegid()))
