"""One webhook attempt at a time, each under its event's delivery lease.

The lease is taken by the database's clock and fenced by a token (``store/events.py``): two processes never
send the same attempt, and an outcome lands only under the lease it was given. One attempt has a total deadline,
``NOTIFY_TIMEOUT_S`` (connect, send and read together, ``deadline.py``); the lease is derived from it
(``NOTIFY_TIMEOUT_S`` + ``LEASE_MARGIN_S``), and an attempt starts only if the lease has the whole deadline and
``CUT_SLACK_S`` left. So a lease never runs out while its request is in flight, and an event is never in flight
twice: ``events retry`` on an event being sent is refused (``EventBusy``).

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
from .deadline import Deadline
from .signing import SIGNATURE_HEADER, sign

log = logging.getLogger(__name__)

EVENT_ID_HEADER = "X-Lightkeeper-Event-Id"
ATTEMPT_HEADER = "X-Lightkeeper-Attempt"
#: A receiver gets this long to answer, in all (NOTIFY_TIMEOUT_S's default); slow ones are retried like failed ones.
SEND_TIMEOUT_S = 10.0
#: The delivery lease is the send deadline plus this: time for the claim to return and the outcome to be written.
LEASE_MARGIN_S = 50.0
#: An attempt starts only with this much lease left beyond its deadline (the cut at the deadline takes a moment).
CUT_SLACK_S = 1.0
#: 2^60 x any base is far past every cap: the exponent stops there instead of overflowing a float.
_MAX_DOUBLINGS = 60


@dataclass(frozen=True)
class DeliveryPolicy:
    """Where events go, how they are signed, and when they are retried or given up."""

    url: str
    secret: str = field(repr=False)
    retry_base_s: float
    retry_cap_s: float
    give_up: timedelta
    timeout_s: float = SEND_TIMEOUT_S

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryPolicy:
        return cls(
            url=settings.notify_webhook_url,
            secret=settings.notify_webhook_secret.get_secret_value(),
            retry_base_s=settings.notify_retry_base_s,
            retry_cap_s=settings.notify_retry_cap_s,
            give_up=timedelta(seconds=settings.notify_give_up_s),
            timeout_s=settings.notify_timeout_s,
        )

    @property
    def lease(self) -> timedelta:
        """The delivery lease, derived from the deadline so that it always outlasts an attempt."""
        return timedelta(seconds=self.timeout_s + LEASE_MARGIN_S)

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
    """Sends due events, one lease at a time (the outbox's upkeep is ``upkeep.Upkeep``'s)."""

    def __init__(
        self, events: EventsRepo, http: httpx2.Client, policy: DeliveryPolicy, *, clock: Clock, owner: str
    ) -> None:
        self._events = events
        self._http = http
        self._policy = policy
        self._clock = clock
        self._owner = owner

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
        if record is None:  # pruned meanwhile: only settled events past NOTIFY_RETENTION_DAYS are
            raise EventNotFound(f"there is no event {event_id}")
        return record

    def _attempt(self, lease: EventLease) -> None:
        record = lease.record
        if lease.seconds_left() < self._policy.timeout_s + CUT_SLACK_S:  # the lease could run out mid-request
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
        deadline = Deadline(self._policy.timeout_s)
        timed_out = f"timed out (NOTIFY_TIMEOUT_S, {self._policy.timeout_s:g} s)"
        try:
            # Streamed and closed unread: a receiver's answer is its status, whatever body it sends.
            with (
                deadline,
                self._http.stream(
                    "POST",
                    self._policy.url,
                    content=body,
                    headers=headers,
                    timeout=self._policy.timeout_s,
                    extensions={"trace": deadline.trace},
                ) as response,
            ):
                status = response.status_code
        except httpx2.TimeoutException:
            return timed_out
        except httpx2.HTTPError as exc:
            return timed_out if deadline.passed else f"could not be sent ({type(exc).__name__})"
        return None if 200 <= status < 300 else f"the receiver answered HTTP {status}"


__all__ = [
    "ATTEMPT_HEADER",
    "CUT_SLACK_S",
    "EVENT_ID_HEADER",
    "LEASE_MARGIN_S",
    "SEND_TIMEOUT_S",
    "Deliverer",
    "DeliveryPolicy",
]
