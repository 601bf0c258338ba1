"""Token values that cross the provider boundary, and what we may learn from them without asking Lightspeed.

A ``TokenSet`` prints without its tokens so that a stray ``repr`` in a log line or an exception cannot leak
them (invariant 4). ``account_id_from_jwt`` reads the ``acct`` claim of an access token without checking its
signature: it only tells us which account a token belongs to, never whether to trust it.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass, field
from datetime import UTC, datetime

_HIDDEN = "***"


@dataclass(frozen=True)
class TokenSet:
    """An access token, the refresh token that goes with it, and when the access token expires."""

    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime
    token_type: str = "Bearer"

    def __repr__(self) -> str:
        return (
            f"TokenSet(access_token={_HIDDEN}, refresh_token={_HIDDEN}, "
            f"expires_at={self.expires_at.isoformat()}, token_type={self.token_type!r})"
        )

    __str__ = __repr__


@dataclass(frozen=True)
class Account:
    """The Lightspeed account a token belongs to, as the API names it."""

    account_id: str
    name: str


def account_id_from_jwt(access_token: str) -> str | None:
    """The ``acct`` claim of a JWT access token as a string; None if not a JWT or there is no such claim."""
    parts = access_token.split(".")
    if len(parts) != 3:
        return None
    claims = _decode_segment(parts[1])
    if not isinstance(claims, dict):
        return None
    acct = claims.get("acct")
    # bool is an int subclass; a boolean account id is junk, not account "True".
    if isinstance(acct, bool) or not isinstance(acct, str | int):
        return None
    text = str(acct).strip()
    return text or None


def jwt_expiry(access_token: str) -> datetime | None:
    """The ``exp`` claim of a JWT access token (unverified), or None when it has no usable one."""
    parts = access_token.split(".")
    claims = _decode_segment(parts[1]) if len(parts) == 3 else None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    if isinstance(exp, bool) or not isinstance(exp, int | float):
        return None
    try:
        return datetime.fromtimestamp(exp, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _decode_segment(segment: str) -> object:
    """Decode one base64url JWT segment to JSON, or None when it is not valid base64url JSON."""
    # JWTs drop the base64 padding; put it back so the standard decoder accepts the segment.
    padded = segment + "=" * (-len(segment) % 4)
    try:
        raw = base64.urlsafe_b64decode(padded.encode("ascii"))
        decoded: object = json.loads(raw)
    except (ValueError, binascii.Error, RecursionError):
        return None
    return decoded


__all__ = ["Account", "TokenSet", "account_id_from_jwt", "jwt_expiry"]
