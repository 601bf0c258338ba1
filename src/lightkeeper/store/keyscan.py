"""Finding stored ciphertexts by the key that made them, in every table that holds one (connection tokens and
PKCE verifiers): what a key rotation works through, and what ``check-config`` counts.

A ciphertext reads ``lk1:<kid>:…``; only that prefix is compared here (decrypting is ``crypto``'s job). A value
that is no ciphertext at all counts as "under another key", so a rotation meets it and reports it.
"""

from __future__ import annotations

from typing import NamedTuple

from sqlalchemy import ColumnElement, Engine, and_, func, or_, select

from .records import ConnectionRecord
from .schema import connections as t
from .schema import oauth_states as o

_KID_START, _KID_CHARS = 5, 8  # "lk1:" then the key id


class StoredVerifier(NamedTuple):
    """An OAuth state's PKCE verifier as stored (a ciphertext bound to the state's hash)."""

    state_hash: str
    code_verifier: str


class KeyScan:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def connections_under_other_key(self, key_id: str, *, after_id: int, limit: int) -> list[ConnectionRecord]:
        """Connections of any status holding a token not made with ``key_id``, by id above ``after_id``: a
        rotation's next batch (a row re-encrypted meanwhile no longer matches, so a rerun resumes by itself)."""
        query = select(t).where(t.c.id > after_id, _connection_under_other(key_id)).order_by(t.c.id).limit(limit)
        with self._engine.connect() as conn:
            return [ConnectionRecord.from_row(row) for row in conn.execute(query)]

    def count_connections_under_other_key(self, key_id: str) -> int:
        query = select(func.count()).select_from(t).where(_connection_under_other(key_id))
        with self._engine.connect() as conn:
            return int(conn.execute(query).scalar_one())

    def verifiers_under_other_key(self, key_id: str, *, after: str, limit: int) -> list[StoredVerifier]:
        """PKCE verifiers (of used, expired and live states alike) not made with ``key_id``, by state hash."""
        query = (
            select(o.c.state_hash, o.c.code_verifier)
            .where(o.c.state_hash > after, _under_other(o.c.code_verifier, key_id))
            .order_by(o.c.state_hash)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [StoredVerifier(row.state_hash, row.code_verifier) for row in conn.execute(query)]

    def verifier_key_ids(self) -> dict[str, int]:
        """How many stored PKCE verifiers are under each key id."""
        kid = kid_of(o.c.code_verifier)
        query = select(kid, func.count()).group_by(kid)
        with self._engine.connect() as conn:
            return {str(key): int(count) for key, count in conn.execute(query)}


def kid_of(column: ColumnElement[str | None]) -> ColumnElement[str]:
    """The key id part of a stored ciphertext, in SQL (compared and grouped on, never decrypted here)."""
    return func.substr(column, _KID_START, _KID_CHARS)


def _under_other(column: ColumnElement[str | None], key_id: str) -> ColumnElement[bool]:
    prefix = f"lk1:{key_id}:"  # compared exactly: LIKE would be case-insensitive on SQLite
    return and_(column.is_not(None), func.substr(column, 1, len(prefix)) != prefix)


def _connection_under_other(key_id: str) -> ColumnElement[bool]:
    return or_(_under_other(t.c.access_token, key_id), _under_other(t.c.refresh_token, key_id))


__all__ = ["KeyScan", "StoredVerifier", "kid_of"]
