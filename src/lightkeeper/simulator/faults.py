"""Injected failures (``/_sim/faults``): what each kind answers instead of, or on top of, the real reply.

Kinds, and what the next ``count`` requests to ``endpoint`` get:

- ``status``: that HTTP status; 5xx as a gateway's HTML page, 401 on the API as ``access_denied``,
  anything else as ``{"error":"simulated_fault"}`` JSON (the "some other 401" a client cannot classify).
- ``timeout``: the real operation runs (a refresh really rotates), then the answer is held ``seconds``.
- ``reset``: the TCP connection is reset before any byte is written.
- ``garbage``: 200 with a truncated JSON body.
- ``rate_limit``: 429 with ``Retry-After``.
- ``html_401`` (token, revoke): 401 with an HTML page, as a gateway in front of Lightspeed answers.
- ``invalid_grant_401`` (token, revoke): 401 with OAuth ``invalid_grant`` JSON (the usual status is 400).
- ``invalid_client_json`` (token, revoke): 401 ``invalid_client`` exactly as a wrong client secret gets.
- ``no_expires_in`` (token): the real grant runs (rotation, counters) but a 200 answer lacks ``expires_in``;
  the access token's JWT still carries ``exp``.
- ``stall_after_issue`` (token): the grant runs to the end (a refresh rotates the pair, the counters move),
  then the answer is held ``seconds``: a client killed or timed out in that window lost a pair the provider
  did issue, which only the grace window recovers.
- ``slow_body`` (api): the real request runs (charged, logged); its answer's status and headers go out at
  once, then its JSON body in 4 chunks with ``seconds`` of silence before each chunk after the first: a
  stalled body, which only a read timeout (not a connect or header timeout) catches. A client that hangs up
  before the last chunk is counted in ``api_streams_cut`` (so is one that leaves a ``large_body`` early).
- ``large_body`` (api): the real request runs, then a 200 ``application/json`` answer with its headers
  (bucket and burst) and a body of exactly ``bytes`` bytes, sent chunked (no Content-Length), generated 64 KiB
  at a time: valid JSON ``{"@attributes":{"next":"","previous":""},"Blob":"xxx…"}`` that a client or proxy
  must refuse to buffer whole.

X-Series endpoints (``xseries_routes.py``) have names of their own: ``x_token`` (``/x/{prefix}/api/1.0/token``)
and ``x_api`` (``/x/{prefix}/api/2.x/…``). A fault queued for ``x_token`` or ``x_api`` hits only X-Series; one
queued for the plain ``token`` or ``api`` hits whichever series' endpoint is asked next (one queue, first in
first out), so a test written for "the token endpoint" is never silently skipped by an X-Series client. A
fault served to an X-Series endpoint answers in X-Series' terms: ``Retry-After`` (``rate_limit``, or any kind
given ``retry_after``) is an RFC 1123 HTTP date, and an injected 401 on ``x_api`` is ``{"error":"invalid_token"}``.
Every kind allowed on ``token`` is allowed on ``x_token``, and every kind allowed on ``api`` on ``x_api``.

A "timeout" on the API, like ``api_latency_ms``, notices a client that hangs up while it waits: the wait
ends and ``api_disconnects`` counts it.

``FaultQueue`` holds the queued faults and hands each request the one it must suffer; ``app.py`` applies it.
"""

from __future__ import annotations

import builtins
import json
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from typing import Any

from lightkeeper.simulator.replies import (
    JsonDict,
    Reply,
    SimulatorError,
    access_denied,
    http_date,
    int_value,
    invalid_client,
    invalid_refresh_token,
    ls_error,
    x_error,
)

