"""Prometheus instruments, all on the default registry and prefixed ``lightkeeper_``.

Counters and histograms are per process (Prometheus sums replicas); the gauges read from the database
(connections by status, the oldest refresh token's age) come from ``DatabaseCollector``, one grouped query
cached for a few seconds, so every replica on one database exports the same values.

Refresh attempts are counted by ``outcome`` and a closed ``reason``. Every valid pair (``OUTCOME_REASONS``)
is exported from the start at 0, so a fresh process shows the whole series set and ``rate()`` sees the
first increment:

    refreshed  none
    expired    invalid_grant
    error      invalid_client, timeout, unreachable, server_error, rate_limited, bad_response,
               unknown_key, decrypt_failed, unexpected
    skipped    backoff, lease_too_short, lease_lost

Nothing here imports lightkeeper beyond the leaves: callers name outcomes and reasons as strings or
``Reason`` members, and hand the database read in as a function.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from .errors import (
    DecryptError,
    InvalidClient,
    InvalidGrant,
    ProviderError,
    ProviderProtocolError,
    ProviderUnavailable,
    RateLimited,
    UnknownKey,
)

log = logging.getLogger(__name__)

#: Lightspeed refresh tokens die after 30 days unused (docs/LIGHTSPEED.md): the limit alerts compare against.
REFRESH_TOKEN_MAX_AGE_S = 30 * 24 * 3600.0
#: How long one database read of the gauges serves scrapes (several scrapers, one query).
DATABASE_CACHE_S = 5.0


class Reason(StrEnum):
    """Why a refresh attempt ended as it did: a closed set, so the label never grows unbounded."""

    NONE = "none"
    INVALID_GRANT = "invalid_grant"
    INVALID_CLIENT = "invalid_client"
    TIMEOUT = "timeout"
    UNREACHABLE = "unreachable"
    SERVER_ERROR = "server_error"
    RATE_LIMITED = "rate_limited"
    BAD_RESPONSE = "bad_response"
    UNKNOWN_KEY = "unknown_key"
    DECRYPT_FAILED = "decrypt_failed"
    UNEXPECTED = "unexpected"
    BACKOFF = "backoff"
    LEASE_TOO_SHORT = "lease_too_short"
    LEASE_LOST = "lease_lost"


_ERROR_REASONS = (
    Reason.INVALID_CLIENT,
    Reason.TIMEOUT,
    Reason.UNREACHABLE,
    Reason.SERVER_ERROR,
    Reason.RATE_LIMITED,
    Reason.BAD_RESPONSE,
    Reason.UNKNOWN_KEY,
    Reason.DECRYPT_FAILED,
    Reason.UNEXPECTED,
)
#: Every (outcome, reason) pair that can be counted; each is exported at 0 from the start.
OUTCOME_REASONS: Mapping[str, tuple[Reason, ...]] = {
    "refreshed": (Reason.NONE,),
    "expired": (Reason.INVALID_GRANT,),
    "error": _ERROR_REASONS,
    "skipped": (Reason.BACKOFF, Reason.LEASE_TOO_SHORT, Reason.LEASE_LOST),
}

REFRESH_ATTEMPTS = Counter(
    "lightkeeper_refresh_attempts",
    "Refresh attempts by the outcome this process committed, and why.",
    ["outcome", "reason"],
)
REFRESH_SECONDS = Histogram(
    "lightkeeper_refresh_request_seconds",
    "Latency of token requests to Lightspeed (the HTTP call only).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30),
)
RUN_SECONDS = Histogram(
    "lightkeeper_run_duration_seconds",
    "Duration of refresh runs closed by this process, from start to finish.",
    buckets=(1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200),
)
SCHEDULER_LAST_TICK = Gauge(
    "lightkeeper_scheduler_last_tick_timestamp_seconds",
    "Unix time of this process's last scheduler loop iteration (0: no scheduler loop here).",
)
HTTP_REQUESTS = Counter(
    "lightkeeper_http_requests",
    "API and page requests by route template (never the raw path), method and status.",
    ["route", "method", "status"],
)
HTTP_SECONDS = Histogram(
    "lightkeeper_http_request_duration_seconds",
    "Time to answer requests, by route template and method.",
    ["route", "method"],
)
#: The methods counted by name; any other (a client may send any token as a method) counts as OTHER.
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
API_KEY_REQUESTS = Counter(
    "lightkeeper_api_key_requests",
    "Requests that presented a configured API key, by the key's name (never its value) and whether its scopes "
    "allowed them (allowed, insufficient_scope).",
    ["key", "result"],
)
API_KEY_RESULTS = ("allowed", "insufficient_scope")

PROXY_REQUESTS = Counter(
    "lightkeeper_proxy_requests",
    "Requests forwarded by the API proxy, by method (a closed set) and the status answered (a class or a code).",
    ["method", "status"],
)
PROXY_WAIT_SECONDS = Histogram(
    "lightkeeper_proxy_wait_seconds",
    "Time proxied requests waited for room in their account's bucket (or a 429's Retry-After) before leaving.",
    buckets=(0.001, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30),
)
PROXY_UPSTREAM_SECONDS = Histogram(
    "lightkeeper_proxy_upstream_seconds",
    "Latency of proxied requests at Lightspeed: from sending to the answer's headers.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
#: The methods the proxy forwards; anything else counts as OTHER, so no caller can add a label value.
PROXY_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
#: Statuses counted by their own code (the proxy's own answers among them); others by class ("2xx").
PROXY_CODES = frozenset({200, 201, 204, 304, 400, 401, 403, 404, 409, 413, 422, 429, 500, 502, 503, 504})

for _outcome, _reasons in OUTCOME_REASONS.items():
    for _reason in _reasons:
        REFRESH_ATTEMPTS.labels(_outcome, _reason.value)


def count_refresh(outcome: str, reason: Reason, n: int = 1) -> None:
    """Count ``n`` refresh outcomes, once each, after the write that records them committed."""
    if n > 0:
        REFRESH_ATTEMPTS.labels(outcome, reason.value).inc(n)


def observe_refresh_seconds(seconds: float) -> None:
    REFRESH_SECONDS.observe(seconds)


def observe_run(seconds: float) -> None:
    RUN_SECONDS.observe(max(0.0, seconds))


def scheduler_ticked() -> None:
    SCHEDULER_LAST_TICK.set(time.time())


def count_request(route: str, method: str, status: int, seconds: float) -> None:
    """One answered request. Every label comes from a closed set: ``route`` is a template (the caller's
    job), ``method`` one of ``HTTP_METHODS`` or OTHER, ``status`` an HTTP status code."""
    label = method if method in HTTP_METHODS else "OTHER"
    code = str(status) if 100 <= status <= 599 else "other"
    HTTP_REQUESTS.labels(route, label, code).inc()
    HTTP_SECONDS.labels(route, label).observe(seconds)


def known_api_keys(names: Iterable[str]) -> None:
    """Export the configured keys' series from 0 (the names are the only values the ``key`` label takes)."""
    for name in names:
        for result in API_KEY_RESULTS:
            API_KEY_REQUESTS.labels(name, result)


