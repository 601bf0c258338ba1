"""Refreshing connections: one at a time under a lease, or as a recorded run over many."""

from __future__ import annotations

from .locks import ConnectionLocks
from .ondemand import AccessGrant, TokenProvider
from .policy import Outcome
from .run import ProgressCallback, RunExecutor, RunOptions, stale_after_s
from .single import Refresher, RefreshResult

__all__ = [
    "AccessGrant",
    "ConnectionLocks",
    "Outcome",
    "ProgressCallback",
    "RefreshResult",
    "Refresher",
    "RunExecutor",
    "RunOptions",
    "TokenProvider",
    "stale_after_s",
]
