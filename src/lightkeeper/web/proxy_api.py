"""``/api/connections/{id}/lightspeed/{path}``: the API proxy's HTTP face, for host apps in any language.

The route checks what it can before anything is sent (the path's confinement, the query's characters), hands
the request to ``Proxy.forward`` (token, the connection's provider and its limits, send, retries), and streams
Lightspeed's answer back as it comes. R-Series and X-Series connections take the same route: the path is
relative to the account's own prefix, whichever provider's it is. A caller that goes away cancels the request
to Lightspeed, whether it is still waiting for the answer's headers or reading its body. One log line and one
count a request, with the status actually sent (``proxy_trace``, around the body caps): method, connection,
the API key's name (never its value), path (never the query, which may hold customer data), status, waits and
duration; the route adds the path and the waits to the request's trace.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import re
from collections.abc import Awaitable
from typing import Annotated, Any

from fastapi import APIRouter, Request
from fastapi import Path as FastApiPath
from fastapi.responses import Response
from starlette.convertors import PathConvertor, register_url_convertor
from starlette.requests import ClientDisconnect
from starlette.types import Receive, Scope, Send

from ..errors import (
    AccessDenied,
    ConnectionExpired,
    ConnectionNotFound,
    InvalidGrant,
    InvalidPath,
    LightkeeperError,
    ProviderError,
    ProviderTimeout,
    RateLimited,
)
from ..keeper import Keeper
from ..lightspeed.forwarding import confine, request_headers
from ..proxy import Answer, ProxyCall, RequestBody
from .api import ConnectionId
from .errors import ApiError, ErrorBody, json_error
from .proxy_trace import CLIENT_GONE, trace_of

log = logging.getLogger(__name__)

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
_RAW_PREFIX = re.compile(rb"^/api/connections/([0-9]+)/lightspeed(?:/(.*))?$", re.DOTALL)
_QUERY_BAD = re.compile(r"[\x00-\x20\x7f#]")

PROBLEMS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Lightspeed's answer, as it came (any status it gives)", "content": {"application/json": {}}},
    400: {
        "model": ErrorBody,
        "description": "`invalid_path`: the path could leave the account (X-Series: is not under `api/`); nothing sent",
    },
    403: {"model": ErrorBody, "description": "`lightspeed_access_denied`: Lightspeed refused a fresh token too"},
    404: {"model": ErrorBody, "description": "`connection_not_found`"},
    409: {"model": ErrorBody, "description": "`connection_expired`: the merchant must reconnect"},
    429: {"model": ErrorBody, "description": "`rate_limited`: the account's limits would hold it too long"},
    504: {"model": ErrorBody, "description": "`provider_timeout`: no answer within PROXY_TIMEOUT_S"},
}


class _Anything(PathConvertor):
    """Starlette's ``path`` convertor stops at a newline; this one takes every path, so that a path with an
    (encoded) CR or LF reaches the proxy and is refused there as ``invalid_path``, not as an unknown route."""

    regex = "(?s:.*)"


register_url_convertor("anything", _Anything())


def router(keeper: Keeper, auth: Any) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["proxy"], dependencies=[auth])

    async def proxied(
        request: Request,
        connection_id: ConnectionId,
        path: Annotated[
            str,
            FastApiPath(description="A path relative to the account: `Item.json` (R-Series), `api/2.0/products` (X)."),
        ],
    ) -> Response:
        """Lightspeed's answer to the same request, sent under the connection's own account with its token.

        R-Series: ``Item.json?limit=100`` is
        ``GET {LIGHTSPEED_API_URL}/API/V3/Account/{account_id}/Item.json?limit=100``; the path without it is the
        account itself. X-Series: ``api/2.0/products?after=120`` is ``GET`` the store's
        ``/api/2.0/products?after=120``; a path not under ``api/`` is refused. The answer's status, body and limit
        headers (`X-LS-*`, `X-RateLimit-*`) come through, with a `Link` header (RFC 8288) for the next (and
        previous) pages of a collection."""
        return await _proxy(keeper, request, connection_id)  # the path as received, not ``path`` (decoded)

    async def proxied_account(request: Request, connection_id: ConnectionId) -> Response:
        return await _proxy(keeper, request, connection_id)

    for method in METHODS:  # one route a method: each gets its own operation id in the OpenAPI document
        api.add_api_route(
            "/connections/{connection_id}/lightspeed/{path:anything}",
            proxied,
            methods=[method],
            responses=PROBLEMS,
            response_class=Response,
            summary=f"{method} through the proxy",
            operation_id=f"proxy_{method.lower()}",
        )
        api.add_api_route(
            "/connections/{connection_id}/lightspeed",
            proxied_account,
            methods=[method],
            include_in_schema=False,
            response_class=Response,
        )
    return api


async def _proxy(keeper: Keeper, request: Request, connection_id: int) -> Response:
    """The answer; the request's trace (``proxy_trace``) records whatever status is sent, this one or the app's."""
    trace = trace_of(request.scope)
    try:
        path, call = await _call(request, connection_id)
        if trace is not None:
            trace.path = path
        answer = await _until_disconnect(keeper.proxy.forward(call), request, call.body)
    except (LightkeeperError, ClientDisconnect) as exc:
        error = _refusal(exc)
        if error is None:
            return Response(status_code=CLIENT_GONE)
        response = json_error(error)
        if isinstance(error, RateLimitedError) and error.retry_after is not None:
            response.headers["Retry-After"] = str(math.ceil(error.retry_after))
        return response
    if answer is None:  # the caller went away: the request to Lightspeed was cancelled
        return Response(status_code=CLIENT_GONE)
    if trace is not None:
        trace.wait_s, trace.upstream_s = answer.wait_s, answer.upstream_s
    return ProxiedAnswer(answer)


async def _call(request: Request, connection_id: int) -> tuple[str, ProxyCall]:
    """The request to forward; ``InvalidPath`` (nothing sent) for a path or query that could leave the account."""
    found = _RAW_PREFIX.match(request.scope.get("raw_path") or request.scope["path"].encode())
    if found is None:
        raise InvalidPath("the path is not under /api/connections/{id}/lightspeed/")
    path = confine(_ascii(found.group(2) or b""))
    query = _ascii(request.scope.get("query_string", b""))
    if _QUERY_BAD.search(query):
        raise InvalidPath("the query string may not contain spaces, '#' or control characters")
    body = _body(request)
    if body is None:
        await request.body()  # the (empty) body message, so that only a disconnect can arrive after it
    root = request.scope.get("root_path", "")
    call = ProxyCall(
        connection_id=connection_id,
        method=request.method,
        path=path,
        query=query,
        headers=request_headers(request.headers.items()),
        body=body,
        link_base=f"{root}/api/connections/{connection_id}/lightspeed",
    )
    return path, call


def _ascii(raw: bytes) -> str:
    """Raw URL bytes as text, each byte beyond ASCII percent-encoded (as a client should have sent it)."""
    return "".join(chr(byte) if byte < 0x80 else f"%{byte:02X}" for byte in raw)


def _body(request: Request) -> RequestBody | None:
    length = request.headers.get("content-length")
    declared = int(length) if length is not None and length.isdigit() else None
    if declared == 0 or (declared is None and "transfer-encoding" not in request.headers):
        return None
    return RequestBody(request.stream(), length=declared)


async def _until_disconnect(forward: Awaitable[Answer], request: Request, body: RequestBody | None) -> Answer | None:
    """``forward``'s answer, or None (and the request to Lightspeed cancelled) if the caller disconnects first."""
    return await _first_or_cancel(asyncio.ensure_future(forward), _disconnected(request.receive, body))


