"""Lightspeed Retail X-Series (formerly Vend) as a ``Provider``.

Each store has its own host, ``{domain_prefix}.retail.lightspeed.app`` (``LIGHTSPEED_X_BASE_URL`` is the
template): its token endpoint is ``/api/1.0/token`` and its API ``/api/2.0/``. The callback names the store
(``domain_prefix``), and that name becomes a host we send our client secret to, so it is checked against
``PREFIX`` in full before anything is built from it: ``evil.com#``, ``a.b`` or ``x/../y`` would otherwise send
the secret and the code wherever an attacker likes (invariant 8).

Refresh tokens rotate strictly (since 2025-03): the old one is revoked the moment the new one is issued, with no
grace window, so a pair lost between X-Series' answer and our commit cannot be recovered (``strict_rotation``:
runs refresh only when needed). Answers give the expiry as a unix time in ``expires``; ``expires_in`` differs
between their examples and is only the fallback. X-Series documents no revoke endpoint.

The proxy and the client's verbs reach a store's API under its base's ``/api/`` only (``store_api``), and pace
it by X-Series' fixed window (``window_pacing.WindowPacer``, one row per (client, store) shared by every process).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx2

from lightkeeper.clock import Clock
from lightkeeper.errors import ConnectFlowError, ProviderProtocolError, StockUnsupported
from lightkeeper.lightspeed import store_api
from lightkeeper.lightspeed.api import DEFAULT_MAX_WAIT_S
from lightkeeper.lightspeed.deadline import post_within
from lightkeeper.lightspeed.error_mapping import (
    check_api_response,
    json_object,
    translate_transport_errors,
)
from lightkeeper.lightspeed.oauth import AsyncSender, TokenRequest
from lightkeeper.lightspeed.providers import ConnectionRecordLike, Params
from lightkeeper.lightspeed.tokens import TokenSet
from lightkeeper.lightspeed.window_pacing import WindowPacer

#: The provider name stored on X-Series connections.
X_SERIES = "x-series"
#: A store's domain prefix, the whole of it (``fullmatch``: no trailing newline, no dot, slash or percent).
PREFIX = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
#: Where ``LIGHTSPEED_X_BASE_URL`` puts the store's prefix.
PLACEHOLDER = "{domain_prefix}"
_TOKEN_PATH = "/api/1.0/token"
_RETAILER_PATH = "/api/2.0/retailer"
_JSON = {"Accept": "application/json"}


def valid_prefix(value: str) -> bool:
    return PREFIX.fullmatch(value) is not None


class XSeries:
    """X-Series for one OAuth client (add-on registration)."""

    name = X_SERIES
    title = "Lightspeed X-Series"
    strict_rotation = True
    slots = "refresh:x-series"

    def __init__(
        self,
        *,
        http: httpx2.Client,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        connect_url: str,
        base_url: str,
        clock: Clock,
        timeout_s: float = 20.0,
        pacing: WindowPacer | None = None,
        max_wait_s: float = DEFAULT_MAX_WAIT_S,
    ) -> None:
        self._http, self.client_id, self._client_secret = http, client_id, client_secret
        self._redirect_uri, self._connect_url, self._base_url = redirect_uri, connect_url, base_url
        self._clock = clock
        self.timeout_s = timeout_s
        #: PROXY_MAX_WAIT_S: the longest a client verb waits for the store's window (as a proxied request).
        self.max_wait_s = max_wait_s
        # The stores' API windows: the deployment's shared rows (``providers.py``), else this process's memory.
        self._pacing = pacing if pacing is not None else WindowPacer(client_id=client_id)

    def __repr__(self) -> str:
        return f"XSeries(client_id={self.client_id!r}, client_secret=***, base_url={self._base_url!r})"

    # -- the store's host --------------------------------------------------------------------------------------
    def base(self, domain_prefix: str) -> str:
        """The store's base URL; refuses a prefix that is not one (never builds a URL from it)."""
        if not valid_prefix(domain_prefix):
            raise ProviderProtocolError("an X-Series store's domain prefix must match [a-z0-9][a-z0-9-]{0,62}")
        return self._base_url.replace(PLACEHOLDER, domain_prefix)

    # -- connect ---------------------------------------------------------------------------------------------
    def authorize_url(self, *, state: str, code_challenge: str) -> str:
        # X-Series documents no PKCE: the verifier stays ours, and the state binds the flow to the browser.
        params = {
            "response_type": "code",
            "client_id": self.client_id,
            "redirect_uri": self._redirect_uri,
            "state": state,
        }
        return f"{self._connect_url}?{urlencode(params)}"

    def form_origins(self) -> tuple[str, ...]:
        parts = urlsplit(self._connect_url)
        return (f"{parts.scheme}://{parts.netloc}",)

    def callback_account(self, params: Mapping[str, str]) -> str:
        prefix = params.get("domain_prefix", "")
        if not valid_prefix(prefix):
            raise ConnectFlowError(
                "Lightspeed's answer names a store that is not valid, so nothing was sent. Start again.",
                code="invalid_store",
            )
        return prefix

    def exchange_code(self, code: str, *, code_verifier: str, account: str | None) -> TokenSet:
        if account is None:
            raise ConnectFlowError("Lightspeed's answer names no store. Start again.", code="invalid_store")
        form = {"grant_type": "authorization_code", "code": code, "redirect_uri": self._redirect_uri}
        request = self._token_request(account, form, action="code exchange", previous=None, sent=(code,))
        return request.parse(self.send(request))

    def identify(self, tokens: TokenSet, account: str | None) -> str:
        if account is None:  # exchange_code refused this already
            raise ConnectFlowError("Lightspeed's answer names no store. Start again.", code="invalid_store")
        return account

    def account_name(self, tokens: TokenSet, account_id: str) -> str:
        url = self.base(account_id) + _RETAILER_PATH
        headers = {**_JSON, "Authorization": f"Bearer {tokens.access_token}"}
        action = "store look-up"
        with translate_transport_errors(action, redact=(tokens.access_token,)):
            response = self._http.get(url, headers=headers, timeout=self.timeout_s)
        check_api_response(response, action=action, redact=(tokens.access_token,))
        return _retailer_name(json_object(response), account_id)

    # -- refresh ---------------------------------------------------------------------------------------------
    def refresh_request(self, refresh_token: str, account_id: str) -> TokenRequest:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self._token_request(
            account_id, form, action="token refresh", previous=refresh_token, sent=(refresh_token,)
        )

    def send(self, request: TokenRequest) -> httpx2.Response:
        with translate_transport_errors(request.action, redact=request.redact):
            return post_within(self._http, request.url, data=request.form, headers=_JSON, budget_s=request.budget_s)

    def refresh(self, refresh_token: str, account_id: str) -> TokenSet:
        request = self.refresh_request(refresh_token, account_id)
        return request.parse(self.send(request))

    async def refresh_with(self, sender: AsyncSender, refresh_token: str, account_id: str) -> TokenSet:
        request = self.refresh_request(refresh_token, account_id)
        return request.parse(await sender.send(request))

    def revoke(self, refresh_token: str, account_id: str) -> bool:
        return False  # X-Series documents no revoke endpoint: the merchant removes the add-on in their store

    def check_stock(self, record: ConnectionRecordLike) -> None:
        raise StockUnsupported(
            f"connection {record.id} is an X-Series store: update-stock speaks R-Series' Item API, so nothing was "
            f"sent. Set X-Series stock through the proxy: PUT /api/connections/{record.id}/lightspeed/api/2.1/"
            'products/{product_id} with {"details":{"inventory":[{"outlet_id":"…","current_amount":21}]}}'
        )

    # -- the API (the proxy and the client's verbs) -------------------------------------------------------------
    @property
    def api_pacing(self) -> WindowPacer:
        return self._pacing

    def proxy_url(self, account_id: str, confined: str) -> str:
        return store_api.store_url(self.base(account_id), confined)

    def page_links(self, body: bytes, *, account_id: str, path: str, query: str, proxy_base: str) -> str | None:
        return store_api.version_links(body, path=path, query=query, proxy_base=proxy_base)

    def api_request(
        self, method: str, path: str, access_token: str, account_id: str, *, params: Params = None, json: Any = None
    ) -> dict[str, Any]:
        base = self.base(account_id)
        return store_api.request(
            self._http,
            self._pacing,
            base,
            method,
            path,
            access_token=access_token,
            account_id=account_id,
            params=params,
            json=json,
            max_wait_s=self.max_wait_s,
        )

    def next_page(self, body: dict[str, Any], account_id: str, path: str, params: Params) -> tuple[str, Params] | None:
        return store_api.next_page(body, path, params)

    def records_key(self, path: str) -> str:
        return "data"

    def _token_request(
        self, account_id: str, form: dict[str, str], *, action: str, previous: str | None, sent: tuple[str, ...]
    ) -> TokenRequest:
        return TokenRequest(
            url=self.base(account_id) + _TOKEN_PATH,
            form={"client_id": self.client_id, "client_secret": self._client_secret, **form},
            action=action,
            previous=previous,
            redact=(self._client_secret, *sent),
            budget_s=self.timeout_s,
            now=self._clock(),
            expires_field="expires",
        )


def _retailer_name(payload: dict[str, Any] | None, fallback: str) -> str:
    data = payload.get("data") if payload else None
    name = data.get("name") if isinstance(data, dict) else None
    return name.strip() if isinstance(name, str) and name.strip() else fallback


__all__ = ["PLACEHOLDER", "PREFIX", "X_SERIES", "XSeries", "valid_prefix"]
