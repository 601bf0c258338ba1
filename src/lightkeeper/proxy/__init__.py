"""The API proxy's engine: host apps in any language call Lightspeed through lightkeeper and never hold a token.

``web.proxy_api`` is its HTTP face (``/api/connections/{id}/lightspeed/{path}``); ``Proxy.forward`` does the
work: a fresh token, the account's shared limits (the connection's provider's model: R-Series' bucket, X-Series'
window), the send, one retry after a 401 or a 429.
"""

from __future__ import annotations

from .body import RequestBody
from .engine import READ_COST, Answer, Proxy, ProxyCall
from .upstream import Upstream

__all__ = ["READ_COST", "Answer", "Proxy", "ProxyCall", "RequestBody", "Upstream"]
