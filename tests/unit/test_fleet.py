"""The fleet simulation's policy functions (bench/fleet.py): pure arithmetic, checked against hand-worked cases."""

from __future__ import annotations

from collections import deque

import pytest
from bench.fleet import (
    BUDGET,
    DAY,
    SIX_HOURS,
    WEEK,
    Timeline,
    due_spreading,
    guide_burst,
    largest_fitting_burst,
    paced_cohorts,
    peak_rate,
    simulate,
    steady_cohorts,
    take_due,
)

# -- the timeline ---------------------------------------------------------------------------------------------


def test_a_paced_stretch_lands_whole_in_its_minutes() -> None:
    timeline = Timeline(600)
    timeline.add(30.0, 1000, 5.0)  # 200 s from t = 30: half of minute 0, minutes 1-2 whole, 50 s of minute 3
    counts = timeline.counts()
    assert counts[:5] == pytest.approx([150.0, 300.0, 300.0, 250.0, 0.0])
    assert sum(counts) == pytest.approx(1000)


def test_what_falls_outside_the_window_is_not_counted() -> None:
    timeline = Timeline(120)
    timeline.add(-60.0, 900, 5.0)  # t = -60 .. 120: only the last 120 s are inside
    assert sum(timeline.counts()) == pytest.approx(600)
    timeline.add(500.0, 10, 5.0)  # entirely after the window
    assert sum(timeline.counts()) == pytest.approx(600)


def test_overlapping_stretches_add_their_paces() -> None:
    timeline = Timeline(3600)
    timeline.add(0.0, 1000, 5.0)
    timeline.add(100.0, 1000, 5.0)
    timeline.add(2000.0, 10, 5.0)
    assert timeline.peak_pace() == pytest.approx(10.0)


def test_back_to_back_stretches_do_not_count_as_overlapping() -> None:
    timeline = Timeline(3600)
    timeline.add(0.0, 500, 5.0)
    timeline.add(100.0, 500, 5.0)  # starts the moment the first ends
    assert timeline.peak_pace() == pytest.approx(5.0)


def test_peak_rate_is_the_busiest_sliding_window() -> None:
    counts = [0.0, 60.0, 120.0, 0.0, 60.0]
    assert peak_rate(counts, 1) == pytest.approx(2.0)  # 120 in one minute
    assert peak_rate(counts, 2) == pytest.approx(1.5)  # 60 + 120 over two minutes


# -- cohorts --------------------------------------------------------------------------------------------------


def test_steady_cohorts_spread_every_connection_over_the_period_oldest_first() -> None:
    cohorts = steady_cohorts(1000, 600.0)
    assert len(cohorts) == 10
    assert sum(count for _t, count in cohorts) == 1000
    times = [t for t, _count in cohorts]
    assert times == sorted(times)
    assert times[0] == pytest.approx(-600.0)
    assert times[-1] < 0


def test_take_due_pops_only_cohorts_at_or_before_the_threshold() -> None:
    cohorts = deque([(-300.0, 5), (-200.0, 7), (-100.0, 9)])
    assert take_due(cohorts, -200.0) == [(-300.0, 5), (-200.0, 7)]
    assert list(cohorts) == [(-100.0, 9)]


def test_paced_cohorts_are_one_minute_of_sending_each() -> None:
    assert list(paced_cohorts(1000.0, 700, 5.0)) == [(1000.0, 300), (1060.0, 300), (1120.0, 100)]


# -- the guide's bursts ---------------------------------------------------------------------------------------


def test_a_burst_fits_in_six_hours_up_to_108000_connections() -> None:
    assert largest_fitting_burst() == 108_000
    assert guide_burst(108_000).burst_fits is True
    assert guide_burst(108_001).burst_fits is False


def test_the_guide_refreshes_every_connection_four_times_a_day_in_bursts_at_the_budget() -> None:
    outcome = guide_burst(10_000)
    assert outcome.refreshes == 10_000 * 4 * 7
    assert outcome.mean_rate == pytest.approx(10_000 * 4 / DAY)
    assert outcome.peak_second_rate == pytest.approx(BUDGET)
    assert outcome.peak_minute_rate == pytest.approx(BUDGET)
    assert outcome.max_age_s == SIX_HOURS
    assert outcome.within_budget and outcome.inside_lifetime


def test_bursts_that_no_longer_fit_overlap_and_their_rates_add() -> None:
    outcome = guide_burst(1_000_000)  # 200,000 s a burst: up to 10 going at once
    assert outcome.burst_s == pytest.approx(200_000)
    assert outcome.peak_second_rate == pytest.approx(10 * BUDGET)
    assert outcome.mean_rate == pytest.approx(1_000_000 * 4 / DAY)
    assert not outcome.within_budget


# -- due-based spreading --------------------------------------------------------------------------------------


def test_six_hour_due_keeps_a_small_fleet_near_six_hours_within_budget() -> None:
    outcome = due_spreading(10_000, due_after_s=SIX_HOURS)
    assert outcome.within_budget
    # Due after 6 h, picked up at the next 10-minute tick, sent within that run (~1 minute at this size).
    assert SIX_HOURS < outcome.max_age_s <= SIX_HOURS + 600 + 120
    assert outcome.mean_rate == pytest.approx(10_000 / SIX_HOURS, rel=0.05)


def test_six_hour_due_saturates_the_budget_at_a_million_and_the_age_grows_instead() -> None:
    outcome = due_spreading(1_000_000, due_after_s=SIX_HOURS)
    assert outcome.peak_second_rate == pytest.approx(BUDGET)
    assert outcome.mean_rate == pytest.approx(BUDGET, rel=0.01)
    assert outcome.max_age_s > 2 * DAY  # a full cycle at 5/s takes 1,000,000 / 5 s = 2.3 days
    assert outcome.inside_lifetime


def test_seven_day_due_refreshes_each_connection_about_once_a_week() -> None:
    outcome = due_spreading(100_000, due_after_s=WEEK)
    assert outcome.refreshes == pytest.approx(100_000, rel=0.01)
    assert outcome.mean_rate == pytest.approx(100_000 / WEEK, rel=0.01)
    assert WEEK < outcome.max_age_s <= WEEK + 600 + 120
    assert outcome.within_budget and outcome.inside_lifetime


def test_a_tick_during_a_run_is_skipped_not_doubled() -> None:
    # Everything is due at every 10-minute tick, but a run over 6,000 connections takes 1,200 s: every
    # other tick is skipped, so nobody is refreshed twice at once and the pace never exceeds the budget.
    outcome = due_spreading(6_000, due_after_s=0, tick_s=600, window_s=3_600)
    assert outcome.peak_second_rate == pytest.approx(BUDGET)
    assert outcome.refreshes == 6_000 * 3


def test_simulate_runs_every_policy_for_every_size() -> None:
    outcomes = simulate([1_000, 2_000], window_s=DAY)
    assert len(outcomes) == 2 * 4
    assert {o.connections for o in outcomes} == {1_000, 2_000}
    assert all(o.window_s == DAY for o in outcomes)
