"""Encryption keys as people write them: 32 bytes in hex or base64, and comma-separated lists of them.

A leaf module (it imports only the error tree), so that ``config`` can check keys without importing ``crypto``.
Messages name the variable, never the value.
"""

from __future__ import annotations

import base64
import binascii
import string

from .errors import ConfigError

KEY_BYTES = 32
_HEX = frozenset(string.hexdigits)


def parse_key(text: str, *, name: str = "TOKEN_ENCRYPTION_KEY") -> bytes:
    """The 32 key bytes written as 64 hex characters or as base64 (standard or url-safe, padding optional).

    ``name`` is the variable named in the error; the value itself is never echoed.
    """
    candidate = text.strip()
    key = _from_hex(candidate) if len(candidate) == 2 * KEY_BYTES else None
    if key is None:
        key = _from_base64(candidate)
    if key is None or len(key) != KEY_BYTES:
        raise ConfigError(f"{name} must be 32 bytes, base64 or hex")
    return key


def _from_hex(text: str) -> bytes | None:
    # bytes.fromhex() would also accept spaces; a key is exactly 64 hex digits.
    return bytes.fromhex(text) if set(text) <= _HEX else None


def _from_base64(text: str) -> bytes | None:
    return _b64decode(text.replace("-", "+").replace("_", "/"))


def _b64decode(text: str) -> bytes | None:
    """Strict base64 (``+/`` alphabet), padding optional; None when it is not base64."""
    body = text.rstrip("=")
    if not body or len(body) % 4 == 1:
        return None
    try:
        return base64.b64decode(body + "=" * (-len(body) % 4), validate=True)
    except binascii.Error:
        return None


def split_keys(text: str) -> list[str]:
    """The entries of a comma-separated key list (``TOKEN_ENCRYPTION_OLD_KEYS``), blanks dropped."""
    return [part.strip() for part in text.split(",") if part.strip()]


__all__ = ["KEY_BYTES", "parse_key", "split_keys"]
