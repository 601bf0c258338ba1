"""Refresh policy and pacing: pure functions of their inputs, tested without I/O."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from lightkeeper.errors import InvalidClient, InvalidGrant, ProviderUnavailable, RateLimited
from lightkeeper.lightspeed.pacing import LocalSlots, Pacer
from lightkeeper.refresh import policy
from lightkeeper.store import ConnectionRecord, Status

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)

RECORD = ConnectionRecord(
    id=1,
    user_id="u",
    account_id="100001",
    account_name="Shop",
    status=Status.CONNECTED,
    access_token="lk1:x:y",
    refresh_token="lk1:x:z",
    token_expires_at=NOW + timedelta(hours=1),
    last_token_refresh_at=NOW,
    last_error=None,
    token_version=1,
    consecutive_failures=0,
    next_attempt_at=None,
    acquired_by=None,
    acquired_until=None,
    lease_token=None,
    claim_run_id=None,
    last_run_id=None,
    created_at=NOW,
    updated_at=NOW,
)


@pytest.mark.parametrize(("failures", "minutes"), [(1, 1), (2, 2), (3, 4), (6, 32), (7, 60), (50, 60)])
def test_backoff_doubles_up_to_an_hour(failures: int, minutes: int) -> None:
    assert policy.backoff(failures) == timedelta(minutes=minutes)


def test_retry_at_grows_with_consecutive_failures() -> None:
    third = replace(RECORD, consecutive_failures=2)
    assert policy.retry_at(third, ProviderUnavailable("503"), NOW) == NOW + timedelta(minutes=4)


def test_retry_at_honours_a_longer_retry_after() -> None:
    assert policy.retry_at(RECORD, RateLimited("429", retry_after=600), NOW) == NOW + timedelta(minutes=10)
    assert policy.retry_at(RECORD, RateLimited("429", retry_after=5), NOW) == NOW + timedelta(minutes=1)


def test_only_invalid_grant_is_fatal_for_a_connection() -> None:
    assert policy.is_fatal_for_connection(InvalidGrant("dead"))
    for error in (InvalidClient("x"), ProviderUnavailable("x"), RateLimited("x")):
        assert not policy.is_fatal_for_connection(error)


def test_automatic_runs_skip_connections_in_backoff_manual_runs_do_not() -> None:
    waiting = replace(RECORD, status=Status.ERROR, next_attempt_at=NOW + timedelta(seconds=1))
    assert policy.should_skip(waiting, "schedule", NOW)
    assert policy.should_skip(waiting, "sql", NOW)
    assert not policy.should_skip(waiting, "manual", NOW)
    assert not policy.should_skip(waiting, "schedule", NOW + timedelta(seconds=1))
    assert not policy.should_skip(RECORD, "schedule", NOW)


def test_needs_refresh_within_the_leeway() -> None:
    leeway = timedelta(minutes=5)
    assert not policy.needs_refresh(RECORD, NOW, leeway)
    assert policy.needs_refresh(RECORD, NOW + timedelta(minutes=55), leeway)
    assert policy.needs_refresh(replace(RECORD, token_expires_at=None), NOW, leeway)


def test_describe_never_shows_unknown_exception_text() -> None:
    assert "secret" not in policy.describe(ValueError("secret-token-value"))
    assert policy.describe(ProviderUnavailable("Lightspeed answered 503")) == "Lightspeed answered 503"


class FakeTime:
    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def monotonic(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def wait(pacer: Pacer, clock: FakeTime) -> float:
    """Take a slot and sleep until it, as a sender does; how long that took."""
    started = clock.now
    pacer.sleep_until(pacer.reserve())
    return clock.now - started


def test_pacer_spaces_calls_by_the_interval() -> None:
    clock = FakeTime()
    pacer = Pacer(0.2, LocalSlots(clock.monotonic), sleep=clock.sleep, monotonic=clock.monotonic)
    starts = []
    for _ in range(4):
        wait(pacer, clock)
        starts.append(clock.now)
    # The interval plus the jitter margin (10 %, at most 25 ms), so the gaps seen by Lightspeed stay >= 0.2 s.
    assert [round(b - a, 6) for a, b in itertools.pairwise(starts)] == [0.22, 0.22, 0.22]


def test_pacer_does_not_wait_when_calls_are_already_far_apart() -> None:
    clock = FakeTime()
    pacer = Pacer(0.2, LocalSlots(clock.monotonic), sleep=clock.sleep, monotonic=clock.monotonic)
    wait(pacer, clock)
    clock.now += 5
    assert wait(pacer, clock) == 0
    assert clock.slept == []


def test_pacer_hold_pauses_everyone() -> None:
    clock = FakeTime()
    pacer = Pacer(0, LocalSlots(clock.monotonic), sleep=clock.sleep, monotonic=clock.monotonic)
    pacer.hold(3)
    assert wait(pacer, clock) == pytest.approx(3)
