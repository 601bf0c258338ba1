"""The simulated X-Series API (``/x/{prefix}/api/2.0/…`` and ``/2.1/…``): bearer tokens, the window limit, products.

Every request names its store by the domain prefix (unknown: 404) and must carry that store's live access
token (anything else, another store's token included: 401 ``{"error":"invalid_token"}``, not counted). It is
then counted in the fixed window of its (store, client): ``300 * x_registers + 50`` requests per
``x_window_s`` seconds, the window starting at the first request after the last one ended. Every counted
answer carries ``X-RateLimit-Limit``, ``X-RateLimit-Remaining`` and ``X-RateLimit-Reset`` (the window's end,
unix seconds rounded up); one over the limit is 429 with ``Retry-After`` as the HTTP date of that end.
Endpoints: ``GET 2.0/retailer``, ``GET 2.0/products`` (paged by ``after`` = the last ``version.max``; an empty
``data`` ends), ``GET 2.0/products/{id}``, ``PUT 2.1/products/{id}`` (stock per outlet, bumps the version).
Anything else under ``/api/`` is 404 after it is counted, except ``/api/1.0/…`` (the OAuth area: only the
token endpoint exists there, so a revoke is a plain 404).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from lightkeeper.simulator.records import Account, Records
from lightkeeper.simulator.replies import JsonDict, Reply, http_date, int_value, x_error
from lightkeeper.simulator.xseries_oauth import xstore_of
from lightkeeper.simulator.xseries_records import XAccessToken, XProduct, XStore, XWindow, product_json

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 200
_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer error="invalid_token"'}


@dataclass(frozen=True)
class XApiCall:
    """One request under ``/x/{prefix}/api/``: ``rest`` is the path after ``/api/`` (e.g. ``2.0/products``)."""

    prefix: str
    method: str
    rest: str
    query: Sequence[tuple[str, str]]
    authorization: str | None
    body: object  # the JSON body, or None when there is none or it is not JSON


def window_limit(registers: int) -> int:
    return 300 * registers + 50


class XApiServer:
    """``/x/{prefix}/api/*`` over shared ``Records``; the caller holds the state lock."""

    def __init__(self, records: Records) -> None:
        self._records = records

    def handle(self, call: XApiCall) -> Reply:
        account_id = self._records.x.stores.get(call.prefix)
        if account_id is None:
            return x_error(404, "not_found", "No store has this domain prefix.")
        if call.rest.startswith("1.0/"):
            return x_error(404, "not_found", f"No such endpoint: /api/{call.rest}")
        account = self._records.accounts[account_id]
        token = self._authenticate(account, call.authorization)
        if isinstance(token, Reply):
            return token
        account.counters.api_requests += 1
        headers = self._count(account, token.client_id)
        if isinstance(headers, Reply):
            return headers
        reply = self._route(account, call)
        reply.headers.update(headers)
        return reply

    # ------------------------------------------------------------ endpoints

    def _route(self, account: Account, call: XApiCall) -> Reply:
        store = xstore_of(account)
        match call.method.upper(), call.rest.split("/"):
            case "GET", ["2.0", "retailer"]:
                body = {"id": store.retailer_id, "name": account.name, "domain_prefix": store.domain_prefix}
                return Reply(200, {"data": body})
            case "GET", ["2.0", "products"]:
                return _list_products(store, call.query)
            case "GET", ["2.0", "products", product_id] if product_id in store.products:
                return Reply(200, {"data": product_json(store.products[product_id], with_inventory=True)})
            case "PUT", ["2.1", "products", product_id] if product_id in store.products:
                return _put_product(store, store.products[product_id], call.body)
            case ("GET", ["2.0", "products", _]) | ("PUT", ["2.1", "products", _]):
                return x_error(404, "not_found", "No such product.")
        return x_error(404, "not_found", f"No such endpoint: {call.method.upper()} /api/{call.rest}")

    # ------------------------------------------------------ auth and window

    def _authenticate(self, account: Account, authorization: str | None) -> XAccessToken | Reply:
        """The store's live access token the header carries, or the 401."""
        if not authorization:
            return x_error(401, "invalid_token", "The Authorization header is missing.", _UNAUTHORIZED)
        scheme, _, value = authorization.strip().partition(" ")
        token = self._records.x.access_tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or not self._records.x_access_valid(token):
            return x_error(401, "invalid_token", "The access token is invalid or expired.", _UNAUTHORIZED)
        if token.account_id != account.account_id:
            self._records.stats["x_api_foreign_store"] += 1
            return x_error(401, "invalid_token", "The access token is not valid for this store.", _UNAUTHORIZED)
        return token

    def _count(self, account: Account, client_id: str) -> dict[str, str] | Reply:
        """Count the request in its (store, client) window: the rate headers, or the 429 over the limit."""
        store, config = xstore_of(account), self._records.config
        now = self._records.account_now(account)
        window = store.windows.get(client_id)
        if window is None or now >= window.start + config.x_window_s:
            window = store.windows[client_id] = XWindow(now)
        limit = window_limit(config.x_registers)
        end = window.start + config.x_window_s
        if window.count >= limit:
            self._records.stats["x_rate_limited"] += 1
            store.window_violations += 1
            account.counters.rate_limited += 1
            headers = _rate_headers(limit, 0, end)
            headers["Retry-After"] = http_date(end)
            return x_error(429, "rate_limited", "Too many requests: wait for the window to end.", headers)
        window.count += 1
        return _rate_headers(limit, limit - window.count, end)


def _rate_headers(limit: int, remaining: int, end: float) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(limit),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(math.ceil(end)),
    }


def _list_products(store: XStore, query: Sequence[tuple[str, str]]) -> Reply:
    """Products with ``version > after``, oldest version first; ``version`` is null on the empty last page."""
    params = dict(query)
    after = int_value(params.get("after", "0"))
    if after is None or after < 0:
        return x_error(400, "invalid_request", "after must be a non-negative integer (the last version.max).")
    size = int_value(params.get("page_size", str(DEFAULT_PAGE_SIZE)))
    if size is None or not 1 <= size <= MAX_PAGE_SIZE:
        return x_error(400, "invalid_request", f"page_size must be an integer from 1 to {MAX_PAGE_SIZE}.")
    newer = sorted((p for p in store.products.values() if p.version > after), key=lambda p: p.version)[:size]
    data = [product_json(p, with_inventory=False) for p in newer]
    version: JsonDict | None = {"min": newer[0].version, "max": newer[-1].version} if newer else None
    return Reply(200, {"data": data, "version": version})


def _put_product(store: XStore, product: XProduct, body: object) -> Reply:
    """``{"details":{"inventory":[{"outlet_id":…,"current_amount":n}, …]}}``: all entries checked, then set."""
    updates = _inventory_updates(store, body)
    if isinstance(updates, str):
        return x_error(400, "invalid_request", updates)
    product.inventory.update(updates)
    product.version = store.next_version()
    return Reply(200, {"data": product_json(product, with_inventory=True)})


def _inventory_updates(store: XStore, body: object) -> dict[str, int] | str:
    details = body.get("details") if isinstance(body, dict) else None
    inventory = details.get("inventory") if isinstance(details, dict) else None
    if not isinstance(inventory, list) or not inventory:
        return 'The body must be {"details":{"inventory":[{"outlet_id":"…","current_amount":n}]}}.'
    updates: dict[str, int] = {}
    for entry in inventory:
        outlet = entry.get("outlet_id") if isinstance(entry, dict) else None
        amount = entry.get("current_amount") if isinstance(entry, dict) else None
        if not isinstance(outlet, str) or outlet not in store.outlets:
            return f"Unknown outlet_id: {outlet!r}."
        if isinstance(amount, bool) or not isinstance(amount, int):
            return "current_amount must be an integer."
        updates[outlet] = amount
    return updates


__all__ = ["DEFAULT_PAGE_SIZE", "MAX_PAGE_SIZE", "XApiCall", "XApiServer", "window_limit"]
