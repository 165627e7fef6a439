"""The stream adapters between a backend, the decompressor and the tar reader lose no byte.

They hand whole chunks out uncopied where they can (the fetch's speed depends on it), so
each is checked against arbitrary chunk boundaries and read sizes.
"""

from __future__ import annotations

import hashlib
import threading

from hypothesis import given, settings
from hypothesis import strategies as st

from wrapresolver.transfer.streams import BoundedPipe, HashingChunks

chunks = st.lists(st.binary(min_size=0, max_size=300), max_size=12)
sizes = st.lists(st.integers(min_value=1, max_value=700), min_size=1, max_size=20)


def _fed(pieces: list[bytes]) -> BoundedPipe:
    pipe = BoundedPipe(depth=2)

    def write() -> None:
        for piece in pieces:
            pipe.write(piece)
        pipe.finish()

    threading.Thread(target=write, daemon=True).start()
    return pipe


@settings(deadline=None)
@given(chunks, sizes)
def test_a_pipe_read_returns_exactly_what_was_asked_until_the_end(pieces: list[bytes], reads: list[int]) -> None:
    whole = b"".join(pieces)
    reader = _fed(pieces).reader
    got, at = [], 0
    for size in reads * 40:
        data = reader.read(size)
        assert data == whole[at:at + size]
        got.append(data)
        at += len(data)
        if not data:
            break
    assert b"".join(got) + reader.read(-1) == whole


def test_a_pipe_read_of_a_whole_chunk_hands_out_the_chunk_itself() -> None:
    first, second = b"a" * 1000, b"b" * 1000
    reader = _fed([first, second]).reader
    assert reader.read(1000) is first
    assert reader.read(10) == b"b" * 10
    assert reader.read(5000) == b"b" * 990
    assert reader.read(1) == b""


@given(chunks, sizes)
def test_hashing_chunks_read_back_every_byte_and_hash_them_all(pieces: list[bytes], reads: list[int]) -> None:
    whole = b"".join(pieces)
    blob = HashingChunks(iter(pieces))
    got = []
    for size in reads * 40:
        data = blob.read(size)
        assert len(data) <= size
        if not data:
            break
        got.append(data)
    got.append(blob.read())
    assert b"".join(got) == whole
    assert blob.read(10) == b""
    assert blob.size == len(whole)
    assert blob.digest == "sha256:" + hashlib.sha256(whole).hexdigest()


def test_hashing_chunks_hand_out_a_whole_chunk_uncopied() -> None:
    chunk = b"x" * 4096
    blob = HashingChunks(iter([chunk]))
    assert blob.read(1 << 20) is chunk
