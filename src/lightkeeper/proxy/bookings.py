"""The proxy's two per-request lookups, made cheap: a token cache and group-committed bucket bookings.

Every proxied request needs a valid token and a booking in its account's shared bucket. Done naively that is a
read and a write transaction a request, each on a worker thread, and one account's requests queue on its
bucket row's lock. Here:

- ``Grants`` keeps each connection's token for ``GRANT_TTL_S`` (one second): a connection disconnected or
  refreshed by another process is seen that much later at worst, and a token Lightspeed refuses meanwhile
  costs one 401, after which the proxy asks ``fresh_token`` again (``rejected=``) as it always does.
- ``Bookings`` books every request of an account that arrives while a booking of that account is under way
  in the next single transaction (``ApiPacing.book_many``), in arrival order: at concurrency 32 a handful of
  transactions a second instead of one a request, and one worker-thread hop for all of them. There is one per
  provider, over that provider's model (R-Series' bucket, X-Series' window): account ids of two providers
  never share a queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from functools import partial
from typing import Any

from anyio import to_thread

from ..errors import RateLimited
from ..lightspeed.api_pacing import ApiPacing, Booked, Refusal
from ..lightspeed.bucket import retry_after_s
from ..refresh import AccessGrant, TokenProvider

#: How long a token read for one proxied request serves the next ones of the same connection.
GRANT_TTL_S = 1.0
#: Past this many cached connections, entries older than the TTL are dropped.
_GRANTS_PRUNE_AT = 10_000


class Grants:
    """Tokens of recently proxied connections, each for ``GRANT_TTL_S``."""

    def __init__(self, tokens: TokenProvider, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._tokens, self._monotonic = tokens, monotonic
        self._cached: dict[int, tuple[AccessGrant, float]] = {}

    async def get(self, connection_id: int, *, rejected: str | None = None) -> AccessGrant:
        """A valid token; with ``rejected`` (a token Lightspeed just refused), never that one again."""
        now = self._monotonic()
        cached = self._cached.get(connection_id)
        if rejected is None and cached is not None and now - cached[1] < GRANT_TTL_S:
            return cached[0]
        try:
            grant = await to_thread.run_sync(partial(self._tokens.fresh_token, connection_id, rejected=rejected))
        except BaseException:
            self.forget(connection_id)  # expired, disconnected, unknown: the next request asks again
            raise
        if len(self._cached) >= _GRANTS_PRUNE_AT:
            self._cached = {key: value for key, value in self._cached.items() if now - value[1] < GRANT_TTL_S}
        self._cached[connection_id] = (grant, self._monotonic())
        return grant

    def forget(self, connection_id: int) -> None:
        self._cached.pop(connection_id, None)


class Bookings:
    """Books requests in their account's bucket, batching those that arrive together (group commit)."""

    def __init__(self, pacer: ApiPacing[Any], monotonic: Callable[[], float] = time.monotonic) -> None:
        self._pacer, self._monotonic = pacer, monotonic
        self._waiting: dict[str, list[tuple[float, float, asyncio.Future[Booked | Refusal]]]] = {}
        self._draining: set[str] = set()

    async def book(self, account_id: str, cost: float, cap_end: float) -> Booked:
        """A slot for one request; ``RateLimited`` (nothing booked) when it would wait past ``cap_end``."""
        local: Booked | None = self._pacer.book_local(account_id, cost, max_wait=max(0.0, cap_end - self._monotonic()))
        if local is not None:  # from this process's credit: no database, no thread
            return local
        future: asyncio.Future[Booked | Refusal] = asyncio.get_running_loop().create_future()
        self._waiting.setdefault(account_id, []).append((cost, cap_end, future))
        if account_id not in self._draining:
            self._draining.add(account_id)
            asyncio.get_running_loop().create_task(self._drain(account_id))
        result = await future
        if isinstance(result, Refusal):
            raise RateLimited(
                f"the account's Lightspeed rate limit would hold this request for {result.wait:.1f} s, longer "
                "than PROXY_MAX_WAIT_S: nothing was sent",
                retry_after=retry_after_s(result.wait),
            )
        return result

    async def _drain(self, account_id: str) -> None:
        try:
            while batch := self._waiting.pop(account_id, None):
                now = self._monotonic()
                requests = [(cost, max(0.0, cap_end - now)) for cost, cap_end, _future in batch]
                try:
                    results = await to_thread.run_sync(self._pacer.book_many, account_id, requests)
                except Exception as exc:  # the database failed: every caller of this batch gets the error
                    for _cost, _cap, future in batch:
                        if not future.done():
                            future.set_exception(exc)
                    continue
                for (_cost, _cap, future), result in zip(batch, results, strict=True):
                    if not future.done():
                        future.set_result(result)
        finally:
            self._draining.discard(account_id)


__all__ = ["GRANT_TTL_S", "Bookings", "Grants"]