FAULT_ENDPOINTS: tuple[str, ...] = ("token", "api", "revoke", "x_token", "x_api")
X_ENDPOINTS = frozenset({"x_token", "x_api"})
API_ENDPOINTS = frozenset({"api", "x_api"})
# The queued endpoint names a request to each endpoint takes faults from (default: its own name only).
_SERVED_FROM: dict[str, tuple[str, ...]] = {"x_token": ("x_token", "token"), "x_api": ("x_api", "api")}
FAULT_KINDS: tuple[str, ...] = (
    "status",
    "timeout",
    "reset",
    "garbage",
    "rate_limit",
    "html_401",
    "invalid_grant_401",
    "invalid_client_json",
    "no_expires_in",
    "stall_after_issue",
    "slow_body",
    "large_body",
)
# Kinds that only make sense on some endpoints (the rest go anywhere).
_KIND_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "html_401": ("token", "revoke", "x_token"),
    "invalid_grant_401": ("token", "revoke", "x_token"),
    "invalid_client_json": ("token", "revoke", "x_token"),
    "no_expires_in": ("token", "x_token"),
    "stall_after_issue": ("token", "x_token"),
    "slow_body": ("api", "x_api"),
    "large_body": ("api", "x_api"),
}
# Kinds whose status is part of their definition; the listing shows it, a different one is refused.
_KIND_STATUS: dict[str, int] = {"html_401": 401, "invalid_grant_401": 401, "invalid_client_json": 401}
# What an nginx-style gateway in front of the provider answers; no OAuth JSON to parse.
_GATEWAY_401 = (
    "<html><head><title>401 Authorization Required</title></head>"
    "<body><center><h1>401 Authorization Required</h1></center></body></html>"
)
# Kinds that let the real handler run and then change or delay its answer.
_RUNS_HANDLER = frozenset({"timeout", "no_expires_in", "stall_after_issue", "slow_body", "large_body"})
# Kinds that hold the real answer for ``seconds`` once the operation is done.
_HOLDS = frozenset({"timeout", "stall_after_issue"})
# Kinds whose body is streamed (``app.py`` sends it piece by piece).
_STREAMS = frozenset({"slow_body", "large_body"})
SLOW_BODY_CHUNKS = 4
LARGE_BODY_CHUNK = 64 * 1024
MAX_LARGE_BODY = 1_000_000_000
_LARGE_HEAD = b'{"@attributes":{"next":"","previous":""},"Blob":"'
_LARGE_TAIL = b'"}'
MIN_LARGE_BODY = len(_LARGE_HEAD) + len(_LARGE_TAIL)


