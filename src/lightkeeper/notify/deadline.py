"""The total deadline of one webhook attempt (``NOTIFY_TIMEOUT_S``): connect, send and read the answer together.

httpx2's timeouts are per phase, and a phase's read timeout is per ``recv``: a receiver that drips a byte
every few seconds keeps a request open for ever. Two parts close that gap:

- the ``trace`` extension, which httpcore2 calls before every phase, shrinks the phase's timeouts to what is
  left of the budget, and refuses to start a phase (sending included) once nothing is left;
- a timer that, at the deadline, shuts down the attempt's sockets (seen in the trace when they are opened):
  a read or write blocked on them returns at once, and the attempt fails as timed out.

The client opens a connection per attempt (no keep-alive), so every attempt's socket goes through the trace.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Any

import httpcore2

_PHASE_TIMEOUTS = ("connect", "read", "write", "pool")
_LEAST_S = 0.001  # a timeout of 0 would mean "none" to some backends
#: The trace events whose ``return_value`` is a new network stream (plain, TLS, or through a proxy).
_OPENS = ("connect_tcp.complete", "connect_unix_socket.complete", "start_tls.complete")


class Deadline:
    """One attempt's deadline, ``budget_s`` from now: ``with deadline:`` arms the timer, ``trace`` goes in the
    request's extensions, and ``passed`` says whether the timer cut the attempt."""

    def __init__(self, budget_s: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.budget_s = budget_s
        self._monotonic = monotonic
        self.ends = monotonic() + budget_s
        self.passed = False
        self._sockets: list[socket.socket] = []
        self._lock = threading.Lock()
        self._timer = threading.Timer(budget_s, self._cut)
        self._timer.daemon = True

    def left(self) -> float:
        return self.ends - self._monotonic()

    def __enter__(self) -> Deadline:
        self._timer.start()
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self._timer.cancel()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore2's ``trace`` extension: watch each new socket, and give each phase what is left."""
        if event.endswith(_OPENS):
            self._watch(info.get("return_value"))
            return
        if not event.endswith(".started") or "close" in event:
            return  # closing a connection must never fail
        left = self.left()
        if left <= 0:
            raise httpcore2.ReadTimeout("the attempt's total deadline (NOTIFY_TIMEOUT_S) passed")
        request = info.get("request")
        timeouts = getattr(request, "extensions", {}).get("timeout")
        if isinstance(timeouts, dict):
            for phase in _PHASE_TIMEOUTS:
                current = timeouts.get(phase)
                budget = max(left, _LEAST_S)
                timeouts[phase] = budget if current is None else min(current, budget)

    def _watch(self, stream: object) -> None:
        get_extra_info = getattr(stream, "get_extra_info", None)
        sock = get_extra_info("socket") if callable(get_extra_info) else None
        if not isinstance(sock, socket.socket):
            return
        with self._lock:
            self._sockets.append(sock)
            if not self.passed:
                return
        _shut(sock)  # opened after the deadline: nothing may be sent on it

    def _cut(self) -> None:
        with self._lock:
            self.passed = True
            sockets = list(self._sockets)
        for sock in sockets:
            _shut(sock)


def _shut(sock: socket.socket) -> None:
    """End both directions: a ``recv`` or ``send`` blocked on ``sock`` in another thread returns at once. The
    plain socket's method, also for TLS sockets: the TLS layer then reads the end of the stream."""
    with contextlib.suppress(OSError):  # closed already, or never connected: nothing is in flight on it
        socket.socket.shutdown(sock, socket.SHUT_RDWR)


__all__ = ["Deadline"]
