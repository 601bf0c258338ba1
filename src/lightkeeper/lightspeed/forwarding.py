"""What the API proxy may send to Lightspeed and answer from it: paths, headers and page links. Pure functions.

A token never leaves for anywhere but its own account (invariant 8): whatever a caller puts after
``/api/connections/{id}/lightspeed/``, what is sent is always the account's own prefix + that path (R-Series:
``LIGHTSPEED_API_URL`` + ``/API/V3/Account/{account_id}/``; X-Series: the store's base + ``/``, the path under
``api/``: ``Provider.proxy_url``), and only once ``confine`` has found nothing in it that a server could read as
another place: no ``.`` or ``..`` segment, no empty segment (``//``), no backslash, no encoded slash, backslash
or percent sign (so no double encoding), no control character, no scheme, and at most 2,048 bytes. A refused
path sends nothing. R-Series' pages (``@attributes``) are read here; X-Series' (``version.max``) in
``store_api``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from urllib.parse import quote, unquote_plus, unquote_to_bytes, urlsplit

from lightkeeper.errors import InvalidPath

MAX_PATH_BYTES = 2048
#: JSON answers up to this size are read whole to find their page links; larger ones stream as they come.
MAX_LINKED_BODY = 8 * 1024 * 1024

_ENCODED_SEPARATORS = re.compile(r"%(2f|5c|25)", re.IGNORECASE)
_SCHEME = re.compile(rb"^[A-Za-z][A-Za-z0-9+.-]*:")
_BAD_BYTES = re.compile(rb"[\x00-\x1f\x7f\\]")
#: Characters a path may carry to the provider as they are (RFC 3986 pchar, and '/' between segments).
_PATH_SAFE = "/:@!$&'()*+,;=-._~"
#: Characters a page link's query keeps as they are (never '<', '>', '"' or a space: it sits in a Link header).
_QUERY_SAFE = "=&+%/:@!$'()*,;?-._~"

#: Request headers a caller may send through; everything else is dropped (cookies, our key, forwarding,
#: hop-by-hop headers, X-Lightkeeper-*). Authorization and User-Agent are the proxy's own.
REQUEST_HEADERS = frozenset(
    {
        "accept",
        "accept-language",
        "cache-control",
        "content-language",
        "content-type",
        "if-match",
        "if-modified-since",
        "if-none-match",
        "if-range",
        "if-unmodified-since",
        "range",
    }
)
#: Answer headers passed back, besides every ``X-LS-*`` (R-Series' limits); never ``Set-Cookie``, and never
#: ``Cache-Control`` (every answer of ours is ``no-store``: it carries a merchant's data).
RESPONSE_HEADERS = frozenset(
    {
        "x-ratelimit-limit",  # X-Series' window: a caller sees where the store's window stands
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "content-disposition",
        "content-language",
        "content-length",
        "content-range",
        "content-type",
        "etag",
        "last-modified",
        "retry-after",
        "accept-ranges",
    }
)


def confine(raw: str) -> str:
    """``raw`` (the path after ``/lightspeed/``, as received: percent-encoded) checked and ready to send
    under the account's prefix; ``InvalidPath`` says what is wrong, without repeating it."""
    try:
        encoded = raw.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidPath("the path is not valid text") from None
    if len(encoded) > MAX_PATH_BYTES:
        raise InvalidPath(f"the path is longer than {MAX_PATH_BYTES} bytes")
    if _ENCODED_SEPARATORS.search(raw):
        raise InvalidPath("the path may not encode '/', '\\' or '%' (%2F, %5C, %25)")
    decoded = unquote_to_bytes(raw)
    if _BAD_BYTES.search(decoded) or _BAD_BYTES.search(encoded):
        raise InvalidPath("the path may not contain a backslash or a control character")
    if b"%" in decoded:  # a '%' that was no escape: once re-encoded it would be one ("%%32%65" -> "%252e")
        raise InvalidPath("the path may not contain a '%' that is not an escape")
    if not raw:
        return ""
    if _SCHEME.match(decoded):
        raise InvalidPath("the path may not name a scheme or a host")
    for segment in decoded.split(b"/"):
        # Some servers drop ";parameters" from a segment before reading it: "..;x" is ".." to them.
        if segment.split(b";", 1)[0] in (b"", b".", b".."):
            raise InvalidPath("the path may not contain '.', '..' or empty segments")
    # Re-encoded from the decoded bytes: what leaves is well-formed whatever the caller's encoding was.
    return quote(decoded, safe=_PATH_SAFE)


