"""A tar header's fields decoded: the ustar layout, the type flags, numbers, checksums and
PAX records, and the `Member` they describe.

Apart from tarreader.py, which reads headers off a stream, holds them to bounds and follows
the chain of extended headers: these are the pure decodings it applies, each as `tarfile`
decodes it (octal or GNU base-256 numbers, signed or unsigned checksums, PAX records whose
length counts the whole record, PAX times as decimal or float seconds).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

BLOCK = 512

REGULAR, AREGULAR, HARDLINK, SYMLINK, CHAR, BLOCKDEV, DIRECTORY, FIFO, CONTIGUOUS = (
    b"0", b"\0", b"1", b"2", b"3", b"4", b"5", b"6", b"7",
)
PAX, PAX_GLOBAL, PAX_SOLARIS, GNU_LONGNAME, GNU_LONGLINK, GNU_SPARSE = b"x", b"g", b"X", b"L", b"K", b"S"
REGULAR_TYPES = frozenset((REGULAR, AREGULAR, CONTIGUOUS))
KNOWN_TYPES = REGULAR_TYPES | {HARDLINK, SYMLINK, CHAR, BLOCKDEV, DIRECTORY, FIFO}
NUL_BLOCK = bytes(BLOCK)
USTAR = struct.Struct("100s8s8s8s12s12s8sc100s88s155s12x")
"""name, mode, uid, gid, size, mtime, checksum, typeflag, linkname, (magic to devminor), prefix."""
EXTENDED = frozenset((b"x", b"g", b"X", b"L", b"K"))
PAX_NUMBERS = {"uid", "gid", "size"}


class TarFormatError(Exception):
    """The stream is not a tar archive (or ends inside one): a corrupt layer, not a hostile one."""


@dataclass(slots=True)
class Member:
    """One entry as its headers (ustar, then extended ones) describe it."""

    name: str
    type: bytes
    mode: int
    uid: int
    gid: int
    size: int
    mtime_ns: int
    linkname: str

    def isreg(self) -> bool:
        return self.type in REGULAR_TYPES

    def isdir(self) -> bool:
        return self.type == DIRECTORY

    def issym(self) -> bool:
        return self.type == SYMLINK

    def islnk(self) -> bool:
        return self.type == HARDLINK

    def isdev(self) -> bool:
        """A character or block device or a fifo: never workspace content."""
        return self.type in (CHAR, BLOCKDEV, FIFO)

    @property
    def has_data(self) -> bool:
        """Whether `size` bytes of data follow the header (as `tarfile` decides it)."""
        return self.type in REGULAR_TYPES or self.type not in KNOWN_TYPES


def text(raw: bytes) -> str:
    end = raw.find(b"\0")
    return (raw if end < 0 else raw[:end]).decode("utf-8", "surrogateescape")


def number(raw: bytes, what: str) -> int:
    """An octal field, or GNU base-256 (first byte 0x80 positive, 0xff negative)."""
    if raw[0] & 0x80:
        if raw[0] not in (0o200, 0o377):
            raise TarFormatError(f"tar header has an invalid {what} field {raw!r}")
        value = int.from_bytes(raw[1:], "big")
        return value - 256 ** (len(raw) - 1) if raw[0] == 0o377 else value
    try:
        return int(raw.split(b"\0", 1)[0] or b"0", 8)  # int() strips the spaces
    except ValueError:
        if not raw.split(b"\0", 1)[0].strip():
            return 0
        raise TarFormatError(f"tar header has an invalid {what} field {raw!r}") from None


def octal(raw: bytes, what: str) -> int:
    """`_number` for the usual field, NUL- or space-terminated octal, in one C call."""
    try:
        return int(raw.split(b"\0", 1)[0] or b"0", 8)  # int() strips the spaces
    except ValueError:
        return number(raw, what)


def checksum_ok(block: bytes, field: bytes) -> bool:
    stored = octal(field, "checksum")
    if block.count(0) > BLOCK - 256:
        # Under 256 non-zero bytes sum to less than 65,521, so Adler-32's first half (one plus
        # the byte sum, modulo 65,521) is the exact sum, in C: summing in Python cost more
        # than the rest of a header.
        total = (zlib.adler32(block) & 0xFFFF) - 1
    else:
        total = sum(block)
    unsigned = total - sum(field) + 8 * 32
    if stored == unsigned:
        return True
    signed = unsigned - 256 * sum(1 for byte in block if byte > 127) + 256 * sum(1 for byte in block[148:156] if byte > 127)
    return stored == signed


def pax_records(data: bytes) -> dict[str, str]:
    """`"%d %s=%s\\n"` records, where the number counts the whole record."""
    records: dict[str, str] = {}
    pos = 0
    while pos < len(data):
        space = data.find(b" ", pos)
        if space < 0 or not data[pos:space].isdigit():
            if not data[pos:].strip(b"\0"):
                break  # padding after the last record
            raise TarFormatError("a PAX header record has no length")
        length = int(data[pos:space])
        end = pos + length
        equals = data.find(b"=", space)
        if length <= space - pos + 1 or end > len(data) or equals < 0 or equals >= end or data[end - 1:end] != b"\n":
            raise TarFormatError("a PAX header record is malformed")
        keyword = data[space + 1:equals].decode("utf-8", "surrogateescape")
        records[keyword] = data[equals + 1:end - 1].decode("utf-8", "surrogateescape")
        pos = end
    return records


def pax_mtime_ns(value: str, fallback: int) -> int:
    """A PAX `mtime` record's seconds, as nanoseconds; `fallback` when it is no number."""
    seconds, _, frac = value.partition(".")
    try:
        whole = int(seconds)
        nanos = int((frac + "000000000")[:9] or 0) if frac else 0
    except ValueError:
        try:
            return int(float(value) * 1_000_000_000)  # "1.5e9": tarfile reads any float
        except ValueError:
            return fallback
    return whole * 1_000_000_000 + (-nanos if seconds.startswith("-") else nanos)
