"""Sending token requests from an event loop: the seam of a refresh run's token requests.

A refresh run keeps up to ``REFRESH_CONCURRENCY`` token requests in flight on one event loop
(``refresh.drain``). Two senders fit the ``oauth.AsyncSender`` seam:

* ``AiohttpSender``, the default: aiohttp's connection pool and its C HTTP parser. A token request costs about
  0.45 ms of CPU there, against 0.7-0.9 ms with httpx2's client and more with httpx2's async one
  (``docs/BENCHMARKS.md``); at 0 ms latency that was half of what a refresh cost.
* ``ThreadedSender``: ``OAuthClient.send`` (httpx2, the transport handed to ``Keeper``) on worker threads.
  Tests and anyone wrapping the transport (a proxy, a recorder) keep their seam: a ``Keeper`` given a
  transport sends every request through it.

Both answer an ``httpx2.Response`` holding the body as received (still compressed, if it was), so one parser and
one error mapping (``token_response``, ``error_mapping``) read every answer; both raise only ``ProviderError``.
"""

from __future__ import annotations

import asyncio
import ssl
from concurrent.futures import ThreadPoolExecutor
from types import TracebackType
from typing import Protocol
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import aiohttp
import httpx2

from lightkeeper.lightspeed.error_mapping import translate_transport_errors, unreachable
from lightkeeper.lightspeed.oauth import TokenRequest
from lightkeeper.lightspeed.tls import trust

#: What httpx2 can always decode: the body is handed to it undecoded (``auto_decompress=False``).
_ACCEPT_ENCODING = "gzip, deflate"
_FORM = {"Content-Type": "application/x-www-form-urlencoded"}
#: A ``ceil_threshold`` no deadline reaches: aiohttp never rounds one up.
NO_ROUNDING = 1e9


class AiohttpSender:
    """Token requests through one aiohttp session (open it with ``async with`` inside the running loop)."""

    def __init__(self, *, user_agent: str, limit: int, tls: ssl.SSLContext | None = None) -> None:
        self._user_agent, self._limit = user_agent, max(1, limit)
        self._tls = tls if tls is not None else trust()  # the same trust as httpx2's (``tls``)
        self._session: aiohttp.ClientSession | None = None
        self._proxies: dict[str, str | None] = {}

    def _proxy_for(self, url: str) -> str | None:
        """The proxy from HTTP(S)_PROXY/ALL_PROXY for ``url``'s scheme, unless NO_PROXY exempts its host."""
        if url not in self._proxies:
            parts = urlsplit(url)
            proxy = getproxies().get(parts.scheme) or getproxies().get("all")
            self._proxies[url] = None if proxy is None or proxy_bypass(parts.hostname or "") else proxy
        return self._proxies[url]

    async def __aenter__(self) -> AiohttpSender:
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=self._limit, ssl=self._tls),
            headers={"User-Agent": self._user_agent, "Accept-Encoding": _ACCEPT_ENCODING},
            auto_decompress=False,
            # Not trust_env: aiohttp would then read the proxy settings and ~/.netrc on a thread for every
            # request (the thread hand-offs this sender exists to avoid); ``_proxy_for`` reads them once.
        )
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def send(self, request: TokenRequest) -> httpx2.Response:
        """POST the form and read the whole answer within ``request.budget_s`` in total."""
        if self._session is None:
            raise RuntimeError("AiohttpSender is used outside its 'async with' block")
        try:
            # httpx2 decodes the body as it builds the response: a broken gzip is a protocol error, as on httpx2
            with translate_transport_errors(request.action, redact=request.redact):
                return await self._post(self._session, request)
        except TimeoutError as exc:  # aiohttp's total timeout, or a server timeout
            raise unreachable(request.action, exc, timed_out=True, redact=request.redact) from exc
        except aiohttp.ClientError as exc:
            raise unreachable(request.action, exc, timed_out=False, redact=request.redact) from exc

    async def _post(self, session: aiohttp.ClientSession, request: TokenRequest) -> httpx2.Response:
        # aiohttp rounds a timeout of 5 s or more up to the next whole second unless ``ceil_threshold`` says
        # otherwise: a request sent with exactly HTTP_TIMEOUT_S of lease left would then outlive its lease.
        timeout = aiohttp.ClientTimeout(total=request.budget_s, ceil_threshold=NO_ROUNDING)
        proxy = self._proxy_for(request.url)
        async with session.post(
            request.url,
            data=request.body(),  # bytes: aiohttp's own form encoding costs several times more
            headers=request.headers | _FORM,
            timeout=timeout,
            allow_redirects=False,
            proxy=proxy,
        ) as answer:
            body = await answer.read()
            return httpx2.Response(answer.status, headers=list(answer.raw_headers), content=body)


class TokenPoster(Protocol):
    """Sends one token request with httpx2 within its deadline (``OAuthClient``, or any provider)."""

    def send(self, request: TokenRequest) -> httpx2.Response: ...


class ThreadedSender:
    """Token requests through ``OAuthClient.send`` (httpx2) on up to ``limit`` threads of its own."""

    def __init__(self, oauth: TokenPoster, *, limit: int) -> None:
        self._oauth, self._limit = oauth, max(1, limit)
        self._pool: ThreadPoolExecutor | None = None

    async def __aenter__(self) -> ThreadedSender:
        self._pool = ThreadPoolExecutor(max_workers=self._limit, thread_name_prefix="token-request")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def send(self, request: TokenRequest) -> httpx2.Response:
        if self._pool is None:
            raise RuntimeError("ThreadedSender is used outside its 'async with' block")
        return await asyncio.get_running_loop().run_in_executor(self._pool, self._oauth.send, request)


__all__ = ["AiohttpSender", "ThreadedSender"]
