"""The background loop of ``serve`` and ``worker``: the outbox's upkeep, and delivery when there is a webhook.

A daemon thread, so a process that is killed does not wait on it; ``stop`` ends it cleanly between
attempts (an attempt in flight finishes, bounded by NOTIFY_TIMEOUT_S). Any process may run one: leases
keep two from sending the same attempt, and the upkeep's statements skip rows another process holds.

With a webhook (a ``Deliverer``), each round sweeps for ``connection.error`` and sends what is due, every
``POLL_S``; without one, a round is the sweep alone, every ``UPKEEP_POLL_S``. Either way the outbox is tidied
(``Upkeep.tidy``) at the first round and then every ``TIDY_EVERY_S``.
"""

from __future__ import annotations

import logging
import threading
import time

from .delivery import Deliverer
from .upkeep import Upkeep

log = logging.getLogger(__name__)

#: How often a delivering loop looks for due events and connections to alert about.
POLL_S = 1.0
#: How often a loop without a webhook sweeps for connections to alert about.
UPKEEP_POLL_S = 30.0
#: How often the outbox is tidied (given up and pruned).
TIDY_EVERY_S = 60.0


class DeliveryLoop:
    def __init__(
        self,
        upkeep: Upkeep,
        deliverer: Deliverer | None,
        *,
        poll_s: float | None = None,
        tidy_every_s: float = TIDY_EVERY_S,
    ) -> None:
        self._upkeep = upkeep
        self._deliverer = deliverer
        self._poll_s = poll_s if poll_s is not None else (POLL_S if deliverer is not None else UPKEEP_POLL_S)
        self._tidy_every_s = tidy_every_s
        self._next_tidy = 0.0
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
        """One round: sweep, tidy when it is time, then deliver until nothing is due; how many attempts were made."""
        try:
            self._upkeep.sweep()
            if time.monotonic() >= self._next_tidy:
                self._next_tidy = time.monotonic() + self._tidy_every_s
                tidied = self._upkeep.tidy()
                if tidied.given_up or tidied.pruned:
                    log.info("webhook outbox: %d events given up, %d pruned", tidied.given_up, tidied.pruned)
            return self._deliverer.deliver_due(stop=self._stop) if self._deliverer is not None else 0
        except Exception as exc:  # a database or network hiccup must not end delivery for the process
            log.warning("webhook outbox round failed (%s); trying again in %g s", type(exc).__name__, self._poll_s)
            return 0

    def _run(self) -> None:
        while not self._stop.is_set():
            self.step()
            self._stop.wait(self._poll_s)


__all__ = ["POLL_S", "TIDY_EVERY_S", "UPKEEP_POLL_S", "DeliveryLoop"]
