"""The proxy's HTTP client to Lightspeed: one aiohttp session per event loop, and the proxy's deadlines.

``PROXY_TIMEOUT_S`` bounds each wait for the provider: getting a connection (the whole of it: a DNS lookup,
a proxy, the TCP and TLS handshakes), the answer's headers once the request is sent, and every pause inside
a streamed body. It is not a total deadline, which would cut off a large export that keeps coming (nor a slow
caller's upload).
aiohttp rounds timeouts of 5 s or more up to the next whole second unless told otherwise; ``ceil_threshold``
turns that off, so a deadline ends when it says.

Redirects are never followed (the token would go wherever a ``Location`` pointed), answers are passed on
as they came (``auto_decompress=False``, and only ``identity`` is asked for), and proxy settings are read
from the environment once, as ``lightspeed.senders`` does.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator, Sequence
from urllib.request import getproxies, proxy_bypass

import aiohttp
from multidict import CIMultiDict
from yarl import URL

from ..errors import ProviderTimeout, ProviderUnavailable
from ..lightspeed.senders import NO_ROUNDING
from ..lightspeed.tls import trust


class Upstream:
    """Sends one request and hands back aiohttp's response with its headers read (body not yet)."""

    def __init__(self, *, user_agent: str, timeout_s: float, tls: ssl.SSLContext | None = None) -> None:
        self._user_agent = user_agent
        self.tls = tls if tls is not None else trust()  # the same trust as every other client (``lightspeed.tls``)
        # ``connect`` is the whole wait for a connection; ``sock_connect`` only one address's TCP handshake.
        self.timeout = aiohttp.ClientTimeout(
            total=None, connect=timeout_s, sock_connect=timeout_s, sock_read=timeout_s, ceil_threshold=NO_ROUNDING
        )
        self._sessions: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}
        self._proxies = getproxies()

    def _session(self) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        session = self._sessions.get(loop)
        if session is None or session.closed:
            for other in [other for other in self._sessions if other.is_closed()]:
                del self._sessions[other]  # a loop that ended (tests, restarts) takes its session with it
            session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, ttl_dns_cache=300, ssl=self.tls),
                auto_decompress=False,
                timeout=self.timeout,
            )
            # aiohttp sends a GET, HEAD, PUT or DELETE a second time by itself when a reused connection is reset
            # before the answer: a send nobody booked in the account's bucket, and a DELETE that Lightspeed may
            # already have done. Nothing is retried but a 401 or a 429 (which were not processed): the caller
            # decides. There is no public switch for it (aiohttp 3.x); tests/proxy/test_rules.py checks it holds.
            session._retry_connection = False
            self._sessions[loop] = session
        return session

    async def send(
        self,
        method: str,
        url: str,
        headers: Sequence[tuple[str, str]],
        *,
        access_token: str,
        body: AsyncIterator[bytes] | None,
        length: int | None,
    ) -> aiohttp.ClientResponse:
        """The answer's status and headers; ``ProviderTimeout`` or ``ProviderUnavailable`` when there is none."""
        sent = CIMultiDict(headers)
        sent["Authorization"] = f"Bearer {access_token}"
        sent["User-Agent"] = self._user_agent
        sent["Accept-Encoding"] = "identity"
        if body is not None and length is not None:
            sent["Content-Length"] = str(length)
        target = URL(url, encoded=True)
        try:
            return await self._session().request(
                method,
                target,
                headers=sent,
                data=body,
                allow_redirects=False,
                proxy=self._proxy_for(target),
            )
        except TimeoutError:
            raise ProviderTimeout(f"Lightspeed did not answer {method} within PROXY_TIMEOUT_S") from None
        except aiohttp.ClientError as exc:
            raise ProviderUnavailable(f"Lightspeed could not be reached ({type(exc).__name__})") from None

    def _proxy_for(self, url: URL) -> str | None:
        proxy = self._proxies.get(url.scheme) or self._proxies.get("all")
        return None if proxy is None or proxy_bypass(url.host or "") else proxy

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            if not session.closed:
                await session.close()


async def chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The answer's body as it arrives; a pause longer than the deadline raises ``ProviderTimeout``."""
    try:
        async for chunk in response.content.iter_any():
            yield chunk
    except TimeoutError:
        raise ProviderTimeout("Lightspeed paused its answer for longer than PROXY_TIMEOUT_S") from None
    except aiohttp.ClientError as exc:
        raise ProviderUnavailable(f"Lightspeed's answer broke off ({type(exc).__name__})") from None


__all__ = ["Upstream", "chunks"]
