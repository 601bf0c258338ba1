"""Lightspeed Retail R-Series as a ``Provider``: ``OAuthClient`` (``/auth/oauth/*`` on one host) and
``ApiClient`` (``/API/V3``). The account is identified by the access token's ``acct`` claim, else by the API.
Refresh tokens rotate with a grace window (docs/LIGHTSPEED.md), so runs may refresh them as often as they like.
The proxy and the client's verbs reach ``/API/V3/Account/{id}/`` only, paced by the account's leaky bucket and
burst window (``api_pacing.ApiPacer``, the ``ApiClient``'s own).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import httpx2

from lightkeeper.lightspeed.api import ApiClient
from lightkeeper.lightspeed.api_pacing import ApiPacer
from lightkeeper.lightspeed.forwarding import account_path, page_links
from lightkeeper.lightspeed.oauth import AsyncSender, OAuthClient, TokenRequest
from lightkeeper.lightspeed.providers import ConnectionRecordLike, Params
from lightkeeper.lightspeed.tokens import TokenSet, account_id_from_jwt

#: The provider name stored on R-Series connections (the schema's default).
R_SERIES = "r-series"


class RSeries:
    """R-Series for one OAuth client: ``oauth`` and ``api`` are the clients it speaks through."""

    name = R_SERIES
    title = "Lightspeed R-Series"
    strict_rotation = False
    slots = "refresh"  # the row every release before X-Series used

    def __init__(self, *, oauth: OAuthClient, api: ApiClient, client_id: str, oauth_url: str) -> None:
        self.oauth, self.api, self.client_id = oauth, api, client_id
        parts = urlsplit(oauth_url)
        self._origin = f"{parts.scheme}://{parts.netloc}"

    def __repr__(self) -> str:
        return f"RSeries(client_id={self.client_id!r})"

    def authorize_url(self, *, state: str, code_challenge: str) -> str:
        return self.oauth.authorize_url(state=state, code_challenge=code_challenge)

    def form_origins(self) -> tuple[str, ...]:
        return (self._origin,)

    def callback_account(self, params: Mapping[str, str]) -> str | None:
        return None  # the account is in the token (or the API), not in the callback

    def exchange_code(self, code: str, *, code_verifier: str, account: str | None) -> TokenSet:
        return self.oauth.exchange_code(code, code_verifier=code_verifier)

    def identify(self, tokens: TokenSet, account: str | None) -> str:
        return account_id_from_jwt(tokens.access_token) or self.api.account(tokens.access_token).account_id

    def account_name(self, tokens: TokenSet, account_id: str) -> str:
        return self.api.account(tokens.access_token).name

    def refresh_request(self, refresh_token: str, account_id: str) -> TokenRequest:
        return self.oauth.refresh_request(refresh_token)

    def send(self, request: TokenRequest) -> httpx2.Response:
        return self.oauth.send(request)

    def refresh(self, refresh_token: str, account_id: str) -> TokenSet:
        return self.oauth.refresh(refresh_token)

    async def refresh_with(self, sender: AsyncSender, refresh_token: str, account_id: str) -> TokenSet:
        return await self.oauth.refresh_with(sender, refresh_token)

    def revoke(self, refresh_token: str, account_id: str) -> bool:
        self.oauth.revoke(refresh_token)
        return True

    def check_stock(self, record: ConnectionRecordLike) -> None:
        return None  # update-stock speaks R-Series' Item/ItemShop API

    # -- the API (the proxy and the client's verbs) -------------------------------------------------------------
    @property
    def api_pacing(self) -> ApiPacer:
        return self.api.pacer

    def proxy_url(self, account_id: str, confined: str) -> str:
        return f"{self.api.api_url}{account_path(account_id, confined)}"

    def page_links(self, body: bytes, *, account_id: str, path: str, query: str, proxy_base: str) -> str | None:
        return page_links(body, api_url=self.api.api_url, account_id=account_id, proxy_base=proxy_base)

    def api_request(
        self, method: str, path: str, access_token: str, account_id: str, *, params: Params = None, json: Any = None
    ) -> dict[str, Any]:
        return self.api.request(method, path, access_token, account_id, params=params, json=json)

    def next_page(self, body: dict[str, Any], account_id: str, path: str, params: Params) -> tuple[str, Params] | None:
        return self.api.next_page(body, account_id)

    def records_key(self, path: str) -> str:
        return path.rsplit("/", 1)[-1].removesuffix(".json")  # Item.json: Item


__all__ = ["R_SERIES", "RSeries"]
