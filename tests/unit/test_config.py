"""config: one ConfigError naming every missing or malformed variable, never a value."""

from __future__ import annotations

from pathlib import Path

import pytest

from lightkeeper.config import REQUIRE_ALL, REQUIRE_NONE, Settings, check_cron, is_loopback_host, load_settings
from lightkeeper.crypto import generate_key
from lightkeeper.errors import ConfigError

KEY = generate_key()
GOOD = {
    "LIGHTSPEED_CLIENT_ID": "client-id",
    "LIGHTSPEED_CLIENT_SECRET": "client-secret-value",
    "TOKEN_ENCRYPTION_KEY": KEY,
}


def error_of(env: dict[str, str], **kwargs: object) -> str:
    with pytest.raises(ConfigError) as info:
        load_settings(env, **kwargs)  # type: ignore[arg-type]
    message = str(info.value)
    assert "\n" not in message  # one line, never pydantic's dump
    return message


# --- missing credentials ---


def test_all_missing_named_in_one_message() -> None:
    message = error_of({})
    assert message == (
        "Missing Lightspeed credentials: LIGHTSPEED_CLIENT_ID, LIGHTSPEED_CLIENT_SECRET, TOKEN_ENCRYPTION_KEY"
    )


def test_only_secret_missing() -> None:
    env = {**GOOD, "LIGHTSPEED_CLIENT_SECRET": ""}
    assert error_of(env) == "Missing Lightspeed credentials: LIGHTSPEED_CLIENT_SECRET"


def test_blank_value_counts_as_missing() -> None:
    env = {**GOOD, "LIGHTSPEED_CLIENT_ID": "   "}
    assert error_of(env) == "Missing Lightspeed credentials: LIGHTSPEED_CLIENT_ID"


def test_require_subset() -> None:
    settings = load_settings({"TOKEN_ENCRYPTION_KEY": KEY}, require={"TOKEN_ENCRYPTION_KEY"})
    assert settings.lightspeed_client_id == ""
    assert error_of({}, require={"TOKEN_ENCRYPTION_KEY"}) == ("Missing Lightspeed credentials: TOKEN_ENCRYPTION_KEY")


def test_require_none_accepts_empty_environment() -> None:
    settings = load_settings({}, require=REQUIRE_NONE)
    assert settings.token_encryption_key.get_secret_value() == ""


def test_require_rejects_unknown_names() -> None:
    with pytest.raises(ValueError, match="require"):
        load_settings({}, require={"DATABASE_URL"})


# --- malformed values ---


def test_malformed_values_reported_with_missing_ones() -> None:
    env = {
        "LIGHTSPEED_CLIENT_ID": "client-id",
        "REFRESH_DELAY_MS": "-5",
        "REFRESH_CONCURRENCY": "lots",
        "REFRESH_SCHEDULE": "61 * * * *",
        "LIGHTSPEED_OAUTH_URL": "ftp://cloud.example",
        "TOKEN_ENCRYPTION_KEY": "not-a-key",
    }
    message = error_of(env)
    missing, _, invalid = message.partition("; invalid: ")
    assert missing == "Missing Lightspeed credentials: LIGHTSPEED_CLIENT_SECRET"
    assert "TOKEN_ENCRYPTION_KEY (must be 32 bytes, base64 or hex)" in invalid
    assert "LIGHTSPEED_OAUTH_URL (must be an http(s) URL with a host)" in invalid
    assert "REFRESH_DELAY_MS (must be an integer >= 0)" in invalid
    assert "REFRESH_CONCURRENCY (must be an integer from 1 to 64)" in invalid
    assert "REFRESH_SCHEDULE (not a valid cron expression: " in invalid


def test_only_malformed_values() -> None:
    message = error_of({**GOOD, "REFRESH_CONCURRENCY": "0", "LOG_FORMAT": "xml"})
    assert message == (
        "Invalid settings: REFRESH_CONCURRENCY (must be an integer from 1 to 64), LOG_FORMAT (must be text or json)"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("REFRESH_LEASE_S", "9"),
        ("REFRESH_CONCURRENCY", "65"),
        ("REFRESH_DUE_AFTER", "-1"),
        ("REFRESH_DUE_AFTER", "2592000"),
        ("HTTP_TIMEOUT_S", "0"),
        ("HTTP_TIMEOUT_S", "nan"),
        ("TOKEN_REFRESH_LEEWAY_S", "1.5"),
        ("LOG_LEVEL", "TRACE"),
        ("LIGHTSPEED_API_URL", "https://"),
        ("LIGHTSPEED_REDIRECT_URI", "/oauth/callback"),
        ("LIGHTKEEPER_PUBLIC_URL", "example.com"),
        ("NOTIFY_WEBHOOK_URL", "http://host:99999/hook"),
        ("DATABASE_URL", "mysql://db/x"),
        ("REFRESH_SCHEDULE", "0 */6 * *"),
        ("REFRESH_SCHEDULE", "0 0 * * * *"),
        ("REFRESH_SCHEDULE", "0 0 30 2 *"),
        ("REFRESH_SCHEDULE", "@daily"),
    ],
)
def test_each_malformed_value_is_named(name: str, value: str) -> None:
    assert error_of({**GOOD, name: value}).startswith(f"Invalid settings: {name} (")


