"""In-memory model of a Lightspeed R-Series provider: OAuth server, merchant accounts, items, leaky bucket.

No HTTP here. Every provider operation returns a :class:`Reply` (status, body, headers) that ``app.py``
turns into a response, so the rules live in one place and can be read without the web plumbing.

Behaviour follows /work/shared/LIGHTSPEED.md. The parts that break naive integrations are modelled on
purpose: refresh-token rotation with a grace window, 30-day idle expiry of refresh tokens, single-use
60-second codes, registered redirect URIs, and the per-(account, client) leaky bucket. It is never kinder
than Lightspeed: a client that passes against it should pass against the real thing. Stats count what a
well-behaved client avoids, e.g. ``reuse`` (a refresh token presented again after its one exchange).
Injected failures live in ``faults.py``, the answer bodies in ``replies.py``.

All public methods take ``self._lock``: uvicorn runs handlers concurrently and tests read the state
from another thread. Private ``_`` helpers assume the lock is held.
"""

from __future__ import annotations

import base64
import hashlib
import json
import math
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from lightkeeper.simulator.faults import Fault, parse_fault
from lightkeeper.simulator.replies import (
    ACCESS_DENIED_DESC,
    INVALID_GRANT_DESC,
    JsonDict,
    Reply,
    SimulatorError,
    access_denied,
    int_value,
    invalid_client,
    invalid_refresh_token,
    invalid_request,
    ls_error,
    oauth_error,
    page,
)

FIRST_ACCOUNT_ID = 100001
ITEM_IDS = (1, 2, 3, 4, 5)
SHOP_IDS = (1, 2)
SECONDS_PER_DAY = 86400


@dataclass
class SimulatorConfig:
    """Tunable provider behaviour; every field can be changed at runtime through ``/_sim/config``."""

    client_id: str = "lightkeeper-demo"
    client_secret: str = "demo-secret"
    # Registered redirect URI. None, with none added by ``register_redirect_uri``, accepts whatever the
    # authorize request carries (then it is required): only for the standalone ``lightkeeper simulate``.
    redirect_uri: str | None = None
    access_token_ttl: int = 3600
    refresh_token_ttl_days: int = 30
    code_ttl: int = 60
    bucket_size: float = 90.0
    drip_rate: float = 1.0
    # Delay of each token request (code exchange or refresh) only; revoke and the API are not slowed.
    token_latency_ms: int = 0
    # Delay of each API request (Account, Item).
    api_latency_ms: int = 0


# How /_sim/config coerces JSON values: (python type, may be None, must be > 0).
_CONFIG_FIELDS: dict[str, tuple[type, bool, bool]] = {
    "client_id": (str, False, False),
    "client_secret": (str, False, False),
    "redirect_uri": (str, True, False),
    "access_token_ttl": (int, False, True),
    "refresh_token_ttl_days": (int, False, True),
    "code_ttl": (int, False, True),
    "bucket_size": (float, False, True),
    "drip_rate": (float, False, True),
    "token_latency_ms": (int, False, False),
    "api_latency_ms": (int, False, False),
}


@dataclass
class Client:
    client_id: str
    client_secret: str
    # Registered redirect URIs; empty accepts any (the authorize request must then carry one).
    redirect_uris: list[str] = field(default_factory=list)


@dataclass
class ItemShop:
    item_shop_id: int
    shop_id: int
    qoh: int


@dataclass
class Item:
    item_id: int
    description: str
    sum_item_shop_id: int  # id of the computed shopID 0 row
    shops: dict[int, ItemShop]  # shop_id -> row, real shops only
    updated_at: float


@dataclass
class Bucket:
    level: float
    updated_at: float


