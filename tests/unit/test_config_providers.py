"""Which providers a deployment uses, and what each needs: a provider is in use when its client id is set."""

from __future__ import annotations

import pytest

from lightkeeper.config import REQUIRE_ALL, load_settings
from lightkeeper.crypto import generate_key
from lightkeeper.errors import ConfigError
from lightkeeper.providers import in_use

KEY = generate_key()
R = {"LIGHTSPEED_CLIENT_ID": "r-client", "LIGHTSPEED_CLIENT_SECRET": "r-secret-value"}
X = {"LIGHTSPEED_X_CLIENT_ID": "x-client", "LIGHTSPEED_X_CLIENT_SECRET": "x-secret-value"}


def missing(env: dict[str, str]) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env, require=REQUIRE_ALL)
    return str(info.value)


def test_an_x_series_only_deployment_needs_no_r_series_credentials() -> None:
    settings = load_settings({**X, "TOKEN_ENCRYPTION_KEY": KEY}, require=REQUIRE_ALL)

    assert in_use(settings) == ["x-series"]
    assert settings.x_redirect_uri == settings.lightspeed_redirect_uri  # one callback route serves both


def test_with_no_provider_r_series_is_what_is_missing() -> None:
    assert missing({"TOKEN_ENCRYPTION_KEY": KEY}) == (
        "Missing Lightspeed credentials: LIGHTSPEED_CLIENT_ID, LIGHTSPEED_CLIENT_SECRET"
    )


def test_each_provider_in_use_needs_its_secret() -> None:
    assert missing({"LIGHTSPEED_X_CLIENT_ID": "x", "TOKEN_ENCRYPTION_KEY": KEY}) == (
        "Missing Lightspeed credentials: LIGHTSPEED_X_CLIENT_SECRET"
    )
    both = {**R, "LIGHTSPEED_X_CLIENT_ID": "x", "LIGHTSPEED_CLIENT_SECRET": ""}
    assert missing({**both, "TOKEN_ENCRYPTION_KEY": KEY}) == (
        "Missing Lightspeed credentials: LIGHTSPEED_CLIENT_SECRET, LIGHTSPEED_X_CLIENT_SECRET"
    )
    settings = load_settings({**R, **X, "TOKEN_ENCRYPTION_KEY": KEY}, require=REQUIRE_ALL)
    assert in_use(settings) == ["r-series", "x-series"]


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("https://retail.example.test", "must contain {domain_prefix} once"),
        ("https://{domain_prefix}.{domain_prefix}.example.test", "must contain {domain_prefix} once"),
        ("https://{domain_prefix}.example.test/{other}", "must contain {domain_prefix} once"),
        ("http://{domain_prefix}.retail.example.test", "must be an https:// URL"),
        ("ftp://{domain_prefix}.example.test", "must be an http(s) URL"),
        ("https://{domain_prefix}.example.test/?a=1", "must not have a query"),
    ],
)
def test_the_store_url_template_is_checked(value: str, reason: str) -> None:
    message = missing({**X, "TOKEN_ENCRYPTION_KEY": KEY, "LIGHTSPEED_X_BASE_URL": value})
    assert "LIGHTSPEED_X_BASE_URL" in message and reason in message


def test_a_loopback_store_url_may_be_plain_http_for_the_simulator() -> None:
    env = {**X, "TOKEN_ENCRYPTION_KEY": KEY, "LIGHTSPEED_X_BASE_URL": "http://127.0.0.1:9/x/{domain_prefix}/"}
    settings = load_settings(env, require=REQUIRE_ALL)
    assert settings.lightspeed_x_base_url == "http://127.0.0.1:9/x/{domain_prefix}"


def test_the_connect_page_must_be_https_unless_loopback() -> None:
    message = missing({**X, "TOKEN_ENCRYPTION_KEY": KEY, "LIGHTSPEED_X_CONNECT_URL": "http://evil.example/connect"})
    assert "LIGHTSPEED_X_CONNECT_URL (must be an https:// URL" in message


@pytest.mark.parametrize("value", ["3599", "2505601", "soon"])
def test_the_idle_guard_stays_under_thirty_days(value: str) -> None:
    message = missing({**X, "TOKEN_ENCRYPTION_KEY": KEY, "X_SERIES_MAX_IDLE_S": value})
    assert "X_SERIES_MAX_IDLE_S (must be a number of seconds from 3600 to 2505600" in message
