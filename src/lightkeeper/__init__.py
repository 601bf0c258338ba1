"""lightkeeper keeps Lightspeed Retail OAuth connections alive.

The public surface: ``Keeper`` (every service, wired from ``Settings``), ``load_settings``, the error tree,
and the records the store hands out. Heavy parts are imported on first use, so that the CLI starts fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# The whole error tree is public; errors.__all__ lists it once.
from .errors import *  # noqa: F403
from .errors import __all__ as _ERRORS
from .version import __version__

if TYPE_CHECKING:
    from .config import Settings, load_settings
    from .keeper import Keeper
    from .store import ConnectionRecord, RunRecord, RunStatus, Status, Trigger

_LAZY = {
    "Settings": "config",
    "load_settings": "config",
    "Keeper": "keeper",
    "ConnectionRecord": "store",
    "RunRecord": "store",
    "RunStatus": "store",
    "Status": "store",
    "Trigger": "store",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'lightkeeper' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)


__all__ = [  # noqa: PLE0604 (the error tree's names come from errors.__all__)
    *_ERRORS,
    "ConnectionRecord",
    "Keeper",
    "RunRecord",
    "RunStatus",
    "Settings",
    "Status",
    "Trigger",
    "__version__",
    "load_settings",
]
