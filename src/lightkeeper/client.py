"""The on-demand Lightspeed client of one connection: always a fresh token, one refresh on a 401.

    with keeper.lightspeed(connection_id) as ls:             # sync
        ls.set_stock(item_id=7, shop_id=1, qoh=3)
    async with keeper.lightspeed(connection_id) as ls:       # async: the same calls, awaited
        await ls.set_stock(item_id=7, shop_id=1, qoh=3)

Besides the stock helpers (R-Series' Item API), any endpoint of the connection's own account, by a path
relative to it (as the HTTP proxy takes it), and every record of a collection across its pages, on either
provider (the connection's ``Provider`` says where a path goes and how pages follow):

    with keeper.lightspeed(connection_id) as ls:                 # R-Series: under /API/V3/Account/{id}/
        shop = ls.get("Shop/1.json")
        ls.put("Item/7.json", json={"description": "Blue mug"})
        for item in ls.paginate("Item.json", {"limit": "100"}):
            ...
    with keeper.lightspeed(x_connection_id) as ls:               # X-Series: under the store's api/
        for product in ls.paginate("api/2.0/products"):        # after = version.max until data is empty
            ...

A request answered 401 ``access_denied`` makes the client refresh once (single-flight, shared with every
other caller of the connection) and retry once; a second 401 is raised as ``AccessDenied``, never a loop.
Every request is booked in the account's limits first (R-Series' bucket, X-Series' window), the ones the proxy
and every other process share.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar

from .errors import AccessDenied
from .lightspeed import Account, ApiClient
from .lightspeed.providers import Params, Provider, Providers
from .refresh import AccessGrant, TokenProvider

T = TypeVar("T")


class Lightspeed:
    """Lightspeed API calls on behalf of one connection (thread-safe)."""

    def __init__(self, tokens: TokenProvider, api: ApiClient, connection_id: int, providers: Providers) -> None:
        self._tokens, self._api, self.connection_id = tokens, api, connection_id
        self._providers = providers

    def account(self) -> Account:
        return self._authorized(lambda grant: self._item_api(grant).account(grant.access_token))

    def item(self, item_id: int) -> dict[str, Any]:
        return self._authorized(lambda grant: self._item_api(grant).item(grant.access_token, grant.account_id, item_id))

    def set_stock(
        self, *, item_id: int, qoh: int, shop_id: int | None = None, item_shop_id: int | None = None
    ) -> dict[str, Any]:
        """Set the quantity on hand of an item in one shop (``shop_id`` or ``item_shop_id``)."""
        return self._authorized(
            lambda grant: self._item_api(grant).set_stock(
                grant.access_token,
                grant.account_id,
                item_id=item_id,
                qoh=qoh,
                shop_id=shop_id,
                item_shop_id=item_shop_id,
            )
        )

    def get(self, path: str, params: Params = None) -> dict[str, Any]:
        """``GET`` a path relative to the account (R-Series: ``Item/7.json``, empty for the account itself;
        X-Series: ``api/2.0/products/{id}``)."""
        return self.request("GET", path, params=params)

    def post(self, path: str, *, json: Any = None, params: Params = None) -> dict[str, Any]:
        return self.request("POST", path, params=params, json=json)

    def put(self, path: str, *, json: Any = None, params: Params = None) -> dict[str, Any]:
        return self.request("PUT", path, params=params, json=json)

    def delete(self, path: str, params: Params = None) -> dict[str, Any]:
        return self.request("DELETE", path, params=params)

    def request(self, method: str, path: str, *, params: Params = None, json: Any = None) -> dict[str, Any]:
        """One request under the account's own prefix (R-Series' ``/API/V3/Account/{id}/``, an X-Series store's
        base, the path under ``api/``), confined as the proxy confines its paths; the answer's JSON object."""
        return self._authorized(
            lambda grant: self._provider(grant).api_request(
                method, path, grant.access_token, grant.account_id, params=params, json=json
            )
        )

    def paginate(self, path: str, params: Params = None, *, key: str | None = None) -> Iterator[dict[str, Any]]:
        """Every record of a collection, page after page: R-Series' ``Item.json`` through ``@attributes.next``,
        X-Series' ``api/2.0/products`` by ``after`` = the last page's ``version.max`` until ``data`` is empty.

        ``key`` names the records in each page (default: R-Series' path's last segment, ``Item`` for
        ``Item.json``; X-Series' ``data``). A page of one record may come as an object rather than a list:
        either way each record is yielded once."""
        for page in self.pages(path, params, key=key):
            yield from page

    def pages(self, path: str, params: Params = None, *, key: str | None = None) -> Iterator[list[dict[str, Any]]]:
        """The records of a collection, a page at a time (see ``paginate``)."""
        page: tuple[str, Params] | None = (path, params)
        while page is not None:
            body, grant = self._page(*page)
            provider = self._provider(grant)
            yield records(body, key or provider.records_key(path))
            page = provider.next_page(body, grant.account_id, *page)

    def _page(self, path: str, params: Params) -> tuple[dict[str, Any], AccessGrant]:
        def get(grant: AccessGrant) -> tuple[dict[str, Any], AccessGrant]:
            api = self._provider(grant)
            return api.api_request("GET", path, grant.access_token, grant.account_id, params=params), grant

        return self._authorized(get)

    def _provider(self, grant: AccessGrant) -> Provider:
        """The connection's provider (``ConfigError`` when the deployment no longer configures it)."""
        return self._providers[grant.provider]

    def _item_api(self, grant: AccessGrant) -> ApiClient:
        """R-Series' Item API, for a connection whose provider has it (``StockUnsupported``: nothing sent)."""
        self._provider(grant).check_stock(_Named(grant.connection_id, grant.account_id))
        return self._api

    def _authorized(self, call: Callable[[AccessGrant], T]) -> T:
        grant = self._tokens.fresh_token(self.connection_id)
        try:
            return call(grant)
        except AccessDenied:
            pass  # refreshed below, outside the except block, so a second failure is not chained to it
        retry = self._tokens.fresh_token(self.connection_id, rejected=grant.access_token)
        try:
            return call(retry)
        except AccessDenied as exc:
            raise AccessDenied(
                f"Lightspeed refused the access token of connection {self.connection_id} again after a refresh "
                "(401 twice): the app may have lost access to this account"
            ) from exc


