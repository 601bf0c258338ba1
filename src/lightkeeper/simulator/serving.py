"""How the simulator delivers an answer: replies to responses, injected faults, holds, streamed bodies.

The routes (``app.py``) say what to answer; this module decides how it reaches the client. ``serve`` applies
the fault queued for an endpoint (kinds: see ``faults.py``); API waits (latency, a "timeout" fault) notice a
client that hangs up and count it (``api_disconnects``); "slow_body" and "large_body" answers are streamed (a
client that hangs up before their end is counted in ``api_streams_cut``); every API answer gets the extra
headers set with ``/_sim/api-headers``.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, cast

from fastapi import Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.types import Receive, Scope, Send

from lightkeeper.simulator.faults import API_ENDPOINTS, Fault
from lightkeeper.simulator.recorder import SERVER_RECEIVE
from lightkeeper.simulator.replies import Reply
from lightkeeper.simulator.state import SimulatorState

Handler = Callable[[], Awaitable[Reply]]


def sim_of(request: Request) -> SimulatorState:
    return cast(SimulatorState, request.app.state.simulator)


def to_response(reply: Reply) -> Response:
    if isinstance(reply.body, dict):
        return JSONResponse(reply.body, reply.status, reply.headers)
    if reply.body is None:
        return Response(b"", reply.status, reply.headers)
    return Response(reply.body, reply.status, reply.headers, media_type=reply.media_type)


async def sleep_ms(milliseconds: float) -> None:
    if milliseconds > 0:
        await asyncio.sleep(milliseconds / 1000)


async def hold(sim: SimulatorState, seconds: float) -> None:
    """Sleep up to ``seconds``, but wake early on reset/clear-faults/shutdown so tests never hang."""
    generation = sim.wake_generation
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while sim.wake_generation == generation and (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(0.05, left))


# How often an API wait looks for a client that hung up.
_DISCONNECT_POLL_S = 0.02


async def api_wait(request: Request, seconds: float, *, wakes: bool) -> None:
    """Sleep up to ``seconds`` on an API route, ending early (counted in ``api_disconnects``) when the client
    hangs up; with ``wakes``, also on reset/clear-faults/shutdown, as ``hold``.

    The body is read first: ``is_disconnected`` consumes a pending body message, which would lose it.
    """
    if seconds <= 0:
        return
    sim = sim_of(request)
    await request.body()
    generation = sim.wake_generation
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while (left := deadline - loop.time()) > 0 and not (wakes and sim.wake_generation != generation):
        if await request.is_disconnected():
            sim.note_api_disconnect()
            return
        await asyncio.sleep(min(_DISCONNECT_POLL_S, left))


async def api_latency(request: Request) -> None:
    """``api_latency_ms``, before the provider does the work (a client gone meanwhile still has it done)."""
    await api_wait(request, sim_of(request).config.api_latency_ms / 1000, wakes=False)


def _streamed(request: Request, fault: Fault, reply: Reply) -> Response:
    """The real answer's status and headers at once, then the body the fault makes of it, chunk by chunk."""
    head, chunks = fault.streamed(reply)
    sim, pause = sim_of(request), fault.pause_before

    async def body() -> AsyncIterator[bytes]:
        for index, chunk in enumerate(chunks):
            if index and pause > 0:
                await hold(sim, pause)
            elif index:
                # Let a disconnect be noticed: once the client is gone uvicorn's ``send`` returns at once,
                # so a body that never waits would run to its end, unsent, instead of being cancelled.
                await asyncio.sleep(0)
            yield chunk

    return _CountedStream(sim, body(), head.status, head.headers, media_type=head.media_type)


class _CountedStream(StreamingResponse):
    """A streamed API answer that counts, in ``api_streams_cut``, a client that hung up before its last byte
    (Starlette then cancels the stream): the proof, seen from the provider, that a proxy let go of an answer
    it stopped reading. Counted here, not in the body's generator, which a cancel may leave suspended."""

    def __init__(self, sim: SimulatorState, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._sim = sim
        self._completed = False

    async def stream_response(self, send: Send) -> None:
        await super().stream_response(send)
        self._completed = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            if not self._completed:
                self._sim.note_api_stream_cut()


def _with_extra_headers(sim: SimulatorState, endpoint: str, response: Response) -> Response:
    """``response`` with the headers ``/_sim/api-headers`` adds to every API answer (none by default)."""
    if endpoint in API_ENDPOINTS:
        for name, value in sim.api_headers():
            response.headers.append(name, value)
    return response


class _TruncatedResponse(Response):
    """Promises a body it never sends: uvicorn then closes the connection mid-response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})


async def _reset_connection(request: Request) -> Response:
    """Drop the TCP connection with an RST before any byte of the response is written.

    ASGI has no "abort" message, so this reaches uvicorn's transport through the bound ``receive``
    (``RequestResponseCycle.receive``; on a logged API route, the one ``RequestRecorder`` kept in the scope).
    SO_LINGER 0 turns the close into a reset. Where that is not available (another server), fall back to a
    truncated response, which the client also sees as a broken connection (uvicorn logs "ASGI callable
    returned without completing response").
    """
    receive = request.scope.get(SERVER_RECEIVE, request.receive)  # the recorder replays the body through its own
    transport = getattr(getattr(receive, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return _TruncatedResponse()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let uvicorn's connection_lost run: it marks the request disconnected, so the response below is
    # silently dropped instead of being logged as an application error.
    await asyncio.sleep(0.01)
    return Response(b"", 500)


async def serve(request: Request, endpoint: str, handler: Handler) -> Response:
    """Run ``handler`` unless a fault is queued for ``endpoint`` (kinds: see ``faults.py``).

    A "timeout" or "stall_after_issue" fault still runs the handler (a refresh really rotates the tokens)
    and then holds the answer: the lost-response case that the grace window exists for (on the API the hold
    ends when the client hangs up). "no_expires_in" also runs it, then trims the answer; "slow_body" and
    "large_body" run it, then stream their body under its status and headers. Every API answer (faults' too,
    but for a reset, which answers nothing) carries the headers ``/_sim/api-headers`` adds.
    """
    sim = sim_of(request)
    fault = sim.begin(endpoint)
    if fault is not None and fault.kind == "reset":
        return await _reset_connection(request)
    return _with_extra_headers(sim, endpoint, await _answer(request, sim, endpoint, fault, handler))


async def _answer(
    request: Request, sim: SimulatorState, endpoint: str, fault: Fault | None, handler: Handler
) -> Response:
    """The answer ``serve`` sends: the handler's, or what ``fault`` makes of it or answers instead."""
    if fault is None:
        return to_response(await handler())
    if fault.runs_handler:
        reply = fault.alter(await handler())
        if fault.streams:
            return _streamed(request, fault, reply)
        if fault.holds and endpoint in API_ENDPOINTS:
            await api_wait(request, fault.seconds, wakes=True)
        elif fault.holds:
            await hold(sim, fault.seconds)
        return to_response(reply)
    return to_response(fault.reply(sim.now()))


__all__ = ["Handler", "api_latency", "api_wait", "hold", "serve", "sim_of", "sleep_ms", "to_response"]
