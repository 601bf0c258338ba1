"""Lightspeed Retail (R-Series) API calls that need no more than an access token.

The caller hands in the ``httpx2.Client`` and a valid access token; a refused token raises
``AccessDenied`` (refreshing and retrying is the on-demand client's job, ``lightkeeper.client``).
Requests are booked in the account's bucket first (``api_pacing``: shared with the proxy and with every other
process on the same store), under the same cap as the proxy's (``PROXY_MAX_WAIT_S``, handed in as ``max_wait_s``):
a request that would wait longer than the cap is ``RateLimited`` at once, nothing sent, with a ``retry_after``
of when it would fit. A 429 that still happens (Lightspeed did not process it) holds the account for its
``Retry-After`` in every process, and is retried once if that fits in what is left of the cap; otherwise, or
when the retry meets a 429 too, it is raised as it came, with Lightspeed's ``Retry-After``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx2

from lightkeeper.errors import ProviderProtocolError, RateLimited
from lightkeeper.lightspeed.api_pacing import ApiPacer, ApiPacing, Booked, Refusal
from lightkeeper.lightspeed.bucket import retry_after_s
from lightkeeper.lightspeed.error_mapping import check_api_response, json_object, translate_transport_errors
from lightkeeper.lightspeed.forwarding import account_path, confine, relative_page
from lightkeeper.lightspeed.tokens import Account

#: Request costs from docs/LIGHTSPEED.md, used only to book the bucket before sending; the answer's headers
#: then give the real level.
GET_COST = 1.0
PUT_ONE_RELATION_COST = 1.5
#: How long a request may wait in all (for room in the account's limits, and out a 429's Retry-After before its
#: one retry) when the caller names no cap: ``PROXY_MAX_WAIT_S``'s default. ``Keeper`` hands in the setting.
DEFAULT_MAX_WAIT_S = 10.0
#: The cap of the stock helpers (``item``, ``set_stock``): update-stock's batch, CLI or ``POST …/stock``. A batch
#: sends one request at a time, so a longer wait piles nothing up, and a row refused after 10 s is a row someone
#: must send again by hand; a request path, by contrast, wants to fail fast. So a batch row waits up to a minute
#: (never less than the verbs' cap), as long as the client waited out a Retry-After before the cap existed.
STOCK_MAX_WAIT_S = 60.0

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
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
        stock_max_wait_s: float = STOCK_MAX_WAIT_S,
    ) -> None:
        self._http = http
        self._api_url = api_url.rstrip("/")
        self.pacer = pacer if pacer is not None else ApiPacer()
        self.write_cost = write_cost
        #: The verbs' cap (``request``, so ``get``/``put``/…/``paginate``): the proxy's ``PROXY_MAX_WAIT_S``.
        self.max_wait_s = max_wait_s
        #: The stock helpers' cap (see ``STOCK_MAX_WAIT_S``): a batch waits at least as long as a request path.
        self.stock_max_wait_s = max(stock_max_wait_s, max_wait_s)

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
        relations = {"load_relations": '["ItemShops"]'}
        body = self.call("GET", path, access_token, account_id, params=relations, max_wait_s=self.stock_max_wait_s)
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
        cap = self.stock_max_wait_s
        return _item(
            self.call("PUT", path, access_token, account_id, json=body, cost=PUT_ONE_RELATION_COST, max_wait_s=cap)
        )

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
        ``Item.json``; empty for the account itself), confined as the proxy confines its paths, and paced as the
        proxy paces it (``max_wait_s``)."""
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
        max_wait_s: float | None = None,
    ) -> dict[str, Any]:
        """One API request, paced by the account's bucket within ``max_wait_s`` (None: the client's own), a 429
        retried once within it (see ``paced_request``)."""
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
            max_wait_s=self.max_wait_s if max_wait_s is None else max_wait_s,
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
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
    monotonic: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """One request booked in the account's limits (``pacing``: any provider's model) and sent when its moment
    comes; its answer's JSON object. As the proxy does it: a booking that would wait past ``max_wait_s`` is
    ``RateLimited`` at once (nothing sent; ``retry_after``: when it would fit); a 429 holds the account for its
    ``Retry-After`` (every process) and is retried once if that fits in what is left of ``max_wait_s``, else
    raised as it came. A 401 is ``AccessDenied`` (the on-demand client refreshes and retries once).
    ``monotonic`` and ``sleep`` must be the pacer's own clock (the system's, unless a test hands both in)."""
    headers = {"Authorization": f"Bearer {access_token}", "Accept": "application/json"}
    cap = Cap(monotonic() + max_wait_s, max_wait_s, monotonic, sleep)
    retried = False
    while True:
        slot = cap.book(pacing, account_id, cost, action=action)
        with translate_transport_errors(action, redact=(access_token,)):
            response = http.request(method, url, headers=headers, json=json, params=params)
        pacing.observe(account_id, response.headers, slot)
        try:
            check_api_response(response, action=action, redact=(access_token,))
        except RateLimited as exc:
            if not cap.waits_out(pacing, account_id, cost, exc.retry_after) or retried:
                raise
            retried = True  # the next booking waits the hold out, as every other caller's does
            continue
        return json_object(response) or {}


@dataclass(frozen=True)
class Cap:
    """The most one request may wait in all, for its bookings and for a 429's ``Retry-After``: until ``end``
    (``monotonic``'s clock, the pacer's), ``max_wait_s`` after it started."""

    end: float
    max_wait_s: float
    monotonic: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep

    def left(self) -> float:
        return max(0.0, self.end - self.monotonic())

    def book(self, pacing: ApiPacing[Any], account_id: str, cost: float, *, action: str) -> Booked:
        """A booking within the cap, slept until its moment (booked again when woken too late); ``RateLimited``
        (nothing booked, nothing sent) when the account's limits would hold the request past the cap."""
        while True:
            slot: Booked | Refusal = pacing.book_many(account_id, [(cost, self.left())])[0]
            if isinstance(slot, Refusal):
                raise RateLimited(
                    f"the account's Lightspeed rate limit would hold the {action} for {slot.wait:.1f} s, past its "
                    f"cap of {self.max_wait_s:g} s: nothing was sent",
                    retry_after=retry_after_s(slot.wait),
                )
            if (delay := slot.moment - self.monotonic()) > 0:
                self.sleep(delay)
            if not pacing.late(slot):
                return slot

    def waits_out(self, pacing: ApiPacing[Any], account_id: str, cost: float, retry_after: float | None) -> bool:
        """Hold the account for a 429's ``Retry-After`` (1 s when it gives none) in every process; whether the
        request may be retried within the cap (never without a usable ``Retry-After``, as the proxy)."""
        pacing.hold(account_id, retry_after if retry_after is not None else 1.0, cost)
        return retry_after is not None and retry_after <= self.left()


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


__all__ = ["DEFAULT_MAX_WAIT_S", "STOCK_MAX_WAIT_S", "ApiClient", "Cap", "paced_request"]