@dataclass
class AccountCounters:
    refreshes: int = 0
    invalid_grant: int = 0
    api_requests: int = 0
    rate_limited: int = 0
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
    counters: AccountCounters = field(default_factory=AccountCounters)


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


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _fmt_number(value: float) -> str:
    """Lightspeed-style header numbers: ``11`` or ``11.5``."""
    rounded = round(value, 1)
    return str(int(rounded)) if rounded == int(rounded) else str(rounded)


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _with_query(url: str, params: Mapping[str, str]) -> str:
    """Append ``params`` to ``url`` keeping any query the registered redirect already has."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _pkce_ok(challenge: str, method: str, verifier: str) -> bool:
    if method == "plain":
        return secrets.compare_digest(challenge, verifier)
    digest = _b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
    return secrets.compare_digest(challenge, digest)


def _seed_items(seq: int, now: float) -> dict[int, Item]:
    """Deterministic demo stock: itemShopIDs unique per account, qoh varies by account/item/shop."""
    items: dict[int, Item] = {}
    for item_id in ITEM_IDS:
        base = seq * 1000 + item_id * 10
        shops = {shop: ItemShop(base + shop, shop, (seq * 7 + item_id * 5 + shop * 3) % 20) for shop in SHOP_IDS}
        items[item_id] = Item(item_id, f"Demo Item {item_id}", base, shops, now)
    return items


def _item_shop_entries(body: object) -> list[object] | None:
    """The ItemShop entries of a PUT body (object or list), or None when the shape is wrong."""
    if not isinstance(body, dict):
        return None
    shops = body.get("ItemShops")
    if not isinstance(shops, dict):
        return None
    entries = shops.get("ItemShop")
    if isinstance(entries, dict):
        return [entries]
    if isinstance(entries, list) and entries:
        return list(entries)
    return None


def request_cost(method: str, body: object = None) -> float:
    """Bucket cost: 1 per request, plus 0.5 per nested relation entity on writes."""
    if method.upper() not in {"PUT", "POST"}:
        return 1.0
    entries = _item_shop_entries(body)
    return 1.0 + 0.5 * (len(entries) if entries else 0)


def _parse_relations(raw: str | None) -> set[str]:
    if not raw:
        return set()
    try:
        parsed = json.loads(raw)
    except ValueError:
        return {part.strip() for part in raw.split(",")}
    if isinstance(parsed, list):
        return {str(x) for x in parsed}
    return {str(parsed)}


class SimulatorState:
    """The whole simulated provider. One instance backs one app; ``reset()`` empties it."""

    def __init__(
        self,
        config: SimulatorConfig | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config or SimulatorConfig()
        self._lock = threading.Lock()
        self._monotonic = monotonic
        # Wall-clock anchored but monotonic: JWT times look real, yet never jump backwards.
        self._wall_start = time.time()
        self._mono_start = monotonic()
        self._wake_generation = 0
        self._init_state()

    def _init_state(self) -> None:
        self._global_offset = 0.0
        self._authorize_mode = "approve"
        # When set, consent is given for this existing account (a merchant reconnecting) instead of a new one.
        self._authorize_account: int | None = None
        self._clients: dict[str, Client] = {}
        # Redirect URIs added by ``register_redirect_uri`` (client_id -> URIs), on top of the client's own.
        # Forgotten on reset, so each test registers the ones its fixtures use and no more.
        self._extra_redirects: dict[str, list[str]] = {}
        self._accounts: dict[int, Account] = {}
        self._codes: dict[str, AuthCode] = {}
        self._refresh_tokens: dict[str, RefreshToken] = {}
        self._access_tokens: dict[str, AccessToken] = {}
        self._faults: list[Fault] = []
        self._stats: Counter[str] = Counter()
        # When each refresh_token grant arrived (simulator monotonic seconds), to check request spacing.
        self._refresh_times: list[float] = []

    # ----------------------------------------------------------------- clocks

    def _now(self) -> float:
        return self._wall_start + (self._monotonic() - self._mono_start) + self._global_offset

    def _account_now(self, account: Account) -> float:
        return self._now() + account.clock_offset

    # ------------------------------------------------------------- clients

    def _client(self, client_id: str) -> Client | None:
        # The configured client is read live so /_sim/config changes to it apply at once.
        if client_id and client_id == self.config.client_id:
            own = [self.config.redirect_uri] if self.config.redirect_uri else []
            client = Client(self.config.client_id, self.config.client_secret, own)
        elif client_id in self._clients:
            registered = self._clients[client_id]
            client = Client(registered.client_id, registered.client_secret, list(registered.redirect_uris))
        else:
            return None
        client.redirect_uris += [u for u in self._extra_redirects.get(client_id, []) if u not in client.redirect_uris]
        return client

    def _authenticate_client(self, client_id: str, secret: str) -> Client | None:
        client = self._client(client_id)
        if client is None or not secrets.compare_digest(client.client_secret, secret):
            self._stats["invalid_client"] += 1
            return None
        return client

    # ------------------------------------------------------------ authorize

    def authorize(self, params: Mapping[str, str]) -> Reply:
        """Auto-approve (or deny) an authorization request; approval creates a new merchant account."""
        with self._lock:
            client = self._client(params.get("client_id", ""))
            if client is None:
                return page(400, "Unknown client_id.")
            sent = params.get("redirect_uri") or None
            target = _redirect_target(client, sent)
            if isinstance(target, Reply):
                # Never redirect to an unregistered URI (RFC 6749 4.1.2.1, 10.6): show an error page.
                return target
            return self._authorize_redirect(client, target, sent, params)

    def _authorize_redirect(self, client: Client, target: str, sent: str | None, params: Mapping[str, str]) -> Reply:
        state = {"state": params["state"]} if "state" in params else {}
        error = self._authorize_error(params)
        if error is not None:
            return Reply(302, headers={"Location": _with_query(target, {**error, **state})})
        account = self._consenting_account()
        code = AuthCode(
            code="def50200" + secrets.token_hex(96),
            account_id=account.account_id,
            client_id=client.client_id,
            scope=params.get("scope", ""),
            redirect_uri=sent,
            delivered_to=target,
            challenge=params.get("code_challenge") or None,
            challenge_method=params.get("code_challenge_method") or "plain",
            issued_at=self._account_now(account),
        )
        self._codes[code.code] = code
        return Reply(302, headers={"Location": _with_query(target, {"code": code.code, **state})})

    def _authorize_error(self, params: Mapping[str, str]) -> dict[str, str] | None:
        if params.get("response_type") != "code":
            return {"error": "unsupported_response_type", "error_description": "Only response_type=code."}
        method = params.get("code_challenge_method")
        if method is not None and method not in {"S256", "plain"}:
            return {
                "error": "invalid_request",
                "error_description": "code_challenge_method must be S256 or plain",
            }
        if self._authorize_mode == "deny":
            return {"error": "access_denied", "error_description": ACCESS_DENIED_DESC}
        return None

    def _consenting_account(self) -> Account:
        if self._authorize_account is not None and self._authorize_account in self._accounts:
            return self._accounts[self._authorize_account]
        return self._new_account()

    def _new_account(self) -> Account:
        seq = len(self._accounts) + 1
        account = Account(FIRST_ACCOUNT_ID + seq - 1, f"Demo Store {seq}", _seed_items(seq, self._now()))
        self._accounts[account.account_id] = account
        return account

    # ---------------------------------------------------------------- token

    def token(
        self,
        fields: Mapping[str, str],
        *,
        json_body: bool = False,
        basic: tuple[str, str] | None = None,
        received_at: float | None = None,
    ) -> Reply:
        """``POST /auth/oauth/token`` for both grants. ``basic`` is HTTP Basic client auth, if sent;
        ``received_at`` is when the request arrived (``time.monotonic()``; default: now)."""
        with self._lock:
            grant_type = fields.get("grant_type", "")
            if grant_type == "refresh_token":
                self._refresh_times.append(self._monotonic() if received_at is None else received_at)
            if not grant_type:
                return invalid_request("grant_type")
            if grant_type not in {"authorization_code", "refresh_token"}:
                return oauth_error(
                    400,
                    "unsupported_grant_type",
                    "The authorization grant type is not supported by the authorization server.",
                    "Check that all required parameters have been provided",
                )
            client_id, secret = basic or (fields.get("client_id", ""), fields.get("client_secret", ""))
            if not client_id:
                return invalid_request("client_id")
            client = self._authenticate_client(client_id, secret)
            if client is None:
                return invalid_client()
            if grant_type == "authorization_code":
                return self._exchange_code(client, fields)
            self._note_reuse(self._refresh_tokens.get(fields.get("refresh_token", "")))
            if json_body and "scope" in fields:
                # Reproduces the 2026 report: JSON body + scope on refresh -> invalid_grant.
                return self._refresh_failed(self._refresh_tokens.get(fields.get("refresh_token", "")))
            return self._refresh(client, fields)

    def _code_failed(self, code: AuthCode | None, hint: str) -> Reply:
        self._stats["invalid_grant"] += 1
        if code is not None:
            self._accounts[code.account_id].counters.invalid_grant += 1
        return oauth_error(400, "invalid_grant", INVALID_GRANT_DESC, hint)

    def _exchange_code(self, client: Client, fields: Mapping[str, str]) -> Reply:
        value = fields.get("code", "")
        if not value:
            return invalid_request("code")
        code = self._codes.get(value)
        if code is None:
            return self._code_failed(None, "Cannot decrypt the authorization code")
        problem = self._code_problem(code, client, fields)
        if problem == "code_verifier":
            return invalid_request("code_verifier")
        if problem is not None:
            return self._code_failed(code, problem)
        code.used = True
        self._stats["code_exchanges"] += 1
        account = self._accounts[code.account_id]
        family = secrets.token_hex(8)
        return self._issue_pair(account, client.client_id, code.scope, family, parent=None)

    def _code_problem(self, code: AuthCode, client: Client, fields: Mapping[str, str]) -> str | None:
        """Why this exchange must fail (an invalid_grant hint), or None when it may proceed."""
        if code.client_id != client.client_id:
            return "Authorization code was not issued to this client"
        if code.used:
            return "Authorization code has been revoked"
        if self._account_now(self._accounts[code.account_id]) > code.issued_at + self.config.code_ttl:
            return "Authorization code has expired"
        sent = fields.get("redirect_uri") or None
        # RFC 6749 4.1.3: required and identical when authorize carried one; if sent anyway, it must be
        # where the code went, and still registered.
        if (code.redirect_uri is not None or sent is not None) and sent != code.delivered_to:
            return "Invalid redirect URI"
        if sent is not None and client.redirect_uris and sent not in client.redirect_uris:
            return "Invalid redirect URI"
        if code.challenge is not None:
            verifier = fields.get("code_verifier", "")
            if not verifier:
                return "code_verifier"
            if not _pkce_ok(code.challenge, code.challenge_method, verifier):
                return "Failed to verify `code_verifier`."
        return None

    def _refresh_failed(self, token: RefreshToken | None) -> Reply:
        self._stats["invalid_grant"] += 1
        if token is not None:
            self._accounts[token.account_id].counters.invalid_grant += 1
        return invalid_refresh_token()

    def _note_reuse(self, token: RefreshToken | None) -> None:
        """Count a refresh token presented after its one exchange, whatever the answer will be.

        ``child`` is set by the first exchange and never cleared, so it marks "already exchanged"
        whether the token is still in its grace window or revoked since.
        """
        if token is not None and token.child is not None:
            self._stats["reuse"] += 1
            self._accounts[token.account_id].counters.reuse += 1

    def _refresh_alive(self, token: RefreshToken) -> bool:
        account = self._accounts[token.account_id]
        ttl = self.config.refresh_token_ttl_days * SECONDS_PER_DAY
        return not (token.revoked or account.revoked or self._account_now(account) - token.issued_at >= ttl)

    def _refresh(self, client: Client, fields: Mapping[str, str]) -> Reply:
        value = fields.get("refresh_token", "")
        if not value:
            return invalid_request("refresh_token")
        old = self._refresh_tokens.get(value)
        if old is None or old.client_id != client.client_id or not self._refresh_alive(old):
            return self._refresh_failed(old)
        if old.child is not None:
            # Refresh with the previous token while its successor is unused (e.g. the client lost the
            # response): the successor pair is discarded, so only the newest pair is ever valid.
            self._stats["refreshes_in_grace"] += 1
            self._revoke_pair(old.child)
        if old.parent is not None:
            # Using this token proves the client has it: its predecessor's grace ends.
            self._refresh_tokens[old.parent].revoked = True
        account = self._accounts[old.account_id]
        self._stats["refreshes"] += 1
        account.counters.refreshes += 1
        return self._issue_pair(account, client.client_id, old.scope, old.family, parent=old)

    def _issue_pair(
        self, account: Account, client_id: str, scope: str, family: str, parent: RefreshToken | None
    ) -> Reply:
        now = self._account_now(account)
        ttl = self.config.access_token_ttl
        access_value = self._jwt(account, client_id, scope, now, ttl)
        refresh_value = "def50" + secrets.token_hex(160)
        self._access_tokens[access_value] = AccessToken(
            access_value, account.account_id, client_id, refresh_value, now + ttl
        )
        self._refresh_tokens[refresh_value] = RefreshToken(
            refresh_value,
            account.account_id,
            client_id,
            scope,
            family,
            now,
            access_value,
            parent=None if parent is None else parent.token,
        )
        if parent is not None:
            parent.child = refresh_value
        body = {"token_type": "Bearer", "expires_in": ttl, "access_token": access_value,
                "refresh_token": refresh_value}  # fmt: skip
        return Reply(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    @staticmethod
    def _jwt(account: Account, client_id: str, scope: str, now: float, ttl: int) -> str:
        """JWT-shaped like Lightspeed's RS256 token; the signature is random (clients must not verify)."""
        header = {"alg": "RS256", "typ": "JWT"}
        claims = {
            "acct": str(account.account_id),
            "sub": "1",  # the approving employee
            "aud": client_id,
            "scope": scope,
            "iat": int(now),
            "nbf": int(now),
            "exp": int(now + ttl),
            "jti": secrets.token_hex(20),
        }
        parts = [json.dumps(header).encode(), json.dumps(claims).encode(), secrets.token_bytes(256)]
        return ".".join(_b64url(p) for p in parts)

    def _revoke_pair(self, refresh_value: str) -> None:
        token = self._refresh_tokens[refresh_value]
        token.revoked = True
        self._access_tokens[token.access_token].revoked = True

    def _revoke_family(self, family: str) -> None:
        for token in self._refresh_tokens.values():
            if token.family == family:
                self._revoke_pair(token.token)

    # --------------------------------------------------------------- revoke

    def revoke(self, fields: Mapping[str, str], *, basic: tuple[str, str] | None = None) -> Reply:
        """``POST /auth/oauth/revoke``: ends the whole connection the token belongs to."""
        with self._lock:
            client_id, secret = basic or (fields.get("client_id", ""), fields.get("client_secret", ""))
            if not client_id:
                return invalid_request("client_id")
            client = self._authenticate_client(client_id, secret)
            if client is None:
                return invalid_client()
            value = fields.get("refresh_token") or fields.get("token") or ""
            if not value:
                return invalid_request("refresh_token")
            family = self._family_of(value, client.client_id)
            if family is not None:
                # The whole family, not just this token: a predecessor still in its grace window
                # would otherwise keep a "disconnected" connection alive.
                self._revoke_family(family)
            self._stats["revokes"] += 1
            return Reply(200, {})

    def _family_of(self, value: str, client_id: str) -> str | None:
        refresh = self._refresh_tokens.get(value)
        if refresh is None and value in self._access_tokens:
            refresh = self._refresh_tokens[self._access_tokens[value].refresh_token]
        if refresh is None or refresh.client_id != client_id:
            return None  # RFC 7009: unknown tokens are answered 200 all the same
        return refresh.family

    # ------------------------------------------------------------------ API

    def _authenticate_bearer(self, authorization: str | None) -> AccessToken | Reply:
        if not authorization:
            return access_denied('Missing "Authorization" header')
        scheme, _, value = authorization.strip().partition(" ")
        token = self._access_tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if token is None or token.revoked:
            return access_denied()
        account = self._accounts[token.account_id]
        if account.revoked or self._account_now(account) >= token.expires_at:
            return access_denied()
        if not token.used:
            token.used = True
            # "Once the new access token is used ..., the old refresh token will be revoked."
            parent = self._refresh_tokens[token.refresh_token].parent
            if parent is not None:
                self._refresh_tokens[parent].revoked = True
        return token

    def _charge(self, account: Account, client_id: str, cost: float) -> Reply | dict[str, str]:
        """Leaky bucket: returns the headers to send, or a 429 reply (request not charged)."""
        now = self._account_now(account)
        bucket = account.buckets.setdefault(client_id, Bucket(0.0, now))
        drip, size = self.config.drip_rate, self.config.bucket_size
        bucket.level = max(0.0, bucket.level - max(0.0, now - bucket.updated_at) * drip)
        bucket.updated_at = now
        over = bucket.level + cost - size
        allowed = over <= 1e-9
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
        self._stats["rate_limited"] += 1
        account.counters.rate_limited += 1
        headers["Retry-After"] = str(max(1, math.ceil(over / drip)))
        headers["X-LS-API-RateLimit-Type"] = "api-leaky-bucket"
        return Reply(429, ls_error(429, "Too Many Requests", "Rate limit exceeded."), headers)

    def _api_begin(self, authorization: str | None, cost: float) -> tuple[Account, dict[str, str]] | Reply:
        """Authenticate and charge the bucket; on success the account and the headers to send."""
        token = self._authenticate_bearer(authorization)
        if isinstance(token, Reply):
            return token
        account = self._accounts[token.account_id]
        account.counters.api_requests += 1
        charged = self._charge(account, token.client_id, cost)
        if isinstance(charged, Reply):
            return charged
        return account, charged

    def api_account(self, authorization: str | None) -> Reply:
        """``GET /API/V3/Account.json``: who am I."""
        with self._lock:
            begun = self._api_begin(authorization, 1.0)
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

    def _item_for(self, account: Account, path_account: str, item_id: str) -> Item | Reply:
        if path_account != str(account.account_id):
            return Reply(403, ls_error(403, "Forbidden", "Access token is not valid for this account."))
        item = account.items.get(int_value(item_id) or -1)
        if item is None:
            return Reply(404, ls_error(404, "Not Found", f"Could not find Item with ID: {item_id}"))
        return item

    def api_get_item(
        self, authorization: str | None, account_id: str, item_id: str, load_relations: str | None
    ) -> Reply:
        """``GET /API/V3/Account/{id}/Item/{itemID}.json``; ItemShops only when asked for."""
        with self._lock:
            begun = self._api_begin(authorization, 1.0)
            if isinstance(begun, Reply):
                return begun
            account, headers = begun
            item = self._item_for(account, account_id, item_id)
            if isinstance(item, Reply):
                item.headers.update(headers)
                return item
            relations = _parse_relations(load_relations)
            with_shops = bool(relations & {"ItemShops", "all"})
            return Reply(200, {"Item": _item_json(item, with_shops=with_shops)}, headers)

    def api_put_item(self, authorization: str | None, account_id: str, item_id: str, body: object) -> Reply:
        """``PUT /API/V3/Account/{id}/Item/{itemID}.json`` setting ItemShop qoh (atomically)."""
        with self._lock:
            begun = self._api_begin(authorization, request_cost("PUT", body))
            if isinstance(begun, Reply):
                return begun
            account, headers = begun
            item = self._item_for(account, account_id, item_id)
            if isinstance(item, Reply):
                item.headers.update(headers)
                return item
            updates = _stock_updates(item, body)
            if isinstance(updates, str):
                return Reply(400, ls_error(400, "Bad Request", updates), headers)
            for row, qoh in updates:
                row.qoh = qoh
            item.updated_at = self._account_now(account)
            return Reply(200, {"Item": _item_json(item, with_shops=True)}, headers)

    # --------------------------------------------------------------- faults

    def begin(self, endpoint: str) -> Fault | None:
        """Count a request to ``endpoint`` and pop the fault it must suffer, if one is queued."""
        with self._lock:
            self._stats[f"{endpoint}_requests"] += 1
            for fault in self._faults:
                if fault.endpoint == endpoint:
                    fault.count -= 1
                    if fault.count <= 0:
                        self._faults.remove(fault)
                    self._stats["faults_served"] += 1
                    return Fault(**{**asdict(fault), "count": 1})
            return None

    def add_fault(self, spec: Mapping[str, Any]) -> JsonDict:
        """Queue a fault (see ``Fault``); faults for one endpoint are served first-in first-out."""
        fault = parse_fault(spec)
        with self._lock:
            self._faults.append(fault)
            return {"faults": [asdict(f) for f in self._faults]}

    def faults(self) -> JsonDict:
        with self._lock:
            return {"faults": [asdict(f) for f in self._faults]}

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()
            self._wake_generation += 1

    @property
    def wake_generation(self) -> int:
        """Bumped to release requests held by a "timeout" fault (reset, clear, server shutdown)."""
        with self._lock:
            return self._wake_generation

    def wake_sleepers(self) -> None:
        with self._lock:
            self._wake_generation += 1

    # ---------------------------------------------------------------- knobs

    def stats(self) -> JsonDict:
        with self._lock:
            keys = ("token_requests", "code_exchanges", "refreshes", "refreshes_in_grace", "invalid_grant",
                    "invalid_client", "revokes", "api_requests", "rate_limited", "revoke_requests",
                    "faults_served", "reuse")  # fmt: skip
            result: JsonDict = {key: self._stats[key] for key in keys}
            result["per_account"] = {str(a.account_id): asdict(a.counters) for a in self._accounts.values()}
            return result

    def refresh_times(self) -> list[float]:
        """Arrival times (monotonic seconds) of every refresh_token grant request, in arrival order."""
        with self._lock:
            return sorted(self._refresh_times)

    def reset(self) -> None:
        """Forget accounts, tokens, clients, faults, counters and clock offsets; keep the config."""
        with self._lock:
            self._init_state()
            self._wake_generation += 1

    def get_config(self) -> JsonDict:
        with self._lock:
            return asdict(self.config)

    def update_config(self, changes: Mapping[str, Any]) -> JsonDict:
        with self._lock:
            coerced = {name: _coerce_config(name, value) for name, value in changes.items()}
            for name, value in coerced.items():
                setattr(self.config, name, value)
            return asdict(self.config)

    def set_authorize_mode(self, mode: str, account_id: str | None = None) -> None:
        if mode not in {"approve", "deny"}:
            raise SimulatorError(400, "mode must be 'approve' or 'deny'")
        if account_id is not None and not account_id.isdigit():
            raise SimulatorError(400, "account_id must be an account number")
        with self._lock:
            self._authorize_mode = mode
            self._authorize_account = int(account_id) if account_id else None

    def register_client(self, client_id: str, client_secret: str, redirect_uri: str | None = None) -> JsonDict:
        if not client_id or not client_secret:
            raise SimulatorError(400, "client_id and client_secret are required")
        uris = [_check_redirect_uri(redirect_uri)] if redirect_uri else []
        with self._lock:
            self._clients[client_id] = Client(client_id, client_secret, uris)
            return asdict(self._clients[client_id])

    def register_redirect_uri(self, redirect_uri: str, client_id: str | None = None) -> JsonDict:
        """Add a redirect URI to a client (default: the configured one) until the next reset."""
        uri = _check_redirect_uri(redirect_uri)
        with self._lock:
            wanted = client_id or self.config.client_id
            if self._client(wanted) is None:
                raise SimulatorError(404, f"unknown client {wanted}")
            extra = self._extra_redirects.setdefault(wanted, [])
            if uri not in extra:
                extra.append(uri)
            client = self._client(wanted)
            assert client is not None
            return {"client_id": wanted, "redirect_uris": client.redirect_uris}

    def _account(self, account_id: int | str) -> Account:
        account = self._accounts.get(int_value(account_id) or -1)
        if account is None:
            raise SimulatorError(404, f"unknown account {account_id}")
        return account

    def _account_json(self, account: Account) -> JsonDict:
        active = sum(
            1 for t in self._refresh_tokens.values() if t.account_id == account.account_id and self._refresh_alive(t)
        )
        return {
            "account_id": str(account.account_id),
            "name": account.name,
            "revoked": account.revoked,
            "active_refresh_tokens": active,
            "refreshes": account.counters.refreshes,
            "clock_offset_seconds": account.clock_offset,
        }

    def accounts(self) -> list[JsonDict]:
        with self._lock:
            return [self._account_json(a) for a in self._accounts.values()]

    def account(self, account_id: int | str) -> JsonDict:
        with self._lock:
            return self._account_json(self._account(account_id))

    def seed(self, count: int, scope: str = "employee:all") -> list[JsonDict]:
        """``count`` new accounts, each already authorized by the configured client (for benchmarks).

        Returns each account's first token pair, as a code exchange would have.
        """
        if not 1 <= count <= 100_000:
            raise SimulatorError(400, "count must be from 1 to 100000")
        with self._lock:
            return [self._seed_one(scope) for _ in range(count)]

    def _seed_one(self, scope: str) -> JsonDict:
        account = self._new_account()
        reply = self._issue_pair(account, self.config.client_id, scope, secrets.token_hex(8), parent=None)
        assert isinstance(reply.body, dict)
        return {"account_id": str(account.account_id), "name": account.name, **reply.body}

    def revoke_account(self, account_id: int | str) -> JsonDict:
        """The merchant uninstalled the app: every token of the account dies."""
        with self._lock:
            account = self._account(account_id)
            account.revoked = True
            for token in self._refresh_tokens.values():
                if token.account_id == account.account_id:
                    self._revoke_pair(token.token)
            return self._account_json(account)

    def advance_account(self, account_id: int | str, seconds: float) -> JsonDict:
        _check_seconds(seconds)
        with self._lock:
            account = self._account(account_id)
            account.clock_offset += seconds
            return self._account_json(account)

    def advance_all(self, seconds: float) -> JsonDict:
        _check_seconds(seconds)
        with self._lock:
            self._global_offset += seconds
            return {"global_offset_seconds": self._global_offset}

    def expire_access_tokens(self, account_id: int | str) -> JsonDict:
        with self._lock:
            account = self._account(account_id)
            now = self._account_now(account)
            expired = 0
            for token in self._access_tokens.values():
                if token.account_id == account.account_id and not token.revoked and token.expires_at > now:
                    token.expires_at = now
                    expired += 1
            return {"expired": expired}

    def item(self, account_id: int | str, item_id: int | str) -> JsonDict:
        """The item as stored, plus ``qoh_by_shop`` (ints) for easy assertions."""
        with self._lock:
            account = self._account(account_id)
            item = account.items.get(int_value(item_id) or -1)
            if item is None:
                raise SimulatorError(404, f"unknown item {item_id}")
            result = _item_json(item, with_shops=True)
            result["qoh_by_shop"] = {"0": _qoh_sum(item), **{str(s): r.qoh for s, r in item.shops.items()}}
            return result


