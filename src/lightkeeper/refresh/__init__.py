"""Refreshing connections: one at a time under a lease, or as a recorded run over many."""

from __future__ import annotations

from .pacing import Pacer
from .policy import Outcome
from .run import ProgressCallback, RunExecutor, RunOptions
from .single import Refresher

__all__ = ["Outcome", "Pacer", "ProgressCallback", "Refresher", "RunExecutor", "RunOptions"]
