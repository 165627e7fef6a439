"""Fuzzing the tar reader: mutated headers and streams end in a refusal we wrote, never a crash.

Every outcome is either a clean extraction or a `WrapError` (integrity, unsafe entry,
transfer); and nothing ever appears outside the workspace.
"""

from __future__ import annotations

import io
import tarfile
import tempfile
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st

from tests.transfer.test_apply import layer_of
from wrapresolver.errors import WrapError
from wrapresolver.transfer.apply import Extractor

NAME_PARTS = st.sampled_from(["a", "b", "..", ".", "", ".wh.a", ".wh..wh..opq", "dir", "x" * 120, "é"])
NAMES = st.lists(NAME_PARTS, min_size=1, max_size=6).map("/".join)
KINDS = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.FIFOTYPE])


@st.composite
def archives(draw) -> bytes:
    buffer = io.BytesIO()
    fmt = draw(st.sampled_from([tarfile.PAX_FORMAT, tarfile.GNU_FORMAT, tarfile.USTAR_FORMAT]))
    with tarfile.open(fileobj=buffer, mode="w", format=fmt) as tar:
        for _ in range(draw(st.integers(1, 5))):
            info = tarfile.TarInfo(draw(NAMES) or "f")
            info.type = draw(KINDS)
            info.mode = draw(st.integers(0, 0o7777))
            info.linkname = draw(NAMES) if info.type in (tarfile.SYMTYPE, tarfile.LNKTYPE) else ""
            if fmt == tarfile.PAX_FORMAT and draw(st.booleans()):
                info.pax_headers = {draw(st.sampled_from(["size", "path", "linkpath", "mtime", "comment"])):
                                    draw(st.text(max_size=20))}
            data = draw(st.binary(max_size=600)) if info.type == tarfile.REGTYPE else b""
            info.size = len(data)
            try:
                tar.addfile(info, io.BytesIO(data) if data else None)
            except (ValueError, UnicodeError, tarfile.TarError):
                continue  # the writer refuses some combinations (ustar name lengths); skip them
    return buffer.getvalue()


@st.composite
def mutated(draw) -> bytes:
    blob = bytearray(draw(archives()))
    for _ in range(draw(st.integers(0, 8))):
        if not blob:
            break
        where = draw(st.integers(0, len(blob) - 1))
        kind = draw(st.sampled_from(["byte", "field", "truncate", "insert"]))
        if kind == "byte":
            blob[where] = draw(st.integers(0, 255))
        elif kind == "field":  # overwrite a header field (size, mode, type, ...) of some block
            block = where - where % 512
            offset = draw(st.sampled_from([0, 100, 124, 136, 148, 156, 157, 257, 345]))
            value = draw(st.binary(min_size=1, max_size=12))
            blob[block + offset:block + offset + len(value)] = value
        elif kind == "truncate":
            del blob[where:]
        else:
            blob[where:where] = draw(st.binary(max_size=64))
    return bytes(blob)


def extract(*blobs: bytes) -> tuple[Path, Path, tempfile.TemporaryDirectory]:
    holder = tempfile.TemporaryDirectory()
    root = Path(holder.name)
    dest, outside = root / "ws", root / "outside"
    dest.mkdir()
    outside.mkdir()
    extractor = Extractor(dest)
    try:
        for blob in blobs:
            extractor.apply(iter([blob]), layer_of(blob), "fuzzed layer")
        extractor.finish()
    except WrapError:
        pass  # a refusal with our message: the expected way to fail
    return root, outside, holder


def assert_contained(root: Path) -> None:
    """Only the workspace and the (still empty) sibling exist next to each other."""
    assert sorted(p.name for p in root.iterdir()) == ["outside", "ws"]
    assert list((root / "outside").iterdir()) == []


@given(mutated())
def test_a_mutated_layer_is_extracted_or_refused_never_a_crash(blob: bytes) -> None:
    root, outside, holder = extract(blob)
    with holder:
        assert list(outside.iterdir()) == []
        assert_contained(root)


@given(st.lists(mutated(), min_size=2, max_size=3))
def test_a_stack_of_mutated_layers_stays_inside_the_workspace(blobs: list[bytes]) -> None:
    root, outside, holder = extract(*blobs)
    with holder:
        assert list(outside.iterdir()) == []


@given(st.binary(max_size=3000))
def test_arbitrary_bytes_as_a_layer_are_refused_cleanly(blob: bytes) -> None:
    _, outside, holder = extract(blob)
    with holder:
        assert list(outside.iterdir()) == []
