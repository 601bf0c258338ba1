"""The one TLS trust every client of Lightspeed uses.

lightkeeper talks to Lightspeed through two HTTP clients: httpx2 (on-demand refreshes, the connect flow, the
API client) and aiohttp (a run's token requests, the proxy). Left to themselves they trust different stores:
httpx2 its bundled certificates, aiohttp ``ssl.create_default_context()``. Where the two differ (a TLS-inspecting
proxy whose authority only the system knows, a pinned bundle in ``SSL_CERT_FILE``), scheduled refreshes would
fail while on-demand ones work, and connections refreshed only on schedule would idle out. So both get the same
context: the system's trust store, which honours ``SSL_CERT_FILE`` and ``SSL_CERT_DIR``.
"""

from __future__ import annotations

import ssl


def trust() -> ssl.SSLContext:
    """A client context verifying servers against the system's trust store (and ``SSL_CERT_FILE``/``_DIR``)."""
    return ssl.create_default_context(ssl.Purpose.SERVER_AUTH)


__all__ = ["trust"]
