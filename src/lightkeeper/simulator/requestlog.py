"""The request log (``/_sim/requests``): what reached ``/API/V3`` (or the X-Series API), as received, minus the secrets.

A gauge for tests of what a client or proxy really sends the provider: method, raw path and query as they
arrived (not normalised), every header in order, the body's size (and, when asked for, its SHA-256). Every
request is logged, refused ones included, the last ``REQUEST_LOG_SIZE`` kept. Token values are never stored:
an ``Authorization`` value becomes ``Bearer <valid token of account N>`` when it carries an access token the
API accepts right now, else ``<not a valid access token>``; any known token found elsewhere (a query, another
header) is replaced by ``<access token of account N>`` / ``<refresh token of account N>``, so the log itself
can be printed freely. X-Series API requests (``/x/{prefix}/api/…`` but ``/api/1.0/…``, the OAuth area) are
logged the same way, their tokens labelled with their store's account id.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from lightkeeper.simulator.records import Records
from lightkeeper.simulator.replies import JsonDict

NOT_VALID = "<not a valid access token>"
# The entry key of a body's SHA-256 (hex), shown only when asked for (``/_sim/requests?body_digests=1``): the
# digest says "the same bytes again" (a retry's body) without keeping a body that may hold customer data.
BODY_DIGEST = "body_sha256"
# Runs of token characters long enough to be one of ours (JWTs, "def50…" refresh tokens).
_TOKEN_RUN = re.compile(r"[A-Za-z0-9_.\-]{32,}")


def log_entry(
    records: Records,
    method: str,
    raw_path: str,
    query: str,
    headers: Sequence[tuple[str, str]],
    *,
    body_bytes: int,
) -> JsonDict:
    """The redacted entry for one request; ``headers`` as received (names are lower-cased here)."""
    account_id: str | None = None
    logged: list[list[str]] = []
    for raw_name, value in headers:
        name = raw_name.lower()
        if name == "authorization":
            account_id = account_id or _bearer_account(records, value)
            logged.append([name, _redacted_authorization(records, value)])
        else:
            logged.append([name, _scrubbed(records, value)])
    return {
        "method": method,
        "path": _scrubbed(records, raw_path),
        "query": _scrubbed(records, query),
        "headers": logged,
        "body_bytes": body_bytes,
        "account_id": account_id,
    }


def _bearer_value(value: str) -> str | None:
    scheme, _, token = value.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else None


def _bearer_account(records: Records, value: str) -> str | None:
    """The account of the access token the header carries, valid or not (an expired one still says whose)."""
    bearer = _bearer_value(value) or ""
    token = records.access_tokens.get(bearer) or records.x.access_tokens.get(bearer)
    return None if token is None else str(token.account_id)


def _redacted_authorization(records: Records, value: str) -> str:
    bearer = _bearer_value(value) or ""
    token = records.access_tokens.get(bearer)
    x_token = records.x.access_tokens.get(bearer)
    if token is not None and records.access_valid(token):
        return f"Bearer <valid token of account {token.account_id}>"
    if x_token is not None and records.x_access_valid(x_token):
        return f"Bearer <valid token of account {x_token.account_id}>"
    return NOT_VALID


def _scrubbed(records: Records, text: str) -> str:
    """``text`` with every token this provider issued replaced by a label saying which it was."""
    return _TOKEN_RUN.sub(lambda match: _label(records, match.group(0)), text)


def _label(records: Records, candidate: str) -> str:
    access = records.access_tokens.get(candidate)
    if access is not None:
        return f"<access token of account {access.account_id}>"
    refresh = records.refresh_tokens.get(candidate)
    if refresh is not None:
        return f"<refresh token of account {refresh.account_id}>"
    x_access = records.x.access_tokens.get(candidate)
    if x_access is not None:
        return f"<access token of account {x_access.account_id}>"
    x_refresh = records.x.refresh_tokens.get(candidate)
    if x_refresh is not None:
        return f"<refresh token of account {x_refresh.account_id}>"
    return candidate


__all__ = ["BODY_DIGEST", "NOT_VALID", "log_entry"]
