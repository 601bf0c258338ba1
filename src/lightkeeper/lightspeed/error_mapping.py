"""Error mapping: Lightspeed's error answers, and httpx2's failures, as lightkeeper's typed errors.

Everything here is pure: it reads a response (or catches an exception) and returns a value or raises one of
the ``ProviderError`` subclasses. Messages carry the HTTP status and Lightspeed's ``error``/``error_description``
/``hint``, scrubbed (``redaction.scrub``), but never a raw body. ``Retry-After`` (seconds or an HTTP date) is
read here too, since a 429 becomes a ``RateLimited`` that carries it. ``json_object`` is the one JSON body
reader, shared with token parsing and the API client.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

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
from lightkeeper.lightspeed.redaction import scrub

# An OAuth error code (or a rate limiter's name) is an identifier, never free text.
_ERROR_CODE = re.compile(r"[A-Za-z0-9_.\-]{1,40}")


@dataclass(frozen=True)
class ErrorBody:
    """What a provider error body says, already scrubbed; ``None`` fields were absent or unusable."""

    code: str | None = None
    description: str | None = None
    hint: str | None = None


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
        raise unreachable(action, exc, timed_out=True, redact=redact) from exc
    except httpx2.TransportError as exc:
        raise unreachable(action, exc, timed_out=False, redact=redact) from exc
    except httpx2.RequestError as exc:
        # DecodingError, TooManyRedirects: Lightspeed answered, but with something we cannot read.
        raise ProviderProtocolError(
            f"Lightspeed's answer to the {action} could not be read ({_exc_detail(exc, redact)})."
        ) from exc


def unreachable(
    action: str, exc: BaseException, *, timed_out: bool, redact: Collection[str] = ()
) -> ProviderUnavailable:
    """The ``ProviderUnavailable`` for a request that got no answer (any HTTP client's failure)."""
    what = "did not answer in time" if timed_out else "could not be reached"
    return ProviderUnavailable(f"Lightspeed {what} during the {action} ({_exc_detail(exc, redact)}).")


def _exc_detail(exc: BaseException, redact: Collection[str]) -> str:
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
    "translate_transport_errors",
    "unreachable",
]
