"""``Notifier``: webhook delivery wired from settings, as ``Keeper`` holds it when NOTIFY_WEBHOOK_URL is set."""

from __future__ import annotations

import httpx2

from ..clock import Clock
from ..config import Settings
from ..store import EventRecord, EventsRepo
from .delivery import Deliverer, DeliveryPolicy
from .loop import POLL_S, DeliveryLoop


class Notifier:
    """Sends the outbox's events: a round now (``deliver``), one event again (``retry``), or in the
    background (``start``/``stop``)."""

    def __init__(
        self,
        events: EventsRepo,
        settings: Settings,
        *,
        clock: Clock,
        owner: str,
        user_agent: str,
        transport: httpx2.BaseTransport | None = None,
        poll_s: float = POLL_S,
    ) -> None:
        policy = DeliveryPolicy.from_settings(settings)
        # Its own client: the webhook receiver is not Lightspeed, and shares neither transport nor pool.
        self.http = httpx2.Client(transport=transport, headers={"User-Agent": user_agent}, follow_redirects=False)
        self.deliverer = Deliverer(events, self.http, policy, clock=clock, owner=owner)
        self.loop = DeliveryLoop(self.deliverer, poll_s=poll_s)

    def deliver(self) -> int:
        """One round here and now: the error sweep, then every due event; how many attempts were made."""
        self.deliverer.sweep()
        return self.deliverer.deliver_due()

    def retry(self, event_id: str) -> EventRecord:
        return self.deliverer.retry(event_id)

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def close(self) -> None:
        self.loop.stop()
        self.http.close()


__all__ = ["Notifier"]
