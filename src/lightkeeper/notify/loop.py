"""The background delivery loop of ``serve`` and ``worker``: sweep, deliver what is due, wait, again.

A daemon thread, so a process that is killed does not wait on it; ``stop`` ends it cleanly between
attempts (an attempt in flight finishes, bounded by the send timeout). Any process may run one: leases
keep two from sending the same attempt.
"""

from __future__ import annotations

import logging
import threading

from .delivery import Deliverer

log = logging.getLogger(__name__)

#: How often the loop looks for due events and connections to alert about.
POLL_S = 1.0


class DeliveryLoop:
    def __init__(self, deliverer: Deliverer, *, poll_s: float = POLL_S) -> None:
        self._deliverer = deliverer
        self._poll_s = poll_s
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        if self.running:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="webhooks", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Ask the loop to end and wait for it (at most ``timeout`` seconds)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def step(self) -> int:
        """One round: sweep, then deliver until nothing is due; how many attempts were made."""
        try:
            self._deliverer.sweep()
            return self._deliverer.deliver_due(stop=self._stop)
        except Exception as exc:  # a database or network hiccup must not end delivery for the process
            log.warning("webhook delivery round failed (%s); trying again in %g s", type(exc).__name__, self._poll_s)
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self._poll_s)


__all__ = ["POLL_S", "DeliveryLoop"]
