"""CPU per refresh of a child process: runs over a full table and over an empty one, in alternation.

A child's CPU over N rows minus its CPU over none (start-up: imports, settings, the schema check), divided by N.
Start-up is about a second and this machine's CPU speed drifts by up to half from one minute to the next (the
same empty-table run measured 0.9 s, then 1.45 s), which is as much as 600 refreshes cost. So each full run
follows its own empty run, and each pair gives one sample: a drift hits both runs of a pair alike.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from . import report

T = TypeVar("T")


@dataclass
class Paired(Generic[T]):
    idle: list[T]  # the empty-table runs
    busy: list[T]  # the full-table runs, each right after the empty one of its pair
    per_refresh_ms: list[float]  # one sample per pair
    startup_s: float  # median CPU of the empty-table runs


def paired(
    repeats: int, what: str, n: int, *, empty: Callable[[], T], full: Callable[[], T], cpu_s: Callable[[T], float]
) -> Paired[T]:
    """``repeats`` pairs of (``empty()``, ``full()``); CPU per refresh of each pair, in ms."""
    pairs = report.repeat(repeats, f"{what}: empty table, then {n} rows", lambda: (empty(), full()))
    idle, busy = [pair[0] for pair in pairs], [pair[1] for pair in pairs]
    samples = [(cpu_s(done) - cpu_s(start)) / n * 1000 for start, done in pairs]
    return Paired(idle, busy, samples, report.median(cpu_s(run) for run in idle))


__all__ = ["Paired", "paired"]
