"""Refreshing connections: one at a time under a lease, or as a recorded run over many."""

from __future__ import annotations

from .pacing import Pacer
from .policy import Outcome
from .run import ProgressCallback, RunExecutor, RunOptions, stale_after_s
from .single import Refresher

__all__ = ["Outcome", "Pacer", "ProgressCallback", "Refresher", "RunExecutor", "RunOptions", "stale_after_s"]