async def _first_or_cancel(work: asyncio.Future[Answer], disconnect: Awaitable[None]) -> Answer | None:
    watching = asyncio.ensure_future(disconnect)
    try:
        pending: set[asyncio.Future[Any]] = {work, watching}
        done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watching.cancel()
        if not work.done():
            work.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await work
    return work.result() if work in done and not work.cancelled() else None


async def _disconnected(receive: Receive, body: RequestBody | None) -> None:
    if body is not None:
        await body.finished.wait()  # until then the body's reader owns ``receive``
    while (await receive())["type"] != "http.disconnect":
        pass


def _refusal(exc: BaseException) -> ApiError | None:
    """The proxy's own answer to each failure (the token and stock routes keep theirs); None: caller gone."""
    if isinstance(exc, ClientDisconnect):
        return None
    if isinstance(exc, InvalidPath):
        return ApiError(400, "invalid_path", str(exc))
    if isinstance(exc, ConnectionNotFound):
        return ApiError(404, "connection_not_found", str(exc))
    if isinstance(exc, (ConnectionExpired, InvalidGrant)):
        return ApiError(409, "connection_expired", str(exc))
    if isinstance(exc, AccessDenied):
        return ApiError(403, "lightspeed_access_denied", str(exc))
    if isinstance(exc, RateLimited):
        return RateLimitedError(exc)
    if isinstance(exc, ProviderTimeout):
        return ApiError(504, "provider_timeout", str(exc))
    if isinstance(exc, ProviderError):
        return ApiError(503, "provider_unavailable", str(exc))
    raise exc  # the app's handlers answer the rest (500 configuration_error, 500 internal_error), traced all the same


