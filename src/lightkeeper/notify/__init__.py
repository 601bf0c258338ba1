"""Webhook alerts to the host app: signing, delivery from the outbox under leases, and the background loop.

Events are written by the store in the transaction of the change they report (``store/events.py``); this
component sends them: at least once, each attempt signed (``X-Lightkeeper-Signature``), retried with
backoff until ``NOTIFY_GIVE_UP_S``, then ``dead``.
"""

from __future__ import annotations

from .delivery import ATTEMPT_HEADER, EVENT_ID_HEADER, Deliverer, DeliveryPolicy
from .loop import DeliveryLoop
from .notifier import Notifier
from .signing import SIGNATURE_HEADER, sign, verify

__all__ = [
    "ATTEMPT_HEADER",
    "EVENT_ID_HEADER",
    "SIGNATURE_HEADER",
    "Deliverer",
    "DeliveryLoop",
    "DeliveryPolicy",
    "Notifier",
    "sign",
    "verify",
]
