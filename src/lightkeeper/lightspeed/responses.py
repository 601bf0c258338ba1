"""Turn Lightspeed's answers, and httpx2's failures, into lightkeeper's typed errors.

Everything here is pure: it reads a response (or catches an exception) and returns a value or raises one of
the ``ProviderError`` subclasses. Error messages are shown to operators and written to run records, so they
carry the HTTP status and Lightspeed's ``error``/``error_description``/``hint`` but never a raw body: a
provider may echo what we sent, and what we send contains tokens, codes and our client secret. Every piece of
provider text is scrubbed of the values we sent (``redact``) and of anything that looks like a token.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime
from urllib.parse import quote, quote_plus

import httpx2

from lightkeeper.errors import (
    AccessDenied,
    InvalidClient,
    InvalidGrant,
    ProviderError,
    ProviderProtocolError,
    ProviderUnavailable,
    RateLimited,
)
from lightkeeper.lightspeed.tokens import TokenSet, jwt_expiry

_MAX_TEXT = 200
# A lifetime beyond a year is not a real answer, and huge ones would overflow datetime arithmetic.
_MAX_EXPIRES_IN = 366 * 24 * 3600
# Shorter values cannot be real secrets, and scrubbing them would mangle ordinary words.
_MIN_REDACT_LEN = 4
_HIDDEN = "***"

# JWTs (our access tokens start with eyJ), and unbroken runs of token alphabet (refresh tokens, codes).
_JWT_LIKE = re.compile(r"eyJ[\w-]*\.[\w-]*(?:\.[\w-]*)?")
_RUN = re.compile(r"[A-Za-z0-9_\-.~+=]{20,}")
# A run this long is a token; a shorter one (20+) only if it mixes letters and digits, as words rarely do.
_LONG_RUN = 32
# Our own form fields echoed back, e.g. "refresh_token=def50..." or '"client_secret": "..."'.
_ECHOED_FIELD = re.compile(
    r"(?i)\b(client_secret|refresh_token|access_token|code_verifier|code)\b(\"?\s*[=:]\s*\"?)[^\s&\",;]+"
)
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,40}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\s]+")


@dataclass(frozen=True)
class ErrorBody:
    """What a provider error body says, already scrubbed; ``None`` fields were absent or unusable."""

    code: str | None = None
    description: str | None = None
    hint: str | None = None


# --- scrubbing -------------------------------------------------------------------------------------------


def scrub(text: str, redact: Collection[str] = ()) -> str:
    """Provider or exception text made safe to show: secrets hidden, one line, at most ~200 characters."""
    for value in sorted(_redact_forms(redact), key=len, reverse=True):
        text = text.replace(value, _HIDDEN)
    text = _ECHOED_FIELD.sub(lambda m: f"{m.group(1)}{m.group(2)}{_HIDDEN}", text)
    text = _RUN.sub(_hide_token_like, _JWT_LIKE.sub(_HIDDEN, text))
    text = _CONTROL.sub(" ", text).strip()
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 1].rstrip() + "…"


def _hide_token_like(match: re.Match[str]) -> str:
    run = match.group(0)
    mixed = any(c.isdigit() for c in run) and any(c.isalpha() for c in run)
    return _HIDDEN if len(run) >= _LONG_RUN or mixed else run


def _redact_forms(redact: Collection[str]) -> set[str]:
    """Each secret as sent and as it would look if echoed back form- or url-encoded."""
    forms: set[str] = set()
    for value in redact:
        if len(value) >= _MIN_REDACT_LEN:
            forms.update({value, quote_plus(value), quote(value, safe="")})
    return forms


# --- bodies ----------------------------------------------------------------------------------------------


def json_object(response: httpx2.Response) -> dict[str, object] | None:
    """The body as a JSON object, or None when it is not one (HTML error pages, garbage, arrays)."""
    try:
        data: object = json.loads(response.content)
    except (ValueError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def error_body(response: httpx2.Response, redact: Collection[str] = ()) -> ErrorBody | None:
    """The scrubbed ``error``/``error_description``/``hint`` of a body, or None when it is not JSON."""
    payload = json_object(response)
    if payload is None:
        return None
    # API (non-OAuth) errors put their text in "message" rather than "error_description".
    description = payload.get("error_description", payload.get("message"))
    return ErrorBody(
        code=_error_code(payload.get("error"), redact),
        description=_text(description, redact),
        hint=_text(payload.get("hint"), redact),
    )


def _error_code(value: object, redact: Collection[str]) -> str | None:
    """An OAuth error code, only if it looks like one (a code is an identifier, never free text)."""
    if not isinstance(value, str) or not _ERROR_CODE.fullmatch(value):
        return None
    return value if scrub(value, redact) == value else None


def _text(value: object, redact: Collection[str]) -> str | None:
    if not isinstance(value, str):
        return None
    return scrub(value, redact) or None


def _detail(status: int, body: ErrorBody | None) -> str:
    """``HTTP 400 invalid_grant: <description>; hint: <hint>``, or a note on what the body lacked."""
    # Trailing full stops are dropped: the detail sits inside a sentence of ours.
    if body is None:
        return f"HTTP {status}, body is not JSON"
    parts = [f"HTTP {status}"]
    if body.code:
        parts.append(f" {body.code}")
    if body.description:
        parts.append(f": {body.description.rstrip('.')}")
    if body.hint:
        parts.append(f"; hint: {body.hint.rstrip('.')}")
    if not (body.code or body.description or body.hint):
        parts.append(", no error in the body")
    return "".join(parts)


# --- Retry-After -----------------------------------------------------------------------------------------


def parse_retry_after(value: str | None, *, now: datetime | None) -> float | None:
    """Seconds to wait from ``Retry-After``: a number of seconds, or an HTTP date relative to ``now``."""
    if value is None:
        return None
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        return _seconds_until(text, now)
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _seconds_until(http_date: str, now: datetime | None) -> float | None:
    moment = _http_date(http_date)
    if moment is None or now is None:
        return None
    if now.tzinfo is None:
        now = now.replace(tzinfo=UTC)
    # A date already past means "now": never a negative wait.
    return max(0.0, (moment - now).total_seconds())


def _http_date(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        moment = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # "-0000" dates parse naive; HTTP dates are always GMT.
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _retry_after(response: httpx2.Response, now: datetime | None) -> float | None:
    # Without our clock, the server's own Date header is the reference for a Retry-After date.
    reference = now if now is not None else _http_date(response.headers.get("Date"))
    return parse_retry_after(response.headers.get("Retry-After"), now=reference)


def _rate_limited(response: httpx2.Response, *, action: str, now: datetime | None) -> RateLimited:
    retry_after = _retry_after(response, now)
    wait = "no usable Retry-After given" if retry_after is None else f"retry after {retry_after:g} s"
    kind = response.headers.get("X-LS-API-RateLimit-Type")
    limiter = f" by the {kind} limiter" if kind and _ERROR_CODE.fullmatch(kind) else ""
    return RateLimited(
        f"Lightspeed rate-limited the {action}{limiter} (HTTP {response.status_code}); {wait}.",
        retry_after=retry_after,
    )


# --- error mapping ---------------------------------------------------------------------------------------


def oauth_error(
    response: httpx2.Response, *, action: str, now: datetime | None, redact: Collection[str] = ()
) -> ProviderError:
    """The typed error for a non-2xx answer from an ``/auth/oauth/*`` endpoint."""
    status = response.status_code
    if status == 429:
        return _rate_limited(response, action=action, now=now)
    body = error_body(response, redact)
    detail = _detail(status, body)
    if status >= 500:
        return ProviderUnavailable(f"Lightspeed could not handle the {action} right now ({detail}).")
    code = body.code if body else None
    # Classified by the body, never by the status alone: only an OAuth invalid_client is a configuration
    # fault that stops a run; a gateway's HTML 401 is one connection's transient error (invariant 3).
    if code == "invalid_client":
        return InvalidClient(
            f"Lightspeed rejected our client id or secret during the {action} ({detail}); "
            "check LIGHTSPEED_CLIENT_ID and LIGHTSPEED_CLIENT_SECRET."
        )
    if code == "invalid_grant" and 400 <= status < 500:
        return InvalidGrant(
            f"Lightspeed rejected the {action} because the grant is invalid, expired or revoked ({detail})."
        )
    if code:
        return ProviderProtocolError(f"Lightspeed refused the {action} with an OAuth error ({detail}).")
    return ProviderProtocolError(f"Lightspeed answered the {action} with an unexpected response ({detail}).")


def api_error(
    response: httpx2.Response, *, action: str, now: datetime | None = None, redact: Collection[str] = ()
) -> ProviderError:
    """The typed error for a non-2xx answer from the ``/API/V3`` endpoints."""
    status = response.status_code
    if status == 429:
        return _rate_limited(response, action=action, now=now)
    detail = _detail(status, error_body(response, redact))
    if status >= 500:
        return ProviderUnavailable(f"Lightspeed could not handle the {action} right now ({detail}).")
    if status == 401:
        return AccessDenied(f"Lightspeed did not accept the access token for the {action} ({detail}).")
    return ProviderProtocolError(f"Lightspeed answered the {action} with an unexpected response ({detail}).")


def check_oauth_response(
    response: httpx2.Response, *, action: str, now: datetime | None, redact: Collection[str] = ()
) -> None:
    """Return quietly on 2xx; raise the typed OAuth error otherwise."""
    if not response.is_success:
        raise oauth_error(response, action=action, now=now, redact=redact)


def check_api_response(
    response: httpx2.Response, *, action: str, now: datetime | None = None, redact: Collection[str] = ()
) -> None:
    """Return quietly on 2xx; raise the typed API error otherwise."""
    if not response.is_success:
        raise api_error(response, action=action, now=now, redact=redact)


# --- token responses -------------------------------------------------------------------------------------


def parse_token_response(
    response: httpx2.Response,
    *,
    now: datetime,
    previous_refresh_token: str | None,
    action: str = "token request",
    redact: Collection[str] = (),
) -> TokenSet:
    """The ``TokenSet`` of a token endpoint answer; ``expires_at`` is ``now`` plus its ``expires_in``.

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
        expires_at=_expires_at(payload, access_token, now),
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


#: The lifetime assumed when neither ``expires_in`` nor the JWT's ``exp`` says (the shortest Lightspeed has used).
FALLBACK_LIFETIME = timedelta(minutes=30)


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


# --- transport failures ----------------------------------------------------------------------------------


@contextmanager
def translate_transport_errors(action: str = "request", *, redact: Collection[str] = ()) -> Iterator[None]:
    """Re-raise httpx2's request failures as ``ProviderUnavailable``/``ProviderProtocolError``.

    The httpx2 exception stays reachable as ``__cause__`` for debugging; our message uses only its type and
    its scrubbed text (which may name the URL, never the request body).
    """
    try:
        yield
    except httpx2.TimeoutException as exc:
        raise ProviderUnavailable(
            f"Lightspeed did not answer in time during the {action} ({_exc_detail(exc, redact)})."
        ) from exc
    except httpx2.TransportError as exc:
        raise ProviderUnavailable(
            f"Lightspeed could not be reached during the {action} ({_exc_detail(exc, redact)})."
        ) from exc
    except httpx2.RequestError as exc:
        # DecodingError, TooManyRedirects: Lightspeed answered, but with something we cannot read.
        raise ProviderProtocolError(
            f"Lightspeed's answer to the {action} could not be read ({_exc_detail(exc, redact)})."
        ) from exc


def _exc_detail(exc: Exception, redact: Collection[str]) -> str:
    text = scrub(str(exc), redact).rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


__all__ = [
    "ErrorBody",
    "api_error",
    "check_api_response",
    "check_oauth_response",
    "error_body",
    "json_object",
    "oauth_error",
    "parse_retry_after",
    "parse_token_response",
    "scrub",
    "translate_transport_errors",
]
