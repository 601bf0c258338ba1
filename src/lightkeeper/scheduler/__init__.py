"""Scheduling: cron ticks in-process on every replica (one run per tick), and the pg_cron bridge."""

from __future__ import annotations

from .trigger import due_tick, latest_tick, next_tick
from .worker import Worker, WorkerKeeper

__all__ = ["Worker", "WorkerKeeper", "due_tick", "latest_tick", "next_tick"]
