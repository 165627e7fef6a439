"""Reading a WebDAV listing: the PROPFIND request body and its 207 Multi-Status answer.

The delete side (`list_keys`) is the one place the store lists anything. It walks
collections with `Depth: 1` rather than asking for `Depth: infinity`, which Apache mod_dav,
nginx and Nextcloud refuse by default. Kept apart from the transport because parsing
server-sent XML has its own rules: a bounded answer, hrefs that may be absolute URLs or
paths, percent-encoded, with or without a trailing slash.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from urllib.parse import unquote, urlsplit

from wrapresolver.errors import TransferError

DAV = "{DAV:}"
PROPFIND_BODY = (
    b'<?xml version="1.0" encoding="utf-8"?>'
    b'<propfind xmlns="DAV:"><prop><resourcetype/><getcontentlength/><getlastmodified/></prop></propfind>'
)
"""Only the three properties the delete side needs, so the answer stays small."""

MAX_LISTING = 64 << 20
"""Bytes of one collection's listing read at most (about 150,000 entries): a server that
sends more is refused rather than held in memory."""


@dataclass(frozen=True)
class Entry:
    """One member of a listed collection: its path segments, unquoted, from the server root."""

    segments: tuple[str, ...]
    collection: bool
    size: int | None
    modified: float | None


def parse_multistatus(body: bytes, url: str) -> list[Entry]:
    """Every `response` of a 207 answer; the listed collection itself is among them."""
    try:
        root = ET.fromstring(body)
    except ET.ParseError as exc:
        raise TransferError(f"the WebDAV server's listing of {url} is not valid XML: {exc}") from exc
    if root.tag != f"{DAV}multistatus":
        raise TransferError(f"the WebDAV server answered the listing of {url} with {root.tag!r}, "
                            f"not a DAV:multistatus")
    entries = []
    for response in root.iter(f"{DAV}response"):
        href = (response.findtext(f"{DAV}href") or "").strip()
        if not href:
            continue
        path = unquote(urlsplit(href).path)
        collection, size, modified = False, None, None
        for propstat in response.iter(f"{DAV}propstat"):
            status = propstat.findtext(f"{DAV}status") or ""
            if " 200 " not in f"{status} ":
                continue  # a property the server does not have for this member
            prop = propstat.find(f"{DAV}prop")
            if prop is None:
                continue
            kind = prop.find(f"{DAV}resourcetype")
            collection = collection or (kind is not None and kind.find(f"{DAV}collection") is not None)
            size = _int(prop.findtext(f"{DAV}getcontentlength")) if size is None else size
            modified = _http_date(prop.findtext(f"{DAV}getlastmodified")) if modified is None else modified
        segments = tuple(s for s in path.split("/") if s)
        entries.append(Entry(segments, collection or path.endswith("/"), size, modified))
    return entries


def _int(text: str | None) -> int | None:
    try:
        return int(text) if text and text.strip() else None
    except ValueError:
        return None


def _http_date(text: str | None) -> float | None:
    """RFC 1123 dates (`getlastmodified`) as epoch seconds; None when the server sends none."""
    if not text or not text.strip():
        return None
    try:
        return parsedate_to_datetime(text.strip()).timestamp()
    except (TypeError, ValueError):
        return None