def test_bad_old_key_is_named_by_position() -> None:
    env = {**GOOD, "TOKEN_ENCRYPTION_OLD_KEYS": f"{generate_key()}, short"}
    assert error_of(env) == (
        "Invalid settings: TOKEN_ENCRYPTION_OLD_KEYS (each must be 32 bytes, base64 or hex: entry 2 fails, of 2)"
    )


def test_secret_values_never_in_message() -> None:
    secrets = {
        "LIGHTSPEED_CLIENT_SECRET": "hunter2-client-secret",
        "TOKEN_ENCRYPTION_KEY": "hunter2-key-material",
        "TOKEN_ENCRYPTION_OLD_KEYS": "hunter2-old-key",
        "DATABASE_URL": "mysql://user:hunter2-db-password@db/x",
        "LIGHTKEEPER_API_KEY": "hunter2-api-key",
        "NOTIFY_WEBHOOK_SECRET": "hunter2-webhook",
    }
    message = error_of({**secrets, "REFRESH_DELAY_MS": "hunter2"})
    assert "hunter2" not in message
    for name in ("TOKEN_ENCRYPTION_KEY", "TOKEN_ENCRYPTION_OLD_KEYS", "DATABASE_URL", "LIGHTKEEPER_API_KEY"):
        assert f"{name} (" in message
    assert "REFRESH_DELAY_MS (" in message


# --- values and defaults ---


def test_defaults() -> None:
    settings = load_settings(GOOD)
    assert settings.database_url == "sqlite:///lightkeeper.db"
    assert settings.lightspeed_oauth_url == "https://cloud.lightspeedapp.com"
    assert settings.lightspeed_api_url == "https://api.lightspeedapp.com"
    assert settings.lightspeed_redirect_uri == "http://127.0.0.1:8000/oauth/callback"
    assert settings.lightspeed_scope == "employee:all"
    assert settings.refresh_schedule == "0 */6 * * *"
    assert settings.refresh_delay_ms == 200
    assert settings.refresh_concurrency == 4
    assert settings.refresh_lease_s == 120
    assert settings.token_refresh_leeway_s == 300
    assert settings.http_timeout_s == 20.0
    assert (settings.log_level, settings.log_format) == ("INFO", "text")
    assert settings.notify_webhook_url == ""
    assert settings.lightkeeper_api_key.get_secret_value() == ""
    assert settings.public_url == "http://127.0.0.1:8000"
    assert settings.lightkeeper_app_name == "lightkeeper"
    assert settings.lightkeeper_max_body_bytes == 1_048_576
    assert settings.lightkeeper_max_stock_body_bytes == 4_194_304
    assert settings.lightkeeper_dev is False


def test_values_are_parsed_and_names_are_case_insensitive() -> None:
    env = {
        **GOOD,
        "refresh_delay_ms": "0",
        "Refresh_Concurrency": "64",
        "HTTP_TIMEOUT_S": "2.5",
        "LOG_LEVEL": "debug",
        "LOG_FORMAT": "JSON",
        "REFRESH_SCHEDULE": " 0  */3 * * * ",
        "LIGHTSPEED_API_URL": "http://127.0.0.1:9000/",
        "UNRELATED_VARIABLE": "ignored",
    }
    settings = load_settings(env)
    assert (settings.refresh_delay_ms, settings.refresh_concurrency, settings.http_timeout_s) == (0, 64, 2.5)
    assert (settings.log_level, settings.log_format) == ("DEBUG", "json")
    assert settings.refresh_schedule == "0 */3 * * *"
    assert settings.lightspeed_api_url == "http://127.0.0.1:9000"
    assert settings.lightspeed_client_secret.get_secret_value() == "client-secret-value"
    assert "client-secret-value" not in repr(settings)


