"""One total deadline for a request, where httpx2's timeouts are per phase.

``HTTP_TIMEOUT_S`` bounds a whole token request: a refresher checks that its lease outlives the request
before sending it, so the request must not outlast ``HTTP_TIMEOUT_S`` however the time is spread over
connecting, writing, waiting and reading. httpcore2 reads each phase's timeout from the request's
``timeout`` extension when the phase starts, and announces every phase to the ``trace`` extension first:
the trace below shrinks each phase's timeout to what is left of the budget, and fails the request once
nothing is left. The body is read chunk by chunk against the same deadline.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import httpcore2
import httpx2

_PHASE_TIMEOUTS = ("connect", "read", "write", "pool")
_LEAST_S = 0.001  # a timeout of 0 would mean "none" to some backends


class _Budget:
    """The ``trace`` extension: before each phase, its timeout becomes what is left of the budget."""

    def __init__(self, deadline: float, monotonic: Callable[[], float]) -> None:
        self.deadline, self._monotonic = deadline, monotonic

    def left(self) -> float:
        return self.deadline - self._monotonic()

    def __call__(self, event: str, info: dict[str, Any]) -> None:
        if not event.endswith(".started") or "closed" in event:
            return  # closing a connection must never fail
        left = self.left()
        if left <= 0 and "response_body" not in event:  # the body loop checks the deadline itself
            raise httpcore2.ReadTimeout("the request's total deadline (HTTP_TIMEOUT_S) passed")
        request = info.get("request")
        timeouts = getattr(request, "extensions", {}).get("timeout")
        if isinstance(timeouts, dict):
            for phase in _PHASE_TIMEOUTS:
                current = timeouts.get(phase)
                budget = max(left, _LEAST_S)
                timeouts[phase] = budget if current is None else min(current, budget)


def post_within(
    http: httpx2.Client,
    url: str,
    *,
    data: dict[str, str],
    headers: dict[str, str],
    budget_s: float,
    monotonic: Callable[[], float] = time.monotonic,
) -> httpx2.Response:
    """POST a form and read the whole answer within ``budget_s`` seconds in total, or raise a timeout."""
    budget = _Budget(monotonic() + budget_s, monotonic)
    timeout = httpx2.Timeout(budget_s)
    with http.stream("POST", url, data=data, headers=headers, timeout=timeout, extensions={"trace": budget}) as answer:
        if answer.is_stream_consumed:  # answered from memory (a test transport): nothing left to wait for
            return answer
        raw = bytearray()
        # httpcore fixes the body's read timeout when the body starts: a body dripping a byte just inside it
        # could outlast the budget by as much again. At the deadline a timer ends the socket, and the blocked
        # read returns at once.
        with _Cutter(answer, budget.left()) as cutter:
            try:
                for chunk in answer.iter_raw():
                    if budget.left() <= 0:
                        raise httpx2.ReadTimeout(_PASSED, request=answer.request)
                    raw += chunk
            except httpx2.TransportError:
                if cutter.fired:
                    raise httpx2.ReadTimeout(_PASSED, request=answer.request) from None
                raise
    # A complete response from the raw bytes: decoding (gzip …) happens as for any response.
    return httpx2.Response(answer.status_code, headers=answer.headers, content=bytes(raw), request=answer.request)


_PASSED = "the request's total deadline (HTTP_TIMEOUT_S) passed"


class _Cutter:
    """Shuts the answer's socket down when ``seconds`` have passed, unless the block ended first."""

    def __init__(self, answer: httpx2.Response, seconds: float) -> None:
        stream = answer.extensions.get("network_stream")
        info = getattr(stream, "get_extra_info", None)
        sock = info("socket") if callable(info) else None
        self._sock = sock if isinstance(sock, socket.socket) else None
        self.fired = False
        self._timer = threading.Timer(max(0.0, seconds), self._cut)
        self._timer.daemon = True

    def _cut(self) -> None:
        if self._sock is not None:
            self.fired = True
            with contextlib.suppress(OSError):  # closed already: nothing is in flight on it
                socket.socket.shutdown(self._sock, socket.SHUT_RDWR)  # TLS sockets too: their reads end

    def __enter__(self) -> _Cutter:
        self._timer.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._timer.cancel()


__all__ = ["post_within"]
