"""A caller's request body: streamed to Lightspeed as it arrives, and kept so that it can be sent again.

A 401 means Lightspeed did not process the request, so the proxy refreshes the token and sends the same
request once more, body included. The body is kept as it streams through; the web layer's body cap
(``LIGHTKEEPER_MAX_BODY_BYTES``) bounds what is kept.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator


class RequestBody:
    """One request's body, readable once as it arrives (``stream``) and then whole again (``replay``)."""

    def __init__(self, chunks: AsyncIterator[bytes], *, length: int | None = None) -> None:
        self._chunks = chunks
        self.length = length  # the caller's Content-Length, when it declared one
        self._kept: list[bytes] = []
        self._done = False
        #: Set once the caller's body has been read to its end (then only a disconnect can still arrive).
        self.finished = asyncio.Event()

    async def stream(self) -> AsyncIterator[bytes]:
        """The body as it arrives from the caller, kept on the way."""
        async for chunk in self._chunks:
            if chunk:
                self._kept.append(chunk)
                yield chunk
        self._done = True
        self.finished.set()

    async def replay(self) -> AsyncIterator[bytes]:
        """The whole body again: what was kept, then whatever the first send did not read."""
        for chunk in list(self._kept):
            yield chunk
        if not self._done:
            async for chunk in self.stream():
                yield chunk

    async def drain(self) -> None:
        """Read the rest from the caller (kept), so the whole body is there before it is sent again."""
        if not self._done:
            async for _chunk in self.stream():
                pass


__all__ = ["RequestBody"]
