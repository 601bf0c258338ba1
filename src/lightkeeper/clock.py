"""The clock seam: logic takes ``now`` or a ``Clock``; only the edges read the wall clock."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    """The wall clock, timezone-aware UTC."""
    return datetime.now(UTC)


__all__ = ["Clock", "utcnow"]
