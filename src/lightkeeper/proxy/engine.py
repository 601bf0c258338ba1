"""Forwarding one host-app request to Lightspeed: a fresh token, the account's limits, one retry of each kind.

Every provider goes through the same steps; what differs is asked of the connection's ``Provider`` (the grant
names it): where the confined path goes (``proxy_url``: R-Series' ``/API/V3/Account/{id}/``, an X-Series
store's ``api/``; a path it does not serve is ``InvalidPath`` before anything is booked or sent), which model
paces it (``api_pacing``: R-Series' leaky bucket and burst window, X-Series' fixed window), and how an answer
names its next page (``page_links``). For every request:

1. a token from the same single-flight ``fresh_token`` as everything else, and a booking in the account's
   limits (shared by every process), both on worker threads so that no database call blocks the event loop,
   and both made cheap by ``bookings`` (a token serves a connection's requests for a second; requests arriving
   together share one booking transaction). A booking that would wait longer than ``PROXY_MAX_WAIT_S`` is
   refused before anything is sent (429 with ``Retry-After``): a host on a request path wants to fail fast.
2. a sleep until the booked moment, and the send right then; a caller woken late books again.
3. on a 401, which Lightspeed did not process: one refresh (``rejected=`` that token) and one retry, body
   included; a second 401 is ``AccessDenied``. On a 429, also not processed: the whole deployment holds the
   account for its ``Retry-After``, and the request is retried once if that fits in ``PROXY_MAX_WAIT_S``, else
   answered as it came (``Retry-After`` in seconds, or as an HTTP date: X-Series). Nothing else is retried: a
   write that timed out or got a 5xx may have been done.
4. the answer's limit headers correct the shared model (a write only when they say something new).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import aiohttp
from anyio import to_thread

from ..errors import AccessDenied
from ..lightspeed.api_pacing import Booked
from ..lightspeed.error_mapping import parse_retry_after
from ..lightspeed.forwarding import MAX_LINKED_BODY, content_is_json, response_headers
from ..lightspeed.providers import Provider, Providers
from ..refresh import AccessGrant, TokenProvider
from .body import RequestBody
from .bookings import Bookings, Grants
from .upstream import Upstream, chunks

READ_COST = 1.0
_READS = frozenset({"GET", "HEAD"})
_NO_BODY_STATUS = frozenset({204, 304})


@dataclass(frozen=True)
class ProxyCall:
    """One request to forward: its path already confined, its headers already allow-listed."""

    connection_id: int
    method: str
    path: str
    query: str
    headers: Sequence[tuple[str, str]]
    body: RequestBody | None
    link_base: str  # the proxy URL of the account's root, for Link headers


@dataclass
class Answer:
    """Lightspeed's answer to pass on: ``body`` read already (whole, when ``rest`` is None)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes
    rest: AsyncIterator[bytes] | None
    wait_s: float
    upstream_s: float
    response: aiohttp.ClientResponse | None = field(default=None, repr=False)

    def close(self) -> None:
        """Let the connection go back to the pool (or be dropped, when the body was not read to its end)."""
        if self.response is not None:
            self.response.release()
            self.response = None


@dataclass
class _Attempt:
    grant: AccessGrant
    provider: Provider
    url: str  # where the request goes: the provider's URL for the confined path, and the query
    slot: Booked
    waited: float = 0.0
    refreshed: bool = False
    rate_retried: bool = False


