"""API keys with names and scopes: ``LIGHTKEEPER_API_KEYS`` as people write it, and the check of a presented key.

``LIGHTKEEPER_API_KEYS`` is entries separated by ``;``, each ``NAME:SCOPE[,SCOPE…]:KEY``::

    web:connect,read:<key>;worker:tokens,proxy:<key>;ops:admin:<key>

``NAME`` is ``[a-z0-9_-]+`` and may repeat (two keys of one name: a key is rotated without downtime). ``KEY``
has at least 32 characters and no ``:`` or ``;`` (``lightkeeper gen-api-key`` makes one). ``LIGHTKEEPER_API_KEY``
stays what it was: one key, named ``default``, with every scope.

A leaf module (it imports nothing of lightkeeper), so that ``config`` can check the setting. Messages name an
entry by its position, never by its key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum

#: Shorter keys could be guessed over the network.
KEY_MIN_CHARS = 32
#: The name ``LIGHTKEEPER_API_KEY`` (one key, every scope) goes by in logs and metrics.
DEFAULT_NAME = "default"
_NAME = re.compile(r"[a-z0-9_-]{1,64}")
_ENTRY_RULE = "NAME:SCOPE[,SCOPE...]:KEY"


class Scope(StrEnum):
    """What a key may do; ``admin`` is everything, plus the dashboard."""

    READ = "read"  # list and read connections, runs, events; /metrics
    CONNECT = "connect"  # connect sessions (links), disconnect
    TOKENS = "tokens"  # the token route
    PROXY = "proxy"  # the proxy route, and the stock route (it writes to Lightspeed as the proxy does)
    REFRESH = "refresh"  # start refresh runs
    ADMIN = "admin"


ALL_SCOPES = frozenset(Scope)


@dataclass(frozen=True)
class ApiKey:
    """One configured key; ``repr`` and ``str`` never show its value."""

    name: str
    scopes: frozenset[Scope]
    secret: str = field(repr=False)

    def allows(self, scope: Scope | None) -> bool:
        """Whether this key may do what ``scope`` names (None: anything a key may do at all)."""
        return scope is None or Scope.ADMIN in self.scopes or scope in self.scopes

    def __str__(self) -> str:
        return f"key {self.name!r}"


class ApiKeyError(ValueError):
    """A malformed ``LIGHTKEEPER_API_KEYS``: the message names the entry's position, never its key."""


def parse_api_keys(text: str) -> tuple[ApiKey, ...]:
    """The keys of a ``LIGHTKEEPER_API_KEYS`` value (empty entries, e.g. a trailing ``;``, are skipped)."""
    entries = [entry.strip() for entry in text.split(";") if entry.strip()]
    numbered = list(enumerate(entries, start=1))
    keys: list[ApiKey] = []
    seen: dict[str, int] = {}
    for number, entry in numbered:
        key = _parse_entry(number, len(numbered), entry)
        if key.secret in seen:
            raise ApiKeyError(f"entry {number} of {len(numbered)} repeats the key of entry {seen[key.secret]}")
        seen[key.secret] = number
        keys.append(key)
    return tuple(keys)


def _parse_entry(number: int, total: int, entry: str) -> ApiKey:
    where = f"entry {number} of {total}"
    parts = entry.split(":")
    if len(parts) != 3:
        raise ApiKeyError(f"{where} is not {_ENTRY_RULE}")
    name, scope_text, secret = (part.strip() for part in parts)
    if not _NAME.fullmatch(name):
        raise ApiKeyError(f"{where}: NAME must be 1 to 64 of a-z, 0-9, _ and -")
    scopes: set[Scope] = set()
    for word in scope_text.split(","):
        try:
            scopes.add(Scope(word.strip()))
        except ValueError:
            known = ", ".join(scope.value for scope in Scope)
            raise ApiKeyError(f"{where} ({name}): each SCOPE must be one of {known}") from None
    if len(secret) < KEY_MIN_CHARS or any(ch.isspace() or not ch.isprintable() for ch in secret):
        raise ApiKeyError(
            f"{where} ({name}): KEY must be at least {KEY_MIN_CHARS} printable characters without spaces, "
            "':' or ';' (`lightkeeper gen-api-key` makes one)"
        )
    return ApiKey(name, frozenset(scopes), secret)


def generate_api_key() -> str:
    """A new random key: 43 URL-safe characters (256 bits), never a ``:`` or ``;``."""
    return secrets.token_urlsafe(32)


class KeyRing:
    """The configured keys; ``match`` compares a presented key with each of them in constant time."""

    def __init__(self, keys: Iterable[ApiKey]) -> None:
        self.keys = tuple(keys)
        self._digests = [(hashlib.sha256(key.secret.encode()).digest(), key) for key in self.keys]

    def __bool__(self) -> bool:
        return bool(self.keys)

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(key.name for key in self.keys))

    def match(self, presented: str) -> ApiKey | None:
        """The key ``presented`` is, or None. Every key is compared (no early exit), digests of equal length."""
        given = hashlib.sha256(presented.encode("utf-8", "surrogateescape")).digest()
        found: ApiKey | None = None
        for digest, key in self._digests:
            if hmac.compare_digest(given, digest):
                found = key
        return found


__all__ = [
    "ALL_SCOPES",
    "DEFAULT_NAME",
    "KEY_MIN_CHARS",
    "ApiKey",
    "ApiKeyError",
    "KeyRing",
    "Scope",
    "generate_api_key",
    "parse_api_keys",
]
