"""``SimulatorState``: the simulated Lightspeed R-Series provider, one lock around its parts.

No HTTP here. Every provider operation returns a :class:`Reply` (status, body, headers) that ``app.py``
turns into a response, so the rules live in one place and can be read without the web plumbing.

Behaviour follows docs/LIGHTSPEED.md. It is never kinder than Lightspeed: a client that passes
against it should pass against the real thing. The rules live by responsibility:

- ``oauth.py``: authorize, token (code exchange, rotating refresh tokens with a grace window), revoke, JWTs;
  ``clients.py``: the OAuth clients and their registered redirect URIs.
- ``api.py``: bearer tokens, the per-(account, client) burst limiter and leaky bucket, the Account and Item
  endpoints and the catch-all; ``items.py``: the demo stock and its JSON; ``pages.py``: cursor pagination.
- ``requestlog.py``: the redacted log of what reached ``/API/V3`` (fed by ``recorder.py``, an ASGI middleware).
- ``faults.py``: injected failures; ``replies.py``: the answer bodies.
- ``knobs.py``: the ``/_sim/`` levers and gauges; ``records.py``: the data they all share.
- X-Series (formerly Vend), under ``/x``: ``xseries_oauth.py`` (connect, token with strict rotation),
  ``xseries_api.py`` (the window limit and products), ``xseries_knobs.py`` (seeding, counters),
  ``xseries_records.py`` (its records), ``xseries_routes.py`` (its HTTP face).

This module only composes them. Every public method takes ``self._lock``, because uvicorn runs handlers
concurrently and tests read the state from another thread; the parts never lock, they assume it is held.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lightkeeper.simulator.api import ApiServer
from lightkeeper.simulator.clients import add_redirect_uri, register_client
from lightkeeper.simulator.config import SimulatorConfig
from lightkeeper.simulator.faults import Fault, FaultQueue, parse_fault
from lightkeeper.simulator.knobs import Knobs
from lightkeeper.simulator.oauth import OAuthServer
from lightkeeper.simulator.records import AccessToken, Clock, Records, RefreshToken
from lightkeeper.simulator.replies import JsonDict, Reply
from lightkeeper.simulator.requestlog import BODY_DIGEST, log_entry
from lightkeeper.simulator.xseries_api import XApiCall, XApiServer
from lightkeeper.simulator.xseries_knobs import XKnobs
from lightkeeper.simulator.xseries_oauth import XOAuthServer
from lightkeeper.simulator.xseries_records import XAccessToken, XRefreshToken


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
        self._clock = Clock.start(monotonic)
        self._wake_generation = 0
        #: Bumped by ``reset``: a token request that arrived before a reset (and waited out its latency
        #: meanwhile) belongs to a world that is gone, and must not touch, or count in, the new one.
        self._epoch = 0
        self._init_state()

    def _init_state(self) -> None:
        """Fresh records and parts over them; the config, the clock and the wake generation stay."""
        self._records = Records(self.config, self._clock)
        self._oauth = OAuthServer(self._records)
        self._api = ApiServer(self._records)
        self._faults = FaultQueue(self._records.stats)
        self._knobs = Knobs(self._records, self._oauth)
        self._x_oauth = XOAuthServer(self._records)
        self._x_api = XApiServer(self._records)
        self._x_knobs = XKnobs(self._records, self._x_oauth)

    # The tokens issued since the last reset (X-Series ones apart), read (under ``_lock``) by the web and
    # acceptance test fixtures to check that no page or answer leaks one.
    @property
    def _refresh_tokens(self) -> dict[str, RefreshToken]:
        return self._records.refresh_tokens

    @property
    def _access_tokens(self) -> dict[str, AccessToken]:
        return self._records.access_tokens

    @property
    def _x_refresh_tokens(self) -> dict[str, XRefreshToken]:
        return self._records.x.refresh_tokens

    @property
    def _x_access_tokens(self) -> dict[str, XAccessToken]:
        return self._records.x.access_tokens

    # --------------------------------------------------------------- OAuth

    def authorize(self, params: Mapping[str, str]) -> Reply:
        """Auto-approve (or deny) an authorization request; approval creates a new merchant account."""
        with self._lock:
            return self._oauth.authorize(params)

    def token(
        self,
        fields: Mapping[str, str],
        *,
        json_body: bool = False,
        basic: tuple[str, str] | None = None,
        received_at: float | None = None,
        epoch: int | None = None,
    ) -> Reply:
        """``POST /auth/oauth/token`` for both grants. ``basic`` is HTTP Basic client auth, if sent;
        ``received_at`` is when the request arrived (``time.monotonic()``; default: now); ``epoch`` is
        ``self.epoch`` then: a request from before a ``reset`` is answered 503 and changes nothing."""
        with self._lock:
            if epoch is not None and epoch != self._epoch:
                return Reply(503, {"error": "temporarily_unavailable", "error_description": "simulator was reset"})
            arrived = self._clock.monotonic() if received_at is None else received_at
            return self._oauth.token(fields, json_body=json_body, basic=basic, received_at=arrived)

    def revoke(self, fields: Mapping[str, str], *, basic: tuple[str, str] | None = None) -> Reply:
        """``POST /auth/oauth/revoke``: ends the whole connection the token belongs to."""
        with self._lock:
            return self._oauth.revoke(fields, basic=basic)

    # ----------------------------------------------------------------- API

    def api_account(self, authorization: str | None, path_account: str | None = None) -> Reply:
        """``GET /API/V3/Account.json``: who am I; ``/API/V3/Account/{id}.json``: that account (403 if not the
        token's)."""
        with self._lock:
            return self._api.account(authorization, path_account)

    def api_get_item(
        self, authorization: str | None, account_id: str, item_id: str, load_relations: str | None
    ) -> Reply:
        """``GET /API/V3/Account/{id}/Item/{itemID}.json``; ItemShops only when asked for."""
        with self._lock:
            return self._api.get_item(authorization, account_id, item_id, load_relations)

    def api_put_item(self, authorization: str | None, account_id: str, item_id: str, body: object) -> Reply:
        """``PUT /API/V3/Account/{id}/Item/{itemID}.json`` setting ItemShop qoh (atomically)."""
        with self._lock:
            return self._api.put_item(authorization, account_id, item_id, body)

    def api_archive_item(self, authorization: str | None, account_id: str, item_id: str) -> Reply:
        """``DELETE /API/V3/Account/{id}/Item/{itemID}.json``: archives the item."""
        with self._lock:
            return self._api.archive_item(authorization, account_id, item_id)

    def api_create_item(self, authorization: str | None, account_id: str, body: object) -> Reply:
        """``POST /API/V3/Account/{id}/Item.json`` with ``{"description": ...}``."""
        with self._lock:
            return self._api.create_item(authorization, account_id, body)

    def api_list_items(
        self, authorization: str | None, account_id: str, base_url: str, query: Sequence[tuple[str, str]]
    ) -> Reply:
        """``GET /API/V3/Account/{id}/Item.json``: one cursor page (links built on ``base_url``)."""
        with self._lock:
            return self._api.list_items(authorization, account_id, base_url, query)

    def api_other(self, authorization: str | None, method: str, path: str, body: object) -> Reply:
        """Any other ``/API/V3`` path or method: charged, then 404 (403 for another account's path)."""
        with self._lock:
            return self._api.other(authorization, method, path, body)

    def note_api_disconnect(self) -> None:
        """An API client hung up while its request waited (latency or a "timeout" fault)."""
        with self._lock:
            self._records.stats["api_disconnects"] += 1

    def note_api_stream_cut(self) -> None:
        """An API client hung up before a streamed body ("slow_body", "large_body") was all sent."""
        with self._lock:
            self._records.stats["api_streams_cut"] += 1

    def api_headers(self) -> list[list[str]]:
        """The headers added to every API answer (``/_sim/api-headers``), ``[[name, value], …]``."""
        with self._lock:
            return self._knobs.api_headers()

    def set_api_headers(self, headers: object) -> list[list[str]]:
        """Add ``headers`` (``{name: value}`` or ``[[name, value], …]``) to every API answer until the next reset."""
        with self._lock:
            return self._knobs.set_api_headers(headers)

    # ------------------------------------------------------------ X-Series

    def x_connect(self, params: Mapping[str, str]) -> Reply:
        """``GET /x/connect``: the consent page, answered at once as the authorize knob says."""
        with self._lock:
            return self._x_oauth.connect(params)

    def x_token(self, prefix: str, fields: Mapping[str, str], *, content_type: str, epoch: int | None = None) -> Reply:
        """``POST /x/{prefix}/api/1.0/token``; ``content_type`` is the body's media type (lower case);
        ``epoch`` as for ``token``: a request from before a ``reset`` is answered 503 and changes nothing."""
        with self._lock:
            if epoch is not None and epoch != self._epoch:
                return Reply(503, {"error": "temporarily_unavailable", "error_description": "simulator was reset"})
            return self._x_oauth.token(prefix, fields, content_type=content_type)

    def x_api(self, call: XApiCall) -> Reply:
        """Any request under ``/x/{prefix}/api/`` but the token endpoint (see ``xseries_api.py``)."""
        with self._lock:
            return self._x_api.handle(call)

    def seed_x(self, count: int) -> list[JsonDict]:
        """``count`` new X-Series stores, each connected by the configured client, with their first pairs."""
        with self._lock:
            return self._x_knobs.seed(count)

    def x_stores(self) -> list[JsonDict]:
        with self._lock:
            return self._x_knobs.stores()

    def add_products(self, store: int | str, count: int) -> JsonDict:
        """``count`` more products for a store (account id or domain prefix); ``{"products": n}``."""
        with self._lock:
            return self._x_knobs.add_products(store, count)

    def x_product(self, store: int | str, product_id: str) -> JsonDict:
        with self._lock:
            return self._x_knobs.product(store, product_id)

    # --------------------------------------------------------- request log

    def record_request(
        self,
        method: str,
        raw_path: str,
        query: str,
        headers: Sequence[tuple[str, str]],
        body_bytes: int,
        *,
        body_sha256: str | None = None,
    ) -> None:
        """Log one ``/API/V3`` request on arrival, its tokens redacted (see ``requestlog.py``)."""
        with self._lock:
            entry = log_entry(self._records, method, raw_path, query, headers, body_bytes=body_bytes)
            if body_sha256 is not None:
                entry[BODY_DIGEST] = body_sha256
            self._records.requests.append(entry)

    def requests(self, *, body_digests: bool = False) -> list[JsonDict]:
        """The logged ``/API/V3`` requests, oldest first (at most the last 2,000); with ``body_digests``, each
        with its body's ``body_sha256`` too (hex; absent for an entry logged without one)."""
        with self._lock:
            entries = [dict(entry) for entry in self._records.requests]
        if not body_digests:
            for entry in entries:
                entry.pop(BODY_DIGEST, None)
        return entries

    def clear_requests(self) -> None:
        with self._lock:
            self._records.requests.clear()

    # -------------------------------------------------------------- faults

    def begin(self, endpoint: str) -> Fault | None:
        """Count a request to ``endpoint`` and pop the fault it must suffer, if one is queued."""
        with self._lock:
            return self._faults.begin(endpoint)

    def add_fault(self, spec: Mapping[str, Any]) -> JsonDict:
        """Queue a fault (see ``Fault``); faults for one endpoint are served first-in first-out."""
        fault = parse_fault(spec)
        with self._lock:
            return self._faults.add(fault)

    def faults(self) -> JsonDict:
        with self._lock:
            return self._faults.listing()

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

    # --------------------------------------------------------------- knobs

    def stats(self) -> JsonDict:
        with self._lock:
            return self._knobs.stats()

    def refresh_times(self) -> list[float]:
        """Arrival times (monotonic seconds) of every refresh_token grant request, in arrival order."""
        with self._lock:
            return self._knobs.refresh_times()

    def reset(self) -> None:
        """Forget accounts, tokens, clients, faults, counters, clock offsets and the extra API answer headers;
        keep the config."""
        with self._lock:
            self._init_state()
            self._wake_generation += 1
            self._epoch += 1

    def now(self) -> float:
        """The simulator's unix time (``advance_all`` included; no account's own offset)."""
        with self._lock:
            return self._records.now()

    @property
    def epoch(self) -> int:
        """How many times the simulator was reset (see ``token``'s ``epoch``)."""
        with self._lock:
            return self._epoch

    def get_config(self) -> JsonDict:
        with self._lock:
            return self._knobs.get_config()

    def update_config(self, changes: Mapping[str, Any]) -> JsonDict:
        with self._lock:
            return self._knobs.update_config(changes)

    def set_authorize_mode(self, mode: str, account_id: str | None = None) -> None:
        with self._lock:
            self._oauth.set_authorize_mode(mode, account_id)

    def register_client(self, client_id: str, client_secret: str, redirect_uri: str | None = None) -> JsonDict:
        with self._lock:
            return register_client(self._records, client_id, client_secret, redirect_uri)

    def register_redirect_uri(self, redirect_uri: str, client_id: str | None = None) -> JsonDict:
        """Add a redirect URI to a client (default: the configured one) until the next reset."""
        with self._lock:
            return add_redirect_uri(self._records, redirect_uri, client_id)

    def accounts(self) -> list[JsonDict]:
        with self._lock:
            return self._knobs.accounts()

    def account(self, account_id: int | str) -> JsonDict:
        with self._lock:
            return self._knobs.account(account_id)

    def seed(self, count: int, scope: str = "employee:all") -> list[JsonDict]:
        """``count`` new accounts, each already authorized by the configured client (for benchmarks).

        Returns each account's first token pair, as a code exchange would have.
        """
        with self._lock:
            return self._knobs.seed(count, scope)

    def revoke_account(self, account_id: int | str) -> JsonDict:
        """The merchant uninstalled the app: every token of the account dies."""
        with self._lock:
            return self._knobs.revoke_account(account_id)

    def advance_account(self, account_id: int | str, seconds: float) -> JsonDict:
        with self._lock:
            return self._knobs.advance_account(account_id, seconds)

    def advance_all(self, seconds: float) -> JsonDict:
        with self._lock:
            return self._knobs.advance_all(seconds)

    def expire_access_tokens(self, account_id: int | str) -> JsonDict:
        with self._lock:
            return self._knobs.expire_access_tokens(account_id)

    def add_items(self, account_id: int | str, count: int) -> JsonDict:
        """``count`` more stocked items for the account; ``{"items": n}``, n its unarchived items now."""
        with self._lock:
            return self._knobs.add_items(account_id, count)

    def item(self, account_id: int | str, item_id: int | str) -> JsonDict:
        """The item as stored, plus ``qoh_by_shop`` (ints) for easy assertions."""
        with self._lock:
            return self._knobs.item(account_id, item_id)


__all__ = ["SimulatorState"]
