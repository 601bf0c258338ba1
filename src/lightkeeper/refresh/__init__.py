"""Refreshing connections: one at a time under a lease, or as a recorded run over many."""

from __future__ import annotations

from .locks import ConnectionLocks
from .ondemand import AccessGrant, TokenProvider
from .pacing import LocalSlots, Pacer, Slots
from .policy import Outcome
from .run import ProgressCallback, RunExecutor, RunOptions, stale_after_s
from .single import Refresher, RefreshResult

__all__ = [
    "AccessGrant",
    "ConnectionLocks",
    "LocalSlots",
    "Outcome",
    "Pacer",
    "ProgressCallback",
    "RefreshResult",
    "Refresher",
    "RunExecutor",
    "RunOptions",
    "Slots",
    "TokenProvider",
    "stale_after_s",
]
