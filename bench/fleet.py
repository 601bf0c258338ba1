"""Refresh policies for a whole fleet, simulated as pure functions: what Lightspeed would see over 7 days.

No network and no database: each policy is arithmetic on *cohorts* (connections last refreshed in the same
minute) and *paced stretches* (refreshes sent back to back at the pacing rate), so a million connections
over a week take well under a second. Policies, each against a budget of 5 refreshes/s (200 ms spacing):

* **guide: 6-hour burst** — the seed guide: at 00/06/12/18 every connection is refreshed, one after the other,
  200 ms apart, so a burst of N takes N/5 s. pg_cron starts each tick's function whether or not the previous
  one has finished and each paces only itself, so once N/5 s exceeds 6 h the bursts overlap and their rates add.
* **6-hour due** — a run every 10 minutes refreshes only connections last refreshed more than 21,600 s ago
  (``REFRESH_SCHEDULE='*/10 * * * *'``, ``REFRESH_DUE_AFTER=21600``), oldest first, paced at 5/s across the
  deployment; a tick that arrives while a run is still going is skipped (one running run per job).
* **7-day due** — the same with ``REFRESH_DUE_AFTER=604800``.
* **6 h runs of all, one pacer** — lightkeeper's defaults (the guide's schedule, ``REFRESH_DUE_AFTER=0``): every
  connection every 6 hours, but paced across the deployment and a tick skipped while the last run goes on.

Start: the fleet in its steady state, last refreshes spread evenly over the policy's period before t = 0.
Rates: the mean over the window; the peak over 1-second windows (the paces of all stretches going at once),
which is what the budget is checked against; and the busiest 1-minute and 1-hour windows (a run shorter than
a minute sends at 5/s but averages less over its minute). A refresh token's age is the time since its connection's last
refresh, at its next refresh or at the end of the week; Lightspeed drops one unused for 30 days. Ages are
exact for the guide and up to one minute high for the due policies (cohorts are minutes).

    python -m bench fleet [--sizes 10000,100000,1000000] [--days 7]
"""

from __future__ import annotations

import argparse
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass

MINUTE = 60
HOUR = 3600
SIX_HOURS = 21_600
DAY = 86_400
WEEK = 7 * DAY
TOKEN_LIFETIME_S = 30 * DAY  # an unused Lightspeed refresh token dies after 30 days
BUDGET = 5.0  # refreshes/s: one OAuth client at 200 ms spacing
TICK_S = 600  # the due policies' schedule: every 10 minutes

Cohort = tuple[float, int]  # (last refresh time, connections)


@dataclass(frozen=True)
class Outcome:
    """What one policy did to one fleet over the window."""

    policy: str
    connections: int
    window_s: int
    refreshes: int
    mean_rate: float  # refreshes/s over the window
    peak_second_rate: float  # refreshes/s in the busiest second (the pace of every stretch going at once)
    peak_minute_rate: float  # refreshes/s in the busiest 1-minute window
    peak_hour_rate: float  # refreshes/s in the busiest 1-hour window
    max_age_s: float  # the oldest a refresh token got
    burst_s: float | None = None  # the guide: how long one burst takes

    @property
    def within_budget(self) -> bool:
        return self.peak_second_rate <= BUDGET + 1e-9

    @property
    def inside_lifetime(self) -> bool:
        return self.max_age_s < TOKEN_LIFETIME_S

    @property
    def burst_fits(self) -> bool | None:
        return None if self.burst_s is None else self.burst_s <= SIX_HOURS


