"""Lightspeed Retail (R-Series) API calls that need no more than an access token.

The caller hands in the ``httpx2.Client`` and a valid access token; a refused token raises
``AccessDenied`` (refreshing and retrying is the on-demand client's job, ``lightkeeper.client``).
Requests are booked in the account's bucket first (``api_pacing``: shared with the proxy and with every other
process on the same store); a 429 that still happens holds the account for its ``Retry-After`` and is retried
a bounded number of times.
"""

from __future__ import annotations

from typing import Any

import httpx2

from lightkeeper.errors import ProviderProtocolError, RateLimited
from lightkeeper.lightspeed.api_pacing import ApiPacer, ApiPacing
from lightkeeper.lightspeed.error_mapping import check_api_response, json_object, translate_transport_errors
from lightkeeper.lightspeed.forwarding import account_path, confine, relative_page
from lightkeeper.lightspeed.tokens import Account

#: Request costs from docs/LIGHTSPEED.md, used only to book the bucket before sending; the answer's headers
#: then give the real level.
GET_COST = 1.0
PUT_ONE_RELATION_COST = 1.5
#: How long a 429's Retry-After may be waited out, and how often, before it is raised.
MAX_RETRY_AFTER_S = 60.0
MAX_RATE_LIMIT_RETRIES = 3

_ACCOUNT_PATH = "/API/V3/Account.json"


class ApiClient:
    """Calls the ``/API/V3`` endpoints on behalf of whoever owns the access token passed in."""

    def __init__(
        self,
        *,
        http: httpx2.Client,
        api_url: str,
        pacer: ApiPacer | None = None,
        write_cost: float = PUT_ONE_RELATION_COST,
    ) -> None:
        self._http = http
        self._api_url = api_url.rstrip("/")
        self.pacer = pacer if pacer is not None else ApiPacer()
        self.write_cost = write_cost

    def __repr__(self) -> str:
        return f"ApiClient(api_url={self._api_url!r})"

    @property
    def api_url(self) -> str:
        """``LIGHTSPEED_API_URL`` without a trailing slash: every path here is under it."""
        return self._api_url

    def account(self, access_token: str) -> Account:
        """The account the access token belongs to (``GET /API/V3/Account.json``)."""
        action = "account lookup"
        response = self._get(_ACCOUNT_PATH, access_token, action=action)
        if account_id := response.headers.get("x-ls-acct-id", "").strip():
            self.pacer.observe(account_id, response.headers)  # the account is known only now: not paced
        check_api_response(response, action=action, redact=(access_token,))
        return _parse_account(response, action=action)

    def item(self, access_token: str, account_id: str, item_id: int) -> dict[str, Any]:
        """An item with its ``ItemShops`` (stock per shop; ``shopID`` 0 is the all-shops sum)."""
        path = f"/API/V3/Account/{account_id}/Item/{item_id}.json"
        body = self.call("GET", path, access_token, account_id, params={"load_relations": '["ItemShops"]'})
        return _item(body)

    def set_stock(
        self,
        access_token: str,
        account_id: str,
        *,
        item_id: int,
        qoh: int,
        shop_id: int | None = None,
        item_shop_id: int | None = None,
    ) -> dict[str, Any]:
        """Set an item's quantity on hand in one shop (by ``shop_id`` or by ``item_shop_id``)."""
        if (shop_id is None) == (item_shop_id is None):
            raise ValueError("give exactly one of shop_id and item_shop_id")
        where = {"shopID": shop_id} if shop_id is not None else {"itemShopID": item_shop_id}
        body = {"ItemShops": {"ItemShop": {**where, "qoh": qoh}}}
        path = f"/API/V3/Account/{account_id}/Item/{item_id}.json"
        return _item(self.call("PUT", path, access_token, account_id, json=body, cost=PUT_ONE_RELATION_COST))

    def request(
        self,
        method: str,
        path: str,
        access_token: str,
        account_id: str,
        *,
        params: dict[str, str] | str | None = None,
        json: Any = None,
    ) -> dict[str, Any]:
        """Any request under the account's own ``/API/V3/Account/{id}/`` (``path`` relative to it, e.g.
        ``Item.json``; empty for the account itself), confined as the proxy confines its paths."""
        method = method.upper()
        cost = GET_COST if method in ("GET", "HEAD") else self.write_cost
        target = account_path(account_id, confine(path))
        return self.call(method, target, access_token, account_id, json=json, params=params, cost=cost)

    def next_page(self, body: dict[str, Any], account_id: str) -> tuple[str, str] | None:
        """The next page a collection answer names (``@attributes.next``), as (path relative to the account,
        query); None on the last page, or when it points anywhere but the account's own prefix."""
        attributes = body.get("@attributes")
        url = attributes.get("next") if isinstance(attributes, dict) else None
        return relative_page(url, api_url=self._api_url, account_id=account_id)

    def call(
        self,
        method: str,
        path: str,
        access_token: str,
        account_id: str,
        *,
        json: Any = None,
        params: dict[str, str] | str | None = None,
        cost: float = GET_COST,
    ) -> dict[str, Any]:
        """One API request, paced by the account's bucket; 429s are waited out a few times."""
        action = f"{method} {path.split('?', maxsplit=1)[0]}"
        url = f"{self._api_url}{path}"
        return paced_request(
            self._http,
            self.pacer,
            method,
            url,
            access_token=access_token,
            account_id=account_id,
            json=json,
            params=params,
            cost=cost,
            action=action,
        )

    def _get(self, path: str, access_token: str, *, action: str) -> httpx2.Response:
        headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
        with translate_transport_errors(action, redact=(access_token,)):
            return self._http.get(f"{self._api_url}{path}", headers=headers)


def paced_request(
    http: httpx2.Client,
    pacing: ApiPacing[Any],
    method: str,
    url: str,
    *,
    access_token: str,
    account_id: str,
    json: Any,
    params: dict[str, str] | str | None,
    cost: float,
    action: str,
) -> dict[str, Any]:
    """One request booked in the account's limits (``pacing``: any provider's model) and sent when its moment
    comes; its answer's JSON object. A 429 holds the account for its ``Retry-After`` (every process) and is
    retried up to ``MAX_RATE_LIMIT_RETRIES`` times when that is at most ``MAX_RETRY_AFTER_S``; a longer one marks
    the limit spent and is raised. A 401 is ``AccessDenied`` (the on-demand client refreshes and retries)."""
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
    for attempt in range(MAX_RATE_LIMIT_RETRIES + 1):
        slot = pacing.reserve(account_id, cost)
        with translate_transport_errors(action, redact=(access_token,)):
            response = http.request(method, url, headers=headers, json=json, params=params)
        pacing.observe(account_id, response.headers, slot)
        try:
            check_api_response(response, action=action, redact=(access_token,))
        except RateLimited as exc:
            wait = exc.retry_after if exc.retry_after is not None else 1.0
            if attempt >= MAX_RATE_LIMIT_RETRIES or wait > MAX_RETRY_AFTER_S:
                pacing.full(account_id)
                raise
            pacing.hold(account_id, wait, cost)  # the retry's ``reserve`` waits it out, as every other caller does
            continue
        return json_object(response) or {}
    raise AssertionError("unreachable: the last attempt raises")  # pragma: no cover


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


def _item(body: dict[str, Any]) -> dict[str, Any]:
    item = body.get("Item")
    if not isinstance(item, dict):
        raise ProviderProtocolError("Lightspeed's answer has no Item object.")
    return item


__all__ = ["ApiClient", "paced_request"]
