"""The simulated R-Series API (``/API/V3``): bearer tokens, the burst limiter, the leaky bucket, the endpoints.

Every request is authenticated, then passed through the per-(account, client) burst limiter (at most
``burst_limit`` requests in any sliding second) and charged to the leaky bucket before it is answered; the
headers a real answer carries (bucket level, drip rate, cost, burst level) come with every charged reply,
refusals (403, 404, 400) included. Endpoints: ``Account.json``, one Item (GET, PUT, DELETE = archive), the
Item collection (GET with cursor pages, POST = create), and a catch-all that answers any other ``/API/V3``
path 404 after charging it, so a proxy's stray requests cost what they would cost at Lightspeed.
The first use of a fresh access token ends the grace window of the refresh token it replaced.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence

from lightkeeper.simulator.items import Item, item_json, parse_relations, request_cost, stock_updates
from lightkeeper.simulator.pages import (
    DEFAULT_LIMIT,
    MAX_LIMIT,
    Cursor,
    decode_cursor,
    encode_cursor,
    page_of,
    page_url,
)
from lightkeeper.simulator.records import AccessToken, Account, Bucket, Records
from lightkeeper.simulator.replies import JsonDict, Reply, access_denied, int_value, ls_error

# A bucket within this much of full still takes the request: float drips must not refuse an exact fit.
_BUCKET_SLACK = 1e-9
# The burst limiter's sliding window, in seconds.
_BURST_WINDOW = 1.0
_MAX_DESCRIPTION = 255


def _fmt_number(value: float) -> str:
    """Lightspeed-style header numbers: ``11`` or ``11.5``."""
    rounded = round(value, 1)
    return str(int(rounded)) if rounded == int(rounded) else str(rounded)


class ApiServer:
    """``/API/V3/*`` over shared ``Records``; the caller holds the state lock."""

    def __init__(self, records: Records) -> None:
        self._records = records

    # ------------------------------------------------------------ endpoints

    def account(self, authorization: str | None, path_account: str | None = None) -> Reply:
        """``GET /API/V3/Account.json``: who am I; or ``/API/V3/Account/{id}.json``, the token's own account."""
        begun = self._begin(authorization, 1.0, path_account)
        if isinstance(begun, Reply):
            return begun
        account, headers = begun
        acct = str(account.account_id)
        body = {
            "@attributes": {"count": "1"},
            "Account": {
                "accountID": acct,
                "name": account.name,
                "link": {"@attributes": {"href": f"/API/V3/Account/{acct}"}},
            },
        }
        return Reply(200, body, headers)

    def get_item(self, authorization: str | None, account_id: str, item_id: str, load_relations: str | None) -> Reply:
        """``GET /API/V3/Account/{id}/Item/{itemID}.json``; ItemShops only when asked for."""
        found = self._begin_item(authorization, 1.0, account_id, item_id)
        if isinstance(found, Reply):
            return found
        _account, item, headers = found
        with_shops = bool(parse_relations(load_relations) & {"ItemShops", "all"})
        return Reply(200, {"Item": item_json(item, with_shops=with_shops)}, headers)

    def put_item(self, authorization: str | None, account_id: str, item_id: str, body: object) -> Reply:
        """``PUT /API/V3/Account/{id}/Item/{itemID}.json`` setting ItemShop qoh (atomically)."""
        found = self._begin_item(authorization, request_cost("PUT", body), account_id, item_id)
        if isinstance(found, Reply):
            return found
        account, item, headers = found
        updates = stock_updates(item, body)
        if isinstance(updates, str):
            return Reply(400, ls_error(400, "Bad Request", updates), headers)
        for row, qoh in updates:
            row.qoh = qoh
        item.updated_at = self._records.account_now(account)
        return Reply(200, {"Item": item_json(item, with_shops=True)}, headers)

    def archive_item(self, authorization: str | None, account_id: str, item_id: str) -> Reply:
        """``DELETE /API/V3/Account/{id}/Item/{itemID}.json``: archives (Lightspeed never deletes items)."""
        found = self._begin_item(authorization, request_cost("DELETE"), account_id, item_id)
        if isinstance(found, Reply):
            return found
        account, item, headers = found
        item.archived = True
        item.updated_at = self._records.account_now(account)
        return Reply(200, {"Item": item_json(item, with_shops=False)}, headers)

    def create_item(self, authorization: str | None, account_id: str, body: object) -> Reply:
        """``POST /API/V3/Account/{id}/Item.json`` with ``{"description": "..."}``: a new item, no stock."""
        begun = self._begin(authorization, request_cost("POST", body), account_id)
        if isinstance(begun, Reply):
            return begun
        account, headers = begun
        description = body.get("description") if isinstance(body, dict) else None
        if not isinstance(description, str) or not description.strip() or len(description) > _MAX_DESCRIPTION:
            message = f"Item.description must be a non-empty string of at most {_MAX_DESCRIPTION} characters."
            return Reply(400, ls_error(400, "Bad Request", message), headers)
        item = self._records.add_item(account, description, stocked=False)
        return Reply(200, {"Item": item_json(item, with_shops=True)}, headers)

    def list_items(
        self, authorization: str | None, account_id: str, base_url: str, query: Sequence[tuple[str, str]]
    ) -> Reply:
        """``GET /API/V3/Account/{id}/Item.json``: one cursor page of the unarchived items, by itemID.

        ``base_url`` is the request's own scheme, host and path, ``query`` its parameters in order: the
        ``next`` and ``previous`` links are complete URLs built from them, as Lightspeed's are.
        """
        begun = self._begin(authorization, 1.0, account_id)
        if isinstance(begun, Reply):
            return begun
        account, headers = begun
        asked = _page_request(self._records.cursor_key, account, query)
        if isinstance(asked, str):
            return Reply(400, ls_error(400, "Bad Request", asked), headers)
        limit, cursor = asked
        ids = [item_id for item_id, item in account.items.items() if not item.archived]
        page = page_of(ids, limit, cursor)
        links = {"next": "", "previous": ""}
        for name, neighbour in (("next", page.next), ("previous", page.previous)):
            if neighbour is not None:
                value = encode_cursor(self._records.cursor_key, account.account_id, neighbour)
                links[name] = page_url(base_url, query, neighbour.direction, value)
        body: JsonDict = {"@attributes": links}
        with_shops = bool(parse_relations(dict(query).get("load_relations")) & {"ItemShops", "all"})
        records = [item_json(account.items[item_id], with_shops=with_shops) for item_id in page.ids]
        if records:
            # Lightspeed's quirk: a page of one record holds the object itself, not a list of one.
            body["Item"] = records[0] if len(records) == 1 else records
        return Reply(200, body, headers)

    def other(self, authorization: str | None, method: str, path: str, body: object) -> Reply:
        """Any other ``/API/V3`` path and method: authenticated and charged like a real call, then 404
        (403 first when the path names another account than the token's)."""
        begun = self._begin(authorization, request_cost(method, body), _path_account(path))
        if isinstance(begun, Reply):
            return begun
        _account, headers = begun
        message = f"Route {method.upper()} {path} not found."
        return Reply(404, ls_error(404, "Not Found", message), headers)

    # ------------------------------------------------------- auth and bucket

    def _begin(
        self, authorization: str | None, cost: float, path_account: str | None = None
    ) -> tuple[Account, dict[str, str]] | Reply:
        """Authenticate, pass the burst limiter, charge the bucket, and check that ``path_account`` (the
        ``{accountID}`` the path names, if any) is the token's; on success the account and the headers."""
        token = self._authenticate_bearer(authorization)
        if isinstance(token, Reply):
            return token
        account = self._records.accounts[token.account_id]
        account.counters.api_requests += 1
        burst = self._burst(account, token.client_id)
        if isinstance(burst, Reply):
            return burst
        charged = self._charge(account, token.client_id, cost)
        if isinstance(charged, Reply):
            charged.headers.update(burst)
            return charged
        charged.update(burst)
        if path_account is not None and path_account != str(account.account_id):
            self._records.stats["api_foreign_account"] += 1
            return Reply(403, ls_error(403, "Forbidden", "Access token is not valid for this account."), charged)
        return account, charged

    def _begin_item(
        self, authorization: str | None, cost: float, account_id: str, item_id: str
    ) -> tuple[Account, Item, dict[str, str]] | Reply:
        """``_begin``, then the item the path names (a refusal still carries the bucket headers)."""
        begun = self._begin(authorization, cost, account_id)
        if isinstance(begun, Reply):
            return begun
        account, headers = begun
        item = account.items.get(int_value(item_id) or -1)
        if item is None:
            return Reply(404, ls_error(404, "Not Found", f"Could not find Item with ID: {item_id}"), headers)
        return account, item, headers

    def _authenticate_bearer(self, authorization: str | None) -> AccessToken | Reply:
        if not authorization:
            return access_denied('Missing "Authorization" header')
        scheme, _, value = authorization.strip().partition(" ")
        token = self._records.access_tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or not self._records.access_valid(token):
            return access_denied()
        if not token.used:
            token.used = True
            # "Once the new access token is used ..., the old refresh token will be revoked."
            parent = self._records.refresh_tokens[token.refresh_token].parent
            if parent is not None:
                self._records.refresh_tokens[parent].revoked = True
        return token

    def _burst(self, account: Account, client_id: str) -> Reply | dict[str, str]:
        """Sliding-window burst limiter: the burst header to send, or a 429 that charges nothing.

        Arrival times are on the account's clock, as the bucket's are. A request refused here is neither
        charged to the bucket nor counted in the window; one the bucket then refuses still counts here
        (it reached the provider): stricter, never kinder.
        """
        now = self._records.account_now(account)
        window = account.bursts.setdefault(client_id, deque())
        while window and window[0] <= now - _BURST_WINDOW:
            window.popleft()
        limit = self._records.config.burst_limit
        if len(window) < limit:
            window.append(now)
            return {"X-LS-API-Burst-Level": f"{len(window)}/{limit}"}
        self._records.stats["burst_limited"] += 1
        account.counters.burst_limited += 1
        headers = self._bucket_headers(account, self._drained(account, client_id), 1.0)
        headers["X-LS-API-Burst-Level"] = f"{len(window)}/{limit}"
        # The oldest request leaves the window at window[-limit] + 1 s: from then on one more fits.
        retry = window[len(window) - limit] + _BURST_WINDOW - now
        return self._too_many(account, headers, retry, "api-burst-limiter")

    def _drained(self, account: Account, client_id: str) -> Bucket:
        """The client's bucket, leaked down to now."""
        now = self._records.account_now(account)
        bucket = account.buckets.setdefault(client_id, Bucket(0.0, now))
        bucket.level = max(0.0, bucket.level - max(0.0, now - bucket.updated_at) * self._records.config.drip_rate)
        bucket.updated_at = now
        return bucket

    def _bucket_headers(self, account: Account, bucket: Bucket, cost: float) -> dict[str, str]:
        size = self._records.config.bucket_size
        return {
            "X-LS-API-Bucket-Level": f"{_fmt_number(bucket.level)}/{_fmt_number(size)}",
            "X-LS-API-Drip-Rate": _fmt_number(self._records.config.drip_rate),
            "X-LS-Acct-Id": str(account.account_id),
            "X-LS-API-Request-Cost": _fmt_number(cost),
        }

    def _charge(self, account: Account, client_id: str, cost: float) -> Reply | dict[str, str]:
        """Leaky bucket: returns the headers to send, or a 429 reply (request not charged)."""
        bucket = self._drained(account, client_id)
        over = bucket.level + cost - self._records.config.bucket_size
        if over <= _BUCKET_SLACK:
            bucket.level += cost
            return self._bucket_headers(account, bucket, cost)
        headers = self._bucket_headers(account, bucket, cost)
        return self._too_many(account, headers, over / self._records.config.drip_rate, "api-leaky-bucket")

    def _too_many(self, account: Account, headers: dict[str, str], retry: float, kind: str) -> Reply:
        """A 429 of either limiter; ``rate_limited`` counts both, so one counter says "no 429 at all"."""
        self._records.stats["rate_limited"] += 1
        account.counters.rate_limited += 1
        headers["Retry-After"] = str(max(1, math.ceil(retry)))
        headers["X-LS-API-RateLimit-Type"] = kind
        return Reply(429, ls_error(429, "Too Many Requests", "Rate limit exceeded."), headers)


def _page_request(key: bytes, account: Account, query: Sequence[tuple[str, str]]) -> tuple[int, Cursor | None] | str:
    """The ``limit`` and cursor a collection request asks for, or what is wrong with them."""
    params = dict(query)
    limit = int_value(params.get("limit", str(DEFAULT_LIMIT)))
    if limit is None or not 1 <= limit <= MAX_LIMIT:
        return f"limit must be an integer from 1 to {MAX_LIMIT}."
    if "after" in params and "before" in params:
        return "Use after or before, not both."
    for direction in ("after", "before"):
        if direction in params:
            cursor = decode_cursor(key, account.account_id, direction, params[direction])
            if cursor is None:
                return f"Invalid {direction} cursor."
            return limit, cursor
    return limit, None


def _path_account(path: str) -> str | None:
    """The ``{accountID}`` of an ``/API/V3/Account/{accountID}/…`` (or ``…/Account/{accountID}.json``) path."""
    parts = path.split("/")
    if len(parts) < 5 or parts[1:4] != ["API", "V3", "Account"]:
        return None
    if len(parts) == 5:
        return parts[4].removesuffix(".json") if parts[4].endswith(".json") else None
    return parts[4]


__all__ = ["ApiServer"]
