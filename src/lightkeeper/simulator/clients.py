"""OAuth clients of the simulated provider: the configured one, registered ones, and their redirect URIs.

The configured client (``SimulatorConfig.client_id``) is read live, so ``/_sim/config`` changes to it apply
at once; others are registered through ``/_sim/clients``. Redirect URIs follow RFC 6749: registered ones
are matched exactly, and authorize never redirects to an unregistered one.
"""

from __future__ import annotations

import secrets
from dataclasses import asdict
from urllib.parse import urlsplit

from lightkeeper.simulator.records import Client, Records
from lightkeeper.simulator.replies import JsonDict, Reply, SimulatorError, page


def find_client(records: Records, client_id: str) -> Client | None:
    """The client as it stands now (a copy: its own redirect URIs plus the ones added until reset)."""
    config = records.config
    if client_id and client_id == config.client_id:
        own = [config.redirect_uri] if config.redirect_uri else []
        client = Client(config.client_id, config.client_secret, own)
    elif client_id in records.clients:
        registered = records.clients[client_id]
        client = Client(registered.client_id, registered.client_secret, list(registered.redirect_uris))
    else:
        return None
    extra = records.extra_redirects.get(client_id, [])
    client.redirect_uris += [u for u in extra if u not in client.redirect_uris]
    return client


def authenticate_client(records: Records, client_id: str, secret: str) -> Client | None:
    """The client if ``secret`` is its secret; otherwise None, counted as ``invalid_client``."""
    client = find_client(records, client_id)
    if client is None or not secrets.compare_digest(client.client_secret, secret):
        records.stats["invalid_client"] += 1
        return None
    return client


def register_client(records: Records, client_id: str, client_secret: str, redirect_uri: str | None) -> JsonDict:
    if not client_id or not client_secret:
        raise SimulatorError(400, "client_id and client_secret are required")
    uris = [check_redirect_uri(redirect_uri)] if redirect_uri else []
    records.clients[client_id] = Client(client_id, client_secret, uris)
    return asdict(records.clients[client_id])


def add_redirect_uri(records: Records, redirect_uri: str, client_id: str | None) -> JsonDict:
    """Add a redirect URI to a client (default: the configured one) until the next reset."""
    uri = check_redirect_uri(redirect_uri)
    wanted = client_id or records.config.client_id
    if find_client(records, wanted) is None:
        raise SimulatorError(404, f"unknown client {wanted}")
    extra = records.extra_redirects.setdefault(wanted, [])
    if uri not in extra:
        extra.append(uri)
    client = find_client(records, wanted)
    assert client is not None
    return {"client_id": wanted, "redirect_uris": client.redirect_uris}


def redirect_target(client: Client, sent: str | None) -> str | Reply:
    """Where authorize may send the merchant back, or the error page when nowhere."""
    registered = client.redirect_uris
    if sent is not None:
        if registered and sent not in registered:
            return page(400, "The redirect_uri is not registered for this client.")
        return sent
    if len(registered) == 1:
        return registered[0]
    if registered:
        # RFC 6749 3.1.2.3: with several registered, the request must say which one.
        return page(400, "A redirect_uri is required: several are registered for this client.")
    return page(400, "A redirect_uri is required: none is registered for this client.")


def check_redirect_uri(uri: object) -> str:
    """An absolute http(s) URI without a fragment (RFC 6749 3.1.2), or ``SimulatorError`` 400."""
    parts = urlsplit(uri) if isinstance(uri, str) else None
    if parts is None or parts.scheme not in {"http", "https"} or not parts.netloc or parts.fragment:
        raise SimulatorError(400, "redirect_uri must be an absolute http(s) URI without a fragment")
    return str(uri)


__all__ = [
    "add_redirect_uri",
    "authenticate_client",
    "check_redirect_uri",
    "find_client",
    "redirect_target",
    "register_client",
]
