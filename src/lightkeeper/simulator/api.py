"""The simulated R-Series API (``/API/V3``): bearer tokens, the leaky bucket, and the Account and Item endpoints.

Every request is authenticated, then charged to the per-(account, client) leaky bucket before it is
answered; the headers a real answer carries (bucket level, drip rate, cost) come with every charged reply.
The first use of a fresh access token ends the grace window of the refresh token it replaced.
"""

from __future__ import annotations

import math

from lightkeeper.simulator.items import Item, item_json, parse_relations, request_cost, stock_updates
from lightkeeper.simulator.records import AccessToken, Account, Bucket, Records
from lightkeeper.simulator.replies import Reply, access_denied, int_value, ls_error

# A bucket within this much of full still takes the request: float drips must not refuse an exact fit.
_BUCKET_SLACK = 1e-9


def _fmt_number(value: float) -> str:
    """Lightspeed-style header numbers: ``11`` or ``11.5``."""
    rounded = round(value, 1)
    return str(int(rounded)) if rounded == int(rounded) else str(rounded)


class ApiServer:
    """``/API/V3/*`` over shared ``Records``; the caller holds the state lock."""

    def __init__(self, records: Records) -> None:
        self._records = records

    # ------------------------------------------------------------ endpoints

    def account(self, authorization: str | None) -> Reply:
        """``GET /API/V3/Account.json``: who am I."""
        begun = self._begin(authorization, 1.0)
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

    # ------------------------------------------------------- auth and bucket

    def _begin(self, authorization: str | None, cost: float) -> tuple[Account, dict[str, str]] | Reply:
        """Authenticate and charge the bucket; on success the account and the headers to send."""
        token = self._authenticate_bearer(authorization)
        if isinstance(token, Reply):
            return token
        account = self._records.accounts[token.account_id]
        account.counters.api_requests += 1
        charged = self._charge(account, token.client_id, cost)
        if isinstance(charged, Reply):
            return charged
        return account, charged

    def _begin_item(
        self, authorization: str | None, cost: float, account_id: str, item_id: str
    ) -> tuple[Account, Item, dict[str, str]] | Reply:
        """``_begin``, then the item the path names (a refusal still carries the bucket headers)."""
        begun = self._begin(authorization, cost)
        if isinstance(begun, Reply):
            return begun
        account, headers = begun
        item = _item_for(account, account_id, item_id)
        if isinstance(item, Reply):
            item.headers.update(headers)
            return item
        return account, item, headers

    def _authenticate_bearer(self, authorization: str | None) -> AccessToken | Reply:
        if not authorization:
            return access_denied('Missing "Authorization" header')
        scheme, _, value = authorization.strip().partition(" ")
        token = self._records.access_tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or token.revoked:
            return access_denied()
        account = self._records.accounts[token.account_id]
        if account.revoked or self._records.account_now(account) >= token.expires_at:
            return access_denied()
        if not token.used:
            token.used = True
            # "Once the new access token is used ..., the old refresh token will be revoked."
            parent = self._records.refresh_tokens[token.refresh_token].parent
            if parent is not None:
                self._records.refresh_tokens[parent].revoked = True
        return token

    def _charge(self, account: Account, client_id: str, cost: float) -> Reply | dict[str, str]:
        """Leaky bucket: returns the headers to send, or a 429 reply (request not charged)."""
        now = self._records.account_now(account)
        bucket = account.buckets.setdefault(client_id, Bucket(0.0, now))
        drip, size = self._records.config.drip_rate, self._records.config.bucket_size
        bucket.level = max(0.0, bucket.level - max(0.0, now - bucket.updated_at) * drip)
        bucket.updated_at = now
        over = bucket.level + cost - size
        allowed = over <= _BUCKET_SLACK
        if allowed:
            bucket.level += cost
        headers = {
            "X-LS-API-Bucket-Level": f"{_fmt_number(bucket.level)}/{_fmt_number(size)}",
            "X-LS-API-Drip-Rate": _fmt_number(drip),
            "X-LS-Acct-Id": str(account.account_id),
            "X-LS-API-Request-Cost": _fmt_number(cost),
        }
        if allowed:
            return headers
        self._records.stats["rate_limited"] += 1
        account.counters.rate_limited += 1
        headers["Retry-After"] = str(max(1, math.ceil(over / drip)))
        headers["X-LS-API-RateLimit-Type"] = "api-leaky-bucket"
        return Reply(429, ls_error(429, "Too Many Requests", "Rate limit exceeded."), headers)


def _item_for(account: Account, path_account: str, item_id: str) -> Item | Reply:
    if path_account != str(account.account_id):
        return Reply(403, ls_error(403, "Forbidden", "Access token is not valid for this account."))
    item = account.items.get(int_value(item_id) or -1)
    if item is None:
        return Reply(404, ls_error(404, "Not Found", f"Could not find Item with ID: {item_id}"))
    return item


__all__ = ["ApiServer"]
