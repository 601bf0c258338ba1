"""Lightspeed Retail (R-Series) API calls that need no more than an access token.

Only "who am I" lives here for now; item, stock and rate-limit pacing calls come in their own module. The
caller hands in the ``httpx2.Client`` and a valid access token; a refused token raises ``AccessDenied``.
"""

from __future__ import annotations

import httpx2

from lightkeeper.errors import ProviderProtocolError
from lightkeeper.lightspeed.responses import check_api_response, json_object, translate_transport_errors
from lightkeeper.lightspeed.tokens import Account

_ACCOUNT_PATH = "/API/V3/Account.json"


class ApiClient:
    """Calls the ``/API/V3`` endpoints on behalf of whoever owns the access token passed in."""

    def __init__(self, *, http: httpx2.Client, api_url: str) -> None:
        self._http = http
        self._api_url = api_url.rstrip("/")

    def __repr__(self) -> str:
        return f"ApiClient(api_url={self._api_url!r})"

    def account(self, access_token: str) -> Account:
        """The account the access token belongs to (``GET /API/V3/Account.json``)."""
        action = "account lookup"
        response = self._get(_ACCOUNT_PATH, access_token, action=action)
        check_api_response(response, action=action, redact=(access_token,))
        return _parse_account(response, action=action)

    def _get(self, path: str, access_token: str, *, action: str) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        with translate_transport_errors(action, redact=(access_token,)):
            return self._http.get(f"{self._api_url}{path}", headers=headers)


def _parse_account(response: httpx2.Response, *, action: str) -> Account:
    """``{"Account": {"accountID": "…", "name": "…"}}`` to an ``Account``; accountID may be a number."""
    payload = json_object(response)
    record = payload.get("Account") if payload is not None else None
    # A token belongs to one account, but list-shaped answers of one element are the same thing.
    if isinstance(record, list) and len(record) == 1:
        record = record[0]
    if not isinstance(record, dict):
        raise ProviderProtocolError(f"Lightspeed's answer to the {action} has no single Account object.")
    account_id = record.get("accountID")
    if isinstance(account_id, bool) or not isinstance(account_id, str | int) or not str(account_id).strip():
        raise ProviderProtocolError(f"Lightspeed's answer to the {action} has no usable accountID.")
    name = record.get("name", "")
    if not isinstance(name, str):
        raise ProviderProtocolError(f"Lightspeed's answer to the {action} has an account name that is not text.")
    return Account(account_id=str(account_id).strip(), name=name)


__all__ = ["ApiClient"]
