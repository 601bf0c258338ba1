"""Signing webhook events: ``X-Lightkeeper-Signature: t=UNIX_TIME,v1=HEX``.

HEX is the HMAC-SHA256, keyed with ``NOTIFY_WEBHOOK_SECRET``, of ``f"{t}.{raw body}"``. The time is signed
with the body, so a receiver can refuse an old ``t`` (a replayed request) as well as a forged body. The
scheme is Stripe's; :func:`verify` is what the README shows a receiver doing.
"""

from __future__ import annotations

import hashlib
import hmac
import time

SIGNATURE_HEADER = "X-Lightkeeper-Signature"
#: How old a signature :func:`verify` accepts by default: a retried event is signed afresh each attempt.
TOLERANCE_S = 300


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The hex HMAC-SHA256 of ``f"{timestamp}.{body}"``."""
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The ``X-Lightkeeper-Signature`` header value for ``body`` sent at ``timestamp`` (Unix seconds)."""
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, tolerance_s: int = TOLERANCE_S, now: float | None = None) -> bool:
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old (or ahead)."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    current = time.time() if now is None else now
    if abs(current - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(fields.get("v1", ""), signature(secret, timestamp, body))


__all__ = ["SIGNATURE_HEADER", "TOLERANCE_S", "sign", "signature", "verify"]
