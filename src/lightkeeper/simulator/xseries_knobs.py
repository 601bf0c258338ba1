"""The X-Series levers and gauges behind ``/_sim/``: seeding stores, adding products, the X-Series counters.

Where the counters are (one ``/_sim/stats`` for both series, so a test reads one place):

- Top-level keys without a prefix are R-Series only; the ``X_STAT_KEYS`` (all ``x_…``) are X-Series only:
  ``x_token_requests`` and ``x_api_requests`` (every request to those endpoints, faults included),
  ``x_code_exchanges``, ``x_refreshes``, ``x_invalid_grant``, ``x_invalid_client``, ``x_reuse`` (exchanged
  refresh tokens presented again), ``x_family_revocations`` (pairs revoked because of a reuse),
  ``x_token_rate_limited`` (429s of ``x_token_limit_per_min``), ``x_rate_limited`` (API 429s of the window
  limit) and ``x_api_foreign_store`` (another store's token presented).
- ``per_account`` has every account, X-Series stores included, with the R-Series counters (``refreshes``,
  ``invalid_grant``, ``api_requests``, ``rate_limited``, ``burst_limited``, ``reuse``); an X-Series store's
  entry adds ``x_window_violations`` (its window 429s) and ``x_token_rate_limited``.
- ``x_per_store`` is the same X-Series entries keyed by domain prefix.

``SimulatorControl.x_stats(prefix)`` reads them; ``SimulatorControl.reuse()`` adds both series' reuse.
The R-Series knobs (``knobs.py``) call the helpers here so that ``revoke_account`` and
``expire_access_tokens`` also reach X-Series tokens.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict

from lightkeeper.simulator.records import Account, Records
from lightkeeper.simulator.replies import JsonDict, SimulatorError
from lightkeeper.simulator.xseries_oauth import XOAuthServer, xstore_of
from lightkeeper.simulator.xseries_records import DEFAULT_X_SCOPE, product_json

X_STAT_KEYS = (
    "x_token_requests",
    "x_code_exchanges",
    "x_refreshes",
    "x_invalid_grant",
    "x_invalid_client",
    "x_reuse",
    "x_family_revocations",
    "x_token_rate_limited",
    "x_api_requests",
    "x_rate_limited",
    "x_api_foreign_store",
)
_MAX_SEED = 10_000
_MAX_ADD_PRODUCTS = 100_000


def x_account_counters(account: Account) -> JsonDict:
    """An account's ``per_account`` entry: the shared counters, plus the X-Series ones for a store."""
    counters = asdict(account.counters)
    if account.xstore is not None:
        counters["x_window_violations"] = account.xstore.window_violations
        counters["x_token_rate_limited"] = account.xstore.token_rate_limited
    return counters


def x_stats(records: Records) -> JsonDict:
    """The X-Series part of ``/_sim/stats``: the ``x_…`` totals and ``x_per_store``."""
    result: JsonDict = {key: records.stats[key] for key in X_STAT_KEYS}
    stores = (records.accounts[account_id] for account_id in records.x.stores.values())
    result["x_per_store"] = {xstore_of(a).domain_prefix: x_account_counters(a) for a in stores}
    return result


def active_x_refresh_tokens(records: Records, account: Account) -> int:
    idle = records.config.x_refresh_idle_s
    now = records.account_now(account)
    return sum(
        1
        for t in records.x.refresh_tokens.values()
        if t.account_id == account.account_id and not (t.revoked or t.exchanged or now - t.issued_at > idle)
    )


def revoke_x_tokens(records: Records, account: Account) -> None:
    for token in records.x.refresh_tokens.values():
        if token.account_id == account.account_id:
            records.x_revoke_pair(token.token)


def expire_x_access_tokens(records: Records, account: Account) -> int:
    now = records.account_now(account)
    expired = 0
    for token in records.x.access_tokens.values():
        if token.account_id == account.account_id and not token.revoked and token.expires_at > now:
            token.expires_at = now
            expired += 1
    return expired


class XKnobs:
    """The X-Series ``/_sim/`` operations over shared ``Records``; the caller holds the state lock."""

    def __init__(self, records: Records, oauth: XOAuthServer) -> None:
        self._records = records
        # Seeding issues pairs exactly as a code exchange would.
        self._oauth = oauth

    def store(self, key: int | str) -> Account:
        """The X-Series store named by account id or domain prefix, or ``SimulatorError`` 404."""
        account = self._records.account(key)
        if account.xstore is None:
            raise SimulatorError(404, f"account {key} is not an X-Series store")
        return account

    def seed(self, count: int) -> list[JsonDict]:
        """``count`` new stores, each connected by the configured client: the first token answer of each, plus
        ``account_id`` and ``name``."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_SEED:
            raise SimulatorError(400, f"count must be from 1 to {_MAX_SEED}")
        return [self._seed_one() for _ in range(count)]

    def _seed_one(self) -> JsonDict:
        account = self._records.new_xstore()
        client_id = self._records.config.client_id
        reply = self._oauth.issue_pair(account, client_id, DEFAULT_X_SCOPE, secrets.token_hex(8))
        assert isinstance(reply.body, dict)
        return {"account_id": str(account.account_id), "name": account.name, **reply.body}

    def store_json(self, account: Account) -> JsonDict:
        store = xstore_of(account)
        return {
            "account_id": str(account.account_id),
            "domain_prefix": store.domain_prefix,
            "name": account.name,
            "retailer_id": store.retailer_id,
            "outlet_ids": list(store.outlets),
            "products": len(store.products),
            "revoked": account.revoked,
            "active_refresh_tokens": active_x_refresh_tokens(self._records, account),
            "refreshes": account.counters.refreshes,
            "clock_offset_seconds": account.clock_offset,
        }

    def stores(self) -> list[JsonDict]:
        return [self.store_json(self._records.accounts[a]) for a in self._records.x.stores.values()]

    def add_products(self, key: int | str, count: int) -> JsonDict:
        """``count`` more products (``Demo Product N``), each with the next version; ``{"products": n}`` after."""
        if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= _MAX_ADD_PRODUCTS:
            raise SimulatorError(400, f"count must be from 1 to {_MAX_ADD_PRODUCTS}")
        store = xstore_of(self.store(key))
        for _ in range(count):
            store.add_product()
        return {"products": len(store.products)}

    def product(self, key: int | str, product_id: str) -> JsonDict:
        """The product as stored, its stock per outlet included."""
        store = xstore_of(self.store(key))
        product = store.products.get(product_id)
        if product is None:
            raise SimulatorError(404, f"unknown product {product_id}")
        return product_json(product, with_inventory=True)


__all__ = [
    "X_STAT_KEYS",
    "XKnobs",
    "active_x_refresh_tokens",
    "expire_x_access_tokens",
    "revoke_x_tokens",
    "x_account_counters",
    "x_stats",
]
