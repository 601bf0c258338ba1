"""The ``Settings`` model: every variable, its default, and its checks (``loading`` reads and reports them)."""

from __future__ import annotations

import ipaddress
from contextvars import ContextVar
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from ..apikeys import ALL_SCOPES, DEFAULT_NAME, ApiKey, ApiKeyError, parse_api_keys
from ..cron import check_cron
from ..errors import ConfigError
from ..keys import parse_key, split_keys

CLIENT_ID = "LIGHTSPEED_CLIENT_ID"
CLIENT_SECRET = "LIGHTSPEED_CLIENT_SECRET"
X_CLIENT_ID = "LIGHTSPEED_X_CLIENT_ID"
X_CLIENT_SECRET = "LIGHTSPEED_X_CLIENT_SECRET"
ENCRYPTION_KEY = "TOKEN_ENCRYPTION_KEY"
# The guide's "Missing Lightspeed Credentials" trio, in the order messages name them.
REQUIRE_ALL: frozenset[str] = frozenset({CLIENT_ID, CLIENT_SECRET, ENCRYPTION_KEY})
REQUIRE_NONE: frozenset[str] = frozenset()
_REQUIRE_ORDER = (CLIENT_ID, CLIENT_SECRET, ENCRYPTION_KEY)
#: Where ``LIGHTSPEED_X_BASE_URL`` puts an X-Series store's domain prefix.
X_PLACEHOLDER = "{domain_prefix}"
#: The web app's OAuth callback route: both redirect URIs must point at it.
CALLBACK_PATH = "/oauth/callback"


_KEY_RULE = "must be 32 bytes, base64 or hex"
_URL_RULE = "must be an http(s) URL with a host"
_TLS_RULE = "must be an https:// URL (plain http only for a loopback host)"
#: Shorter keys can be guessed or brute-forced over the network; `lightkeeper gen-key` makes a good one.
API_KEY_MIN_CHARS = 32
#: A webhook signing secret shorter than this could be guessed from signed events.
WEBHOOK_SECRET_MIN_CHARS = 16
_LOOPBACK_NAMES = frozenset({"localhost"})

#: REFRESH_DUE_AFTER's ceiling: a day under the 30 days after which Lightspeed lets an unused refresh token die.
DUE_AFTER_MAX_S = 29 * 86_400

# What to say when pydantic's own checks (types, bounds, choices) reject a value.
_RULES: dict[str, str] = {
    "refresh_delay_ms": "must be an integer >= 0",
    "refresh_concurrency": "must be an integer from 1 to 64",
    "refresh_due_after": f"must be a number of seconds from 0 to {DUE_AFTER_MAX_S} (29 days)",
    "refresh_lease_s": "must be an integer >= 10",
    "refresh_max_retry_after_s": "must be a number from 0 to 3600",
    "token_refresh_leeway_s": "must be an integer >= 0",
    "http_timeout_s": "must be a number > 0",
    "run_heartbeat_s": "must be a number from 0.1 to 300",
    "worker_poll_s": "must be a number from 0.05 to 60",
    "token_wait_s": "must be a number from 0.1 to 600",
    "log_level": "must be one of DEBUG, INFO, WARNING, ERROR",
    "log_format": "must be text or json",
    "lightkeeper_dev": "must be true or false",
    "lightkeeper_docs": "must be true or false",
    "lightkeeper_app_name": "must be 1 to 100 characters",
    "lightkeeper_max_body_bytes": "must be an integer from 1024 to 1073741824",
    "lightkeeper_max_stock_body_bytes": "must be an integer from 1024 to 1073741824",
    "notify_error_after_s": "must be an integer >= 0",
    "lightspeed_write_cost": "must be a number from 1 to 100",
    "proxy_max_wait_s": "must be a number from 0 to 300",
    "proxy_timeout_s": "must be a number > 0 and <= 600",
    "notify_retry_base_s": "must be a number > 0 and <= 86400",
    "notify_retry_cap_s": "must be a number > 0 and <= 86400",
    "notify_give_up_s": "must be an integer >= 1",
    "notify_timeout_s": "must be a number > 0 and <= 300",
    "notify_retention_days": "must be an integer from 1 to 3650",
    "x_series_max_idle_s": "must be a number of seconds from 3600 to 2505600 (29 days)",
}

