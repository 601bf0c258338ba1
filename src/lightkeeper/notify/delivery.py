"""One webhook attempt at a time, each under its event's delivery lease.

The lease is taken by the database's clock and fenced by a token (``store/events.py``): two processes never
send the same attempt, and an outcome lands only under the lease it was given. An attempt starts only if the
lease has at least the send timeout left, so a lease never runs out while its request is in flight.

Failures back off ``NOTIFY_RETRY_BASE_S`` x 2^(n-1) after the n-th attempt, capped at ``NOTIFY_RETRY_CAP_S``;
the last retry lands on the event's ``NOTIFY_GIVE_UP_S`` deadline, and a failure then makes it ``dead``.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import httpx2

from ..clock import Clock
from ..config import Settings
from ..errors import EventBusy, EventNotFound
from ..store import EventLease, EventRecord, EventsRepo, EventStatus
from .signing import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Lightkeeper-Event-Id"
ATTEMPT_HEADER = "X-Lightkeeper-Attempt"
#: A receiver gets this long to answer; slow ones are retried like failed ones.
SEND_TIMEOUT_S = 10.0
#: The delivery lease: well over the send timeout, so a lease never runs out while its request is in flight.
EVENT_LEASE = timedelta(seconds=60)
#: 2^60 x any base is far past every cap: the exponent stops there instead of overflowing a float.
_MAX_DOUBLINGS = 60


@dataclass(frozen=True)
class DeliveryPolicy:
    """Where events go, how they are signed, and when they are retried or given up."""

    url: str
    secret: str = field(repr=False)
    error_after: timedelta
    retry_base_s: float
    retry_cap_s: float
    give_up: timedelta
    timeout_s: float = SEND_TIMEOUT_S
    lease: timedelta = EVENT_LEASE

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            url=settings.notify_webhook_url,
            secret=settings.notify_webhook_secret.get_secret_value(),
            error_after=timedelta(seconds=settings.notify_error_after_s),
            retry_base_s=settings.notify_retry_base_s,
            retry_cap_s=settings.notify_retry_cap_s,
            give_up=timedelta(seconds=settings.notify_give_up_s),
        )

    def backoff(self, attempts: int) -> timedelta:
        """How long to wait after the ``attempts``-th failed attempt."""
        doublings = min(max(attempts - 1, 0), _MAX_DOUBLINGS)
        return timedelta(seconds=min(self.retry_cap_s, self.retry_base_s * 2**doublings))

    def after_failure(self, record: EventRecord, now: datetime) -> tuple[EventStatus, datetime | None]:
        """The status and next attempt of an event whose attempt just failed."""
        if record.status is EventStatus.DELIVERED:  # a manual resend that failed: it did arrive before
            return EventStatus.DELIVERED, None
        deadline = record.created_at + self.give_up
        if now >= deadline:
            return EventStatus.DEAD, None
        return EventStatus.PENDING, min(now + self.backoff(record.attempts), deadline)


class Deliverer:
    """Sweeps for ``connection.error`` alerts and sends due events, one lease at a time."""

    def __init__(
        self, events: EventsRepo, http: httpx2.Client, policy: DeliveryPolicy, *, clock: Clock, owner: str
    ) -> None:
        self._events = events
        self._http = http
        self._policy = policy
        self._clock = clock
        self._owner = owner

    def sweep(self) -> int:
        """Write ``connection.error`` for connections in ``error`` longer than ``NOTIFY_ERROR_AFTER_S``."""
        now = self._clock()
        return len(self._events.sweep_errors(errored_before=now - self._policy.error_after, now=now))

    def deliver_due(self, *, limit: int = 100, stop: threading.Event | None = None) -> int:
        """Attempt due events until none is due, ``limit`` were attempted or ``stop`` is set; how many."""
        attempted = 0
        while attempted < limit and not (stop and stop.is_set()):
            lease = self._events.claim_next(owner=self._owner, lease=self._policy.lease, now=self._clock())
            if lease is None:
                break
            self._attempt(lease)
            attempted += 1
        return attempted

    def retry(self, event_id: str) -> EventRecord:
        """Send one event again now, whatever its status; its record after the attempt."""
        if self._events.get(event_id) is None:
            raise EventNotFound(f"there is no event {event_id}")
        lease = self._events.acquire(event_id, owner=self._owner, lease=self._policy.lease, now=self._clock())
        if lease is None:
            raise EventBusy(f"event {event_id} is being sent by another process right now; try again in a minute")
        self._attempt(lease)
        record = self._events.get(event_id)
        assert record is not None, "events are never deleted"
        return record

    def _attempt(self, lease: EventLease) -> None:
        record = lease.record
        if lease.seconds_left() < self._policy.timeout_s:  # the lease could run out mid-request
            self._events.unclaim(record.id, lease.token)
            log.warning("event %s: lease too short to send; left for the next round", record.id)
            return
        error = self._send(lease)
        now = self._clock()
        if error is None:
            self._events.delivered(record.id, lease.token, now=now)
            log.info("event %s (%s) delivered, attempt %d", record.id, record.type, lease.attempt)
            return
        status, retry_at = self._policy.after_failure(record, now)
        self._events.failed(record.id, lease.token, error=error, status=status, retry_at=retry_at)
        log.warning("event %s (%s) attempt %d failed: %s; now %s", record.id, record.type, lease.attempt, error, status)

    def _send(self, lease: EventLease) -> str | None:
        """POST the event's stored body, signed now; None on a 2xx, else a short reason (no URL, no body)."""
        body = lease.record.body.encode()
        headers = {
            "Content-Type": "application/json",
            SIGNATURE_HEADER: sign(self._policy.secret, int(time.time()), body),
            EVENT_ID_HEADER: lease.record.id,
            ATTEMPT_HEADER: str(lease.attempt),
        }
        try:
            # Streamed and closed unread: a receiver's answer is its status, whatever body it sends.
            with self._http.stream(
                "POST", self._policy.url, content=body, headers=headers, timeout=self._policy.timeout_s
            ) as response:
                status = response.status_code
        except httpx2.TimeoutException:
            return "timed out"
        except httpx2.HTTPError as exc:
            return f"could not be sent ({type(exc).__name__})"
        return None if 200 <= status < 300 else f"the receiver answered HTTP {status}"


__all__ = ["ATTEMPT_HEADER", "EVENT_ID_HEADER", "EVENT_LEASE", "SEND_TIMEOUT_S", "Deliverer", "DeliveryPolicy"]
