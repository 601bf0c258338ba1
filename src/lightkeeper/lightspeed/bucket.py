"""Client-side pacing for Lightspeed's leaky bucket, per account and shared by a whole process.

Lightspeed meters each (account, client) with a leaky bucket: every request adds its cost, the level
drains at the drip rate, and a request that would overflow gets 429. The answer headers say where the
bucket stands (``X-LS-API-Bucket-Level: used/size``, ``X-LS-API-Drip-Rate``). Each request reserves its
cost here first and waits, if needed, until the bucket has drained enough: so a batch runs at the drip
rate and meets no 429 after the first bucketful. Costs and sizes come from the headers, never assumed.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

#: Until Lightspeed's headers say otherwise (docs/LIGHTSPEED.md: bucket 90, drip 1/s for one register).
DEFAULT_SIZE = 90.0
DEFAULT_DRIP = 1.0


@dataclass
class _Bucket:
    level: float = 0.0
    size: float = DEFAULT_SIZE
    drip: float = DEFAULT_DRIP
    at: float = 0.0  # monotonic time of ``level``

    def level_at(self, now: float) -> float:
        return max(0.0, self.level - (now - self.at) * self.drip)


def parse_bucket(headers: Mapping[str, str]) -> tuple[float, float] | None:
    """``(used, size)`` from ``X-LS-API-Bucket-Level: 11/90``, or None."""
    used, _, size = headers.get("x-ls-api-bucket-level", "").partition("/")
    try:
        return float(used), float(size)
    except ValueError:
        return None


def parse_float(headers: Mapping[str, str], name: str) -> float | None:
    try:
        return float(headers[name])
    except (KeyError, ValueError):
        return None


class BucketPacer:
    """Per-account leaky-bucket model; ``reserve`` blocks until a request of ``cost`` fits."""

    def __init__(
        self,
        *,
        headroom: float = 1.0,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.headroom = headroom  # keep this much free, against clock skew between us and Lightspeed
        self._monotonic, self._sleep = monotonic, sleep
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    def reserve(self, account_id: str, cost: float) -> float:
        """Wait until ``cost`` fits in the account's bucket and count it in; returns the wait."""
        with self._lock:
            bucket = self._bucket(account_id)
            now = self._monotonic()
            start = max(now, bucket.at)  # after the requests already booked ahead of us
            level = bucket.level_at(start)
            overflow = level + cost - (bucket.size - self.headroom)
            send_at = start + (max(0.0, overflow) / bucket.drip if bucket.drip > 0 else 0.0)
            bucket.level, bucket.at = bucket.level_at(send_at) + cost, send_at
        wait = send_at - now
        if wait > 0:
            self._sleep(wait)
        return max(0.0, wait)

    def observe(self, account_id: str, headers: Mapping[str, str]) -> None:
        """Take the bucket's size and drip rate from an answer's headers, and its level if that is higher.

        The level an answer reports leaves out the requests still in flight (booked here, sent by other
        threads, not yet counted by Lightspeed), so it may only raise the model, never lower it: a higher
        level means someone else spends the account's bucket (another process or client), or a request
        cost more than booked. Overestimates drain away at the drip rate.
        """
        reported = parse_bucket(headers)
        drip = parse_float(headers, "x-ls-api-drip-rate")
        with self._lock:
            bucket = self._bucket(account_id)
            if drip is not None and drip > 0:
                bucket.drip = drip
            if reported is None:
                return
            used, size = reported
            now = self._monotonic()
            at = max(now, bucket.at)  # requests may be booked ahead of now: compare at the last booking
            bucket.level = max(bucket.level_at(at), used - (at - now) * bucket.drip)
            bucket.at, bucket.size = at, size

    def _bucket(self, account_id: str) -> _Bucket:
        if account_id not in self._buckets:
            self._buckets[account_id] = _Bucket(at=self._monotonic())
        return self._buckets[account_id]

    def forget(self, account_id: str | None = None) -> None:
        """Drop what is known of one account's bucket (or of all): the next request starts from empty."""
        with self._lock:
            if account_id is None:
                self._buckets.clear()
            else:
                self._buckets.pop(account_id, None)

    def hold(self, account_id: str, retry_after: float, cost: float) -> None:
        """A 429 said "retry after ``retry_after`` s": nothing of the account goes out before then, and
        then the refused request (``cost``) fits and the others drip behind it."""
        with self._lock:
            bucket = self._bucket(account_id)
            until = max(bucket.at, self._monotonic() + max(0.0, retry_after))
            bucket.level = max(bucket.level_at(until), bucket.size - self.headroom - cost)
            bucket.at = until

    def full(self, account_id: str) -> None:
        """A 429 came that will not be waited out here: the bucket is full whatever we thought."""
        with self._lock:
            bucket = self._bucket(account_id)
            bucket.level, bucket.at = bucket.size, max(bucket.at, self._monotonic())


#: One pacer for the whole process: every client of an account shares its bucket.
PROCESS_PACER = BucketPacer()

__all__ = ["DEFAULT_DRIP", "DEFAULT_SIZE", "PROCESS_PACER", "BucketPacer", "parse_bucket"]
