"""The tar reader sees exactly what `tarfile` sees, and refuses what it should not guess at."""

from __future__ import annotations

import io
import tarfile

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wrapresolver.errors import UnsafeArchiveError
from wrapresolver.transfer.tarreader import TarFormatError, TarReader
from wrapresolver.transfer.tarwriter import REGULAR, TarWriter, header

KINDS = (tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE)


def members_of(data: bytes) -> list[tuple]:
    """What our reader makes of an archive: the fields extraction uses, and each file's data."""
    reader = TarReader(io.BufferedReader(io.BytesIO(data)))
    out = []
    while (member := reader.next()) is not None:
        content = reader.read(member.size) if member.isreg() else b""
        out.append((member.name, member.type, member.mode, member.uid, member.gid, member.size,
                    member.mtime_ns // 1000, member.linkname, content))
    return out


def tarfile_members(data: bytes) -> list[tuple]:
    """The same fields as `tarfile` reads them (mtime to the microsecond: it keeps a float)."""
    out = []
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        for info in tar:
            content = tar.extractfile(info).read() if info.isreg() else b""  # type: ignore[union-attr]
            out.append((info.name, info.type, info.mode, info.uid, info.gid, info.size,
                        round(info.mtime * 1_000_000), info.linkname, content))
    return out


def archive(fmt: int, entries: list[tuple[str, bytes, str, int, int, float, bytes]]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for name, kind, link, mode, uid, mtime, data in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode, info.uid, info.gid, info.mtime = kind, link, mode, uid, uid, mtime
            if kind == tarfile.REGTYPE:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                tar.addfile(info)
    return buffer.getvalue()


names = st.lists(
    st.text(st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="/\0"), min_size=1, max_size=60),
    min_size=1, max_size=4,
).map("/".join)
entries = st.lists(
    st.tuples(
        names, st.sampled_from(KINDS), names, st.integers(0, 0o7777), st.integers(0, 2**21 - 1),
        st.floats(0, 2**32, allow_nan=False).map(lambda t: round(t, 6)), st.binary(max_size=1500),
    ),
    max_size=6,
)


@settings(max_examples=150, deadline=None)
@given(st.sampled_from((tarfile.USTAR_FORMAT, tarfile.GNU_FORMAT, tarfile.PAX_FORMAT)), entries)
def test_every_member_reads_as_tarfile_reads_it(fmt: int, items: list) -> None:
    try:
        data = archive(fmt, items)
    except ValueError:
        return  # a name this format cannot hold (ustar: too long or not ASCII)
    assert members_of(data) == tarfile_members(data)


class ShortReads:
    """A stream whose reads stop at arbitrary places, as a pipe of chunks does."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data, self._sizes, self._at, self._turn = data, sizes, 0, 0

    def read(self, size: int) -> bytes:
        size = min(size, self._sizes[self._turn % len(self._sizes)])
        self._turn += 1
        part = self._data[self._at:self._at + size]
        self._at += len(part)
        return part


@settings(max_examples=100, deadline=None)
@given(entries, st.lists(st.integers(1, 2000), min_size=1, max_size=8))
def test_members_read_the_same_whatever_the_stream_s_read_boundaries(items: list, cuts: list[int]) -> None:
    data = archive(tarfile.PAX_FORMAT, items)
    reader = TarReader(ShortReads(data, cuts))
    out = []
    while (member := reader.next()) is not None:
        content = reader.read(member.size) if member.isreg() else b""
        out.append((member.name, member.type, member.mode, member.uid, member.gid, member.size,
                    member.mtime_ns // 1000, member.linkname, content))
    assert out == tarfile_members(data)


def test_a_member_bigger_than_the_buffer_reads_whole_through_short_reads() -> None:
    big = bytes(range(256)) * (12 << 10)  # 3 MiB: read past the reader's 1 MiB buffer
    data = archive(tarfile.PAX_FORMAT, [("a", tarfile.REGTYPE, "", 0o644, 0, 0.0, b"x" * 700),
                                        ("big", tarfile.REGTYPE, "", 0o644, 0, 0.0, big)])
    reader = TarReader(ShortReads(data, [300_001, 4096, 1 << 20]))
    first = reader.next()
    assert first is not None and reader.read(first.size) == b"x" * 700
    second = reader.next()
    assert second is not None and second.name == "big"
    assert reader.read(second.size) == big
    assert reader.next() is None


def test_big_ids_in_base_256_and_long_links_read_as_tarfile_reads_them() -> None:
    data = archive(tarfile.GNU_FORMAT, [
        ("a" * 300, tarfile.SYMTYPE, "t" * 200, 0o777, 2**40, 1.0, b""),
        ("big-owner", tarfile.REGTYPE, "", 0o640, 2**33, 1_700_000_000.0, b"x" * 700),
    ])
    got = members_of(data)
    assert got == tarfile_members(data)
    assert got[1][3] == 2**33


def test_global_pax_headers_apply_to_every_later_member() -> None:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT, pax_headers={"uid": "4242"}) as tar:
        for name in ("one", "two"):
            tar.addfile(tarfile.TarInfo(name), io.BytesIO(b""))
    data = buffer.getvalue()
    assert members_of(data) == tarfile_members(data)
    assert [member[3] for member in members_of(data)] == [4242, 4242]


def test_nanosecond_times_of_our_own_layers_are_kept() -> None:
    sink = io.BytesIO()
    writer = TarWriter(sink)
    writer.add(header("f", REGULAR, size=0, mtime_ns=1_700_000_000_123_456_789))
    writer.close()
    reader = TarReader(io.BufferedReader(io.BytesIO(sink.getvalue())))
    member = reader.next()
    assert member is not None and member.mtime_ns == 1_700_000_000_123_456_789


def test_a_directory_with_a_gnu_long_name_loses_its_trailing_slash_as_in_tarfile() -> None:
    data = archive(tarfile.GNU_FORMAT, [("d" * 150, tarfile.DIRTYPE, "", 0o755, 0, 0.0, b"")])
    assert members_of(data) == tarfile_members(data)
    assert members_of(data)[0][0] == "d" * 150


def pax_block(records: bytes) -> bytes:
    """A PAX extended header holding exactly `records`, padded to whole blocks."""
    info = tarfile.TarInfo("././@PaxHeader")
    info.type, info.size = tarfile.XHDTYPE, len(records)
    return info.tobuf(tarfile.USTAR_FORMAT) + records + bytes(-len(records) % 512)


@pytest.mark.parametrize("body", [
    b"22 mtime=1700000000.5\n",  # fewer than nine digits: the general parser
    b"30 mtime=1700000000.123456000\n8 uid=7\n",  # not a lone mtime
    b"10 uid=70\n30 mtime=1700000000.123456000\n",
])
def test_pax_times_the_fast_path_does_not_take_read_as_tarfile_reads_them(body: bytes) -> None:
    data = pax_block(body) + tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT) + bytes(1024)
    assert members_of(data) == tarfile_members(data)


def test_two_pax_headers_for_one_entry_are_refused_as_readers_disagree_on_them() -> None:
    # tarfile applies the first, Go's archive/tar only the last, a merge the later one.
    data = (pax_block(b"30 mtime=1700000000.123456789\n") + pax_block(b"30 mtime=1600000000.000000001\n")
            + tarfile.TarInfo("f").tobuf(tarfile.USTAR_FORMAT) + bytes(1024))
    reader = TarReader(io.BufferedReader(io.BytesIO(data)))
    with pytest.raises(UnsafeArchiveError, match="two PAX headers"):
        reader.next()


def test_a_bad_checksum_after_the_first_header_is_an_error_not_the_end() -> None:
    data = bytearray(archive(tarfile.USTAR_FORMAT, [
        ("first", tarfile.REGTYPE, "", 0o644, 0, 1.0, b"a"),
        ("second", tarfile.REGTYPE, "", 0o644, 0, 1.0, b"b"),
    ]))
    data[1024] ^= 0x01  # the second header's name
    reader = TarReader(io.BufferedReader(io.BytesIO(bytes(data))))
    assert reader.next() is not None
    with pytest.raises(TarFormatError, match="checksum"):
        reader.next()


def test_an_archive_cut_inside_an_entry_is_an_error() -> None:
    data = archive(tarfile.USTAR_FORMAT, [("f", tarfile.REGTYPE, "", 0o644, 0, 1.0, b"x" * 2000)])
    reader = TarReader(io.BufferedReader(io.BytesIO(data[:1024])))
    member = reader.next()
    assert member is not None
    with pytest.raises(TarFormatError, match="end of data"):
        reader.read(member.size)


def test_an_empty_stream_is_not_an_archive() -> None:
    with pytest.raises(TarFormatError, match="empty"):
        TarReader(io.BufferedReader(io.BytesIO(b""))).next()


def test_sparse_members_are_refused() -> None:
    info = tarfile.TarInfo("holes")
    info.type = tarfile.GNUTYPE_SPARSE
    block = bytearray(info.tobuf(tarfile.GNU_FORMAT))
    reader = TarReader(io.BufferedReader(io.BytesIO(bytes(block) + bytes(1024))))
    with pytest.raises(UnsafeArchiveError, match="sparse"):
        reader.next()


def test_a_ustar_directory_whose_long_name_is_split_at_its_last_slash_reads_without_it() -> None:
    """Found by the property above: ustar splits a long name into prefix and name at a '/', and
    for a directory (written `name/`) the name part can be empty; tarfile reads `prefix`."""
    name = "00000000" + "\xa0" * 7 + "\u0800" * 36  # 130 bytes of UTF-8: longer than a ustar name field
    data = archive(tarfile.USTAR_FORMAT, [(name, tarfile.DIRTYPE, "", 0o755, 0, 0.0, b"")])
    assert data[:100].rstrip(b"\0") == b""  # the premise: the name field is empty, all of it in the prefix
    assert members_of(data) == tarfile_members(data)
    assert members_of(data)[0][0] == name