def count_api_key(name: str, result: str) -> None:
    """A request that presented the key named ``name``; ``result`` is one of ``API_KEY_RESULTS``."""
    API_KEY_REQUESTS.labels(name, result if result in API_KEY_RESULTS else "allowed").inc()


def count_proxied(method: str, status: int, *, wait_s: float | None, upstream_s: float | None) -> None:
    """One proxied request; ``wait_s`` and ``upstream_s`` when it was sent to Lightspeed."""
    label = method if method in PROXY_METHODS else "OTHER"
    PROXY_REQUESTS.labels(label, str(status) if status in PROXY_CODES else f"{status // 100}xx").inc()
    if wait_s is not None:
        PROXY_WAIT_SECONDS.observe(max(0.0, wait_s))
    if upstream_s is not None:
        PROXY_UPSTREAM_SECONDS.observe(max(0.0, upstream_s))


def failure_reason(error: BaseException) -> Reason:
    """The closed ``reason`` of a failed refresh, from the error's type (and its cause, for transport)."""
    if isinstance(error, UnknownKey):
        return Reason.UNKNOWN_KEY
    if isinstance(error, DecryptError):
        return Reason.DECRYPT_FAILED
    if isinstance(error, ProviderError):
        return _provider_reason(error)
    return Reason.UNEXPECTED


_PROVIDER_REASONS: tuple[tuple[type[ProviderError], Reason], ...] = (
    (InvalidGrant, Reason.INVALID_GRANT),
    (InvalidClient, Reason.INVALID_CLIENT),
    (RateLimited, Reason.RATE_LIMITED),
    (ProviderProtocolError, Reason.BAD_RESPONSE),
)


def _provider_reason(error: ProviderError) -> Reason:
    for kind, reason in _PROVIDER_REASONS:
        if isinstance(error, kind):
            return reason
    if isinstance(error, ProviderUnavailable):
        # The provider client raises ``from`` the transport's exception; a 5xx answer has no cause.
        cause = error.__cause__
        if cause is None:
            return Reason.SERVER_ERROR
        return Reason.TIMEOUT if _is_timeout(cause) else Reason.UNREACHABLE
    return Reason.BAD_RESPONSE