def test_empty_variable_means_default() -> None:
    assert load_settings({**GOOD, "REFRESH_DELAY_MS": ""}).refresh_delay_ms == 200


def test_mapping_is_the_only_source(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LIGHTSPEED_CLIENT_ID", "from-os-environ")
    monkeypatch.setenv("REFRESH_DELAY_MS", "-1")
    (tmp_path / ".env").write_text("LIGHTSPEED_CLIENT_SECRET=from-dotenv\n")
    monkeypatch.chdir(tmp_path)
    assert error_of({}) == (
        "Missing Lightspeed credentials: LIGHTSPEED_CLIENT_ID, LIGHTSPEED_CLIENT_SECRET, TOKEN_ENCRYPTION_KEY"
    )


# --- public_url ---


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, "http://127.0.0.1:8000"),
        (
            {"LIGHTSPEED_REDIRECT_URI": "https://app.example.com/oauth/callback?x=1"},
            "https://app.example.com",
        ),
        (
            {"LIGHTSPEED_REDIRECT_URI": "https://user:pw@app.example.com:8443/oauth/callback"},
            "https://app.example.com:8443",
        ),
        ({"LIGHTSPEED_REDIRECT_URI": "http://[::1]:8000/oauth/callback"}, "http://[::1]:8000"),
        ({"LIGHTKEEPER_PUBLIC_URL": "https://connect.example.com/base/"}, "https://connect.example.com/base"),
    ],
)
def test_public_url(env: dict[str, str], expected: str) -> None:
    assert load_settings({**GOOD, **env}).public_url == expected


# --- .env file ---


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    (tmp_path / ".env").write_text(
        "LIGHTSPEED_CLIENT_ID=file-id\n"
        "LIGHTSPEED_CLIENT_SECRET=file-secret\n"
        f"TOKEN_ENCRYPTION_KEY={KEY}\n"
        "REFRESH_DELAY_MS=50\n"
        "SOMETHING_ELSE=1\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFRESH_DELAY_MS", "75")  # the process environment wins over the file
    settings = load_settings(env_file=".env")
    assert settings.lightspeed_client_id == "file-id"
    assert settings.lightspeed_client_secret.get_secret_value() == "file-secret"
    assert settings.refresh_delay_ms == 75


def test_dotenv_file_problems_are_reported(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    (tmp_path / ".env").write_text("LIGHTSPEED_CLIENT_ID=file-id\nREFRESH_SCHEDULE=every day\n")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(env_file=".env")
    assert str(info.value) == (
        "Missing Lightspeed credentials: LIGHTSPEED_CLIENT_SECRET, TOKEN_ENCRYPTION_KEY; "
        "invalid: REFRESH_SCHEDULE (not a valid cron expression: expected 5 fields, got 2)"
    )


def test_no_env_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in Settings.model_fields:
        monkeypatch.delenv(name.upper(), raising=False)
    (tmp_path / ".env").write_text("LIGHTSPEED_CLIENT_ID=file-id\n")
    monkeypatch.chdir(tmp_path)
    assert load_settings(env_file=None, require=REQUIRE_NONE).lightspeed_client_id == ""


# --- helpers ---


def test_with_overrides_validates() -> None:
    settings = load_settings(GOOD)
    changed = settings.with_overrides(refresh_delay_ms="0", lightspeed_client_secret="other")
    assert changed.refresh_delay_ms == 0
    assert changed.lightspeed_client_secret.get_secret_value() == "other"
    assert settings.refresh_delay_ms == 200
    with pytest.raises(ConfigError, match="REFRESH_DELAY_MS"):
        settings.with_overrides(refresh_delay_ms=-1)
    with pytest.raises(TypeError, match="no_such_field"):
        settings.with_overrides(no_such_field=1)


def test_check_cron_normalises() -> None:
    assert check_cron("0   */6 * * *") == "0 */6 * * *"
    assert {"LIGHTSPEED_CLIENT_ID", "LIGHTSPEED_CLIENT_SECRET", "TOKEN_ENCRYPTION_KEY"} == REQUIRE_ALL


# --- security rules (issue 9) ---


def test_api_key_must_be_at_least_32_characters() -> None:
    short = "s3cr3t-but-only-31-characters-x"
    assert len(short) == 31
    message = error_of({**GOOD, "LIGHTKEEPER_API_KEY": short})
    assert message == (
        "Invalid settings: LIGHTKEEPER_API_KEY (must be at least 32 characters (`lightkeeper gen-api-key` makes one))"
    )
    assert short not in message
    key = load_settings({**GOOD, "LIGHTKEEPER_API_KEY": short + "y"}).lightkeeper_api_key
    assert key.get_secret_value() == short + "y"


@pytest.mark.parametrize("name", ["LIGHTSPEED_OAUTH_URL", "LIGHTSPEED_API_URL"])
@pytest.mark.parametrize(
    "url",
    [
        "http://cloud.lightspeedapp.com",
        "http://10.0.0.5:9100",
        "http://[fd00::2]:9100",
        "http://localhost.evil.example",
        "http://127.0.0.1.nip.io",
        "HTTP://api.example",
    ],
)
def test_lightspeed_urls_must_be_https_unless_loopback(name: str, url: str) -> None:
    assert error_of({**GOOD, name: url}) == (
        f"Invalid settings: {name} (must be an https:// URL (plain http only for a loopback host))"
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://cloud.example",
        "http://127.0.0.1:9100",
        "http://127.1.2.3",
        "http://localhost:9100/",
        "http://LOCALHOST",
        "http://[::1]:9100",
    ],
)
def test_https_and_loopback_lightspeed_urls_are_accepted(url: str) -> None:
    settings = load_settings({**GOOD, "LIGHTSPEED_OAUTH_URL": url, "LIGHTSPEED_API_URL": url})
    assert settings.lightspeed_oauth_url == url.rstrip("/")