def _qoh_sum(item: Item) -> int:
    return sum(row.qoh for row in item.shops.values())


def _item_shop_json(item: Item, item_shop_id: int, shop_id: int, qoh: int) -> JsonDict:
    return {
        "itemShopID": str(item_shop_id),
        "qoh": str(qoh),
        "backorder": "0",
        "reorderPoint": "0",
        "reorderLevel": "0",
        "itemID": str(item.item_id),
        "shopID": str(shop_id),
        "timeStamp": _iso(item.updated_at),
    }


def _item_json(item: Item, *, with_shops: bool) -> JsonDict:
    result: JsonDict = {
        "itemID": str(item.item_id),
        "systemSku": str(210000000000 + item.item_id),
        "description": item.description,
        "timeStamp": _iso(item.updated_at),
    }
    if with_shops:
        rows = [_item_shop_json(item, item.sum_item_shop_id, 0, _qoh_sum(item))]
        rows += [_item_shop_json(item, r.item_shop_id, r.shop_id, r.qoh) for r in item.shops.values()]
        result["ItemShops"] = {"ItemShop": rows}
    return result


def _stock_update(item: Item, entry: object) -> tuple[ItemShop, int] | str:
    if not isinstance(entry, dict):
        return "Each ItemShop must be an object."
    qoh = int_value(entry.get("qoh"))
    if qoh is None:
        return "ItemShop.qoh must be an integer."
    if "itemShopID" in entry:
        wanted = int_value(entry["itemShopID"])
        row = next((r for r in item.shops.values() if r.item_shop_id == wanted), None)
    elif "shopID" in entry:
        row = item.shops.get(int_value(entry["shopID"]) or -1)
    else:
        return "ItemShop needs an itemShopID or a shopID."
    if row is None:
        return "ItemShop not found for this item (shopID 0 is the read-only total)."
    return row, qoh


