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
}


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
    if isinstance(value, bool) or not isinstance(value, int | float) or (kind is int and value != int(value)):
        raise SimulatorError(400, f"{name} must be a number")
    if value < 0 or (positive and value == 0):
        raise SimulatorError(400, f"{name} must be {'positive' if positive else 'non-negative'}")
    return kind(value)


__all__ = ["SimulatorConfig", "coerce_config"]
