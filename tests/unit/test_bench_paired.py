"""``bench.paired``: CPU per refresh from alternating empty and full runs, one sample per pair."""

from __future__ import annotations

from collections.abc import Iterator

from bench.paired import paired


def runs(*cpu_s: float) -> Iterator[float]:
    yield from cpu_s


def test_each_pair_gives_one_sample_from_its_own_empty_run() -> None:
    # The machine slows down between the pairs: the second pair's start-up costs 0.5 s more.
    timeline = runs(1.0, 1.6, 1.5, 2.1, 1.0, 1.7)
    result = paired(3, "x", 600, empty=lambda: next(timeline), full=lambda: next(timeline), cpu_s=float)

    assert result.idle == [1.0, 1.5, 1.0] and result.busy == [1.6, 2.1, 1.7]
    assert [round(ms, 6) for ms in result.per_refresh_ms] == [1.0, 1.0, round(0.7 / 600 * 1000, 6)]
    assert result.startup_s == 1.0  # the median empty run


def test_runs_alternate_empty_then_full() -> None:
    order: list[str] = []

    def empty() -> float:
        order.append("empty")
        return 0.0

    def full() -> float:
        order.append("full")
        return 1.0

    paired(2, "x", 10, empty=empty, full=full, cpu_s=float)
    assert order == ["empty", "full", "empty", "full"]
