"""``lightspeed.forwarding``: what the API proxy may send to R-Series (paths, headers) and the page links it
answers with. A token never leaves for anywhere but its own account: every path ``confine`` accepts stays under
``/API/V3/Account/{account_id}/`` however a server decodes or normalises it.
"""

from __future__ import annotations

import json
import posixpath
import re
from urllib.parse import unquote, urlsplit

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lightkeeper.errors import InvalidPath, LightkeeperError
from lightkeeper.lightspeed.forwarding import (
    MAX_PATH_BYTES,
    REQUEST_HEADERS,
    RESPONSE_HEADERS,
    account_path,
    confine,
    content_is_json,
    page_links,
    relative_page,
    request_headers,
    response_headers,
)

FAST = settings(max_examples=250, deadline=None, database=None, suppress_health_check=list(HealthCheck))
API = "https://api.example.com"
ACCOUNT = "100001"
PREFIX = f"/API/V3/Account/{ACCOUNT}/"
PROXY_BASE = "/api/connections/7/lightspeed"
#: What a confined path may contain: RFC 3986 pchar and '/', nothing a header or a URL parser treats specially.
SENDABLE = re.compile(r"[A-Za-z0-9/:@!$&'()*+,;=._~%-]*")


# -- confine: accepted -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "confined"),
    [
        ("Item.json", "Item.json"),
        ("Item/7.json", "Item/7.json"),
        ("Shop/1/Item.json", "Shop/1/Item.json"),
        ("Item%20Shop.json", "Item%20Shop.json"),
        ("Item Shop.json", "Item%20Shop.json"),  # re-encoded: what leaves is well-formed
        ("Item%2ejson", "Item.json"),  # an encoded dot inside a segment is just a dot
        ("%41ccount.json", "Account.json"),
        ("Item/%3Fa", "Item/%3Fa"),  # an encoded '?' stays encoded: never a query
        ("Item.json?x=1", "Item.json%3Fx=1"),  # ApiClient's paths: a '?' in the path is no query either
        ("Item/%23a", "Item/%23a"),
        ("Ïtem.json", "%C3%8Ftem.json"),
        ("...", "..."),  # three dots are a name, not a step up
        ("a..b/c.", "a..b/c."),
        ("~x/Item.json", "~x/Item.json"),
        ("Item/7.json:extra", "Item/7.json:extra"),  # a colon after the first segment is no scheme
        ("", ""),
    ],
)
def test_ordinary_paths_are_confined(raw: str, confined: str) -> None:
    assert confine(raw) == confined


def test_the_longest_path_is_accepted() -> None:
    assert confine("a" * MAX_PATH_BYTES) == "a" * MAX_PATH_BYTES


def test_account_path() -> None:
    assert account_path(ACCOUNT, "Item.json") == f"{PREFIX}Item.json"
    assert account_path(ACCOUNT, "") == f"/API/V3/Account/{ACCOUNT}.json"
    assert account_path("1/../2", "Item.json") == "/API/V3/Account/1%2F..%2F2/Item.json"  # the id is one segment


# -- confine: refused ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw",
    [
        "..",
        ".",
        "../100002/Item.json",
        "Item/../../100002.json",
        "a/./b",
        "%2e%2e",
        "%2E%2E/100002",
        ".%2e",
        "%2E",
        "a/%2e/b",
        "%2f",
        "%2F",
        "..%2f100002",
        "%5c",
        "%5C",
        "%255c",
        "%252e%252e",
        "%25",
        "a\\b",
        "..\\100002",
        "//",
        "a//b",
        "//evil.com/x",
        "/Item.json",
        "Item/",
        "http://evil",
        "https:evil.com",
        "HTTPS://evil.com/API",
        "javascript:x",
        "%68ttp://evil",  # the scheme, decoded
        "Item.json:x",  # the first segment reads as a scheme: refused rather than guessed at
        "a\rb",
        "a\nb",
        "a\x00b",
        "a\tb",
        "a\x7fb",
        "a%0db",
        "a%0Ab",
        "a%00b",
        "a%09b",
        "a%7Fb",
        "Item.json%0d%0aX-Injected: 1",
    ],
)
def test_paths_that_could_leave_the_account_are_refused(raw: str) -> None:
    with pytest.raises(InvalidPath):
        confine(raw)