class RateLimitedError(ApiError):
    def __init__(self, exc: RateLimited) -> None:
        super().__init__(429, "rate_limited", str(exc))
        self.retry_after = exc.retry_after


class ProxiedAnswer(Response):
    """Streams Lightspeed's answer as it comes; if it pauses past ``PROXY_TIMEOUT_S`` or breaks off once bytes
    went out, the connection to the caller is cut (a clean end would pass a truncated body as whole)."""

    def __init__(self, answer: Answer) -> None:
        super().__init__(status_code=answer.status)
        self.answer = answer
        self.raw_headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in answer.headers]
        if answer.rest is None and not any(k == b"content-length" for k, _ in self.raw_headers):
            self.raw_headers.append((b"content-length", str(len(answer.body)).encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        status = self.status_code
        try:
            await send({"type": "http.response.start", "status": status, "headers": self.raw_headers})
            if scope["method"] == "HEAD":
                await self._last(send, b"")
            elif self.answer.rest is None:  # read whole already (a page with its Link): nothing to wait for
                await self._last(send, self.answer.body)
            else:
                await self._stream(receive, send)
        finally:
            self.answer.close()

    async def _last(self, send: Send, body: bytes) -> None:
        """The answer's last bytes (``ProxyTraceMiddleware`` counts and logs it before they leave)."""
        await send({"type": "http.response.body", "body": body})

    async def _stream(self, receive: Receive, send: Send) -> None:
        pumping = asyncio.ensure_future(self._pump(send))
        watching = asyncio.ensure_future(_disconnected(receive, None))
        try:
            await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            watching.cancel()
            if not pumping.done():  # the caller went away: stop reading Lightspeed's answer
                pumping.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await pumping
        if pumping.done() and not pumping.cancelled():
            pumping.result()

    async def _pump(self, send: Send) -> None:
        try:
            if self.answer.rest is None:
                await self._last(send, self.answer.body)
                return
            if self.answer.body:
                await send({"type": "http.response.body", "body": self.answer.body, "more_body": True})
            async for chunk in self.answer.rest:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await self._last(send, b"")
        except ProviderError as exc:
            log.warning("proxy: the answer from Lightspeed broke off after it started (%s); connection cut", exc)


__all__ = ["METHODS", "router"]
