"""R-Series cursor pagination: which records a page holds, its signed cursors and its ``next``/``previous`` URLs.

Lightspeed pages collections with opaque ``after=`` / ``before=`` cursors and answers the COMPLETE URLs of the
neighbouring pages in ``@attributes``; a client (or a proxy) must follow them as given, never build its own.
Cursors here are HMAC-signed with a key that changes on every reset, so a forged, edited or stale cursor is
refused (400) instead of quietly starting over: stricter than needed, never kinder. Pure functions, no HTTP.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import hashlib
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlencode

DEFAULT_LIMIT = 100
MAX_LIMIT = 100
CURSOR_PARAMS = ("after", "before")
_MAC_BYTES = 16


@dataclass(frozen=True)
class Cursor:
    """A page boundary: records with ID greater than ``item_id`` (``after``) or less than it (``before``)."""

    direction: str  # "after" or "before"
    item_id: int


@dataclass(frozen=True)
class Page:
    """The IDs one page holds, and the cursors of its neighbours (None: no such page)."""

    ids: list[int]
    next: Cursor | None
    previous: Cursor | None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def encode_cursor(key: bytes, account_id: int, cursor: Cursor) -> str:
    """Opaque and bound to its account: base64url of a small JSON and its truncated HMAC."""
    payload = json.dumps({"a": account_id, "d": cursor.direction, "i": cursor.item_id}, separators=(",", ":"))
    raw = payload.encode()
    return _b64(raw + hmac.new(key, raw, hashlib.sha256).digest()[:_MAC_BYTES])


def decode_cursor(key: bytes, account_id: int, direction: str, value: str) -> Cursor | None:
    """The cursor ``value`` stands for, or None if it was not issued (by this world, for this account and
    direction): an ``after`` value sent as ``before`` is as forged as a made-up one."""
    try:
        blob = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4))
    except (binascii.Error, ValueError):
        return None
    raw, mac = blob[:-_MAC_BYTES], blob[-_MAC_BYTES:]
    expected = hmac.new(key, raw, hashlib.sha256).digest()[:_MAC_BYTES]
    if len(blob) <= _MAC_BYTES or not hmac.compare_digest(mac, expected):
        return None
    data = json.loads(raw)  # signed by us, so well-formed
    if data.get("a") != account_id or data.get("d") != direction:
        return None
    return Cursor(direction, int(data["i"]))


def page_of(ids: Sequence[int], limit: int, cursor: Cursor | None) -> Page:
    """The page of the ascending ``ids`` that ``cursor`` asks for (the first page without one)."""
    if cursor is not None and cursor.direction == "before":
        end = bisect.bisect_left(ids, cursor.item_id)
        start = max(0, end - limit)
    else:
        start = 0 if cursor is None else bisect.bisect_right(ids, cursor.item_id)
        end = min(len(ids), start + limit)
    chosen = list(ids[start:end])
    if chosen:
        following = Cursor("after", chosen[-1]) if end < len(ids) else None
        preceding = Cursor("before", chosen[0]) if start > 0 else None
        return Page(chosen, following, preceding)
    # An empty page past either end still links back to the records on its other side.
    if cursor is None:
        return Page([], None, None)
    if cursor.direction == "before":
        return Page([], Cursor("after", cursor.item_id - 1) if end < len(ids) else None, None)
    return Page([], None, Cursor("before", cursor.item_id + 1) if start > 0 else None)


def page_url(base: str, query: Sequence[tuple[str, str]], cursor_param: str, cursor_value: str) -> str:
    """``base`` (scheme, host, path) with the request's own query minus any cursor, plus the new cursor."""
    kept = [(name, value) for name, value in query if name not in CURSOR_PARAMS]
    return f"{base}?{urlencode([*kept, (cursor_param, cursor_value)])}"


__all__ = [
    "CURSOR_PARAMS",
    "DEFAULT_LIMIT",
    "MAX_LIMIT",
    "Cursor",
    "Page",
    "decode_cursor",
    "encode_cursor",
    "page_of",
    "page_url",
]
