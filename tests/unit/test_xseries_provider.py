"""The X-Series provider against a fake store at the httpx2 transport seam: the domain prefix is checked before
any URL is built from it, token answers are read by ``expires``, and nothing but the store's own host is asked."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from lightkeeper.errors import ConnectFlowError, InvalidGrant, ProviderProtocolError, RateLimited, StockUnsupported
from lightkeeper.lightspeed.providers import Providers
from lightkeeper.lightspeed.xseries import XSeries, valid_prefix
from lightkeeper.providers import KNOWN
from tests.unit.conftest import Handler, RecordingClient

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SECRET = "x-client-secret-0123456789abcdef"
BASE = "https://{domain_prefix}.retail.example.test"
CONNECT = "https://secure.retail.example.test/connect"
REDIRECT = "https://app.example.test/oauth/callback"

#: Prefixes that would send the client secret and the code somewhere else, or are not a store's.
ATTACKS = [
    "evil.com#",
    "a.b",
    "x/../y",
    "%2e",
    "Store",
    "a" * 64,
    "store1\n",
    "",
    "-store",
    "store/x",
    "store@evil.com",
    "store:443",
    "st ore",
    "stóre",
]


def make(recording_client: RecordingClient, handler: Handler) -> tuple[XSeries, list[httpx2.Request]]:
    http, seen = recording_client(handler)
    provider = XSeries(
        http=http,
        client_id="x-client",
        client_secret=SECRET,
        redirect_uri=REDIRECT,
        connect_url=CONNECT,
        base_url=BASE,
        clock=lambda: NOW,
    )
    return provider, seen


def answer(status: int, body: object, headers: dict[str, str] | None = None) -> Handler:
    return lambda request: httpx2.Response(status, json=body, headers=headers)


def token_answer(**overrides: object) -> dict[str, object]:
    expires = int((NOW + timedelta(days=1)).timestamp())
    body: dict[str, object] = {
        "access_token": "x-access-1",
        "token_type": "Bearer",
        "expires": expires,
        "expires_in": 604_800,  # X-Series' examples disagree with `expires`: `expires` wins
        "refresh_token": "x-refresh-2",
        "domain_prefix": "store1",
    }
    return body | overrides


@pytest.mark.parametrize("prefix", ["store1", "a", "my-shop-22", "0", "a" * 63])
def test_a_store_prefix_is_lowercase_letters_digits_and_dashes(prefix: str) -> None:
    assert valid_prefix(prefix)


@pytest.mark.parametrize("prefix", ATTACKS)
def test_a_crafted_prefix_is_refused_before_anything_is_built(recording_client: RecordingClient, prefix: str) -> None:
    provider, seen = make(recording_client, answer(200, token_answer()))

    with pytest.raises(ConnectFlowError) as refused:
        provider.callback_account({"code": "c", "state": "s", "domain_prefix": prefix})
    with pytest.raises(ProviderProtocolError):
        provider.refresh("x-refresh-1", prefix)  # a stored row that is not a store's: never a URL either

    assert refused.value.code == "invalid_store" and seen == []
    assert not valid_prefix(prefix)


def test_the_code_goes_to_the_store_of_the_callback_as_a_form(recording_client: RecordingClient) -> None:
    provider, seen = make(recording_client, answer(200, token_answer()))
    account = provider.callback_account({"code": "c", "state": "s", "domain_prefix": "store1"})

    tokens = provider.exchange_code("the-code", code_verifier="unused", account=account)

    [sent] = seen
    assert str(sent.url) == "https://store1.retail.example.test/api/1.0/token"
    assert sent.headers["content-type"] == "application/x-www-form-urlencoded"
    form = {key: values[0] for key, values in parse_qs(sent.content.decode()).items()}
    assert form == {
        "client_id": "x-client",
        "client_secret": SECRET,
        "grant_type": "authorization_code",
        "code": "the-code",
        "redirect_uri": REDIRECT,
    }
    assert tokens.expires_at == NOW + timedelta(days=1)  # `expires`, not `expires_in`
    assert provider.identify(tokens, account) == "store1"


def test_a_refresh_trades_the_token_at_the_store_and_reads_expires(recording_client: RecordingClient) -> None:
    provider, seen = make(recording_client, answer(200, token_answer(expires=None, expires_in=3600)))

    tokens = provider.refresh("x-refresh-1", "store1")

    form = parse_qs(seen[0].content.decode())
    assert form["grant_type"] == ["refresh_token"] and form["refresh_token"] == ["x-refresh-1"]
    assert tokens.refresh_token == "x-refresh-2"
    assert tokens.expires_at == NOW + timedelta(hours=1)  # no usable `expires`: the relative lifetime


def test_a_dead_refresh_token_is_invalid_grant_without_the_token_in_the_message(
    recording_client: RecordingClient,
) -> None:
    provider, _ = make(recording_client, answer(400, {"error": "invalid_grant", "error_description": "x-refresh-1"}))

    with pytest.raises(InvalidGrant) as dead:
        provider.refresh("x-refresh-1", "store1")

    assert "x-refresh-1" not in str(dead.value) and SECRET not in str(dead.value)


def test_a_retry_after_date_is_read_as_seconds(recording_client: RecordingClient) -> None:
    later = "Sun, 01 Mar 2026 12:00:30 GMT"
    provider, _ = make(recording_client, answer(429, {"error": "rate_limited"}, {"Retry-After": later}))

    with pytest.raises(RateLimited) as limited:
        provider.refresh("x-refresh-1", "store1")

    assert limited.value.retry_after == pytest.approx(30, abs=1)


def test_the_authorize_url_names_the_client_redirect_and_state_on_the_connect_page() -> None:
    provider = XSeries(
        http=httpx2.Client(),
        client_id="x-client",
        client_secret=SECRET,
        redirect_uri=REDIRECT,
        connect_url=CONNECT,
        base_url=BASE,
        clock=lambda: NOW,
    )
    url = urlsplit(provider.authorize_url(state="state-123456", code_challenge="unused"))
    query = {key: values[0] for key, values in parse_qs(url.query).items()}

    assert f"{url.scheme}://{url.netloc}{url.path}" == CONNECT
    assert query == {
        "response_type": "code",
        "client_id": "x-client",
        "redirect_uri": REDIRECT,
        "state": "state-123456",
    }
    assert provider.form_origins() == ("https://secure.retail.example.test",)
    assert SECRET not in repr(provider)


def test_the_store_name_comes_from_the_retailer_endpoint(recording_client: RecordingClient) -> None:
    provider, seen = make(recording_client, answer(200, {"data": {"id": "r1", "name": "Corner Shop"}}))
    tokens = provider.refresh_request("r", "store1").parse(httpx2.Response(200, json=token_answer()))

    assert provider.account_name(tokens, "store1") == "Corner Shop"
    assert str(seen[0].url) == "https://store1.retail.example.test/api/2.0/retailer"
    assert seen[0].headers["authorization"] == "Bearer x-access-1"


def test_update_stock_points_at_the_proxy_for_an_x_series_store() -> None:
    provider = XSeries(
        http=httpx2.Client(),
        client_id="x",
        client_secret=SECRET,
        redirect_uri=REDIRECT,
        connect_url=CONNECT,
        base_url=BASE,
        clock=lambda: NOW,
    )

    class Record:
        id = 9
        account_id = "store1"

    with pytest.raises(StockUnsupported, match=r"/api/connections/9/lightspeed/api/2\.1/products"):
        provider.check_stock(Record())


def test_the_registry_names_what_is_not_configured() -> None:
    providers = Providers([], known=KNOWN)

    with pytest.raises(Exception, match="LIGHTSPEED_X_CLIENT_ID"):
        providers["x-series"]
    with pytest.raises(Exception, match="unknown provider"):
        providers["k-series"]
    assert providers.title("x-series") == "x-series" and json.dumps(list(providers)) == "[]"
