"""The on-demand Lightspeed client of one connection: always a fresh token, one refresh on a 401.

    with keeper.lightspeed(connection_id) as ls:             # sync
        ls.set_stock(item_id=7, shop_id=1, qoh=3)
    async with keeper.lightspeed(connection_id) as ls:       # async: the same calls, awaited
        await ls.set_stock(item_id=7, shop_id=1, qoh=3)

A request answered 401 ``access_denied`` makes the client refresh once (single-flight, shared with every
other caller of the connection) and retry once; a second 401 is raised as ``AccessDenied``, never a loop.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from types import TracebackType
from typing import Any, TypeVar

from .errors import AccessDenied
from .lightspeed import Account, ApiClient
from .refresh import TokenProvider

T = TypeVar("T")


class Lightspeed:
    """Lightspeed API calls on behalf of one connection (thread-safe)."""

    def __init__(self, tokens: TokenProvider, api: ApiClient, connection_id: int) -> None:
        self._tokens, self._api, self.connection_id = tokens, api, connection_id

    def account(self) -> Account:
        return self._authorized(lambda token, _account: self._api.account(token))

    def item(self, item_id: int) -> dict[str, Any]:
        return self._authorized(lambda token, account: self._api.item(token, account, item_id))

    def set_stock(
        self, *, item_id: int, qoh: int, shop_id: int | None = None, item_shop_id: int | None = None
    ) -> dict[str, Any]:
        """Set the quantity on hand of an item in one shop (``shop_id`` or ``item_shop_id``)."""
        return self._authorized(
            lambda token, account: self._api.set_stock(
                token, account, item_id=item_id, qoh=qoh, shop_id=shop_id, item_shop_id=item_shop_id
            )
        )

    def _authorized(self, call: Callable[[str, str], T]) -> T:
        grant = self._tokens.fresh_token(self.connection_id)
        try:
            return call(grant.access_token, grant.account_id)
        except AccessDenied:
            pass  # refreshed below, outside the except block, so a second failure is not chained to it
        retry = self._tokens.fresh_token(self.connection_id, rejected=grant.access_token)
        try:
            return call(retry.access_token, retry.account_id)
        except AccessDenied as exc:
            raise AccessDenied(
                f"Lightspeed refused the access token of connection {self.connection_id} again after a refresh "
                "(401 twice): the app may have lost access to this account"
            ) from exc


class AsyncLightspeed:
    """The same calls for asyncio code; each runs in a worker thread."""

    def __init__(self, client: Lightspeed) -> None:
        self._client = client

    async def account(self) -> Account:
        return await asyncio.to_thread(self._client.account)

    async def item(self, item_id: int) -> dict[str, Any]:
        return await asyncio.to_thread(self._client.item, item_id)

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
