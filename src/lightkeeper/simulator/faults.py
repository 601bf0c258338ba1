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

``FaultQueue`` holds the queued faults and hands each request the one it must suffer; ``app.py`` applies it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

from lightkeeper.simulator.replies import (
    JsonDict,
    Reply,
    SimulatorError,
    access_denied,
    int_value,
    invalid_client,
    invalid_refresh_token,
    ls_error,
)

FAULT_ENDPOINTS: tuple[str, ...] = ("token", "api", "revoke")
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
)
# Kinds that only make sense on some endpoints (the rest go anywhere).
_KIND_ENDPOINTS: dict[str, tuple[str, ...]] = {
    "html_401": ("token", "revoke"),
    "invalid_grant_401": ("token", "revoke"),
    "invalid_client_json": ("token", "revoke"),
    "no_expires_in": ("token",),
    "stall_after_issue": ("token",),
}
# Kinds whose status is part of their definition; the listing shows it, a different one is refused.
_KIND_STATUS: dict[str, int] = {"html_401": 401, "invalid_grant_401": 401, "invalid_client_json": 401}
# What an nginx-style gateway in front of the provider answers; no OAuth JSON to parse.
_GATEWAY_401 = (
    "<html><head><title>401 Authorization Required</title></head>"
    "<body><center><h1>401 Authorization Required</h1></center></body></html>"
)
# Kinds that let the real handler run and then change or delay its answer.
_RUNS_HANDLER = frozenset({"timeout", "no_expires_in", "stall_after_issue"})
# Kinds that hold the real answer for ``seconds`` once the operation is done.
_HOLDS = frozenset({"timeout", "stall_after_issue"})


@dataclass
class Fault:
    """One queued failure for the next ``count`` requests to ``endpoint``."""

    endpoint: str
    kind: str
    status: int = 503
    retry_after: int | None = None
    count: int = 1
    # How long a "timeout" or "stall_after_issue" fault holds the response (30 s; tests may shorten it).
    seconds: float = 30.0

    @property
    def runs_handler(self) -> bool:
        """True when the real operation must still happen (state changes) before the fault applies."""
        return self.kind in _RUNS_HANDLER

    @property
    def holds(self) -> bool:
        """True when the answer, ready, is held ``seconds`` before it is sent."""
        return self.kind in _HOLDS

    def alter(self, real: Reply) -> Reply:
        """The answer for a ``runs_handler`` kind, given the real one."""
        if self.kind == "no_expires_in" and real.status == 200 and isinstance(real.body, dict):
            body = {key: value for key, value in real.body.items() if key != "expires_in"}
            return Reply(real.status, body, dict(real.headers), real.media_type)
        return real

    def reply(self) -> Reply:
        """The canned answer for the kinds that replace the real one."""
        if self.kind == "garbage":
            # Claims JSON but is cut off mid-object: the client's JSON parsing must not crash it.
            return Reply(200, '{"token_type":"Bearer","access_tok', media_type="application/json")
        if self.kind == "rate_limit":
            headers = {"Retry-After": str(self.retry_after or 1)}
            if self.endpoint == "api":
                headers["X-LS-API-RateLimit-Type"] = "api-burst-limiter"
            return Reply(429, ls_error(429, "Too Many Requests", "Rate limit exceeded"), headers)
        reply = self._status_reply()
        if self.retry_after is not None:
            reply.headers["Retry-After"] = str(self.retry_after)
        return reply

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
        if self.status >= 500:
            # Gateways in front of the real provider answer 5xx with HTML, not OAuth JSON.
            page = f"<html><body><h1>{self.status} Simulated failure</h1></body></html>"
            return Reply(self.status, page, media_type="text/html")
        body = {"error": "simulated_fault", "error_description": f"Injected {self.status}", "hint": ""}
        return Reply(self.status, body)


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
    return Fault(str(endpoint), str(kind), status, int_value(retry_after), count, float(seconds))


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
        """Count a request to ``endpoint`` and pop the fault it must suffer, if one is queued."""
        self._stats[f"{endpoint}_requests"] += 1
        for fault in self._faults:
            if fault.endpoint == endpoint:
                fault.count -= 1
                if fault.count <= 0:
                    self._faults.remove(fault)
                self._stats["faults_served"] += 1
                return Fault(**{**asdict(fault), "count": 1})
        return None

    def add(self, fault: Fault) -> JsonDict:
        """Queue ``fault``; returns the listing with it."""
        self._faults.append(fault)
        return self.listing()

    def listing(self) -> JsonDict:
        return {"faults": [asdict(f) for f in self._faults]}

    def clear(self) -> None:
        self._faults.clear()


__all__ = ["FAULT_ENDPOINTS", "FAULT_KINDS", "Fault", "FaultQueue", "parse_fault"]