def _is_timeout(error: BaseException) -> bool:
    # By name, so this module needs no HTTP library: httpx2's TimeoutException and its subclasses.
    return isinstance(error, TimeoutError) or any("Timeout" in kind.__name__ for kind in type(error).__mro__)


# -- gauges read from the database ------------------------------------------------------------------


@dataclass(frozen=True)
class DatabaseSummary:
    """What one grouped query says: connections per status, and the oldest refresh of refreshable rows."""

    counts: Mapping[str, int]
    oldest_refresh: datetime | None
    #: Connections per (provider, status).
    by_provider: Mapping[tuple[str, str], int] = field(default_factory=dict)


class DatabaseCollector(Collector):
    """``lightkeeper_connections{provider,status}`` and the oldest refresh token's age, read through ``read``.

    One read serves every scrape for ``cache_s`` seconds; ``now`` is the clock ages are measured on.
    """

    def __init__(
        self,
        read: Callable[[], DatabaseSummary],
        *,
        statuses: Iterable[str],
        providers: Iterable[str],
        now: Callable[[], datetime],
        cache_s: float = DATABASE_CACHE_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read, self._now, self._cache_s, self._monotonic = read, now, cache_s, monotonic
        self._statuses, self._providers = tuple(statuses), tuple(providers)
        self._lock = threading.Lock()
        self._cached: tuple[float, list[Metric]] | None = None

    def describe(self) -> Iterator[Metric]:
        # Names only: registering must not query the database.
        yield from self._families(DatabaseSummary({}, None), with_samples=False)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            at = self._monotonic()
            if self._cached is None or at - self._cached[0] >= self._cache_s:
                try:
                    self._cached = (at, self._families(self._read(), with_samples=True))
                except Exception as exc:  # the rest of /metrics must still answer; /healthz says why
                    log.warning("metrics: cannot read the database gauges: %s", type(exc).__name__)
                    return iter([])
            return iter(self._cached[1])

    def _families(self, summary: DatabaseSummary, *, with_samples: bool) -> list[Metric]:
        connections = GaugeMetricFamily(
            "lightkeeper_connections",
            "Connections by provider and status, read from the database.",
            labels=["provider", "status"],
        )
        age = GaugeMetricFamily(
            "lightkeeper_oldest_refresh_token_age_seconds",
            "Seconds since the least recently refreshed connected/error connection was refreshed (0: none).",
        )
        limit = GaugeMetricFamily(
            "lightkeeper_refresh_token_max_age_seconds",
            "How old an unused Lightspeed refresh token may get before it dies (30 days).",
        )
        if with_samples:
            # Every known provider and status, zeros included: a closed label set (no value from outside).
            for provider in self._providers:
                for status in self._statuses:
                    connections.add_metric([provider, status], summary.by_provider.get((provider, status), 0))
            age.add_metric([], self._age(summary.oldest_refresh))
            limit.add_metric([], REFRESH_TOKEN_MAX_AGE_S)
        return [connections, age, limit]

    def _age(self, oldest: datetime | None) -> float:
        return 0.0 if oldest is None else max(0.0, (self._now() - oldest).total_seconds())


_database_lock = threading.Lock()
_database: DatabaseCollector | None = None


def watch_database(collector: DatabaseCollector) -> None:
    """Export ``collector`` from the default registry, in place of the one before (one a process)."""
    global _database  # the default registry is process-wide by design
    with _database_lock:
        if _database is not None:
            REGISTRY.unregister(_database)
        REGISTRY.register(collector)
        _database = collector


def unwatch_database(collector: DatabaseCollector) -> None:
    """Stop exporting ``collector`` (a closing ``Keeper``); another one registered since stays."""
    global _database
    with _database_lock:
        if _database is collector:
            REGISTRY.unregister(collector)
            _database = None


def serve_metrics(host: str, port: int) -> tuple[str, Callable[[], None]]:
    """Serve the default registry over HTTP on a daemon thread; its URL and a function that stops it."""
    server, thread = start_http_server(port, addr=host)
    bound_port = server.server_address[1]

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return f"http://{host}:{bound_port}/metrics", stop


__all__ = [
    "DATABASE_CACHE_S",
    "OUTCOME_REASONS",
    "REFRESH_TOKEN_MAX_AGE_S",
    "DatabaseCollector",
    "DatabaseSummary",
    "Reason",
    "count_api_key",
    "count_proxied",
    "count_refresh",
    "count_request",
    "failure_reason",
    "known_api_keys",
    "observe_refresh_seconds",
    "observe_run",
    "scheduler_ticked",
    "serve_metrics",
    "unwatch_database",
    "watch_database",
]
