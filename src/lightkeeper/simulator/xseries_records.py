"""X-Series (formerly Vend) records: stores, products, codes and tokens, kept apart from the R-Series ones.

An X-Series store is a simulator ``Account`` (so account ids, clocks, ``advance``, ``revoke_account`` and the
per-account counters work for it unchanged) whose ``xstore`` holds what only X-Series has: the domain prefix,
the retailer and outlet ids, the products and the rate-limit windows. Its codes and tokens live in ``XRecords``,
never in the R-Series dicts, which is what keeps an R-Series token from working on an X-Series store and an
X-Series token from working on an R-Series account. A leaf module besides ``replies``: ``records.py`` imports it.
"""

from __future__ import annotations

import secrets
import uuid
from collections import deque
from dataclasses import dataclass, field

from lightkeeper.simulator.replies import JsonDict

DEMO_PRODUCTS = 5
OUTLETS = 2
# Versions are big and grow by uneven steps, as a retailer-wide counter does: a client must page by the
# last ``version.max``, never by counting.
FIRST_VERSION = 1_000_000
_MAX_VERSION_STEP = 5
DEFAULT_X_SCOPE = "products:read products:write"


@dataclass
class XProduct:
    product_id: str
    name: str
    version: int
    inventory: dict[str, int]  # outlet_id -> current_amount


@dataclass
class XWindow:
    """One fixed rate-limit window of a (store, client): when it began (store clock) and what it counted."""

    start: float
    count: int = 0


@dataclass
class XStore:
    """What makes an ``Account`` an X-Series store."""

    domain_prefix: str
    retailer_id: str
    outlets: list[str]
    products: dict[str, XProduct] = field(default_factory=dict)
    last_version: int = FIRST_VERSION
    windows: dict[str, XWindow] = field(default_factory=dict)  # client_id -> current API window
    # Arrival times (store clock) of the token requests of the last 60 s, oldest first.
    token_arrivals: deque[float] = field(default_factory=deque)
    # API requests refused by the window limit (a client that paces by the headers never gets one).
    window_violations: int = 0
    token_rate_limited: int = 0

    def next_version(self) -> int:
        self.last_version += 1 + secrets.randbelow(_MAX_VERSION_STEP)
        return self.last_version

    def add_product(self, name: str | None = None) -> XProduct:
        number = len(self.products) + 1
        product = XProduct(
            str(uuid.uuid4()),
            name or f"Demo Product {number}",
            self.next_version(),
            {outlet: (number * 7 + index * 3) % 20 for index, outlet in enumerate(self.outlets)},
        )
        self.products[product.product_id] = product
        return product


def new_xstore(account_id: int) -> XStore:
    store = XStore(f"store{account_id}", str(uuid.uuid4()), [str(uuid.uuid4()) for _ in range(OUTLETS)])
    for _ in range(DEMO_PRODUCTS):
        store.add_product()
    return store


def product_json(product: XProduct, *, with_inventory: bool) -> JsonDict:
    """A product as the API answers it: ``id``, ``name``, ``version`` (and its stock when asked for)."""
    result: JsonDict = {"id": product.product_id, "name": product.name, "version": product.version}
    if with_inventory:
        result["inventory"] = [
            {"outlet_id": outlet, "current_amount": amount} for outlet, amount in product.inventory.items()
        ]
    return result


@dataclass
class XCode:
    code: str
    account_id: int
    client_id: str
    redirect_uri: str
    scope: str
    issued_at: float  # store clock
    used: bool = False


@dataclass
class XRefreshToken:
    token: str
    account_id: int
    client_id: str
    scope: str
    family: str  # one per code exchange (or seed): the connection
    issued_at: float  # store clock; idle time counts from here, since a token is exchanged at most once
    access_token: str
    exchanged: bool = False  # set by its one exchange, never cleared: presenting it again is reuse
    revoked: bool = False


@dataclass
class XAccessToken:
    token: str
    account_id: int
    client_id: str
    refresh_token: str
    expires_at: float
    revoked: bool = False


@dataclass
class XRecords:
    """Every X-Series code and token, and the stores by domain prefix (forgotten on reset with ``Records``)."""

    stores: dict[str, int] = field(default_factory=dict)  # domain_prefix -> account_id
    codes: dict[str, XCode] = field(default_factory=dict)
    refresh_tokens: dict[str, XRefreshToken] = field(default_factory=dict)
    access_tokens: dict[str, XAccessToken] = field(default_factory=dict)


__all__ = [
    "DEFAULT_X_SCOPE",
    "FIRST_VERSION",
    "XAccessToken",
    "XCode",
    "XProduct",
    "XRecords",
    "XRefreshToken",
    "XStore",
    "XWindow",
    "new_xstore",
    "product_json",
]
