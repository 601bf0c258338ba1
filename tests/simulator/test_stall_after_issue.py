"""The lost answer: ``stall_after_issue`` grants in full, then holds the answer; a client gone meanwhile
(killed, timed out) still caused the rotation, as at Lightspeed. Only the grace window gets the pair back.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import httpx2
import pytest

from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.simulator.test_strict import CLIENT, Tokens, connect, refresh, tokens_of, use

WAIT_S = 10.0


@pytest.fixture
def http(simulator_server: SimulatorServer, sim: SimulatorControl) -> Iterator[httpx2.Client]:
    with httpx2.Client(base_url=simulator_server.url, timeout=5.0) as client:
        yield client


def wait_until(predicate: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def abandoned_refresh(simulator_server: SimulatorServer, tokens: Tokens, *, timeout: float) -> None:
    """A refresh whose client gives up (and hangs up) after ``timeout`` seconds, before any answer."""
    data = {**CLIENT, "grant_type": "refresh_token", "refresh_token": tokens.refresh}
    with pytest.raises(httpx2.TimeoutException):
        httpx2.post(f"{simulator_server.url}/auth/oauth/token", data=data, timeout=timeout)


def test_the_pair_is_issued_before_the_answer_stalls(
    http: httpx2.Client, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    first = connect(http)
    sim.stall_after_issue(seconds=30)
    abandoned_refresh(simulator_server, first, timeout=0.5)

    assert sim.stats()["refreshes"] == 1  # rotated although nobody got the answer
    assert sim.faults() == {"faults": []}
    retried = tokens_of(refresh(http, first.refresh))  # the grace window: the old token still works once
    stats = sim.stats()
    assert (stats["refreshes_in_grace"], stats["reuse"], stats["invalid_grant"]) == (1, 1, 0)
    use(http, retried)
    assert refresh(http, first.refresh).status_code == 400  # grace over once the new access token is used


def test_a_client_gone_during_token_latency_still_rotates(
    http: httpx2.Client, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    """The request body is read on arrival: the grant happens after the latency whoever is still listening."""
    first = connect(http)
    sim.configure(token_latency_ms=600)
    abandoned_refresh(simulator_server, first, timeout=0.1)
    wait_until(lambda: sim.stats()["refreshes"] == 1, "the abandoned refresh to be granted")
    sim.configure(token_latency_ms=0)

    assert refresh(http, first.refresh).status_code == 200
    assert sim.stats()["refreshes_in_grace"] == 1


def test_a_stalled_answer_is_released_by_clear_faults(
    http: httpx2.Client, sim: SimulatorControl, simulator_server: SimulatorServer
) -> None:
    first = connect(http)
    sim.stall_after_issue(seconds=30)
    with httpx2.Client(base_url=simulator_server.url, timeout=20.0) as slow:
        result: list[httpx2.Response] = []
        sender = threading.Thread(target=lambda: result.append(refresh(slow, first.refresh)))
        sender.start()
        wait_until(lambda: sim.stats()["refreshes"] == 1, "the stalled grant")
        sim.clear_faults()
        sender.join(WAIT_S)
    [answer] = result
    assert tokens_of(answer).refresh != first.refresh  # the real, issued pair arrives late


@pytest.mark.parametrize("endpoint", ["api", "revoke"])
def test_stall_after_issue_applies_to_the_token_endpoint_only(sim: SimulatorControl, endpoint: str) -> None:
    with pytest.raises(httpx2.HTTPStatusError) as raised:
        sim.inject_fault(endpoint, "stall_after_issue")
    assert raised.value.response.status_code == 400
    assert "token only" in raised.value.response.text
    assert sim.faults() == {"faults": []}
