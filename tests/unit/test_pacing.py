"""``lightspeed.pacing.retry_once_after``: the one place a token request's ``Retry-After`` is handled."""

from __future__ import annotations

import pytest

from lightkeeper.errors import RateLimited
from lightkeeper.lightspeed.pacing import LocalSlots, Pacer, retry_once_after


class Recorder:
    def __init__(self, *answers: object) -> None:
        self.answers, self.calls, self.slept = list(answers), 0, []

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