class Timeline:
    """Refreshes per 1-minute bucket over ``[0, window_s)``, filled by paced stretches in O(1) each."""

    def __init__(self, window_s: int, bucket_s: int = MINUTE) -> None:
        self.window_s, self.bucket_s = window_s, bucket_s
        self.buckets = math.ceil(window_s / bucket_s)
        self._full = [0.0] * (self.buckets + 1)  # difference array: whole buckets a stretch covers
        self._part = [0.0] * self.buckets  # the partly covered buckets at a stretch's ends
        self._edges: list[tuple[float, float]] = []  # (time, rate change): stretches starting and ending

    def add(self, start: float, count: float, rate: float) -> None:
        """``count`` refreshes sent evenly at ``rate``/s from ``start``; what falls outside the window is dropped."""
        low, high = max(start, 0.0), min(start + count / rate, float(self.window_s))
        if high <= low:
            return
        self._edges += [(low, rate), (high, -rate)]
        first, last = int(low // self.bucket_s), min(int(high // self.bucket_s), self.buckets - 1)
        if first == last:
            self._part[first] += (high - low) * rate
            return
        self._part[first] += ((first + 1) * self.bucket_s - low) * rate
        self._part[last] += (high - last * self.bucket_s) * rate
        self._full[first + 1] += self.bucket_s * rate
        self._full[last] -= self.bucket_s * rate

    def peak_pace(self) -> float:
        """The most refreshes/s sent at any moment: the paces of the stretches going at once, added up.

        Every second inside a stretch carries its pace, so this is the peak over 1-second windows."""
        pace = best = 0.0
        for _time, change in sorted(self._edges):  # at equal times the ending (negative) change comes first
            pace += change
            best = max(best, pace)
        return best

    def counts(self) -> list[float]:
        running, result = 0.0, []
        for full, part in zip(self._full, self._part, strict=False):
            running += full
            result.append(running + part)
        return result


def peak_rate(counts: Sequence[float], buckets: int, bucket_s: int = MINUTE) -> float:
    """Refreshes/s in the busiest window of ``buckets`` consecutive buckets (a sliding sum)."""
    width = min(buckets, len(counts))
    window = best = sum(counts[:width])
    for index in range(width, len(counts)):
        window += counts[index] - counts[index - width]
        best = max(best, window)
    return best / (width * bucket_s) if width else 0.0


def outcome(policy: str, connections: int, timeline: Timeline, max_age_s: float, **extra: float) -> Outcome:
    counts = timeline.counts()
    total = sum(counts)
    return Outcome(
        policy=policy,
        connections=connections,
        window_s=timeline.window_s,
        refreshes=round(total),
        mean_rate=total / timeline.window_s,
        peak_second_rate=timeline.peak_pace(),
        peak_minute_rate=peak_rate(counts, 1),
        peak_hour_rate=peak_rate(counts, HOUR // MINUTE),
        max_age_s=max_age_s,
        **extra,
    )


# -- the guide ------------------------------------------------------------------------------------------------


def largest_fitting_burst(period_s: int = SIX_HOURS, rate: float = BUDGET) -> int:
    """The most connections one burst at ``rate``/s refreshes within ``period_s``."""
    return int(period_s * rate)


def guide_burst(connections: int, *, window_s: int = WEEK, period_s: int = SIX_HOURS, rate: float = BUDGET) -> Outcome:
    """Every connection at every tick, each tick's burst paced on its own; bursts still going at t = 0 count."""
    burst_s = connections / rate
    timeline = Timeline(window_s)
    for start in range(-math.ceil(burst_s / period_s) * period_s, window_s, period_s):
        timeline.add(start, connections, rate)
    # Connection i is refreshed at (tick + i / rate) by every burst: always exactly one period after the last.
    return outcome("guide: 6-hour burst", connections, timeline, float(period_s), burst_s=burst_s)


# -- due-based spreading --------------------------------------------------------------------------------------


def steady_cohorts(connections: int, spread_s: float, bucket_s: int = MINUTE) -> deque[Cohort]:
    """Last refreshes spread evenly over ``[-spread_s, 0)``, one cohort a minute, oldest first."""
    buckets = max(1, math.ceil(spread_s / bucket_s))
    return deque(
        (-spread_s + index * spread_s / buckets, connections * (index + 1) // buckets - connections * index // buckets)
        for index in range(buckets)
    )


def take_due(cohorts: deque[Cohort], threshold: float) -> list[Cohort]:
    """Pop the cohorts last refreshed at or before ``threshold`` (they are oldest first)."""
    due = []
    while cohorts and cohorts[0][0] <= threshold:
        due.append(cohorts.popleft())
    return due


def paced_cohorts(start: float, count: int, rate: float, bucket_s: int = MINUTE) -> Iterable[Cohort]:
    """The cohorts a paced stretch leaves behind: one per minute of it, stamped with that minute's start."""
    per_bucket = max(1, int(rate * bucket_s))
    for offset in range(0, count, per_bucket):
        yield start + offset / rate, min(per_bucket, count - offset)


def oldest_at_refresh(start: float, due: Sequence[Cohort], rate: float) -> float:
    """The greatest age among ``due``, each cohort's last member refreshed at its place in the paced run."""
    sent, oldest = 0, 0.0
    for last_refresh, count in due:
        sent += count
        oldest = max(oldest, start + sent / rate - last_refresh)
    return oldest


def due_spreading(
    connections: int,
    *,
    due_after_s: int,
    window_s: int = WEEK,
    tick_s: int = TICK_S,
    rate: float = BUDGET,
    name: str | None = None,
) -> Outcome:
    """A run every ``tick_s`` refreshes what is due, oldest first, at ``rate``; ticks during a run are skipped.

    The fleet starts with its last refreshes spread over one due period (or one tick, if longer)."""
    cohorts = steady_cohorts(connections, max(due_after_s, tick_s))
    timeline, busy_until, max_age = Timeline(window_s), 0.0, 0.0
    for tick in range(0, window_s, tick_s):
        if tick < busy_until:
            continue
        due = take_due(cohorts, tick - due_after_s)
        count = sum(size for _time, size in due)
        if not count:
            continue
        max_age = max(max_age, oldest_at_refresh(tick, due, rate))
        timeline.add(tick, count, rate)
        cohorts.extend(paced_cohorts(tick, count, rate))
        busy_until = tick + count / rate
    if cohorts:  # never refreshed in the window: as old as the window's end makes them
        max_age = max(max_age, window_s - cohorts[0][0])
    label = name or f"{_duration(due_after_s)} due, {_duration(tick_s)} runs"
    return outcome(label, connections, timeline, max_age)


# -- the report -----------------------------------------------------------------------------------------------

Policy = Callable[[int, int], Outcome]

POLICIES: dict[str, Policy] = {
    "guide": lambda n, window: guide_burst(n, window_s=window),
    "due-6h": lambda n, window: due_spreading(n, due_after_s=SIX_HOURS, window_s=window),
    "due-7d": lambda n, window: due_spreading(n, due_after_s=WEEK, window_s=window),
    "all-6h": lambda n, window: due_spreading(
        n, due_after_s=0, tick_s=SIX_HOURS, window_s=window, name="6 h runs of all, one pacer"
    ),
}


def simulate(sizes: Sequence[int], window_s: int = WEEK) -> list[Outcome]:
    return [policy(n, window_s) for n in sizes for policy in POLICIES.values()]


def conclusion(outcomes: Sequence[Outcome]) -> list[str]:
    """Per size: the cheapest policy inside the budget and the 30 days, and which others pass too."""
    lines = []
    for n in sorted({o.connections for o in outcomes}):
        passing = sorted(
            (o for o in outcomes if o.connections == n and o.within_budget and o.inside_lifetime),
            key=lambda o: o.mean_rate,
        )
        if not passing:
            lines.append(f"{n:>9,} connections: no policy stays within {BUDGET:g}/s and inside 30 days")
            continue
        best, others = passing[0], ", ".join(o.policy for o in passing[1:]) or "none"
        share = best.mean_rate / BUDGET
        lines.append(
            f"{n:>9,} connections: {best.policy}, {best.mean_rate:.2f}/s mean ({share:.0%} of the budget); "
            f"also passing: {others}"
        )
    return lines


def _duration(seconds: float) -> str:
    for unit, size in (("d", DAY), ("h", HOUR), ("min", MINUTE)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}".replace(".0 ", " ")
    return f"{seconds:.0f} s"


def _age(seconds: float) -> str:
    return f"{seconds / DAY:.2f} d" if seconds >= DAY else f"{seconds / HOUR:.2f} h"


def _yes(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


def render(outcomes: Sequence[Outcome], elapsed_s: float) -> None:
    from . import report  # Rich only for the command, not for the pure functions and their tests

    rows = [
        (
            o.policy,
            f"{o.connections:,}",
            f"{o.refreshes:,}",
            f"{o.mean_rate:.2f}",
            f"{o.peak_second_rate:.2f}",
            f"{o.peak_minute_rate:.2f}",
            f"{o.peak_hour_rate:.2f}",
            _yes(o.within_budget),
            _age(o.max_age_s),
            _yes(o.inside_lifetime),
            "-" if o.burst_s is None else f"{_duration(o.burst_s)} ({_yes(o.burst_fits)})",
        )
        for o in outcomes
    ]
    columns = (
        "policy",
        "connections",
        "refreshes",
        "mean /s",
        "peak /s 1-s",
        "peak /s 1-min",
        "peak /s 1-h",
        "within 5/s",
        "max token age",
        "inside 30 d",
        "burst (fits 6 h)",
    )
    out = report.output()
    window = _duration(outcomes[0].window_s) if outcomes else "-"
    out.print(report.table(f"Refresh policies over {window}, budget {BUDGET:g} refreshes/s (simulated)", columns, rows))
    out.print(
        f"A 6-hour burst at {BUDGET:g}/s fits up to {largest_fitting_burst():,} connections (N takes N/{BUDGET:g} s)."
    )
    for line in conclusion(outcomes):
        out.print(line)
    out.print(f"simulated in {elapsed_s:.2f} s", style="dim")


def main(argv: Sequence[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench fleet", description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="10000,100000,1000000", help="fleet sizes (default 10000,100000,1000000)")
    parser.add_argument("--days", type=int, default=7, help="the simulated window (default 7)")
    args = parser.parse_args(argv)
    sizes = [int(part) for part in args.sizes.split(",") if part.strip()]
    if not sizes or min(sizes) < 1 or args.days < 1:
        parser.error("--sizes takes numbers >= 1, --days a number >= 1")
    started = time.perf_counter()
    outcomes = simulate(sizes, args.days * DAY)
    elapsed = time.perf_counter() - started
    render(outcomes, elapsed)
    from . import report

    records = [asdict(o) | {"within_budget": o.within_budget, "inside_lifetime": o.inside_lifetime} for o in outcomes]
    report.write_json(
        "fleet",
        {
            "budget": BUDGET,
            "peak_window": "1 minute",
            "outcomes": records,
            "conclusion": conclusion(outcomes),
            "elapsed_s": elapsed,
        },
    )
    return 0


__all__ = [
    "BUDGET",
    "POLICIES",
    "Outcome",
    "Timeline",
    "due_spreading",
    "guide_burst",
    "largest_fitting_burst",
    "paced_cohorts",
    "peak_rate",
    "simulate",
    "steady_cohorts",
    "take_due",
]