@dataclass
class Fault:
    """One queued failure for the next ``count`` requests to ``endpoint``."""

    endpoint: str
    kind: str
    status: int = 503
    retry_after: int | None = None
    count: int = 1
    # How long a "timeout" or "stall_after_issue" fault holds the response (30 s; tests may shorten it);
    # for "slow_body", the pause before each body chunk after the first.
    seconds: float = 30.0
    # The exact body size of a "large_body" answer (the name shadows the builtin in this class body: the
    # methods below spell the type ``builtins.bytes``).
    bytes: int = 1_000_000

    @property
    def runs_handler(self) -> bool:
        """True when the real operation must still happen (state changes) before the fault applies."""
        return self.kind in _RUNS_HANDLER

    @property
    def holds(self) -> bool:
        """True when the answer, ready, is held ``seconds`` before it is sent."""
        return self.kind in _HOLDS

    @property
    def streams(self) -> bool:
        """True when the answer's body is streamed: see ``body_chunks`` and ``pause_before``."""
        return self.kind in _STREAMS

    def alter(self, real: Reply) -> Reply:
        """The answer for a ``runs_handler`` kind, given the real one."""
        if self.kind == "no_expires_in" and real.status == 200 and isinstance(real.body, dict):
            body = {key: value for key, value in real.body.items() if key != "expires_in"}
            return Reply(real.status, body, dict(real.headers), real.media_type)
        return real

    def streamed(self, real: Reply) -> tuple[Reply, Iterator[builtins.bytes]]:
        """For a ``streams`` kind, given the real answer: the status and headers to send, and the body
        chunks (lazily, so a gigabyte body is never in memory). A pause of ``seconds`` goes before every
        chunk but the first for "slow_body" (see ``pause_before``)."""
        if self.kind == "large_body":
            return Reply(200, None, dict(real.headers)), large_body_chunks(self.bytes)
        chunks = slow_body_chunks(real)
        # The size is announced up front, as the real answer does: only the bytes are late.
        headers = {**real.headers, "Content-Length": str(sum(len(chunk) for chunk in chunks))}
        return Reply(real.status, None, headers, real.media_type), iter(chunks)

    @property
    def pause_before(self) -> float:
        """Seconds of silence before each streamed chunk after the first."""
        return self.seconds if self.kind == "slow_body" else 0.0

    def reply(self, now: float | None = None) -> Reply:
        """The canned answer for the kinds that replace the real one; ``now`` (unix time, default the real
        clock) dates an X-Series ``Retry-After``."""
        if self.kind == "garbage":
            # Claims JSON but is cut off mid-object: the client's JSON parsing must not crash it.
            return Reply(200, '{"token_type":"Bearer","access_tok', media_type="application/json")
        if self.kind == "rate_limit":
            if self.endpoint in X_ENDPOINTS:
                reply = x_error(429, "rate_limited", "Too many requests")
            else:
                reply = Reply(429, ls_error(429, "Too Many Requests", "Rate limit exceeded"))
            if self.endpoint == "api":
                reply.headers["X-LS-API-RateLimit-Type"] = "api-burst-limiter"
            reply.headers["Retry-After"] = self._retry_after(self.retry_after or 1, now)
            return reply
        reply = self._status_reply()
        if self.retry_after is not None:
            reply.headers["Retry-After"] = self._retry_after(self.retry_after, now)
        return reply

    def _retry_after(self, seconds: int, now: float | None) -> str:
        """Seconds on R-Series; on X-Series the HTTP date ``seconds`` from ``now``."""
        if self.endpoint not in X_ENDPOINTS:
            return str(seconds)
        return http_date((time.time() if now is None else now) + seconds)

    def _status_reply(self) -> Reply:
        if self.kind == "html_401":
            return Reply(401, _GATEWAY_401, media_type="text/html")
        if self.kind == "invalid_grant_401":
            return invalid_refresh_token(401)
        if self.kind == "invalid_client_json":
            return invalid_client()
        if self.status == 401 and self.endpoint == "api":
            # What the API answers a token it will not accept (expired, revoked, or access withdrawn).
            return access_denied()
        if self.status == 401 and self.endpoint == "x_api":
            return x_error(401, "invalid_token", "The access token is invalid or expired.")
        if self.status >= 500:
            # Gateways in front of the real provider answer 5xx with HTML, not OAuth JSON.
            page = f"<html><body><h1>{self.status} Simulated failure</h1></body></html>"
            return Reply(self.status, page, media_type="text/html")
        body = {"error": "simulated_fault", "error_description": f"Injected {self.status}", "hint": ""}
        return Reply(self.status, body)


