"""Loading settings: from the environment and ``.env`` (or a mapping, for tests), every problem in one
``ConfigError`` that names variables and never repeats a value."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from pydantic import SecretStr, ValidationError
from pydantic_core import ErrorDetails
from pydantic_settings import DotEnvSettingsSource, EnvSettingsSource

from ..errors import ConfigError
from .settings import (
    _ISOLATED,
    _REQUIRE_ORDER,
    _RULES,
    CLIENT_ID,
    CLIENT_SECRET,
    ENCRYPTION_KEY,
    REQUIRE_ALL,
    X_CLIENT_ID,
    X_CLIENT_SECRET,
    Settings,
)


def load_settings(
    env: Mapping[str, str] | None = None,
    *,
    env_file: str | None = ".env",
    require: Collection[str] = REQUIRE_ALL,
) -> Settings:
    """Settings from ``env`` alone when given, else from the environment over ``env_file``.

    ``require`` names which of the three credentials must be set (:data:`REQUIRE_ALL` or a subset such as
    ``{"TOKEN_ENCRYPTION_KEY"}``). Every problem is reported in one :class:`ConfigError`.
    """
    unknown = set(require) - REQUIRE_ALL
    if unknown:
        raise ValueError(f"require may only name {', '.join(_REQUIRE_ORDER)}")
    raw = _from_mapping(env) if env is not None else _from_environment(env_file)
    return validate(raw, require=require)


def _from_mapping(env: Mapping[str, str]) -> dict[str, Any]:
    fields = Settings.model_fields
    return {key.lower(): value for key, value in env.items() if key.lower() in fields}


def _from_environment(env_file: str | None) -> dict[str, Any]:
    # pydantic-settings' own sources, so names, case and empty values follow its rules; the process
    # environment wins over the file, as it does for Settings().
    values: dict[str, Any] = {}
    if env_file is not None:
        values.update(DotEnvSettingsSource(Settings, env_file=env_file)())
    values.update(EnvSettingsSource(Settings)())
    return {key: value for key, value in values.items() if key in Settings.model_fields}


def validate(raw: Mapping[str, Any], *, require: Collection[str]) -> Settings:
    present = {name: value for name, value in raw.items() if not _is_blank(value)}
    missing = _missing(present, require)
    settings, invalid = _build(present)
    if settings is not None and (problem := lease_problem(settings)):
        invalid.append(problem)
    if settings is not None and (problem := webhook_problem(settings)):
        invalid.append(problem)
    if settings is None or missing or invalid:
        raise ConfigError(_message(missing, invalid))
    return settings


def _missing(present: Mapping[str, Any], require: Collection[str]) -> list[str]:
    """The credentials ``require`` asks for that are not set, for the providers in use: a provider is in use
    when its client id is set; with none set, R-Series is (and its id is what is missing)."""
    uses_x = X_CLIENT_ID.lower() in present
    uses_r = CLIENT_ID.lower() in present or not uses_x
    wanted = [CLIENT_ID, CLIENT_SECRET] if uses_r else []
    wanted += [X_CLIENT_SECRET] if uses_x else []
    wanted += [ENCRYPTION_KEY]
    # The X-Series secret is asked for whenever the R-Series one would be.
    asked = {*require, *([X_CLIENT_SECRET] if CLIENT_SECRET in require else [])}
    return [name for name in wanted if name in asked and name.lower() not in present]


def lease_problem(settings: Settings) -> str | None:
    """Why ``REFRESH_LEASE_S`` cannot cover one refresh's worst case, or None.

    A refresh may send twice (once more after a ``Retry-After`` it waits out), each send taking up to
    ``HTTP_TIMEOUT_S``: a shorter lease could run out while its refresh is in flight, and another process
    would then spend the same refresh token (invariant 1).
    """
    worst = 2 * settings.http_timeout_s + settings.refresh_max_retry_after_s
    if settings.refresh_lease_s >= worst:
        return None
    return (
        f"REFRESH_LEASE_S ({settings.refresh_lease_s:g} s is shorter than one refresh's worst case: "
        f"2 x HTTP_TIMEOUT_S ({settings.http_timeout_s:g} s) + REFRESH_MAX_RETRY_AFTER_S "
        f"({settings.refresh_max_retry_after_s:g} s) = {worst:g} s)"
    )


def webhook_problem(settings: Settings) -> str | None:
    """Why the webhook settings cannot work together, or None: every event is signed, so a URL needs a
    secret, and a retry delay capped below its base would never grow."""
    if settings.notify_webhook_url and not settings.notify_webhook_secret.get_secret_value():
        return "NOTIFY_WEBHOOK_SECRET (must be set when NOTIFY_WEBHOOK_URL is: every event is signed with it)"
    if settings.notify_retry_cap_s < settings.notify_retry_base_s:
        return "NOTIFY_RETRY_CAP_S (must be at least NOTIFY_RETRY_BASE_S)"
    return None


def _build(values: Mapping[str, Any]) -> tuple[Settings | None, list[str]]:
    """The model from ``values`` alone, or None and the description of each invalid field."""
    token = _ISOLATED.set(True)
    try:
        return Settings(**values), []
    except ValidationError as exc:
        return None, _describe(exc)
    finally:
        _ISOLATED.reset(token)


def _is_blank(value: Any) -> bool:
    text = value.get_secret_value() if isinstance(value, SecretStr) else value
    return isinstance(text, str) and not text.strip()


def _describe(exc: ValidationError) -> list[str]:
    """``"NAME (what is wrong)"`` per invalid field, in declaration order, without any value."""
    reasons: dict[str, str] = {}
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else ""
        reasons.setdefault(field, _reason(field, error))
    order = list(Settings.model_fields)
    ordered = sorted(reasons, key=lambda name: order.index(name) if name in order else len(order))
    return [f"{name.upper()} ({reasons[name]})" for name in ordered]


def _reason(field: str, error: ErrorDetails) -> str:
    if error["type"] == "value_error":
        # Our validators' own words, written never to include the value.
        return str(error.get("ctx", {}).get("error", "is not valid"))
    if field in _RULES:
        return _RULES[field]
    return "has an invalid value"  # pydantic's text is generic; never risk a secret in it


def _message(missing: list[str], invalid: list[str]) -> str:
    parts = []
    if missing:
        parts.append(f"Missing Lightspeed credentials: {', '.join(missing)}")
    if invalid:
        parts.append(f"{'invalid' if missing else 'Invalid settings'}: {', '.join(invalid)}")
    return "; ".join(parts)


__all__ = ["lease_problem", "load_settings", "validate", "webhook_problem"]
