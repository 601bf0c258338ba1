"""Webhook alerts to the host app: signing, delivery from the outbox under leases, the outbox's upkeep, and the
background loop.

Events are written by the store in the transaction of the change they report (``store/events.py``), in every
process. This component looks after them: the upkeep (``connection.error`` sweep, giving up, pruning) runs in
every ``serve`` and ``worker``; delivery, with NOTIFY_WEBHOOK_URL, sends them at least once, each attempt signed
(``X-Lightkeeper-Signature``) and cut at ``NOTIFY_TIMEOUT_S``, retried with backoff until ``NOTIFY_GIVE_UP_S``,
then ``dead``.
"""

from __future__ import annotations

from .deadline import Deadline
from .delivery import ATTEMPT_HEADER, EVENT_ID_HEADER, Deliverer, DeliveryPolicy
from .loop import DeliveryLoop
from .notifier import Notifier
from .signing import SIGNATURE_HEADER, sign, verify
from .upkeep import Tidied, Upkeep, UpkeepPolicy

__all__ = [
    "ATTEMPT_HEADER",
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "Deadline",
    "Deliverer",
    "DeliveryLoop",
    "DeliveryPolicy",
    "Notifier",
    "Tidied",
    "Upkeep",
    "UpkeepPolicy",
    "sign",
    "verify",
]
