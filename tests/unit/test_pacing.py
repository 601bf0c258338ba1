"""``lightspeed.pacing.retry_once_after`` and ``retry_once_after_async``: the one place a token request's
``Retry-After`` is handled (one retry after a short wait, never a loop), on a thread and on an event loop."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar

import pytest

from lightkeeper.errors import RateLimited
from lightkeeper.lightspeed.pacing import LocalSlots, Pacer, Stopped, retry_once_after, retry_once_after_async

T = TypeVar("T")


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


async def offload(fn: Callable[..., T], /, *args: Any) -> T:
    """As a run's ``DatabaseCalls``: the blocking call on a thread, never on the loop."""
    return await asyncio.to_thread(fn, *args)


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
            lambda: _send_async(recorder),
            pacer=real_pacer(recorder),
            max_wait=30,
            may_send=lambda: True,
            offload=offload,
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
    assert (
        asyncio.run(retry_once_after_async(send, pacer=pacer, max_wait=30, may_send=lambda: True, offload=offload))
        == "pair"
    )
    assert len(during_the_wait) == 1 and SHORT_S - 0.1 < during_the_wait[0] <= SHORT_S


@pytest.mark.parametrize("retry_after", [None, 31.0])
def test_async_no_or_too_long_a_retry_after_is_the_answer(retry_after: float | None) -> None:
    recorder, slots = Recorder(RateLimited("429", retry_after=retry_after), "never"), LocalSlots()
    pacer = Pacer(0, slots, sleep=recorder.sleep)
    started = time.monotonic()
    with pytest.raises(RateLimited):
        asyncio.run(
            retry_once_after_async(
                lambda: _send_async(recorder), pacer=pacer, max_wait=30, may_send=lambda: True, offload=offload
            )
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
                lambda: _send_async(recorder),
                pacer=real_pacer(recorder),
                max_wait=30,
                may_send=may_send,
                offload=offload,
            )
        )
    assert recorder.calls == 1 and asked == [1]  # asked once, after the 429 and the wait


def test_async_a_second_429_is_not_retried_again() -> None:
    recorder = Recorder(RateLimited("429", retry_after=0.01), RateLimited("429 again", retry_after=0.01), "never")
    with pytest.raises(RateLimited, match="again"):
        asyncio.run(
            retry_once_after_async(
                lambda: _send_async(recorder),
                pacer=real_pacer(recorder),
                max_wait=30,
                may_send=lambda: True,
                offload=offload,
            )
        )
    assert recorder.calls == 2


class ThreadNoting(LocalSlots):
    """Shared slots that note which thread calls them (``PacingRepo`` is a database: never on the loop)."""

    def __init__(self) -> None:
        super().__init__()
        self.threads: list[threading.Thread] = []

    def take(self, name: str, interval_s: float) -> float:
        self.threads.append(threading.current_thread())
        return super().take(name, interval_s)

    def hold(self, name: str, seconds: float) -> None:
        self.threads.append(threading.current_thread())
        super().hold(name, seconds)

    def hold_left(self, name: str) -> float:
        self.threads.append(threading.current_thread())
        return super().hold_left(name)


@pytest.mark.parametrize("interval_s", [0.0, 0.05])
def test_async_the_hold_and_the_new_slot_never_reach_the_store_on_the_loop(interval_s: float) -> None:
    """A 429 used to hold and take its retry's slot on the loop: a stalled database froze every worker."""
    recorder, slots = Recorder(RateLimited("429", retry_after=0.05), "pair"), ThreadNoting()
    loop_threads: list[threading.Thread] = []

    async def send() -> str:
        loop_threads.append(threading.current_thread())
        return await _send_async(recorder)

    pacer = Pacer(interval_s, slots, sleep=recorder.sleep)
    answer = asyncio.run(retry_once_after_async(send, pacer=pacer, max_wait=30, may_send=lambda: True, offload=offload))
    assert answer == "pair" and recorder.calls == 2
    assert slots.threads and loop_threads[0] not in slots.threads


def test_async_a_stop_during_the_hold_sends_nothing_more() -> None:
    """Ctrl-C during a Retry-After hold: the retry is not sent after the hold (nothing new starts)."""
    recorder = Recorder(RateLimited("429", retry_after=5), "never")
    stop = threading.Event()

    async def go() -> str:
        asyncio.get_running_loop().call_later(0.2, stop.set)
        return await retry_once_after_async(
            lambda: _send_async(recorder),
            pacer=real_pacer(recorder),
            max_wait=30,
            may_send=lambda: True,
            offload=offload,
            stopped=stop.is_set,
        )

    started = time.monotonic()
    with pytest.raises(Stopped):
        asyncio.run(go())
    assert recorder.calls == 1
    assert time.monotonic() - started < 3  # not the 5 s hold: the stop ended the wait


def test_a_retry_reached_late_takes_a_new_slot() -> None:
    """The retry's slot is exchanged when the caller reaches it later than the margin (a stall after the wait)."""
    now = [100.0]
    slots = LocalSlots(lambda: now[0])
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds + (1.0 if len(sleeps) == 1 else 0.0)  # the first wait overran by a second

    pacer = Pacer(0.5, slots, sleep=sleep, monotonic=lambda: now[0])
    answers = iter([RateLimited("429", retry_after=2), "pair"])

    def send() -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert retry_once_after(send, pacer=pacer, max_wait=30) == "pair"
    # The late slot was given up for a new one at the moment of the send: the next slot is a spacing after it.
    assert len(sleeps) == 1 and slots.pending("refresh") == pytest.approx(pacer.spacing_s)
