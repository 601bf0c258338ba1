"""Signing webhook events: ``X-Lightkeeper-Signature: t=UNIX_TIME,v1=HEX``.

HEX is the HMAC-SHA256, keyed with ``NOTIFY_WEBHOOK_SECRET``, of ``f"{t}.{raw body}"``. The time is signed
with the body, so a receiver can refuse an old ``t`` (a replayed request) as well as a forged body. The
scheme is Stripe's; :func:`verify` does what the README's ``verify(secret, body, signature)`` does for a
receiver (its arguments in this module's older order).
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
    """Whether ``header`` signs ``body`` with ``secret`` and is at most ``tolerance_s`` old (or ahead). False for
    anything malformed (non-ASCII, a missing field, a non-integer ``t``); never raises. Compares bytes."""
    try:
        fields = [part.strip().partition("=") for part in header.split(",")]
        times = [value for name, sep, value in fields if sep and name == "t"]
        candidates = [value.encode() for name, sep, value in fields if sep and name == "v1"]
        if len(times) != 1 or not (times[0].isascii() and times[0].isdigit()) or not candidates:
            return False
        timestamp = int(times[0])
        current = time.time() if now is None else now
        if abs(current - timestamp) > tolerance_s:
            return False
        expected = signature(secret, timestamp, body).encode()
        return any(hmac.compare_digest(expected, candidate) for candidate in candidates)
    except Exception:  # a verifier answers yes or no, whatever it is handed
        return False


__all__ = ["SIGNATURE_HEADER", "TOLERANCE_S", "sign", "signature", "verify"]