class Proxy:
    """Forwards host-app requests to the connection's own Lightspeed account."""

    def __init__(
        self,
        *,
        tokens: TokenProvider,
        providers: Providers,
        upstream: Upstream,
        write_cost: float,
        max_wait_s: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._tokens, self._providers, self.upstream = tokens, providers, upstream
        self._write_cost, self._max_wait = write_cost, max_wait_s
        self._monotonic = monotonic
        self._grants = Grants(tokens, monotonic)
        # One group-committing booker per provider, over the provider's own model of its limits.
        self._bookings = {name: Bookings(provider.api_pacing, monotonic) for name, provider in providers.items()}

    async def forward(self, call: ProxyCall) -> Answer:
        """Send ``call`` and read its answer's headers; the caller streams the rest and closes the answer."""
        cost = READ_COST if call.method in _READS else self._write_cost
        cap_end = self._monotonic() + self._max_wait
        attempt = await self._prepare(call, cost, cap_end, rejected=None)
        body = call.body.stream() if call.body is not None else None
        while True:
            attempt.waited += await self._wait_for(attempt, cost, cap_end)
            sent_at = self._monotonic()
            response = await self.upstream.send(
                call.method,
                attempt.url,
                call.headers,
                access_token=attempt.grant.access_token,
                body=body,
                length=call.body.length if call.body is not None else None,
            )
            upstream_s = self._monotonic() - sent_at
            if response.status == 401:
                response.release()
                if attempt.refreshed:
                    raise AccessDenied(
                        f"Lightspeed refused the access token of connection {call.connection_id} again after a "
                        "refresh (401 twice): the app may have lost access to this account"
                    )
                attempt = await self._refreshed(call, cost, cap_end, attempt)
                body = await self._again(call.body)
                continue
            if response.status == 429 and await self._waits_out(response, attempt, cost, cap_end):
                response.release()
                body = await self._again(call.body)
                continue
            await self._observe(attempt, response)
            return await self._answer(call, response, attempt, upstream_s)

    # -- before sending -----------------------------------------------------------------------------------
    async def _prepare(self, call: ProxyCall, cost: float, cap_end: float, *, rejected: str | None) -> _Attempt:
        """A token (cached for a moment), the URL the connection's provider gives the path (``InvalidPath``:
        nothing booked, nothing sent), and a booking in the account's limits (group-committed)."""
        grant = await self._grants.get(call.connection_id, rejected=rejected)
        provider = self._providers[grant.provider]  # ConfigError when the deployment no longer configures it
        url = provider.proxy_url(grant.account_id, call.path) + (f"?{call.query}" if call.query else "")
        slot = await self._bookings[provider.name].book(grant.account_id, cost, cap_end)
        return _Attempt(grant, provider, url, slot)

    async def _wait_for(self, attempt: _Attempt, cost: float, cap_end: float) -> float:
        """Sleep until the booked moment: the last step before the bytes leave. Woken late, book again."""
        started = self._monotonic()
        while True:
            if (delay := attempt.slot.moment - self._monotonic()) > 0:
                await asyncio.sleep(delay)
            if not attempt.provider.api_pacing.late(attempt.slot):
                return self._monotonic() - started
            attempt.slot = await self._book(attempt, cost, cap_end)

    async def _book(self, attempt: _Attempt, cost: float, cap_end: float) -> Booked:
        return await self._bookings[attempt.provider.name].book(attempt.grant.account_id, cost, cap_end)

    async def _refreshed(self, call: ProxyCall, cost: float, cap_end: float, attempt: _Attempt) -> _Attempt:
        fresh = await self._prepare(call, cost, cap_end, rejected=attempt.grant.access_token)
        fresh.waited, fresh.refreshed, fresh.rate_retried = attempt.waited, True, attempt.rate_retried
        return fresh

    @staticmethod
    async def _again(body: RequestBody | None) -> AsyncIterator[bytes] | None:
        if body is None:
            return None
        await body.drain()  # the whole body is here before it is sent again
        return body.replay()

    async def _waits_out(
        self, response: aiohttp.ClientResponse, attempt: _Attempt, cost: float, cap_end: float
    ) -> bool:
        """Hold the account for a 429's ``Retry-After`` (every process); whether to retry within the cap. An HTTP
        date (X-Series') counts from our clock."""
        retry_after = parse_retry_after(response.headers.get("Retry-After"), now=datetime.now(UTC))
        account, pacing = attempt.grant.account_id, attempt.provider.api_pacing
        await to_thread.run_sync(pacing.hold, account, retry_after if retry_after is not None else 1.0, cost)
        if attempt.rate_retried or retry_after is None or self._monotonic() + retry_after > cap_end:
            return False
        attempt.rate_retried = True
        attempt.slot = await self._book(attempt, cost, cap_end)
        return True

    # -- after the headers ----------------------------------------------------------------------------------
    async def _observe(self, attempt: _Attempt, response: aiohttp.ClientResponse) -> None:
        fix = attempt.provider.api_pacing.correction(attempt.grant.account_id, response.headers, attempt.slot)
        if fix is not None:
            await to_thread.run_sync(fix)

    async def _answer(
        self, call: ProxyCall, response: aiohttp.ClientResponse, attempt: _Attempt, upstream_s: float
    ) -> Answer:
        headers = response_headers(response.headers.items())
        answer = Answer(response.status, headers, b"", None, attempt.waited, upstream_s, response)
        if call.method == "HEAD" or response.status in _NO_BODY_STATUS:
            return answer
        stream = chunks(response)
        if not self._linkable(response):
            answer.rest = stream
            return answer
        # A JSON page small enough to read whole: its next/previous pages become a Link header.
        read: list[bytes] = []
        size = 0
        async for chunk in stream:
            read.append(chunk)
            size += len(chunk)
            if size > MAX_LINKED_BODY:
                answer.body, answer.rest = b"".join(read), stream
                return answer
        answer.body = b"".join(read)
        link = attempt.provider.page_links(
            answer.body,
            account_id=attempt.grant.account_id,
            path=call.path,
            query=call.query,
            proxy_base=call.link_base,
        )
        if link is not None:
            answer.headers.append(("Link", link))
        return answer

    @staticmethod
    def _linkable(response: aiohttp.ClientResponse) -> bool:
        if response.status != 200 or not content_is_json(response.headers):
            return False
        length = response.content_length
        return length is None or length <= MAX_LINKED_BODY


__all__ = ["READ_COST", "Answer", "Proxy", "ProxyCall"]
