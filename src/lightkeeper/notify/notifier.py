"""``Notifier``: the webhook outbox's upkeep and delivery wired from settings, as ``Keeper`` holds it.

Every process has one: the upkeep (``connection.error`` sweep, giving up and pruning) runs with or without
NOTIFY_WEBHOOK_URL; delivery only with it (``delivers``).
"""

from __future__ import annotations

import httpx2

from ..clock import Clock
from ..config import Settings
from ..errors import ConfigError
from ..store import EventRecord, EventsRepo
from .delivery import Deliverer, DeliveryPolicy
from .loop import DeliveryLoop
from .upkeep import Tidied, Upkeep, UpkeepPolicy


class Notifier:
    """Looks after the outbox and sends its events: a round now (``deliver``), one event again (``retry``), or
    in the background (``start``/``stop``)."""

    def __init__(
        self,
        events: EventsRepo,
        settings: Settings,
        *,
        clock: Clock,
        owner: str,
        user_agent: str,
        transport: httpx2.BaseTransport | None = None,
        poll_s: float | None = None,
    ) -> None:
        self.upkeep = Upkeep(events, UpkeepPolicy.from_settings(settings), clock=clock)
        self.http: httpx2.Client | None = None
        self.deliverer: Deliverer | None = None
        if settings.notify_webhook_url:
            # Its own client: the webhook receiver is not Lightspeed, and shares neither transport nor pool. No
            # keep-alive: each attempt opens its connection, which its deadline watches (``deadline``).
            self.http = httpx2.Client(
                transport=transport,
                headers={"User-Agent": user_agent},
                follow_redirects=False,
                limits=httpx2.Limits(max_keepalive_connections=0),
            )
            self.deliverer = Deliverer(
                events, self.http, DeliveryPolicy.from_settings(settings), clock=clock, owner=owner
            )
        self.loop = DeliveryLoop(self.upkeep, self.deliverer, poll_s=poll_s)

    @property
    def delivers(self) -> bool:
        """Whether this process sends events (NOTIFY_WEBHOOK_URL is set)."""
        return self.deliverer is not None

    def deliver(self) -> int:
        """One round here and now: the error sweep, tidying, then every due event; how many attempts were made
        (0 without a webhook)."""
        self.upkeep.sweep()
        self.upkeep.tidy()
        return self.deliverer.deliver_due() if self.deliverer is not None else 0

    def tidy(self) -> Tidied:
        return self.upkeep.tidy()

    def retry(self, event_id: str) -> EventRecord:
        if self.deliverer is None:
            raise ConfigError("NOTIFY_WEBHOOK_URL is not set, so no event can be sent")
        return self.deliverer.retry(event_id)

    def start(self) -> None:
        self.loop.start()

    def stop(self) -> None:
        self.loop.stop()

    def close(self) -> None:
        self.loop.stop()
        if self.http is not None:
            self.http.close()


__all__ = ["Notifier"]