@dataclass(frozen=True)
class _Named:
    """What a provider reads of a connection to say whether its stock helpers apply (``check_stock``)."""

    id: int
    account_id: str


def records(body: dict[str, Any], key: str) -> list[dict[str, Any]]:
    """The records of one collection page: a list, one object (Lightspeed's one-record quirk) or none."""
    found = body.get(key)
    if isinstance(found, dict):
        return [found]
    if isinstance(found, list):
        return [record for record in found if isinstance(record, dict)]
    return []


class AsyncLightspeed:
    """The same calls for asyncio code; each runs in a worker thread."""

    def __init__(self, client: Lightspeed) -> None:
        self._client = client

    async def account(self) -> Account:
        return await asyncio.to_thread(self._client.account)

    async def item(self, item_id: int) -> dict[str, Any]:
        return await asyncio.to_thread(self._client.item, item_id)

    async def get(self, path: str, params: Params = None) -> dict[str, Any]:
        return await asyncio.to_thread(self._client.get, path, params)

    async def post(self, path: str, *, json: Any = None, params: Params = None) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self._client.post(path, json=json, params=params))

    async def put(self, path: str, *, json: Any = None, params: Params = None) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self._client.put(path, json=json, params=params))

    async def delete(self, path: str, params: Params = None) -> dict[str, Any]:
        return await asyncio.to_thread(self._client.delete, path, params)

    async def request(self, method: str, path: str, *, params: Params = None, json: Any = None) -> dict[str, Any]:
        return await asyncio.to_thread(lambda: self._client.request(method, path, params=params, json=json))

    async def paginate(
        self, path: str, params: Params = None, *, key: str | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        """``Lightspeed.paginate`` for asyncio code: each page is fetched in a worker thread."""
        pages = self._client.pages(path, params, key=key)
        while (batch := await asyncio.to_thread(next, pages, None)) is not None:
            for record in batch:
                yield record

    async def set_stock(
        self, *, item_id: int, qoh: int, shop_id: int | None = None, item_shop_id: int | None = None
    ) -> dict[str, Any]:
        return await asyncio.to_thread(
            lambda: self._client.set_stock(item_id=item_id, qoh=qoh, shop_id=shop_id, item_shop_id=item_shop_id)
        )


class LightspeedSession:
    """``keeper.lightspeed(id)``: a context manager for ``with`` and for ``async with``."""

    def __init__(self, client: Lightspeed) -> None:
        self._client = client

    def __enter__(self) -> Lightspeed:
        return self._client

    def __exit__(self, *_exc: object) -> None:
        return None

    async def __aenter__(self) -> AsyncLightspeed:
        return AsyncLightspeed(self._client)

    async def __aexit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        return None


__all__ = ["AsyncLightspeed", "Lightspeed", "LightspeedSession"]
