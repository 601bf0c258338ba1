"""Settings from the environment (and a ``.env`` file), checked all at once.

:func:`load_settings` is the entry point: it reports every missing or malformed variable in one
:class:`~lightkeeper.errors.ConfigError`, e.g.::

    Missing Lightspeed credentials: LIGHTSPEED_CLIENT_SECRET, TOKEN_ENCRYPTION_KEY;
    invalid: REFRESH_DELAY_MS (must be an integer >= 0)

(on one line). Variable names are the field names in upper case. An empty variable counts as unset, so
``REFRESH_DELAY_MS=`` means the default and ``LIGHTSPEED_CLIENT_ID=`` means missing. Messages name
variables and say what is wrong; they never repeat a value, since several values are secrets.
"""

from __future__ import annotations

from ..cron import check_cron
from .loading import lease_problem, load_settings, webhook_problem
from .settings import (
    API_KEY_MIN_CHARS,
    CLIENT_ID,
    CLIENT_SECRET,
    DUE_AFTER_MAX_S,
    ENCRYPTION_KEY,
    REQUIRE_ALL,
    REQUIRE_NONE,
    WEBHOOK_SECRET_MIN_CHARS,
    X_CLIENT_ID,
    X_CLIENT_SECRET,
    X_PLACEHOLDER,
    Settings,
    is_loopback_host,
)

__all__ = [
    "API_KEY_MIN_CHARS",
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
    "check_cron",
    "is_loopback_host",
    "lease_problem",
    "load_settings",
    "webhook_problem",
]