@pytest.mark.parametrize("raw", ["a" * (MAX_PATH_BYTES + 1), "é" * (MAX_PATH_BYTES // 2 + 1), "%41" * 683])
def test_a_path_over_2048_bytes_is_refused(raw: str) -> None:
    with pytest.raises(InvalidPath, match="2048"):
        confine(raw)


def test_invalid_path_is_a_lightkeeper_error_that_does_not_repeat_the_path() -> None:
    with pytest.raises(InvalidPath) as raised:
        confine("../secret\r\nX: y")
    assert isinstance(raised.value, LightkeeperError)
    assert "secret" not in str(raised.value) and "\n" not in str(raised.value)


def test_a_percent_sign_cannot_be_smuggled_in_unencoded() -> None:
    with pytest.raises(InvalidPath):
        confine("%%32%65%%32%65/100002/Item.json")


def test_a_dot_dot_segment_with_a_path_parameter_is_refused() -> None:
    with pytest.raises(InvalidPath):
        confine("..;/100002/Item.json")


def test_text_that_is_not_utf8_is_refused() -> None:
    with pytest.raises(InvalidPath):
        confine("Item\ud800.json")


# -- confine: the property -------------------------------------------------------------------------------------

ESCAPES = st.one_of(
    st.sampled_from(["%2e", "%2E", "%2f", "%2F", "%5c", "%25", "%00", "%0a", "%0D", "%3a", "%3F", "%23", "%3b"]),
    st.from_regex(r"%[0-9A-Fa-f]{2}", fullmatch=True),
    st.from_regex(r"%25[0-9A-Fa-f]{2}", fullmatch=True),
    st.from_regex(r"%%?[0-9A-Fa-fG-Zg-z]{0,2}", fullmatch=True),
)
PIECES = st.one_of(
    st.sampled_from(["/", ".", "..", "%", "\\", ":", "?", "#", ";", "@", " ", "\t", "\r", "\n", "\x00", "\x7f"]),
    st.sampled_from(["http:", "https://", "//", "Item.json", "Item", "API", "V3", "Account", "100002", "~", "a"]),
    st.characters(codec="utf-8"),
    ESCAPES,
)
PATHS = st.one_of(
    st.lists(PIECES, max_size=24).map("".join),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=40),
    st.text(alphabet="/.%\\:?#;aA0 \r\n\x00\x01\x1f\x7f", max_size=40),
)


@FAST
@given(PATHS)
def test_whatever_is_confined_stays_in_the_account(raw: str) -> None:
    try:
        confined = confine(raw)
    except InvalidPath:
        return
    assert SENDABLE.fullmatch(confined), confined
    url = API + account_path(ACCOUNT, confined)
    parts = urlsplit(url)
    assert (parts.scheme, parts.hostname, parts.port) == ("https", "api.example.com", None)
    assert (parts.query, parts.fragment) == ("", "")
    for path in (parts.path, unquote(parts.path)):  # as sent, and as a server decoding once reads it
        normalised = posixpath.normpath(path)
        if confined:
            assert normalised.startswith(PREFIX), (raw, confined, normalised)
        else:
            assert normalised == f"/API/V3/Account/{ACCOUNT}.json"


# -- request and answer headers --------------------------------------------------------------------------------


def test_request_headers_keep_only_the_allow_list() -> None:
    sent = [
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("If-None-Match", '"abc"'),
        ("Range", "bytes=0-9"),
        ("Authorization", "Bearer our-api-key"),
        ("Cookie", "session=1"),
        ("Host", "evil.com"),
        ("X-Forwarded-For", "10.0.0.1"),
        ("Forwarded", "for=10.0.0.1"),
        ("Connection", "keep-alive"),
        ("Transfer-Encoding", "chunked"),
        ("X-Lightkeeper-Key", "secret"),
        ("X-Lightkeeper-Anything", "x"),
        ("User-Agent", "curl"),
        ("Accept-Encoding", "gzip"),
        ("Content-Length", "5"),
        ("X-LS-API-Bucket-Level", "0/90"),
    ]
    assert request_headers(sent) == [
        ("Accept", "application/json"),
        ("Content-Type", "application/json"),
        ("If-None-Match", '"abc"'),
        ("Range", "bytes=0-9"),
    ]


@pytest.mark.parametrize("name", sorted(REQUEST_HEADERS))
def test_every_allowed_request_header_passes_in_any_case(name: str) -> None:
    assert request_headers([(name.upper(), "v"), (name, "w")]) == [(name.upper(), "v"), (name, "w")]


@pytest.mark.parametrize("value", ["a\rb", "a\nb", "a\x00b", "json\r\nX-Injected: 1"])
def test_request_header_values_with_cr_lf_or_nul_are_dropped(value: str) -> None:
    assert request_headers([("Accept", value), ("Accept-Language", "en")]) == [("Accept-Language", "en")]


def test_response_headers_keep_the_allow_list_and_every_x_ls() -> None:
    answered = [
        ("Content-Type", "application/json"),
        ("ETag", '"1"'),
        ("Retry-After", "3"),
        ("X-LS-API-Bucket-Level", "11/90"),
        ("x-ls-api-drip-rate", "1"),
        ("X-Ls-Shard", "a"),
        ("Set-Cookie", "a=b"),
        ("set-cookie", "c=d"),
        ("Server", "nginx"),
        ("Connection", "close"),
        ("Transfer-Encoding", "chunked"),
        ("Content-Encoding", "gzip"),
        ("Strict-Transport-Security", "max-age=1"),
        ("X-Powered-By", "PHP"),
        ("X-LSX", "not an x-ls- header"),
    ]
    assert response_headers(answered) == [
        ("Content-Type", "application/json"),
        ("ETag", '"1"'),
        ("Retry-After", "3"),
        ("X-LS-API-Bucket-Level", "11/90"),
        ("x-ls-api-drip-rate", "1"),
        ("X-Ls-Shard", "a"),
    ]


@pytest.mark.parametrize("name", sorted(RESPONSE_HEADERS))
def test_every_allowed_response_header_passes(name: str) -> None:
    assert response_headers([(name.title(), "v")]) == [(name.title(), "v")]


@pytest.mark.parametrize(
    ("content_type", "is_json"),
    [
        ("application/json", True),
        ("Application/JSON; charset=utf-8", True),
        ("application/vnd.api+json", True),
        ("text/html", False),
        ("application/jsonp", False),
        ("", False),
    ],
)
def test_content_is_json(content_type: str, is_json: bool) -> None:
    assert content_is_json({"content-type": content_type}) is is_json


def test_no_content_type_is_not_json() -> None:
    assert not content_is_json({})


# -- page links ------------------------------------------------------------------------------------------------


def page(**attributes: object) -> bytes:
    return json.dumps({"@attributes": {"count": "250", "offset": "0", "limit": "100", **attributes}}).encode()


def links(body: bytes) -> str | None:
    return page_links(body, api_url=API, account_id=ACCOUNT, proxy_base=PROXY_BASE)


def test_next_and_previous_become_proxy_links() -> None:
    body = page(
        next=f"{API}{PREFIX}Item.json?after=X&limit=100",
        previous=f"{API}{PREFIX}Item.json?before=W&limit=100",
    )
    assert links(body) == (
        f'<{PROXY_BASE}/Item.json?after=X&limit=100>; rel="next", '
        f'<{PROXY_BASE}/Item.json?before=W&limit=100>; rel="prev"'
    )


def test_only_the_pages_named_are_linked() -> None:
    assert links(page(next=f"{API}{PREFIX}Item.json?after=X")) == f'<{PROXY_BASE}/Item.json?after=X>; rel="next"'
    assert links(page(previous=f"{API}{PREFIX}Item.json")) == f'<{PROXY_BASE}/Item.json>; rel="prev"'


@pytest.mark.parametrize(
    "url",
    [
        "",
        None,
        7,
        ["x"],
        f"https://evil.com{PREFIX}Item.json?after=X",
        f"http://api.example.com{PREFIX}Item.json?after=X",  # another scheme
        f"https://api.example.com:8443{PREFIX}Item.json",
        f"https://api.example.com@evil.com{PREFIX}Item.json",
        f"{API}/API/V3/Account/100002/Item.json?after=X",  # another account
        f"{API}/API/V3/Account/1000012/Item.json",  # an account whose id starts with ours
        f"{API}/API/V3/Account/{ACCOUNT}.json",  # the account itself is no page
        f"{API}{PREFIX}../100002/Item.json?after=X",
        f"{API}{PREFIX}%2e%2e/100002/Item.json",
        f"{API}{PREFIX}Item%2f..%2f..%2f100002.json",
        f"{API}{PREFIX}a//b",
        f"{API}/other{PREFIX}Item.json",
        "//api.example.com/API/V3/Account/100001/Item.json",
        "/API/V3/Account/100001/Item.json",
        "https://[::1/x",  # not even a URL
    ],
)
def test_a_page_outside_the_account_is_left_out(url: object) -> None:
    assert links(page(next=url)) is None
    assert relative_page(url, api_url=API, account_id=ACCOUNT) is None


def test_a_bad_next_does_not_hide_a_good_previous() -> None:
    body = page(next=f"https://evil.com{PREFIX}Item.json", previous=f"{API}{PREFIX}Item.json?before=W")
    assert links(body) == f'<{PROXY_BASE}/Item.json?before=W>; rel="prev"'


@pytest.mark.parametrize(
    "body",
    [
        b"",
        b'{"Item": []}',
        b'{"@attributes": ',  # names @attributes, but is not JSON
        b'["@attributes"]',
        b'{"@attributes": "next"}',
        b'{"@attributes": null}',
        b'{"@attributes": {}}',
        page(next="", previous=""),
        page(),
        b'\xff\xfe not utf-8 "@attributes"',
    ],
)
def test_no_links_without_page_attributes(body: bytes) -> None:
    assert links(body) is None


def test_link_values_cannot_break_the_header() -> None:
    body = page(next=f'{API}{PREFIX}Item.json?after=a>b"c d,e;f&x=\r\nSet-Cookie: y')
    value = links(body)
    assert value is not None and value.startswith(f"<{PROXY_BASE}/Item.json?after=a%3Eb%22c%20d,e;f&x=")
    assert not any(c in value for c in "\r\n\x00") and value.count(">") == 1 and value.count('"') == 2


def test_relative_page() -> None:
    assert relative_page(f"{API}{PREFIX}Item.json?after=X&limit=100", api_url=API, account_id=ACCOUNT) == (
        "Item.json",
        "after=X&limit=100",
    )
    assert relative_page(f"{API}{PREFIX}Item/7.json", api_url=API, account_id=ACCOUNT) == ("Item/7.json", "")
    assert relative_page(f"{API}{PREFIX}Item.json?a=%2F#frag", api_url=API, account_id=ACCOUNT) == (
        "Item.json",
        "a=%2F",
    )


def test_relative_page_ignores_the_case_of_scheme_and_host() -> None:
    upper = f"HTTPS://API.EXAMPLE.COM{PREFIX}Item.json?after=X"
    assert relative_page(upper, api_url=API, account_id=ACCOUNT) == ("Item.json", "after=X")


def test_relative_page_under_an_api_url_with_a_path() -> None:
    api = "http://127.0.0.1:8080/sim/"
    url = f"http://127.0.0.1:8080/sim{PREFIX}Item.json?after=X"
    assert relative_page(url, api_url=api, account_id=ACCOUNT) == ("Item.json", "after=X")
    assert relative_page(f"http://127.0.0.1:8080{PREFIX}Item.json", api_url=api, account_id=ACCOUNT) is None
