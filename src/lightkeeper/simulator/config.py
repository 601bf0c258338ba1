"""The simulator's tunable behaviour (``SimulatorConfig``) and how ``/_sim/config`` checks changes to it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from lightkeeper.simulator.replies import SimulatorError


@dataclass
class SimulatorConfig:
    """Tunable provider behaviour; every field can be changed at runtime through ``/_sim/config``."""

    client_id: str = "lightkeeper-demo"
    client_secret: str = "demo-secret"
    # Registered redirect URI. None, with none added by ``register_redirect_uri``, accepts whatever the
    # authorize request carries (then it is required): only for the standalone ``lightkeeper simulate``.
    redirect_uri: str | None = None
    access_token_ttl: int = 3600
    refresh_token_ttl_days: int = 30
    code_ttl: int = 60
    bucket_size: float = 90.0
    drip_rate: float = 1.0
    # Delay of each token request (code exchange or refresh) only; revoke and the API are not slowed. The
    # body is read before it, so a client gone meanwhile still has its grant (a refresh rotates) done.
    token_latency_ms: int = 0
    # Delay of each API request (every /API/V3 route); a client that hangs up meanwhile is counted
    # (``api_disconnects``) and its request still carried out, as a provider that already has it would.
    api_latency_ms: int = 0
    # At most this many API requests per (account, client) in any sliding 1-second window; more get 429
    # ``api-burst-limiter`` (uncharged). Sliding, not calendar seconds: a client pacing per clock second fails.
    burst_limit: int = 10

    # ---- X-Series (formerly Vend), served under /x (see xseries_routes.py); the token endpoint also obeys
    # token_latency_ms and the API api_latency_ms above.
    # Access token lifetime; the token answer's ``expires`` (unix time) is the truth.
    x_access_token_ttl: int = 86400
    # Added to the lifetime in the answer's ``expires_in`` only (may be negative): by default it claims 7 days
    # while ``expires`` says 1 day, so a client that reads ``expires_in`` keeps using dead tokens.
    x_expires_in_skew_s: int = 518400
    # A refresh token not exchanged for longer than this is dead (invalid_grant).
    x_refresh_idle_s: int = 30 * 86400
    # Authorization codes are single-use and live this long.
    x_code_ttl: int = 600
    # Presenting an already exchanged refresh token also revokes the live pair of its connection (stricter
    # than documented: only the replayed token is known to be dead at Lightspeed).
    x_reuse_revokes_family: bool = True
    # Token requests per store (domain prefix) in any sliding 60 s; more get 429 (Retry-After: HTTP date).
    x_token_limit_per_min: int | None = None
    # The API's fixed window per (store, client), in seconds; it starts at the first request after the last
    # one ended. It allows ``300 * x_registers + 50`` requests.
    x_window_s: int = 300
    x_registers: int = 1


# How /_sim/config coerces JSON values: (python type, may be None, must be > 0).
_CONFIG_FIELDS: dict[str, tuple[type, bool, bool]] = {
    "client_id": (str, False, False),
    "client_secret": (str, False, False),
    "redirect_uri": (str, True, False),
    "access_token_ttl": (int, False, True),
    "refresh_token_ttl_days": (int, False, True),
    "code_ttl": (int, False, True),
    "bucket_size": (float, False, True),
    "drip_rate": (float, False, True),
    "token_latency_ms": (int, False, False),
    "api_latency_ms": (int, False, False),
    "burst_limit": (int, False, True),
    "x_access_token_ttl": (int, False, True),
    "x_expires_in_skew_s": (int, False, False),
    "x_refresh_idle_s": (int, False, True),
    "x_code_ttl": (int, False, True),
    "x_reuse_revokes_family": (bool, False, False),
    "x_token_limit_per_min": (int, True, True),
    "x_window_s": (int, False, True),
    "x_registers": (int, False, False),
}
# Number fields that may be negative.
_SIGNED = frozenset({"x_expires_in_skew_s"})


def coerce_config(name: str, value: Any) -> Any:
    """``value`` as field ``name`` stores it, or ``SimulatorError`` 400 saying why it cannot be."""
    if name not in _CONFIG_FIELDS:
        raise SimulatorError(400, f"unknown config field {name!r}")
    kind, nullable, positive = _CONFIG_FIELDS[name]
    if value is None and nullable:
        return None
    if kind is str:
        if not isinstance(value, str):
            raise SimulatorError(400, f"{name} must be a string")
        return value
    if kind is bool:
        if not isinstance(value, bool):
            raise SimulatorError(400, f"{name} must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
        raise SimulatorError(400, f"{name} must be a number")
    if (value < 0 and name not in _SIGNED) or (positive and value == 0):
        raise SimulatorError(400, f"{name} must be {'positive' if positive else 'non-negative'}")
    return kind(value)


__all__ = ["SimulatorConfig", "coerce_config"]
