"""All SQL on connect sessions (one-time links) and OAuth states: both single use and expiring.

Only hashes of the link token and of the state are stored, so a copy of the database cannot be used to
complete somebody else's connection. A state records the browser session it was issued to; the connect
flow uses it only together with that session's cookie (RFC 9700 §4.7).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, insert, select, update

from .records import ConnectSession, OAuthState
from .schema import connect_sessions as s
from .schema import oauth_states as o


class Rejection(StrEnum):
    """Why a link or state was refused: each gets its own page."""

    UNKNOWN = "unknown"
    USED = "used"
    EXPIRED = "expired"
    #: A live state presented with another browser's cookie, or none: refused and left unused.
    FOREIGN = "foreign"


class SessionRepo:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def create_session(
        self,
        *,
        token_hash: str,
        user_id: str,
        return_to: str | None,
        now: datetime,
        expires_at: datetime,
        label: str | None = None,
        provider: str = "r-series",
    ) -> int:
        stmt = insert(s).values(
            token_hash=token_hash,
            user_id=user_id,
            provider=provider,
            return_to=return_to,
            label=label,
            created_at=now,
            expires_at=expires_at,
        )
        with self._engine.begin() as conn:
            return int(conn.execute(stmt.returning(s.c.id)).scalar_one())

    def peek_session(self, token_hash: str, now: datetime) -> ConnectSession | Rejection:
        """A link as it stands, changing nothing: what the confirm page shows (a scanner's GET is harmless)."""
        query = select(s.c.id, s.c.user_id, s.c.return_to, s.c.expires_at, s.c.label, s.c.provider, s.c.used_at).where(
            s.c.token_hash == token_hash
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return Rejection.UNKNOWN
        if (refused := _spent(row, now)) is not None:
            return refused
        return ConnectSession(row.id, row.user_id, row.return_to, row.expires_at, row.label, row.provider)

    def consume_session(
        self,
        token_hash: str,
        now: datetime,
        *,
        browser_hash: str | None = None,
        browser_expires_at: datetime | None = None,
    ) -> ConnectSession | Rejection:
        """Use a one-time link: it works once, before it expires; it may open a browser session."""
        stmt = (
            update(s)
            .where(s.c.token_hash == token_hash, s.c.used_at.is_(None), s.c.expires_at > now)
            .values(used_at=now, browser_hash=browser_hash, browser_expires_at=browser_expires_at)
            .returning(s.c.id, s.c.user_id, s.c.return_to, s.c.expires_at, s.c.label, s.c.provider)
        )
        with self._engine.begin() as conn:
            row = conn.execute(stmt).first()
            if row is not None:
                return ConnectSession(row.id, row.user_id, row.return_to, row.expires_at, row.label, row.provider)
            found = conn.execute(select(s.c.used_at).where(s.c.token_hash == token_hash)).first()
        return _rejection(found)

    def browser_session(self, browser_hash: str, now: datetime) -> ConnectSession | None:
        """The live browser session with this cookie, if any."""
        query = select(s.c.id, s.c.user_id, s.c.return_to, s.c.browser_expires_at, s.c.label, s.c.provider).where(
            s.c.browser_hash == browser_hash, s.c.browser_expires_at > now
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return ConnectSession(row.id, row.user_id, row.return_to, row.browser_expires_at, row.label, row.provider)

    def session_provider(self, session_id: int) -> str | None:
        """The provider a connect session was made for (None: no such session)."""
        with self._engine.connect() as conn:
            return conn.execute(select(s.c.provider).where(s.c.id == session_id)).scalar()

    def create_state(
        self,
        *,
        state_hash: str,
        user_id: str,
        session_id: int | None,
        code_verifier: str,
        now: datetime,
        expires_at: datetime,
        provider: str = "r-series",
    ) -> None:
        stmt = insert(o).values(
            state_hash=state_hash,
            user_id=user_id,
            provider=provider,
            session_id=session_id,
            code_verifier=code_verifier,
            created_at=now,
            expires_at=expires_at,
        )
        with self._engine.begin() as conn:
            conn.execute(stmt)

    def peek_state(self, state_hash: str, now: datetime) -> OAuthState | Rejection:
        """A state as it stands, changing nothing: the callback checks whose browser it belongs to first.

        A state's session never changes, so checking it here and consuming afterwards is race-free; only
        ``consume_state`` decides who uses it.
        """
        query = select(o.c.user_id, o.c.session_id, o.c.code_verifier, o.c.provider, o.c.used_at, o.c.expires_at).where(
            o.c.state_hash == state_hash
        )
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return Rejection.UNKNOWN
        if (refused := _spent(row, now)) is not None:
            return refused
        return OAuthState(row.user_id, row.session_id, row.code_verifier, row.provider)

    def consume_state(self, state_hash: str, now: datetime) -> OAuthState | Rejection:
        """Use an OAuth state: once, before it expires (a replayed callback is refused)."""
        stmt = (
            update(o)
            .where(o.c.state_hash == state_hash, o.c.used_at.is_(None), o.c.expires_at > now)
            .values(used_at=now)
            .returning(o.c.user_id, o.c.session_id, o.c.code_verifier, o.c.provider)
        )
        with self._engine.begin() as conn:
            row = conn.execute(stmt).first()
            if row is not None:
                return OAuthState(row.user_id, row.session_id, row.code_verifier, row.provider)
            found = conn.execute(select(o.c.used_at).where(o.c.state_hash == state_hash)).first()
        return _rejection(found)

    def rewrap_verifier(self, state_hash: str, *, old: str, new: str) -> bool:
        """Replace a state's PKCE verifier ciphertext (a key rotation) if it is still ``old``; False otherwise.

        Used and expired states are rewrapped too: refusing a late callback still needs the row, and the old key
        can then be dropped. A callback racing this reads either ciphertext, and both decrypt while the old key
        is configured."""
        stmt = update(o).where(o.c.state_hash == state_hash, o.c.code_verifier == old).values(code_verifier=new)
        with self._engine.begin() as conn:
            return conn.execute(stmt).rowcount > 0


def _spent(row: Any, now: datetime) -> Rejection | None:
    """Why a link or state row (``used_at``, ``expires_at``) can no longer be used; None if it still can."""
    if row.used_at is not None:
        return Rejection.USED
    return Rejection.EXPIRED if row.expires_at <= now else None


def _rejection(found: object) -> Rejection:
    if found is None:
        return Rejection.UNKNOWN
    return Rejection.USED if found[0] is not None else Rejection.EXPIRED  # type: ignore[index]


__all__ = ["Rejection", "SessionRepo"]
