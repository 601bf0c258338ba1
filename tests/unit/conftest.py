"""Unit fixtures: an ``httpx2.Client`` on a ``MockTransport`` that records every request it answers."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import httpx2
import pytest

Handler = Callable[[httpx2.Request], httpx2.Response]
RecordingClient = Callable[[Handler], tuple[httpx2.Client, list[httpx2.Request]]]


@pytest.fixture
def recording_client() -> Iterator[RecordingClient]:
    """``recording_client(handler)``: a client answered by ``handler``, and the list of requests it saw."""
    clients: list[httpx2.Client] = []

    def make(handler: Handler) -> tuple[httpx2.Client, list[httpx2.Request]]:
        seen: list[httpx2.Request] = []

        def record(request: httpx2.Request) -> httpx2.Response:
            seen.append(request)
            return handler(request)

        http = httpx2.Client(transport=httpx2.MockTransport(record))
        clients.append(http)
        return http, seen

    yield make
    for http in clients:
        http.close()
