"""One total deadline for a request, where httpx2's timeouts are per phase.

``HTTP_TIMEOUT_S`` bounds a whole token request: a refresher checks that its lease outlives the request
before sending it, so the request must not outlast ``HTTP_TIMEOUT_S`` however the time is spread over
connecting, writing, waiting and reading. httpcore2 reads each phase's timeout from the request's
``timeout`` extension when the phase starts, and announces every phase to the ``trace`` extension first:
the trace below shrinks each phase's timeout to what is left of the budget, and fails the request once
nothing is left. The body is read chunk by chunk against the same deadline.
"""

from __future__ import annotations

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
        for chunk in answer.iter_raw():
            if budget.left() <= 0:
                raise httpx2.ReadTimeout("the request's total deadline (HTTP_TIMEOUT_S) passed", request=answer.request)
            raw += chunk
    # A complete response from the raw bytes: decoding (gzip …) happens as for any response.
    return httpx2.Response(answer.status_code, headers=answer.headers, content=bytes(raw), request=answer.request)


__all__ = ["post_within"]