def account_path(account_id: str, confined: str) -> str:
    """The R-Series path a confined proxy path stands for: the account itself when empty."""
    account = quote(account_id, safe="")
    return f"/API/V3/Account/{account}.json" if not confined else f"/API/V3/Account/{account}/{confined}"


def request_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """The caller's headers that may reach Lightspeed (allow-listed by name, values without CR/LF/NUL)."""
    return [
        (name, value)
        for name, value in headers
        if name.lower() in REQUEST_HEADERS and not any(c in value for c in "\r\n\x00")
    ]


def response_headers(headers: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """Lightspeed's answer headers a caller gets: the allow-list and every ``X-LS-*``."""
    return [
        (name, value)
        for name, value in headers
        if (lowered := name.lower()) in RESPONSE_HEADERS or lowered.startswith("x-ls-")
    ]


def page_links(body: bytes, *, api_url: str, account_id: str, proxy_base: str) -> str | None:
    """An RFC 8288 ``Link`` value for the pages a collection answer names (``@attributes.next`` and
    ``previous``), as proxy URLs under ``proxy_base``; None when it names none. A page URL outside the
    account's own prefix (or one ``confine`` refuses) is left out, never linked."""
    if b'"@attributes"' not in body:
        return None
    try:
        document = json.loads(body)
    except ValueError:
        return None
    attributes = document.get("@attributes") if isinstance(document, dict) else None
    if not isinstance(attributes, dict):
        return None
    links = []
    for key, rel in (("next", "next"), ("previous", "prev")):
        target = _proxy_url(attributes.get(key), api_url=api_url, account_id=account_id, proxy_base=proxy_base)
        if target is not None:
            links.append(f'<{target}>; rel="{rel}"')
    return ", ".join(links) or None


def _proxy_url(url: object, *, api_url: str, account_id: str, proxy_base: str) -> str | None:
    page = relative_page(url, api_url=api_url, account_id=account_id)
    if page is None:
        return None
    relative, query = page
    return f"{proxy_base}/{relative}" + (f"?{query}" if query else "")


def relative_page(url: object, *, api_url: str, account_id: str) -> tuple[str, str] | None:
    """A page URL Lightspeed gave (``@attributes.next``) as (a confined path relative to the account, its query);
    None when it is empty, not under the account's own prefix, or refused by ``confine``."""
    if not isinstance(url, str) or not url:
        return None
    try:
        page, base = urlsplit(url), urlsplit(api_url)
    except ValueError:
        return None
    if (page.scheme.lower(), page.netloc.lower()) != (base.scheme.lower(), base.netloc.lower()):
        return None
    prefix = f"{base.path.rstrip('/')}/API/V3/Account/{quote(account_id, safe='')}/"
    if not page.path.startswith(prefix):
        return None
    try:
        relative = confine(page.path[len(prefix) :])
    except InvalidPath:
        return None
    return relative, quote(page.query, safe=_QUERY_SAFE)


def with_param(query: str, name: str, value: str) -> str:
    """``query`` (as received: encoded) with ``name`` set to ``value`` in place of any it had, the others kept in
    their order, quoted so that the result is safe inside a ``Link`` header's ``<…>``."""
    kept = [part for part in query.split("&") if part and unquote_plus(part.split("=", 1)[0]) != name]
    return "&".join([*(quote(part, safe=_QUERY_SAFE) for part in kept), f"{quote(name)}={quote(value)}"])


def content_is_json(headers: Mapping[str, str]) -> bool:
    media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


__all__ = [
    "MAX_LINKED_BODY",
    "MAX_PATH_BYTES",
    "REQUEST_HEADERS",
    "RESPONSE_HEADERS",
    "InvalidPath",
    "account_path",
    "confine",
    "content_is_json",
    "page_links",
    "relative_page",
    "request_headers",
    "response_headers",
    "with_param",
]
