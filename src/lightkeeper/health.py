"""Health checks: the database answers, its schema is the code's, the scheduler loop is alive.

``/healthz`` shows every check by name and answers 503 when one fails. A process without a scheduler loop
(``serve --no-scheduler``, a library user) reports that check as "not running here", which is not a failure.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

log = logging.getLogger(__name__)

OK = "ok"


class SchedulerProbe(Protocol):
    """What the health check reads of a scheduler loop (``scheduler.LoopLiveness`` is one)."""

    stall_after_s: float

    def seconds_since_beat(self) -> float: ...
    def alive(self) -> bool: ...


@dataclass(frozen=True)
class Check:
    """One check's verdict: ``ok``, a short ``status`` word, and facts worth showing an operator."""

    ok: bool
    status: str
    facts: Mapping[str, object] = field(default_factory=dict)

    def document(self) -> dict[str, object]:
        return {"ok": self.ok, "status": self.status, **self.facts}


@dataclass(frozen=True)
class Health:
    """Every check by name; healthy when all are ``ok``. ``revision`` is the database's schema (if read)."""

    checks: Mapping[str, Check]
    revision: str | None = None
    expected: str | None = None

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks.values())

    def document(self) -> dict[str, object]:
        """The ``/healthz`` body; ``database``/``schema``/``expected_schema`` are kept for older clients."""
        body: dict[str, object] = {"status": "ok" if self.ok else "unavailable", "database": self._legacy()}
        if self.checks["database"].ok:
            body["schema"] = self.revision
        if not self.checks["migrations"].ok and self.checks["database"].ok:
            body["expected_schema"] = self.expected
        body["checks"] = {name: check.document() for name, check in self.checks.items()}
        return body

    def _legacy(self) -> str:
        if not self.checks["database"].ok:
            return "unreachable"
        return "ok" if self.checks["migrations"].ok else "schema behind"


def check(read_revision: Callable[[], str | None], head: str, scheduler: SchedulerProbe | None) -> Health:
    """Run every check: one read of the schema revision (it proves the database answers), the loop's beat."""
    checks: dict[str, Check] = {"scheduler": _scheduler(scheduler)}
    try:
        revision = read_revision()
    except Exception as exc:  # any database failure is "unreachable", said in one line without details
        log.warning("health check: database unreachable: %s", type(exc).__name__)
        checks |= {"database": Check(False, "unreachable"), "migrations": Check(False, "unknown")}
        return Health(_ordered(checks), expected=head)
    checks["database"] = Check(True, OK)
    current = revision == head
    facts = {"revision": revision, "expected": head}
    checks["migrations"] = Check(current, OK if current else "behind", facts)
    return Health(_ordered(checks), revision=revision, expected=head)


def _scheduler(probe: SchedulerProbe | None) -> Check:
    if probe is None:
        return Check(True, "not running here")
    alive = probe.alive()
    facts = {"seconds_since_iteration": round(probe.seconds_since_beat(), 3), "stall_after_s": probe.stall_after_s}
    return Check(alive, OK if alive else "stalled", facts)


def _ordered(checks: dict[str, Check]) -> dict[str, Check]:
    return {name: checks[name] for name in ("database", "migrations", "scheduler")}


__all__ = ["Check", "Health", "SchedulerProbe", "check"]
