"""The fast tar writer produces exactly the bytes `tarfile` writes in PAX format."""

from __future__ import annotations

import io
import tarfile

import pytest

from wrapresolver.transfer import tarwriter
from wrapresolver.transfer.tarwriter import DIRECTORY, HARDLINK, REGULAR, SYMLINK, TarWriter, header

CASES = [
    ("plain.txt", REGULAR, dict(mode=0o644, size=5, mtime_ns=1_700_000_000_000_000_000)),
    ("exec.sh", REGULAR, dict(mode=0o755, uid=1000, gid=1000, size=0, mtime_ns=1_700_000_000_123_456_789)),
    ("a/dir", DIRECTORY, dict(mode=0o750, mtime_ns=1_600_000_000_000_000_001)),
    ("link", SYMLINK, dict(mode=0o777, linkname="../target with space")),
    ("hard", HARDLINK, dict(linkname="plain.txt")),
    ("ünïcödé/名前.txt", REGULAR, dict(size=3)),
    ("new\nline", REGULAR, dict(size=1)),
    ("x" * 99 + "/" + "y" * 150, REGULAR, dict(size=2, mtime_ns=5)),
    ("abs-link", SYMLINK, dict(linkname="/" + "deep/" * 30 + "target")),
    ("bad-\udcff-bytes", REGULAR, dict(size=1)),
    ("big-ids", REGULAR, dict(uid=2**22, gid=2**23, size=1)),
    (".wh.gone", REGULAR, dict()),
]


def reference(name: str, typeflag: bytes, fields: dict) -> bytes:
    """What tarfile writes for the same entry (the layer writer's previous implementation)."""
    info = tarfile.TarInfo(name)
    info.type = typeflag
    info.mode = fields.get("mode", 0o644)
    info.uid, info.gid = fields.get("uid", 0), fields.get("gid", 0)
    info.uname = info.gname = ""
    info.size = fields.get("size", 0)
    info.linkname = fields.get("linkname", "")
    seconds, nanos = divmod(fields.get("mtime_ns", 0), 1_000_000_000)
    info.mtime = seconds
    if nanos:
        info.pax_headers = {"mtime": f"{seconds}.{nanos:09d}"}
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:", format=tarfile.PAX_FORMAT) as tar:
        tar.addfile(info, io.BytesIO(b"z" * info.size) if info.size else None)
    return out.getvalue()


def ours(name: str, typeflag: bytes, fields: dict) -> bytes:
    out = io.BytesIO()
    writer = TarWriter(out)
    size = fields.get("size", 0)
    writer.add(header(name, typeflag, **fields), io.BytesIO(b"z" * size), size)
    writer.close()
    return out.getvalue()


@pytest.mark.parametrize("name,typeflag,fields", CASES, ids=[repr(c[0])[:30] for c in CASES])
def test_every_kind_of_entry_encodes_exactly_as_tarfile_does(name: str, typeflag: bytes, fields: dict) -> None:
    assert ours(name, typeflag, fields) == reference(name, typeflag, fields)


def test_tarfile_reads_back_names_links_and_nanosecond_mtimes() -> None:
    out = io.BytesIO()
    writer = TarWriter(out)
    for name, typeflag, fields in CASES:
        size = fields.get("size", 0)
        writer.add(header(name, typeflag, **fields), io.BytesIO(b"z" * size), size)
    writer.close()
    out.seek(0)
    with tarfile.open(fileobj=out, mode="r:") as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == [c[0] for c in CASES]
    assert members[1].pax_headers["mtime"] == "1700000000.123456789"
    assert members[8].linkname == CASES[8][2]["linkname"]


def test_a_file_that_shrinks_while_stored_is_an_error_not_a_short_entry() -> None:
    writer = TarWriter(io.BytesIO())
    with pytest.raises(OSError, match="shrank"):
        writer.add(header("f", REGULAR, size=10), io.BytesIO(b"only5"), 10)


def test_the_archive_ends_on_a_record_boundary() -> None:
    out = io.BytesIO()
    writer = TarWriter(out)
    writer.add(header("f", REGULAR, size=1), io.BytesIO(b"z"), 1)
    writer.close()
    assert len(out.getvalue()) % tarwriter.RECORD == 0