def _stock_updates(item: Item, body: object) -> list[tuple[ItemShop, int]] | str:
    """Validate every entry before applying any, so a bad PUT changes nothing."""
    entries = _item_shop_entries(body)
    if entries is None:
        return 'Body must be {"ItemShops":{"ItemShop": {...} or [...]}}.'
    updates: list[tuple[ItemShop, int]] = []
    for entry in entries:
        update = _stock_update(item, entry)
        if isinstance(update, str):
            return update
        updates.append(update)
    return updates


def _coerce_config(name: str, value: Any) -> Any:
    if name not in _CONFIG_FIELDS:
        raise SimulatorError(400, f"unknown config field {name!r}")
    kind, nullable, positive = _CONFIG_FIELDS[name]
    if value is None and nullable:
        return None
    if kind is str:
        if not isinstance(value, str):
            raise SimulatorError(400, f"{name} must be a string")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
        raise SimulatorError(400, f"{name} must be a number")
    if value < 0 or (positive and value == 0):
        raise SimulatorError(400, f"{name} must be {'positive' if positive else 'non-negative'}")
    return kind(value)


def _redirect_target(client: Client, sent: str | None) -> str | Reply:
    """Where authorize may send the merchant back, or the error page when nowhere."""
    registered = client.redirect_uris
    if sent is not None:
        if registered and sent not in registered:
            return page(400, "The redirect_uri is not registered for this client.")
        return sent
    if len(registered) == 1:
        return registered[0]
    if registered:
        # RFC 6749 3.1.2.3: with several registered, the request must say which one.
        return page(400, "A redirect_uri is required: several are registered for this client.")
    return page(400, "A redirect_uri is required: none is registered for this client.")


def _check_redirect_uri(uri: object) -> str:
    """An absolute http(s) URI without a fragment (RFC 6749 3.1.2), or a 400."""
    parts = urlsplit(uri) if isinstance(uri, str) else None
    if parts is None or parts.scheme not in {"http", "https"} or not parts.netloc or parts.fragment:
        raise SimulatorError(400, "redirect_uri must be an absolute http(s) URI without a fragment")
    return str(uri)


def _check_seconds(seconds: float) -> None:
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise SimulatorError(400, "seconds must be a non-negative number (the clock only moves forward)")


__all__ = [
    "Fault",
    "Reply",
    "SimulatorConfig",
    "SimulatorError",
    "SimulatorState",
    "request_cost",
]
