"""ApiClient against a fake Lightspeed API at the httpx2 transport seam."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import httpx2
import pytest

from lightkeeper.errors import (
    AccessDenied,
    ProviderError,
    ProviderProtocolError,
    ProviderUnavailable,
    RateLimited,
)
from lightkeeper.lightspeed import Account, ApiClient
from tests.unit.conftest import RecordingClient

API_URL = "https://api.example.test"
ACCESS = "eyJhbGciOiJSUzI1NiJ9.eyJhY2N0IjoiOTg3NjUifQ.c2lnbmF0dXJlLXNpZ25hdHVyZS1zaWduYXR1cmU"
SERVER_NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

Handler = Callable[[httpx2.Request], httpx2.Response]
MakeApi = Callable[[Handler], tuple[ApiClient, list[httpx2.Request]]]


def reply(status: int, body: object, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, json=body, headers=headers)

    return handler


def raw(status: int, content: str, headers: dict[str, str] | None = None) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(
            status, content=content.encode(), headers={"Content-Type": "text/html", **(headers or {})}
        )

    return handler


def raising(exc_type: type[httpx2.TransportError], message: str) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise exc_type(message, request=request)

    return handler


@pytest.fixture
def make_api(recording_client: RecordingClient) -> MakeApi:
    def make(handler: Handler) -> tuple[ApiClient, list[httpx2.Request]]:
        http, seen = recording_client(handler)
        return ApiClient(http=http, api_url=API_URL + "/"), seen

    return make


@pytest.mark.parametrize("account_id", ["98765", 98765, " 98765 "])
def test_account_parses_string_and_integer_ids(make_api: MakeApi, account_id: object) -> None:
    body = {"Account": {"accountID": account_id, "name": "Corner Bikes", "link": {"@attributes": {}}}}
    api, seen = make_api(reply(200, body))
    assert api.account(ACCESS) == Account(account_id="98765", name="Corner Bikes")
    (request,) = seen
    assert request.method == "GET"
    assert str(request.url) == f"{API_URL}/API/V3/Account.json"
    assert request.headers["Authorization"] == f"Bearer {ACCESS}"


def test_account_accepts_a_list_of_one(make_api: MakeApi) -> None:
    api, _ = make_api(reply(200, {"Account": [{"accountID": "7", "name": "Solo"}]}))
    assert api.account(ACCESS) == Account(account_id="7", name="Solo")


def test_api_client_repr_is_plain(make_api: MakeApi) -> None:
    api, _ = make_api(reply(200, {}))
    assert repr(api) == f"ApiClient(api_url={API_URL!r})"


EXPIRED_TOKEN_BODY = {
    "error": "access_denied",
    "error_description": "The resource owner or authorization server denied the request.",
    "hint": "Access token could not be verified",
}

ERROR_CASES: list[tuple[str, Handler, type[ProviderError], tuple[str, ...]]] = [
    (
        "401 access_denied",
        reply(401, EXPIRED_TOKEN_BODY),
        AccessDenied,
        ("HTTP 401", "access_denied", "Access token could not be verified"),
    ),
    ("401 html", raw(401, "<h1>no</h1>"), AccessDenied, ("HTTP 401",)),
    (
        "401 echoing the token",
        reply(401, {"error": "access_denied", "hint": f"Token {ACCESS} could not be verified"}),
        AccessDenied,
        ("Token *** could not be verified",),
    ),
    (
        "429 seconds",
        reply(429, {}, {"Retry-After": "7", "X-LS-API-RateLimit-Type": "api-leaky-bucket"}),
        RateLimited,
        ("HTTP 429", "api-leaky-bucket", "retry after 7 s"),
    ),
    (
        "429 date",
        reply(
            429,
            {},
            {
                "Date": format_datetime(SERVER_NOW, usegmt=True),
                "Retry-After": format_datetime(SERVER_NOW + timedelta(seconds=45), usegmt=True),
            },
        ),
        RateLimited,
        ("retry after 45 s",),
    ),
    ("500", reply(500, {"message": "boom"}), ProviderUnavailable, ("HTTP 500", "boom")),
    ("503 html", raw(503, "<html>maintenance</html>"), ProviderUnavailable, ("HTTP 503", "not JSON")),
    (
        "404",
        reply(404, {"httpCode": "404", "httpMessage": "Not Found", "message": "Account not found"}),
        ProviderProtocolError,
        ("HTTP 404", "Account not found"),
    ),
    ("403", raw(403, "forbidden"), ProviderProtocolError, ("HTTP 403",)),
    ("garbage 200", raw(200, "<html>hi</html>"), ProviderProtocolError, ("no single Account",)),
    ("no Account", reply(200, {"Other": {}}), ProviderProtocolError, ("no single Account",)),
    (
        "two accounts",
        reply(200, {"Account": [{"accountID": "1"}, {"accountID": "2"}]}),
        ProviderProtocolError,
        (),
    ),
    ("no accountID", reply(200, {"Account": {"name": "x"}}), ProviderProtocolError, ("accountID",)),
    ("bool accountID", reply(200, {"Account": {"accountID": True}}), ProviderProtocolError, ("accountID",)),
    ("blank accountID", reply(200, {"Account": {"accountID": " "}}), ProviderProtocolError, ("accountID",)),
    (
        "name not text",
        reply(200, {"Account": {"accountID": "1", "name": 5}}),
        ProviderProtocolError,
        ("name",),
    ),
    (
        "timeout",
        raising(httpx2.ReadTimeout, "timed out"),
        ProviderUnavailable,
        ("did not answer in time", "account lookup"),
    ),
    (
        "connect error",
        raising(httpx2.ConnectError, "refused"),
        ProviderUnavailable,
        ("could not be reached",),
    ),
    (
        "token in exception text",
        raising(httpx2.ConnectError, f"Authorization: Bearer {ACCESS}"),
        ProviderUnavailable,
        ("ConnectError",),
    ),
]


@pytest.mark.parametrize(
    ("handler", "expected", "fragments"), [case[1:] for case in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_account_errors_are_typed_and_never_leak_the_token(
    make_api: MakeApi, handler: Handler, expected: type[ProviderError], fragments: tuple[str, ...]
) -> None:
    api, _ = make_api(handler)
    with pytest.raises(ProviderError) as caught:
        api.account(ACCESS)
    exc = caught.value
    assert type(exc) is expected
    for fragment in fragments:
        assert fragment in str(exc)
    for text in (str(exc), repr(exc)):
        assert ACCESS not in text
        assert ACCESS.split(".")[2] not in text


def test_rate_limit_retry_after_uses_seconds_or_server_date(make_api: MakeApi) -> None:
    api, _ = make_api(reply(429, {}, {"Retry-After": "7"}))
    with pytest.raises(RateLimited) as caught:
        api.account(ACCESS)
    assert caught.value.retry_after == 7.0

    date_only = {"Retry-After": format_datetime(SERVER_NOW + timedelta(seconds=45), usegmt=True)}
    api, _ = make_api(reply(429, {}, {**date_only, "Date": format_datetime(SERVER_NOW, usegmt=True)}))
    with pytest.raises(RateLimited) as caught:
        api.account(ACCESS)
    assert caught.value.retry_after == 45.0

    # A date with no reference to measure it from is not guessed at.
    api, _ = make_api(reply(429, {}, date_only))
    with pytest.raises(RateLimited) as caught:
        api.account(ACCESS)
    assert caught.value.retry_after is None


def test_timeout_chains_the_httpx_cause(make_api: MakeApi) -> None:
    api, _ = make_api(raising(httpx2.ConnectTimeout, "connect timed out"))
    with pytest.raises(ProviderUnavailable) as caught:
        api.account(ACCESS)
    assert isinstance(caught.value.__cause__, httpx2.ConnectTimeout)