# Set only while load_settings() builds from a mapping it has already gathered: then the environment and
# .env must not be consulted again (that is what makes ``load_settings(env=...)`` a hermetic test seam).
_ISOLATED: ContextVar[bool] = ContextVar("lightkeeper_settings_isolated", default=False)


class Settings(BaseSettings):
    """Every setting of lightkeeper; the README's Configuration section explains each one."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        case_sensitive=False,
        extra="ignore",
        frozen=True,
        hide_input_in_errors=True,  # a raw ValidationError must not print secrets either
    )

    lightspeed_client_id: str = ""
    lightspeed_client_secret: SecretStr = SecretStr("")
    token_encryption_key: SecretStr = SecretStr("")
    token_encryption_old_keys: SecretStr = SecretStr("")  # comma-separated, decrypt only

    database_url: str = "sqlite:///lightkeeper.db"
    lightspeed_oauth_url: str = "https://cloud.lightspeedapp.com"
    lightspeed_api_url: str = "https://api.lightspeedapp.com"
    lightspeed_redirect_uri: str = "http://127.0.0.1:8000/oauth/callback"
    lightspeed_scope: str = "employee:all"
    # X-Series (formerly Vend): in use when its client id is set. One callback route serves both providers (the
    # state says which one started the flow), so its redirect URI defaults to LIGHTSPEED_REDIRECT_URI.
    lightspeed_x_client_id: str = ""
    lightspeed_x_client_secret: SecretStr = SecretStr("")
    lightspeed_x_redirect_uri: str = ""
    lightspeed_x_connect_url: str = "https://secure.retail.lightspeed.app/connect"
    # Each store's host: {domain_prefix} is replaced by the store's (checked) prefix. Token endpoint: base +
    # /api/1.0/token; API: base + /api/2.0/.
    lightspeed_x_base_url: str = "https://{domain_prefix}.retail.lightspeed.app"
    # Runs refresh an X-Series connection only when its token would expire before the next tick (plus the
    # leeway) or when it was last refreshed longer ago than this: every X-Series refresh risks its chain.
    x_series_max_idle_s: int = Field(14 * 86_400, ge=3600, le=29 * 86_400)
    lightkeeper_public_url: str = ""  # empty: the origin of the redirect URI (see public_url)
    lightkeeper_api_key: SecretStr = SecretStr("")
    # Named keys with scopes: NAME:SCOPE[,SCOPE...]:KEY entries separated by ";" (see apikeys.py).
    lightkeeper_api_keys: SecretStr = SecretStr("")
    # Serve /docs and /redoc (they load scripts from a CDN): off unless asked for.
    lightkeeper_docs: bool = False
    # What the confirm page of a connect link calls the app the merchant is connecting to.
    lightkeeper_app_name: str = Field("lightkeeper", min_length=1, max_length=100)
    # Request bodies above these are refused with 413 as they stream in (chunked ones too).
    lightkeeper_max_body_bytes: int = Field(1_048_576, ge=1024, le=2**30)
    lightkeeper_max_stock_body_bytes: int = Field(4_194_304, ge=1024, le=2**30)

    # Cron (UTC) of the refresh job's ticks.
    refresh_schedule: str = "0 */6 * * *"
    # The least gap between refresh requests of every process sharing the database.
    refresh_delay_ms: int = Field(200, ge=0)
    # Automatic runs refresh only connections last refreshed longer ago than this (0: every connection, as the
    # seed guide does). Under 29 days, so a refresh token (dead after 30 days unused) always gets its turn.
    refresh_due_after: int = Field(0, ge=0, le=DUE_AFTER_MAX_S)
    # Refreshes in flight at once, per process.
    refresh_concurrency: int = Field(4, ge=1, le=64)
    # One refresh's lease: at least its worst case, 2 x HTTP_TIMEOUT_S + REFRESH_MAX_RETRY_AFTER_S (checked).
    refresh_lease_s: int = Field(120, ge=10)
    # The longest token-endpoint Retry-After a refresh waits out before leaving it to a later run.
    refresh_max_retry_after_s: float = Field(30.0, ge=0, le=3600, allow_inf_nan=False)
    # A token expiring sooner than this is refreshed before it is handed out.
    token_refresh_leeway_s: int = Field(300, ge=0)
    # The total deadline of one token request (connect, send, wait and read together).
    http_timeout_s: float = Field(20.0, gt=0, allow_inf_nan=False)
    # Where connect pages may send the merchant back to (origins, comma-separated); the public URL always.
    lightkeeper_return_to_origins: str = ""
    # A local development run: the JSON API works without LIGHTKEEPER_API_KEY (loopback only).
    lightkeeper_dev: bool = False
    # A running run beats this often; one silent for 3 beats (+5 s) is shown as interrupted.
    run_heartbeat_s: float = Field(10.0, ge=0.1, le=300, allow_inf_nan=False)
    # How long a caller of fresh_token waits for a refresh another caller is doing, at most.
    token_wait_s: float = Field(30.0, ge=0.1, le=600, allow_inf_nan=False)
    # How often a worker looks for ticks, requests and runs when no NOTIFY wakes it.
    worker_poll_s: float = Field(5.0, ge=0.05, le=60, allow_inf_nan=False)

    # What a write (POST, PUT, PATCH, DELETE) is booked at in an account's API bucket before it is sent: 1, plus
    # 0.5 per nested entity (docs/LIGHTSPEED.md). The answer's headers then correct the bucket's level.
    lightspeed_write_cost: float = Field(1.5, ge=1, le=100, allow_inf_nan=False)
    # The longest a proxied request waits for room in its account's bucket (or a 429's Retry-After) before it
    # is answered 429 at once, with nothing sent.
    proxy_max_wait_s: float = Field(10.0, ge=0, le=300, allow_inf_nan=False)
    # Bounds each wait of a proxied request for Lightspeed: connecting, the answer's headers, every pause in
    # its body (not the whole body: a large export may take longer than this to stream).
    proxy_timeout_s: float = Field(30.0, gt=0, le=600, allow_inf_nan=False)

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    log_format: Literal["text", "json"] = "text"

    notify_webhook_url: str = ""
    notify_webhook_secret: SecretStr = SecretStr("")
    # A connection in `error` this long is reported to the host app (`connection.error`).
    notify_error_after_s: int = Field(86_400, ge=0)
    # Webhook retries wait base x 2^(n-1) seconds after the n-th failed attempt, at most the cap ...
    notify_retry_base_s: float = Field(5.0, gt=0, le=86_400, allow_inf_nan=False)
    notify_retry_cap_s: float = Field(3600.0, gt=0, le=86_400, allow_inf_nan=False)
    # ... until the event is this old: then it is `dead` (`lightkeeper events retry ID` sends it again).
    notify_give_up_s: int = Field(259_200, ge=1)
    # The total deadline of one webhook attempt: connect, send and read the answer together. The delivery lease
    # is derived from it (notify/delivery.py), so it always outlasts the attempt.
    notify_timeout_s: float = Field(10.0, gt=0, le=300, allow_inf_nan=False)
    # Delivered and dead events are deleted from the outbox this many days after they settled.
    notify_retention_days: int = Field(30, ge=1, le=3650)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        if _ISOLATED.get():
            return (init_settings,)
        return (init_settings, env_settings, dotenv_settings, file_secret_settings)

    # --- validation (each ValueError text becomes the "(...)" after the variable's name) ---

    @field_validator("*", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        # Stray spaces and CRs from .env files and shell quoting are never meaningful here.
        return value.strip() if isinstance(value, str) else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("lightspeed_x_base_url")
    @classmethod
    def _x_base_url(cls, value: str) -> str:
        # The store's prefix is put in place of the placeholder: exactly one, and nothing else to fill in.
        if value.count(X_PLACEHOLDER) != 1 or "{" in value.replace(X_PLACEHOLDER, ""):
            raise ValueError("must contain {domain_prefix} once, e.g. https://{domain_prefix}.retail.lightspeed.app")
        sample = value.replace(X_PLACEHOLDER, "store")
        _check_http_url(sample)
        if urlsplit(sample).query or urlsplit(sample).fragment:
            raise ValueError("must not have a query or fragment")
        if urlsplit(sample).scheme.lower() != "https" and not is_loopback_host(urlsplit(sample).hostname):
            raise ValueError(_TLS_RULE)
        return value.rstrip("/")

    @field_validator("lightspeed_x_connect_url")
    @classmethod
    def _x_connect_url(cls, value: str) -> str:
        _check_http_url(value)
        if urlsplit(value).scheme.lower() != "https" and not is_loopback_host(urlsplit(value).hostname):
            raise ValueError(_TLS_RULE)
        return value

    @field_validator("lightspeed_oauth_url", "lightspeed_api_url", "lightkeeper_public_url")
    @classmethod
    def _base_url(cls, value: str) -> str:
        # Bases get paths appended ("/auth/oauth/token"), so a trailing slash would double up.
        return _check_http_url(value).rstrip("/") if value else value

    @field_validator("lightspeed_oauth_url", "lightspeed_api_url", "notify_webhook_url", "lightkeeper_public_url")
    @classmethod
    def _tls(cls, value: str) -> str:
        # Client secret, codes and tokens (or signed alerts about merchants, or connect links and the merchant's
        # cookies) travel to these: plain http only to the simulator, a receiver or a local run on this machine.
        if value and urlsplit(value).scheme.lower() != "https" and not is_loopback_host(urlsplit(value).hostname):
            raise ValueError(_TLS_RULE)
        return value

    @field_validator("lightkeeper_api_key")
    @classmethod
    def _api_key(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < API_KEY_MIN_CHARS:
            raise ValueError(f"must be at least {API_KEY_MIN_CHARS} characters (`lightkeeper gen-api-key` makes one)")
        return value

    @field_validator("lightkeeper_api_keys")
    @classmethod
    def _api_keys(cls, value: SecretStr) -> SecretStr:
        try:
            parse_api_keys(value.get_secret_value())
        except ApiKeyError as exc:  # names the entry's position, never its key
            raise ValueError(str(exc)) from None
        return value

    @field_validator("notify_webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: SecretStr) -> SecretStr:
        if value.get_secret_value() and len(value.get_secret_value()) < WEBHOOK_SECRET_MIN_CHARS:
            raise ValueError(f"must be at least {WEBHOOK_SECRET_MIN_CHARS} characters")
        return value

    @field_validator("lightspeed_redirect_uri", "lightspeed_x_redirect_uri", "notify_webhook_url")
    @classmethod
    def _exact_url(cls, value: str) -> str:
        # Kept byte for byte: the redirect URI must equal the client's registration.
        return _check_http_url(value) if value else value

    @field_validator("lightspeed_redirect_uri", "lightspeed_x_redirect_uri")
    @classmethod
    def _callback_path(cls, value: str) -> str:
        # Lightspeed sends the merchant back to this URI, and only our callback route can take them.
        if value and urlsplit(value).path != CALLBACK_PATH:
            raise ValueError(f"must have the path {CALLBACK_PATH}, the route that receives Lightspeed's answer")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        # The store normalises drivers; here only the family is checked (the URL may hold a password).
        family = urlsplit(value).scheme.split("+", 1)[0].lower()
        if family not in ("sqlite", "postgresql", "postgres"):
            raise ValueError("must be sqlite:///PATH or postgresql://HOST/DB")
        return value

    @field_validator("refresh_schedule")
    @classmethod
    def _cron(cls, value: str) -> str:
        return check_cron(value)

    @field_validator("token_encryption_key")
    @classmethod
    def _key(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value()
        if text and not _is_key(text):
            raise ValueError(_KEY_RULE)
        return value

    @field_validator("token_encryption_old_keys")
    @classmethod
    def _old_keys(cls, value: SecretStr) -> SecretStr:
        keys = split_keys(value.get_secret_value())
        bad = [str(number) for number, text in enumerate(keys, start=1) if not _is_key(text)]
        if bad:
            which = f"entry {bad[0]} fails" if len(bad) == 1 else f"entries {', '.join(bad)} fail"
            raise ValueError(f"each {_KEY_RULE}: {which}, of {len(keys)}")
        return value

    # --- derived values ---

    @property
    def x_redirect_uri(self) -> str:
        """X-Series' redirect URI: ``LIGHTSPEED_X_REDIRECT_URI``, else ``LIGHTSPEED_REDIRECT_URI``."""
        return self.lightspeed_x_redirect_uri or self.lightspeed_redirect_uri

    @property
    def uses_r_series(self) -> bool:
        """R-Series is in use when its client id is set, or when no provider's is (the default)."""
        return bool(self.lightspeed_client_id) or not self.lightspeed_x_client_id

    @property
    def uses_x_series(self) -> bool:
        return bool(self.lightspeed_x_client_id)

    @property
    def return_to_origins(self) -> frozenset[str]:
        """Origins a connect page may link back to: the public URL's and LIGHTKEEPER_RETURN_TO_ORIGINS."""
        extra = {_origin(o.strip()) for o in self.lightkeeper_return_to_origins.split(",") if o.strip()}
        return frozenset({_origin(self.public_url), *extra})

    @property
    def api_keys(self) -> tuple[ApiKey, ...]:
        """Every accepted key: ``LIGHTKEEPER_API_KEY`` (named ``default``, every scope), then the named ones."""
        single = self.lightkeeper_api_key.get_secret_value()
        named = parse_api_keys(self.lightkeeper_api_keys.get_secret_value())
        return (ApiKey(DEFAULT_NAME, ALL_SCOPES, single), *named) if single else named

    @property
    def public_url(self) -> str:
        """Where connect links point: ``LIGHTKEEPER_PUBLIC_URL``, else the redirect URI's origin."""
        if self.lightkeeper_public_url:
            return self.lightkeeper_public_url
        parts = urlsplit(self.lightspeed_redirect_uri)
        host = parts.netloc.rpartition("@")[2]  # an origin never carries user:password
        return f"{parts.scheme}://{host}"

    @property
    def redacted_database_url(self) -> str:
        """``DATABASE_URL`` fit to print: any password replaced by ``***``."""
        parts = urlsplit(self.database_url)
        if parts.password is None:
            return self.database_url
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
        return parts._replace(netloc=netloc).geturl()

    def with_overrides(self, **fields: Any) -> Settings:
        """A copy with ``fields`` (by field name) replaced and validated like the environment's values."""
        unknown = sorted(set(fields) - set(type(self).model_fields))
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(unknown)}")
        from .loading import validate  # loading builds on this module: imported when used

        current = {name: getattr(self, name) for name in type(self).model_fields}
        return validate({**current, **fields}, require=REQUIRE_NONE)


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme.lower()}://{parts.netloc.rpartition('@')[2].lower()}"


def _check_http_url(value: str) -> str:
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError:
        raise ValueError(_URL_RULE) from None
    if parts.scheme.lower() not in ("http", "https") or not parts.hostname:
        raise ValueError(_URL_RULE)
    return value


def is_loopback_host(host: str | None) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine only."""
    if not host:
        return False
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback  # 127.0.0.0/8 and ::1
    except ValueError:
        return False


def _is_key(text: str) -> bool:
    try:
        parse_key(text)
    except ConfigError:
        return False
    return True


__all__ = [
    "API_KEY_MIN_CHARS",
    "CALLBACK_PATH",
    "CLIENT_ID",
    "CLIENT_SECRET",
    "DUE_AFTER_MAX_S",
    "ENCRYPTION_KEY",
    "REQUIRE_ALL",
    "REQUIRE_NONE",
    "WEBHOOK_SECRET_MIN_CHARS",
    "X_CLIENT_ID",
    "X_CLIENT_SECRET",
    "X_PLACEHOLDER",
    "Settings",
    "is_loopback_host",
]
