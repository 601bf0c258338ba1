"""``lightspeed.pacing.retry_once_after`` and ``retry_once_after_async``: the one place a token request's
``Retry-After`` is handled (one retry after a short wait, never a loop), on a thread and on an event loop."""

from __future__ import annotations

import asyncio
import time

import pytest

from lightkeeper.errors import RateLimited
from lightkeeper.lightspeed.pacing import LocalSlots, Pacer, retry_once_after, retry_once_after_async


class Recorder:
    def __init__(self, *answers: object) -> None:
        self.answers, self.calls = list(answers), 0
        self.slept: list[float] = []

    def send(self) -> str:
        self.calls += 1
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return str(answer)

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)


def pacer(recorder: Recorder, now: list[float]) -> Pacer:
    return Pacer(0, LocalSlots(lambda: now[0]), sleep=recorder.sleep, monotonic=lambda: now[0])


def test_a_short_retry_after_holds_then_retries_once() -> None:
    recorder, now = Recorder(RateLimited("429", retry_after=3), "pair"), [100.0]
    assert retry_once_after(recorder.send, pacer=pacer(recorder, now), max_wait=30) == "pair"
    assert recorder.calls == 2 and recorder.slept == [3]


@pytest.mark.parametrize("retry_after", [None, 31.0])
def test_no_or_too_long_a_retry_after_is_the_answer(retry_after: float | None) -> None:
    recorder = Recorder(RateLimited("429", retry_after=retry_after), "never")
    with pytest.raises(RateLimited):
        retry_once_after(recorder.send, pacer=pacer(recorder, [0.0]), max_wait=30)
    assert recorder.calls == 1 and recorder.slept == []


def test_the_retry_is_not_sent_when_the_caller_no_longer_may() -> None:
    recorder = Recorder(RateLimited("429", retry_after=1), "never")
    with pytest.raises(RateLimited):
        retry_once_after(recorder.send, pacer=pacer(recorder, [0.0]), max_wait=30, may_send=lambda: False)
    assert recorder.calls == 1


def test_a_second_429_is_not_retried_again() -> None:
    recorder = Recorder(RateLimited("429", retry_after=1), RateLimited("429 again", retry_after=1), "never")
    with pytest.raises(RateLimited, match="again"):
        retry_once_after(recorder.send, pacer=pacer(recorder, [0.0]), max_wait=30)
    assert recorder.calls == 2


# --- retry_once_after_async: the same rules on an event loop ---------------------------------------------

SHORT_S = 0.2  # a real wait: the async pacer sleeps with asyncio.sleep, on the monotonic clock it is given


async def _send_async(recorder: Recorder) -> str:
    """A new coroutine per call, as ``retry_once_after_async`` needs; answers like ``Recorder.send``."""
    await asyncio.sleep(0)
    return recorder.send()


def real_pacer(recorder: Recorder) -> Pacer:
    # ``sleep`` is the blocking one: the async path must never call it (it would stall every other worker).
    return Pacer(0, LocalSlots(), sleep=recorder.sleep)


def test_async_a_short_retry_after_holds_then_retries_once_without_blocking_the_loop() -> None:
    recorder = Recorder(RateLimited("429", retry_after=SHORT_S), "pair")
    ticks: list[float] = []

    async def go() -> tuple[str, float]:
        async def ticker() -> None:
            while True:
                ticks.append(time.monotonic())
                await asyncio.sleep(0.02)

        ticking = asyncio.create_task(ticker())
        started = time.monotonic()
        answer = await retry_once_after_async(
            lambda: _send_async(recorder), pacer=real_pacer(recorder), max_wait=30, may_send=lambda: True
        )
        elapsed = time.monotonic() - started
        ticking.cancel()
        return answer, elapsed

    answer, elapsed = asyncio.run(go())
    assert answer == "pair" and recorder.calls == 2
    assert elapsed >= SHORT_S and recorder.slept == []
    assert len(ticks) >= 5  # the loop kept running other tasks during the hold


def test_async_the_hold_is_seen_by_every_sender_sharing_the_slots() -> None:
    recorder, slots = Recorder(RateLimited("429", retry_after=SHORT_S), "pair"), LocalSlots()
    during_the_wait: list[float] = []

    async def send() -> str:
        if recorder.calls == 0:  # another sender looks at the shared slots while this one waits
            asyncio.get_running_loop().call_later(0.05, lambda: during_the_wait.append(slots.pending("refresh")))
        return await _send_async(recorder)

    pacer = Pacer(0, slots, sleep=recorder.sleep)
    assert asyncio.run(retry_once_after_async(send, pacer=pacer, max_wait=30, may_send=lambda: True)) == "pair"
    assert len(during_the_wait) == 1 and SHORT_S - 0.1 < during_the_wait[0] <= SHORT_S


@pytest.mark.parametrize("retry_after", [None, 31.0])
def test_async_no_or_too_long_a_retry_after_is_the_answer(retry_after: float | None) -> None:
    recorder, slots = Recorder(RateLimited("429", retry_after=retry_after), "never"), LocalSlots()
    pacer = Pacer(0, slots, sleep=recorder.sleep)
    started = time.monotonic()
    with pytest.raises(RateLimited):
        asyncio.run(
            retry_once_after_async(lambda: _send_async(recorder), pacer=pacer, max_wait=30, may_send=lambda: True)
        )
    assert recorder.calls == 1
    assert time.monotonic() - started < 1.0  # this caller does not wait: the 429 is its answer
    # ... but a Retry-After it could not wait out still holds every other sender until the provider's time.
    held = slots.pending("refresh")
    assert held == 0.0 if retry_after is None else 30.0 < held <= 31.0


def test_async_the_retry_is_not_sent_when_the_caller_no_longer_may() -> None:
    recorder = Recorder(RateLimited("429", retry_after=0.01), "never")
    asked: list[int] = []

    def may_send() -> bool:
        asked.append(recorder.calls)
        return False

    with pytest.raises(RateLimited):
        asyncio.run(
            retry_once_after_async(
                lambda: _send_async(recorder), pacer=real_pacer(recorder), max_wait=30, may_send=may_send
            )
        )
    assert recorder.calls == 1 and asked == [1]  # asked once, after the 429 and the wait


def test_async_a_second_429_is_not_retried_again() -> None:
    recorder = Recorder(RateLimited("429", retry_after=0.01), RateLimited("429 again", retry_after=0.01), "never")
    with pytest.raises(RateLimited, match="again"):
        asyncio.run(
            retry_once_after_async(
                lambda: _send_async(recorder), pacer=real_pacer(recorder), max_wait=30, may_send=lambda: True
            )
        )
    assert recorder.calls == 2
