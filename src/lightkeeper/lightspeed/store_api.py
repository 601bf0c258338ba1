"""X-Series' API of one store, for the proxy and the client's verbs: where a path goes, and how pages follow.

A store's API lives under its own host's ``/api/`` (``{base}/api/2.0/…``, some endpoints ``2.1``), so a path
relative to the store must start with ``api/``: the empty path, or any other, is refused before anything is sent
(``InvalidPath``), and ``forwarding.confine`` has already refused whatever could climb out of ``api/`` (``..``,
encoded separators, a scheme). The token goes nowhere but the store's own base, which ``XSeries.base`` builds
from a checked domain prefix.

Collections page by version: each page's ``version.max`` is the ``after`` of the next, and a page whose ``data``
is empty is the end (docs/LIGHTSPEED.md). The proxy turns that into a ``Link: <…?after=N>; rel="next"`` with the
caller's other query parameters kept; ``paginate`` follows it the same way.

The client's verbs are paced as the proxy's requests (``api.paced_request``): a booking in the store's window
that would wait past ``max_wait_s`` is ``RateLimited`` at once, nothing sent; a 429 (``Retry-After`` an HTTP
date) holds the store and is retried once within the cap, else raised with that ``Retry-After``.
"""

from __future__ import annotations

import json
from typing import Any

import httpx2

from lightkeeper.errors import InvalidPath
from lightkeeper.lightspeed.api import DEFAULT_MAX_WAIT_S, paced_request
from lightkeeper.lightspeed.api_pacing import ApiPacing
from lightkeeper.lightspeed.forwarding import confine, with_param
from lightkeeper.lightspeed.providers import Params

#: Every path of a store's API starts here (relative to the store's base).
API_PREFIX = "api/"
#: The query parameter a page's ``version.max`` goes into.
AFTER = "after"
#: X-Series counts every request as one, whatever it is.
REQUEST_COST = 1.0


def store_url(base: str, confined: str) -> str:
    """The URL a confined path of the store stands for; ``InvalidPath`` unless it is under ``api/``."""
    if not confined.startswith(API_PREFIX):
        raise InvalidPath("an X-Series path starts with api/ (e.g. api/2.0/products): nothing was sent")
    return f"{base.rstrip('/')}/{confined}"


def request(
    http: httpx2.Client,
    pacing: ApiPacing[Any],
    base: str,
    method: str,
    path: str,
    *,
    access_token: str,
    account_id: str,
    params: Params,
    json: Any,
    max_wait_s: float = DEFAULT_MAX_WAIT_S,
) -> dict[str, Any]:
    """One paced request to ``path`` (relative to the store, confined as the proxy's), waiting at most
    ``max_wait_s`` for the store's window (see ``api.paced_request``); the answer's JSON object."""
    method = method.upper()
    confined = confine(path)
    return paced_request(
        http,
        pacing,
        method,
        store_url(base, confined),
        access_token=access_token,
        account_id=account_id,
        json=json,
        params=params,
        cost=REQUEST_COST,
        action=f"{method} /{confined}",
        max_wait_s=max_wait_s,
    )


def next_after(document: object) -> int | None:
    """The ``after`` of the page following ``document``: its ``version.max`` while its ``data`` is a non-empty
    list; None at the end (empty ``data``), or for an answer that is no collection page."""
    if not isinstance(document, dict):
        return None
    data, version = document.get("data"), document.get("version")
    if not isinstance(data, list) or not data or not isinstance(version, dict):
        return None
    top = version.get("max")
    return top if isinstance(top, int) and not isinstance(top, bool) and top >= 0 else None


def version_links(body: bytes, *, path: str, query: str, proxy_base: str) -> str | None:
    """The ``Link`` value naming the next page of an answer to ``path?query`` (a proxy URL under
    ``proxy_base``); None when the answer names none."""
    if b'"version"' not in body:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    after = next_after(document)
    if after is None:
        return None
    return f'<{proxy_base}/{path}?{with_param(query, AFTER, str(after))}>; rel="next"'


def next_page(body: dict[str, Any], path: str, params: Params) -> tuple[str, Params] | None:
    """(path, params) of the page after ``body``: ``params`` with ``after`` set; None on the last page."""
    after = next_after(body)
    if after is None:
        return None
    if isinstance(params, str):
        return path, with_param(params, AFTER, str(after))
    return path, {**(params or {}), AFTER: str(after)}


__all__ = ["AFTER", "API_PREFIX", "next_after", "next_page", "request", "store_url", "version_links"]
