"""Token parsing: a token endpoint's answer as a ``TokenSet``, and when its access token expires.

A refresh rotates the pair on Lightspeed's side before it answers, so an answer must be saved whenever it can
be: a missing ``expires_in`` falls back to the JWT's ``exp`` and then to a short lifetime, and a missing
refresh token keeps the previous one. Only an answer with no usable access token is refused.
"""

from __future__ import annotations

import math
from collections.abc import Collection
from datetime import UTC, datetime, timedelta

import httpx2

from lightkeeper.errors import ProviderProtocolError
from lightkeeper.lightspeed.error_mapping import check_oauth_response, json_object
from lightkeeper.lightspeed.tokens import TokenSet, jwt_expiry

# A lifetime beyond a year is not a real answer, and huge ones would overflow datetime arithmetic.
_MAX_EXPIRES_IN = 366 * 24 * 3600
#: The lifetime assumed when neither ``expires_in`` nor the JWT's ``exp`` says (the shortest Lightspeed has used).
FALLBACK_LIFETIME = timedelta(minutes=30)


def parse_token_response(
    response: httpx2.Response,
    *,
    now: datetime,
    previous_refresh_token: str | None,
    action: str = "token request",
    redact: Collection[str] = (),
    expires_field: str | None = None,
) -> TokenSet:
    """The ``TokenSet`` of a token endpoint answer; ``expires_at`` is ``now`` plus its ``expires_in``, or the
    absolute time (unix epoch) in ``expires_field`` when the provider names one (X-Series' ``expires``: its
    examples disagree on ``expires_in``).

    A missing or empty ``refresh_token`` keeps ``previous_refresh_token`` (a provider that does not rotate
    must not wipe the stored one); with no previous token either, the answer is unusable.
    """
    secrets = [*redact, *([previous_refresh_token] if previous_refresh_token else [])]
    check_oauth_response(response, action=action, now=now, redact=secrets)
    payload = json_object(response)
    if payload is None:
        raise ProviderProtocolError(
            f"Lightspeed answered the {action} with HTTP {response.status_code} but the body is not a JSON object."
        )
    access_token = _access_token(payload, action)
    return TokenSet(
        access_token=access_token,
        refresh_token=_refresh_token(payload, previous_refresh_token, action),
        expires_at=_absolute_expiry(payload, expires_field, now) or _expires_at(payload, access_token, now),
        token_type=_token_type(payload, action),
    )


def _access_token(payload: dict[str, object], action: str) -> str:
    value = payload.get("access_token")
    if not isinstance(value, str) or not value.strip():
        raise ProviderProtocolError(f"Lightspeed's answer to the {action} has no access_token.")
    return value


def _refresh_token(payload: dict[str, object], previous: str | None, action: str) -> str:
    value = payload.get("refresh_token")
    if isinstance(value, str) and value.strip():
        return value
    if value is not None and not isinstance(value, str):
        raise ProviderProtocolError(f"Lightspeed's answer to the {action} has a refresh_token that is not text.")
    if previous:
        return previous
    raise ProviderProtocolError(f"Lightspeed's answer to the {action} has no refresh_token.")


def _expires_at(payload: dict[str, object], access_token: str, now: datetime) -> datetime:
    """When the access token expires: ``expires_in``, else the JWT's ``exp``, else 30 minutes.

    Lightspeed rotated the pair before answering: an answer without ``expires_in`` must still be saved,
    since throwing it away would lose the only live refresh token (invariant 2).
    """
    seconds = _positive_seconds(payload.get("expires_in"))
    if seconds is not None:
        return now + timedelta(seconds=seconds)
    expiry = jwt_expiry(access_token)
    if expiry is not None and now < expiry <= now + timedelta(seconds=_MAX_EXPIRES_IN):
        return expiry
    return now + FALLBACK_LIFETIME


def _absolute_expiry(payload: dict[str, object], name: str | None, now: datetime) -> datetime | None:
    """The epoch time in ``payload[name]`` if it lies within a year after ``now``; None otherwise (then the
    relative lifetime decides)."""
    if name is None:
        return None
    value = payload.get(name)
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        moment = datetime.fromtimestamp(float(value), UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return moment if now < moment <= now + timedelta(seconds=_MAX_EXPIRES_IN) else None


def _positive_seconds(value: object) -> float | None:
    # bool is an int subclass; "expires_in": true is not one second.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    if isinstance(value, int) and not 0 < value <= _MAX_EXPIRES_IN:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and 0 < seconds <= _MAX_EXPIRES_IN else None


def _token_type(payload: dict[str, object], action: str) -> str:
    value = payload.get("token_type", "Bearer")
    # We always send the access token as a Bearer header; any other type would be used wrongly.
    if not isinstance(value, str) or value.lower() != "bearer":
        raise ProviderProtocolError(f"Lightspeed's answer to the {action} has a token_type other than Bearer.")
    return "Bearer"


__all__ = ["FALLBACK_LIFETIME", "parse_token_response"]
