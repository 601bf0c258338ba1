"""lightkeeper keeps Lightspeed Retail OAuth connections alive.

The public surface: ``Keeper`` (every service, wired from ``Settings``), ``load_settings``, the error tree,
and the records the store hands out.
"""

from __future__ import annotations

__version__ = "0.1.0"

from .config import Settings, load_settings
from .errors import (
    AccessDenied,
    ConfigError,
    ConnectFlowError,
    ConnectionExpired,
    ConnectionNotFound,
    DecryptError,
    InvalidClient,
    InvalidGrant,
    LightkeeperError,
    ProviderError,
    ProviderProtocolError,
    ProviderUnavailable,
    RateLimited,
    SchemaOutOfDate,
    StoreError,
    UnknownKey,
)
from .keeper import Keeper
from .store import ConnectionRecord, RunRecord, RunStatus, Status

__all__ = [
    "AccessDenied",
    "ConfigError",
    "ConnectFlowError",
    "ConnectionExpired",
    "ConnectionNotFound",
    "ConnectionRecord",
    "DecryptError",
    "InvalidClient",
    "InvalidGrant",
    "Keeper",
    "LightkeeperError",
    "ProviderError",
    "ProviderProtocolError",
    "ProviderUnavailable",
    "RateLimited",
    "RunRecord",
    "RunStatus",
    "SchemaOutOfDate",
    "Settings",
    "Status",
    "StoreError",
    "UnknownKey",
    "__version__",
    "load_settings",
]
