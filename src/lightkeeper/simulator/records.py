"""The simulated provider's records, and ``Records``: the one mutable store that holds them all.

``Records`` is everything ``reset()`` forgets: merchant accounts and their items, registered clients, codes
and tokens, counters, clock offsets and the consent knob. The OAuth server, the API and the knobs are logic
over one shared ``Records``; none of them locks, because ``SimulatorState`` holds its lock around every call.
The few rules more than one of them needs (what time an account sees, whether a refresh token is alive,
revoking a pair) live here so that they are written once.
"""

from __future__ import annotations

import secrets
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from lightkeeper.simulator.config import SimulatorConfig
from lightkeeper.simulator.items import Item, new_item, seed_items
from lightkeeper.simulator.replies import SimulatorError, int_value
from lightkeeper.simulator.xseries_records import XAccessToken, XRecords, XStore, new_xstore

FIRST_ACCOUNT_ID = 100001
REQUEST_LOG_SIZE = 2000
SECONDS_PER_DAY = 86400


@dataclass
class Client:
    client_id: str
    client_secret: str
    # Registered redirect URIs; empty accepts any (the authorize request must then carry one).
    redirect_uris: list[str] = field(default_factory=list)


@dataclass
class Bucket:
    level: float
    updated_at: float


@dataclass
class AccountCounters:
    refreshes: int = 0
    invalid_grant: int = 0
    api_requests: int = 0
    # 429s of both kinds (leaky bucket and burst limiter); ``burst_limited`` counts the burst ones alone.
    rate_limited: int = 0
    burst_limited: int = 0
    # Refresh tokens presented again after their one exchange (grace replays and refused replays alike).
    reuse: int = 0


@dataclass
class Account:
    account_id: int
    name: str
    items: dict[int, Item]
    clock_offset: float = 0.0
    revoked: bool = False
    buckets: dict[str, Bucket] = field(default_factory=dict)  # client_id -> bucket
    # client_id -> arrival times (account clock) of the API requests of the last second, oldest first.
    bursts: dict[str, deque[float]] = field(default_factory=dict)
    counters: AccountCounters = field(default_factory=AccountCounters)
    # Set on X-Series stores only (see ``xseries_records.py``); R-Series accounts have None.
    xstore: XStore | None = None


@dataclass
class AuthCode:
    code: str
    account_id: int
    client_id: str
    scope: str
    redirect_uri: str | None  # as sent on authorize; None when it was not sent
    delivered_to: str  # where the code was sent: the one sent, else the single registered one
    challenge: str | None
    challenge_method: str
    issued_at: float
    used: bool = False


@dataclass
class RefreshToken:
    token: str
    account_id: int
    client_id: str
    scope: str
    family: str  # one per code exchange: the "connection"
    issued_at: float
    access_token: str  # the access token issued together with this one
    parent: str | None  # refresh token this one replaced; alive until our access token is used
    child: str | None = None  # refresh token issued from this one, still in its grace window
    revoked: bool = False


@dataclass
class AccessToken:
    token: str
    account_id: int
    client_id: str
    refresh_token: str
    expires_at: float
    used: bool = False
    revoked: bool = False


@dataclass(frozen=True)
class Clock:
    """Wall-clock anchored but monotonic: JWT times look real, yet never jump backwards.

    Outlives ``reset()`` (only the offsets in ``Records`` are forgotten), so arrival times stay comparable.
    """

    monotonic: Callable[[], float]
    wall_start: float
    mono_start: float

    @classmethod
    def start(cls, monotonic: Callable[[], float] = time.monotonic) -> Clock:
        return cls(monotonic, time.time(), monotonic())

    def wall(self) -> float:
        return self.wall_start + (self.monotonic() - self.mono_start)


