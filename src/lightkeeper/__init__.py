"""lightkeeper keeps Lightspeed Retail OAuth connections alive.

The public surface: ``Keeper`` (every service, wired from ``Settings``), ``load_settings``, the error tree,
and the records the store hands out. Heavy parts are imported on first use, so that the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

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

__version__ = "0.1.0"

if TYPE_CHECKING:
    from .config import Settings, load_settings
    from .keeper import Keeper
    from .store import ConnectionRecord, RunRecord, RunStatus, Status

_LAZY = {
    "Settings": "config",
    "load_settings": "config",
    "Keeper": "keeper",
    "ConnectionRecord": "store",
    "RunRecord": "store",
    "RunStatus": "store",
    "Status": "store",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lightkeeper' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


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