def test_the_redirect_uri_may_stay_plain_http_but_not_a_public_url_on_another_host() -> None:
    # Issue 19: a plain-http public URL elsewhere than this machine sends cookies without Secure and connect links
    # in clear text; it is refused as the Lightspeed URLs are.
    env = {"LIGHTSPEED_REDIRECT_URI": "http://shop.example/oauth/callback"}
    assert load_settings({**GOOD, **env}).public_url == "http://shop.example"
    with pytest.raises(ConfigError, match=r"LIGHTKEEPER_PUBLIC_URL \(must be an https:// URL"):
        load_settings({**GOOD, **env, "LIGHTKEEPER_PUBLIC_URL": "http://shop.example"})
    assert load_settings({**GOOD, "LIGHTKEEPER_PUBLIC_URL": "http://localhost:8000"}).public_url.startswith("http:")


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.255.0.9", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.2", False),
        ("localhost.example", False),
        ("", False),
        (None, False),
    ],
)
def test_is_loopback_host(host: str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


@pytest.mark.parametrize(
    ("name", "value", "rule"),
    [
        ("LIGHTKEEPER_MAX_BODY_BYTES", "100", "must be an integer from 1024 to 1073741824"),
        ("LIGHTKEEPER_MAX_STOCK_BODY_BYTES", "lots", "must be an integer from 1024 to 1073741824"),
        ("LIGHTKEEPER_APP_NAME", "x" * 101, "must be 1 to 100 characters"),
    ],
)
def test_new_settings_are_checked(name: str, value: str, rule: str) -> None:
    assert error_of({**GOOD, name: value}) == f"Invalid settings: {name} ({rule})"


def test_new_settings_are_read() -> None:
    env = {
        "LIGHTKEEPER_APP_NAME": " Acme Inventory ",
        "LIGHTKEEPER_MAX_BODY_BYTES": "2048",
        "LIGHTKEEPER_MAX_STOCK_BODY_BYTES": "8388608",
    }
    settings = load_settings({**GOOD, **env})
    assert settings.lightkeeper_app_name == "Acme Inventory"
    assert (settings.lightkeeper_max_body_bytes, settings.lightkeeper_max_stock_body_bytes) == (2048, 8_388_608)


def test_a_lease_shorter_than_one_refresh_names_the_three_numbers() -> None:
    message = error_of({**GOOD, "REFRESH_LEASE_S": "60", "HTTP_TIMEOUT_S": "20", "REFRESH_MAX_RETRY_AFTER_S": "30"})
    assert message == (
        "Invalid settings: REFRESH_LEASE_S (60 s is shorter than one refresh's worst case: 2 x HTTP_TIMEOUT_S "
        "(20 s) + REFRESH_MAX_RETRY_AFTER_S (30 s) = 70 s)"
    )


def test_a_lease_covering_the_worst_case_is_accepted() -> None:
    settings = load_settings(env={**GOOD, "REFRESH_LEASE_S": "70", "HTTP_TIMEOUT_S": "20"})
    assert settings.refresh_max_retry_after_s == 30 and settings.refresh_lease_s == 70