class Records:
    """All the provider's mutable data, plus the rules over it that several parts share."""

    def __init__(self, config: SimulatorConfig, clock: Clock) -> None:
        # The config object is shared, not copied: /_sim/config changes apply at once and survive reset.
        self.config = config
        self.clock = clock
        self.global_offset = 0.0
        self.authorize_mode = "approve"
        # When set, consent is given for this existing account (a merchant reconnecting) instead of a new one.
        self.authorize_account: int | None = None
        self.clients: dict[str, Client] = {}
        # Redirect URIs added by ``register_redirect_uri`` (client_id -> URIs), on top of the client's own.
        # Forgotten on reset, so each test registers the ones its fixtures use and no more.
        self.extra_redirects: dict[str, list[str]] = {}
        self.accounts: dict[int, Account] = {}
        self.codes: dict[str, AuthCode] = {}
        self.refresh_tokens: dict[str, RefreshToken] = {}
        self.access_tokens: dict[str, AccessToken] = {}
        self.stats: Counter[str] = Counter()
        # When each refresh_token grant arrived (simulator monotonic seconds), to check request spacing.
        self.refresh_times: list[float] = []
        # What reached /API/V3 (redacted entries, see ``requestlog.py``), the newest last.
        self.requests: deque[dict[str, object]] = deque(maxlen=REQUEST_LOG_SIZE)
        # Signs collection cursors: a new key per reset, so a cursor from before a reset is refused too.
        self.cursor_key = secrets.token_bytes(32)
        # X-Series codes, tokens and the stores by domain prefix (``xseries_records.py``).
        self.x = XRecords()
        # Headers added to every API answer of either series (``/_sim/api-headers``): the ETag, Last-Modified
        # or Set-Cookie a real answer may carry. Forgotten on reset.
        self.api_extra_headers: list[tuple[str, str]] = []

    # ----------------------------------------------------------------- clocks

    def now(self) -> float:
        return self.clock.wall() + self.global_offset

    def account_now(self, account: Account) -> float:
        return self.now() + account.clock_offset

    # --------------------------------------------------------------- accounts

    def new_account(self) -> Account:
        seq = len(self.accounts) + 1
        account = Account(FIRST_ACCOUNT_ID + seq - 1, f"Demo Store {seq}", seed_items(seq, self.now()))
        self.accounts[account.account_id] = account
        return account

    def new_xstore(self) -> Account:
        """A new X-Series store: an account with a domain prefix (``store{account_id}``) and demo products."""
        seq = len(self.accounts) + 1
        account_id = FIRST_ACCOUNT_ID + seq - 1
        xstore = new_xstore(account_id)
        account = Account(account_id, f"Demo X Store {seq}", {}, xstore=xstore)
        self.accounts[account_id] = account
        self.x.stores[xstore.domain_prefix] = account_id
        return account

    def add_item(self, account: Account, description: str | None, *, stocked: bool) -> Item:
        """A new item with the next itemID. IDs only grow, so ``account.items`` stays in itemID order (the
        collection relies on it); ``stocked`` gives it demo stock, else none (as one created by the API).
        ``description`` defaults to ``Demo Item {itemID}``."""
        item_id = next(reversed(account.items), 0) + 1
        seq = account.account_id - FIRST_ACCOUNT_ID + 1
        text = f"Demo Item {item_id}" if description is None else description
        item = new_item(seq, item_id, text, self.account_now(account), stocked=stocked)
        account.items[item_id] = item
        return item

    def account(self, account_id: int | str) -> Account:
        """The account a knob names (by id, or an X-Series store by its domain prefix), or ``SimulatorError`` 404."""
        account = self.accounts.get(int_value(account_id) or self.x.stores.get(str(account_id), -1))
        if account is None:
            raise SimulatorError(404, f"unknown account {account_id}")
        return account

    # ----------------------------------------------------------------- tokens

    def refresh_alive(self, token: RefreshToken) -> bool:
        account = self.accounts[token.account_id]
        ttl = self.config.refresh_token_ttl_days * SECONDS_PER_DAY
        return not (token.revoked or account.revoked or self.account_now(account) - token.issued_at >= ttl)

    def access_valid(self, token: AccessToken) -> bool:
        """Whether the API would accept ``token`` now (not revoked, account connected, not expired)."""
        account = self.accounts[token.account_id]
        return not (token.revoked or account.revoked or self.account_now(account) >= token.expires_at)

    def revoke_pair(self, refresh_value: str) -> None:
        token = self.refresh_tokens[refresh_value]
        token.revoked = True
        self.access_tokens[token.access_token].revoked = True

    def x_access_valid(self, token: XAccessToken) -> bool:
        """Whether the X-Series API would accept ``token`` now (at its own store)."""
        account = self.accounts[token.account_id]
        return not (token.revoked or account.revoked or self.account_now(account) >= token.expires_at)

    def x_revoke_pair(self, refresh_value: str) -> None:
        token = self.x.refresh_tokens[refresh_value]
        token.revoked = True
        self.x.access_tokens[token.access_token].revoked = True


__all__ = [
    "REQUEST_LOG_SIZE",
    "AccessToken",
    "Account",
    "AccountCounters",
    "AuthCode",
    "Bucket",
    "Client",
    "Clock",
    "Records",
    "RefreshToken",
]