def reply_bytes(reply: Reply) -> bytes:
    """The body bytes ``reply`` stands for, encoded as ``app.py`` sends it (JSON compactly, text as UTF-8)."""
    if isinstance(reply.body, dict):
        return json.dumps(reply.body, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()
    return (reply.body or "").encode()


def slow_body_chunks(real: Reply) -> list[bytes]:
    """The real answer's body in ``SLOW_BODY_CHUNKS`` pieces (the last ones empty if it is that short)."""
    data = reply_bytes(real)
    step = -(-len(data) // SLOW_BODY_CHUNKS)
    return [data[i * step : (i + 1) * step] for i in range(SLOW_BODY_CHUNKS)]


def large_body_chunks(size: int) -> Iterator[bytes]:
    """Exactly ``size`` bytes of valid JSON, ``LARGE_BODY_CHUNK`` at a time; one padding chunk is reused."""
    pad = size - MIN_LARGE_BODY
    yield _LARGE_HEAD
    filler = b"x" * LARGE_BODY_CHUNK
    while pad >= LARGE_BODY_CHUNK:
        yield filler
        pad -= LARGE_BODY_CHUNK
    yield filler[:pad] + _LARGE_TAIL


def parse_fault(spec: Mapping[str, Any]) -> Fault:
    """A ``Fault`` from a ``/_sim/faults`` body, or ``SimulatorError`` 400 saying what is wrong."""
    endpoint, kind = spec.get("endpoint"), spec.get("kind")
    if endpoint not in FAULT_ENDPOINTS:
        raise SimulatorError(400, f"endpoint must be one of {', '.join(FAULT_ENDPOINTS)}")
    if kind not in FAULT_KINDS:
        raise SimulatorError(400, f"kind must be one of {', '.join(FAULT_KINDS)}")
    allowed = _KIND_ENDPOINTS.get(str(kind), FAULT_ENDPOINTS)
    if endpoint not in allowed:
        raise SimulatorError(400, f"kind {kind} applies to {', '.join(allowed)} only")
    status = _fault_status(str(kind), spec)
    count = int_value(spec.get("count", 1))
    if count is None or count < 1:
        raise SimulatorError(400, "count must be a positive integer")
    retry_after = spec.get("retry_after")
    if retry_after is not None and int_value(retry_after) is None:
        raise SimulatorError(400, "retry_after must be an integer number of seconds")
    seconds = spec.get("seconds", 30.0)
    if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
        raise SimulatorError(400, "seconds must be a non-negative number")
    size = int_value(spec.get("bytes", 1_000_000))
    if size is None or not MIN_LARGE_BODY <= size <= MAX_LARGE_BODY:
        raise SimulatorError(400, f"bytes must be an integer from {MIN_LARGE_BODY} to {MAX_LARGE_BODY}")
    return Fault(str(endpoint), str(kind), status, int_value(retry_after), count, float(seconds), size)


def _fault_status(kind: str, spec: Mapping[str, Any]) -> int:
    fixed = _KIND_STATUS.get(kind)
    status = int_value(spec.get("status", fixed or 503))
    if status is None or not 100 <= status <= 599:
        raise SimulatorError(400, "status must be an HTTP status")
    if fixed is not None and status != fixed:
        raise SimulatorError(400, f"kind {kind} always answers {fixed}")
    return status


class FaultQueue:
    """Faults waiting for their requests; the caller holds the state lock.

    Faults for one endpoint are served first-in first-out, each to its next ``count`` requests.
    """

    def __init__(self, stats: Counter[str]) -> None:
        # The provider's counters: request counts per endpoint and ``faults_served`` are kept here.
        self._stats = stats
        self._faults: list[Fault] = []

    def begin(self, endpoint: str) -> Fault | None:
        """Count a request to ``endpoint`` and pop the fault it must suffer, if one is queued.

        ``x_token`` and ``x_api`` also take the faults queued for ``token`` and ``api``; the fault handed
        back names ``endpoint``, the one it is served on, so it answers in that endpoint's terms.
        """
        self._stats[f"{endpoint}_requests"] += 1
        accepted = _SERVED_FROM.get(endpoint, (endpoint,))
        for fault in self._faults:
            if fault.endpoint in accepted:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                self._stats["faults_served"] += 1
                return Fault(**{**asdict(fault), "endpoint": endpoint, "count": 1})
        return None

    def add(self, fault: Fault) -> JsonDict:
        """Queue ``fault``; returns the listing with it."""
        self._faults.append(fault)
        return self.listing()

    def listing(self) -> JsonDict:
        return {"faults": [asdict(f) for f in self._faults]}

    def clear(self) -> None:
        self._faults.clear()


__all__ = [
    "API_ENDPOINTS",
    "FAULT_ENDPOINTS",
    "FAULT_KINDS",
    "LARGE_BODY_CHUNK",
    "MAX_LARGE_BODY",
    "MIN_LARGE_BODY",
    "SLOW_BODY_CHUNKS",
    "X_ENDPOINTS",
    "Fault",
    "FaultQueue",
    "large_body_chunks",
    "parse_fault",
    "reply_bytes",
    "slow_body_chunks",
]
