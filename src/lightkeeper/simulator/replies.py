"""What the simulated provider answers: the ``Reply`` shape and Lightspeed's error bodies.

A leaf module (imports nothing from the simulator) so the provider's rules (``oauth.py``, ``api.py``) and
the canned failures (``faults.py``) build their answers from the same bodies.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from email.utils import formatdate
from typing import Any

JsonDict = dict[str, Any]

INVALID_REQUEST_DESC = (
    "The request is missing a required parameter, includes an invalid parameter value, "
    "includes a parameter more than once, or is otherwise malformed."
)
INVALID_GRANT_DESC = (
    "The provided authorization grant (e.g., authorization code, resource owner credentials) or refresh "
    "token is invalid, expired, revoked, does not match the redirection URI used in the authorization "
    "request, or was issued to another client."
)
ACCESS_DENIED_DESC = "The resource owner or authorization server denied the request."


class SimulatorError(Exception):
    """A knob was called with bad input; ``status`` is the HTTP status the knob answers with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Reply:
    """What an endpoint answers: a JSON object, a text/HTML page, or nothing (redirects)."""

    status: int
    body: JsonDict | str | None = None
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "application/json"


def oauth_error(status: int, error: str, description: str, hint: str = "") -> Reply:
    return Reply(status, {"error": error, "error_description": description, "hint": hint})


def invalid_request(param: str) -> Reply:
    return oauth_error(400, "invalid_request", INVALID_REQUEST_DESC, f"Check the `{param}` parameter")


def invalid_client() -> Reply:
    return oauth_error(401, "invalid_client", "Client authentication failed")


def invalid_refresh_token(status: int = 400) -> Reply:
    # The brief fixes one body for revoked, expired and unknown tokens alike.
    return oauth_error(status, "invalid_grant", "The refresh token is invalid.", "Token has been revoked")


def access_denied(hint: str = "Access token could not be verified") -> Reply:
    return oauth_error(401, "access_denied", ACCESS_DENIED_DESC, hint)


def ls_error(status: int, phrase: str, message: str) -> JsonDict:
    """The R-Series API's own error shape (not OAuth's)."""
    error_class = phrase.replace(" ", "") + "Exception"
    return {"httpCode": str(status), "httpMessage": phrase, "message": message, "errorClass": error_class}


def page(status: int, message: str) -> Reply:
    return Reply(status, f"<html><body><h1>Error</h1><p>{message}</p></body></html>", media_type="text/html")


def http_date(epoch: float) -> str:
    """RFC 1123 date (``Wed, 07 Dec 2026 12:00:05 GMT``) of ``epoch`` rounded UP to the second: a client
    that waits until then is never early. X-Series' ``Retry-After`` is such a date, never seconds."""
    return formatdate(math.ceil(epoch), usegmt=True)


def x_error(status: int, error: str, description: str, headers: dict[str, str] | None = None) -> Reply:
    """The X-Series error shape: ``{"error", "error_description"}`` JSON."""
    return Reply(status, {"error": error, "error_description": description}, dict(headers or {}))


def int_value(value: object) -> int | None:
    """Lightspeed sends numbers as strings; accept ints and integer strings, nothing else."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


__all__ = [
    "ACCESS_DENIED_DESC",
    "INVALID_GRANT_DESC",
    "INVALID_REQUEST_DESC",
    "JsonDict",
    "Reply",
    "SimulatorError",
    "access_denied",
    "http_date",
    "int_value",
    "invalid_client",
    "invalid_refresh_token",
    "invalid_request",
    "ls_error",
    "oauth_error",
    "page",
    "x_error",
]
