"""OAuthClient, token parsing and error mapping against a fake Lightspeed at the httpx2 transport seam."""

from __future__ import annotations

import base64
import json
import string
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from lightkeeper.errors import (
    InvalidClient,
    InvalidGrant,
    ProviderError,
    ProviderProtocolError,
    ProviderUnavailable,
    RateLimited,
)
from lightkeeper.lightspeed import OAuthClient, TokenSet, account_id_from_jwt, new_pkce, new_state
from lightkeeper.lightspeed.error_mapping import parse_retry_after
from lightkeeper.lightspeed.pkce import s256_challenge
from tests.unit.conftest import RecordingClient

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
OAUTH_URL = "https://cloud.example.test"
CLIENT_ID = "lightkeeper-client"
CLIENT_SECRET = "client-secret-9f8e7d6c5b4a39281706"
REDIRECT_URI = "https://app.example.test/oauth/callback"
SCOPE = "employee:all employee:inventory"
REFRESH = "def50200a1b2c3d4e5f60718293a4b5c6d7e8f90112233445566778899aabbccdd"
NEW_REFRESH = "def50200ffeeddccbbaa99887766554433221100fedcba9876543210aabbccdd"
CODE = "authcode-7c1f2e3d4c5b6a7980"
VERIFIER = "verifier-" + "Q" * 55

Handler = Callable[[httpx2.Request], httpx2.Response]
MakeOAuth = Callable[[Handler], tuple[OAuthClient, list[httpx2.Request]]]


def make_jwt(claims: object) -> str:
    def segment(value: object) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    return f"{segment({'alg': 'RS256', 'typ': 'JWT'})}.{segment(claims)}.c2lnbmF0dXJl"


ACCESS = make_jwt({"acct": "98765", "sub": "1", "aud": CLIENT_ID, "scope": "employee:all"})
SECRETS = (REFRESH, NEW_REFRESH, ACCESS, CODE, VERIFIER, CLIENT_SECRET)


def token_json(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "token_type": "Bearer",
        "expires_in": 3600,
        "access_token": ACCESS,
        "refresh_token": NEW_REFRESH,
    }
    body.update(overrides)
    return {k: v for k, v in body.items() if v is not _DROP}


_DROP = object()


def reply(status: int = 200, body: object = None, **kwargs: object) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        if body is None:
            return httpx2.Response(status, json=token_json(), **kwargs)  # type: ignore[arg-type]
        return httpx2.Response(status, json=body, **kwargs)  # type: ignore[arg-type]

    return handler


def raw(status: int, content: str, content_type: str = "text/html", **headers: str) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(status, content=content.encode(), headers={"Content-Type": content_type, **headers})

    return handler


def raising(exc_type: type[httpx2.TransportError], message: str) -> Handler:
    def handler(request: httpx2.Request) -> httpx2.Response:
        raise exc_type(message, request=request)

    return handler


def form_of(request: httpx2.Request) -> dict[str, str]:
    assert request.headers["Content-Type"] == "application/x-www-form-urlencoded"
    parsed = parse_qs(request.content.decode(), keep_blank_values=True, strict_parsing=True)
    assert all(len(values) == 1 for values in parsed.values())
    return {key: values[0] for key, values in parsed.items()}


def assert_no_secrets(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), *map(str, exc.args)):
        for secret in SECRETS:
            assert secret not in text, f"secret leaked into {type(exc).__name__}: {text}"


@pytest.fixture
def make_oauth(recording_client: RecordingClient) -> MakeOAuth:
    def make(handler: Handler) -> tuple[OAuthClient, list[httpx2.Request]]:
        http, seen = recording_client(handler)
        oauth = OAuthClient(
            http=http,
            oauth_url=OAUTH_URL + "/",
            client_id=CLIENT_ID,
            client_secret=CLIENT_SECRET,
            redirect_uri=REDIRECT_URI,
            scope=SCOPE,
            clock=lambda: NOW,
        )
        return oauth, seen

    return make


# --- authorize URL ---------------------------------------------------------------------------------------


def test_authorize_url_carries_every_param_url_encoded(make_oauth: MakeOAuth) -> None:
    oauth, _ = make_oauth(reply())
    url = oauth.authorize_url(state="st&ate=1", code_challenge="chal-lenge_123")
    parts = urlsplit(url)
    assert f"{parts.scheme}://{parts.netloc}{parts.path}" == f"{OAUTH_URL}/auth/oauth/authorize"
    assert parse_qs(parts.query, strict_parsing=True) == {
        "response_type": ["code"],
        "client_id": [CLIENT_ID],
        "scope": [SCOPE],
        "state": ["st&ate=1"],
        "redirect_uri": [REDIRECT_URI],
        "code_challenge": ["chal-lenge_123"],
        "code_challenge_method": ["S256"],
    }
    assert " " not in url and "https%3A%2F%2Fapp.example.test" in url
    assert CLIENT_SECRET not in url


# --- code exchange and refresh ---------------------------------------------------------------------------


def test_exchange_code_posts_form_with_redirect_uri_and_verifier(make_oauth: MakeOAuth) -> None:
    oauth, seen = make_oauth(reply())
    tokens = oauth.exchange_code(CODE, code_verifier=VERIFIER)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"{OAUTH_URL}/auth/oauth/token"
    assert form_of(request) == {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "grant_type": "authorization_code",
        "code": CODE,
        "code_verifier": VERIFIER,
        "redirect_uri": REDIRECT_URI,
    }
    assert tokens == TokenSet(ACCESS, NEW_REFRESH, NOW + timedelta(seconds=3600), "Bearer")


def test_refresh_posts_form_without_scope(make_oauth: MakeOAuth) -> None:
    oauth, seen = make_oauth(reply())
    tokens = oauth.refresh(REFRESH)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"{OAUTH_URL}/auth/oauth/token"
    assert form_of(request) == {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "grant_type": "refresh_token",
        "refresh_token": REFRESH,
    }
    assert tokens.access_token == ACCESS and tokens.refresh_token == NEW_REFRESH


@pytest.mark.parametrize(
    ("expires_in", "seconds"), [(1800, 1800), (3600, 3600), ("1800", 1800), (" 3600 ", 3600), (900.0, 900)]
)
def test_expires_at_follows_expires_in(make_oauth: MakeOAuth, expires_in: object, seconds: int) -> None:
    oauth, _ = make_oauth(reply(body=token_json(expires_in=expires_in)))
    assert oauth.refresh(REFRESH).expires_at == NOW + timedelta(seconds=seconds)


@pytest.mark.parametrize("expires_in", [_DROP, None, "soon", "", 0, -60, True, 10**12, "1e999", [3600]])
def test_without_usable_expires_in_the_jwt_exp_is_used(make_oauth: MakeOAuth, expires_in: object) -> None:
    # Lightspeed already rotated the pair: throwing the answer away would lose the only live refresh token.
    access = make_jwt({"acct": "98765", "exp": int((NOW + timedelta(minutes=45)).timestamp())})
    oauth, _ = make_oauth(reply(body=token_json(expires_in=expires_in, access_token=access)))
    tokens = oauth.refresh(REFRESH)
    assert tokens.expires_at == NOW + timedelta(minutes=45) and tokens.refresh_token == NEW_REFRESH


@pytest.mark.parametrize("claims", [{"acct": "1"}, {"exp": "soon"}, {"exp": True}, {"exp": 0}, {"exp": 10**13}])
def test_without_expires_in_or_a_usable_exp_thirty_minutes_are_assumed(make_oauth: MakeOAuth, claims: object) -> None:
    oauth, _ = make_oauth(reply(body=token_json(expires_in=_DROP, access_token=make_jwt(claims))))
    assert oauth.refresh(REFRESH).expires_at == NOW + timedelta(minutes=30)


def test_an_opaque_access_token_without_expires_in_gets_thirty_minutes(make_oauth: MakeOAuth) -> None:
    oauth, _ = make_oauth(reply(body=token_json(expires_in=None, access_token="opaque-token-value")))
    assert oauth.refresh(REFRESH).expires_at == NOW + timedelta(minutes=30)


@pytest.mark.parametrize("refresh_token", [_DROP, "", None, "   "])
def test_missing_refresh_token_keeps_the_old_one(make_oauth: MakeOAuth, refresh_token: object) -> None:
    oauth, _ = make_oauth(reply(body=token_json(refresh_token=refresh_token)))
    assert oauth.refresh(REFRESH).refresh_token == REFRESH


def test_code_exchange_without_refresh_token_is_a_protocol_error(make_oauth: MakeOAuth) -> None:
    oauth, _ = make_oauth(reply(body=token_json(refresh_token=_DROP)))
    with pytest.raises(ProviderProtocolError, match="refresh_token") as caught:
        oauth.exchange_code(CODE, code_verifier=VERIFIER)
    assert_no_secrets(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        token_json(access_token=_DROP),
        token_json(access_token=""),
        token_json(refresh_token=12345),
        token_json(token_type="mac"),
    ],
)
def test_malformed_token_answers_are_protocol_errors(make_oauth: MakeOAuth, body: object) -> None:
    oauth, _ = make_oauth(reply(body=body))
    with pytest.raises(ProviderProtocolError) as caught:
        oauth.refresh(REFRESH)
    assert_no_secrets(caught.value)


# --- error mapping ---------------------------------------------------------------------------------------

HTTP_DATE_IN_2_MIN = format_datetime(NOW + timedelta(seconds=120), usegmt=True)

ERROR_CASES: list[tuple[str, Handler, type[ProviderError], tuple[str, ...]]] = [
    (
        "invalid_grant",
        reply(400, {"error": "invalid_grant", "error_description": "The refresh token is invalid."}),
        InvalidGrant,
        ("HTTP 400", "invalid_grant", "The refresh token is invalid"),
    ),
    (
        "invalid_client 401",
        reply(401, {"error": "invalid_client", "error_description": "Client authentication failed"}),
        InvalidClient,
        ("HTTP 401", "invalid_client", "LIGHTSPEED_CLIENT_SECRET"),
    ),
    (
        "invalid_client 400",
        reply(400, {"error": "invalid_client"}),
        InvalidClient,
        ("HTTP 400", "invalid_client"),
    ),
    # Classified by the body: only an OAuth invalid_client is a configuration fault.
    ("401 without body", raw(401, "Unauthorized", "text/plain"), ProviderProtocolError, ("HTTP 401", "not JSON")),
    ("401 html", raw(401, "<html><h1>401 Authorization Required</h1></html>"), ProviderProtocolError, ("HTTP 401",)),
    ("401 empty", raw(401, ""), ProviderProtocolError, ("HTTP 401",)),
    (
        "401 invalid_grant",
        reply(401, {"error": "invalid_grant", "error_description": "The refresh token is invalid."}),
        InvalidGrant,
        ("HTTP 401", "invalid_grant"),
    ),
    ("401 other oauth error", reply(401, {"error": "access_denied"}), ProviderProtocolError, ("access_denied",)),
    (
        "invalid_request",
        reply(
            400,
            {
                "error": "invalid_request",
                "error_description": "The request is missing a required parameter.",
                "hint": 'Check the "code_verifier" parameter',
            },
        ),
        ProviderProtocolError,
        ("HTTP 400", "invalid_request", 'hint: Check the "code_verifier" parameter'),
    ),
    ("invalid_scope", reply(400, {"error": "invalid_scope"}), ProviderProtocolError, ("invalid_scope",)),
    ("405", reply(405, {"error": "invalid_request"}), ProviderProtocolError, ("HTTP 405", "invalid_request")),
    ("429 seconds", reply(429, {}, headers={"Retry-After": "30"}), RateLimited, ("HTTP 429", "30 s")),
    ("429 date", reply(429, {}, headers={"Retry-After": HTTP_DATE_IN_2_MIN}), RateLimited, ("120 s",)),
    ("429 bare", raw(429, "slow down", "text/plain"), RateLimited, ("no usable Retry-After",)),
    ("500", reply(500, {"error": "server_error"}), ProviderUnavailable, ("HTTP 500", "server_error")),
    (
        "503 html",
        raw(503, "<html><body>Service Unavailable</body></html>"),
        ProviderUnavailable,
        ("HTTP 503", "not JSON"),
    ),
    (
        "garbage 200",
        raw(200, "<html>welcome</html>"),
        ProviderProtocolError,
        ("HTTP 200", "not a JSON object"),
    ),
    ("json array 200", reply(200, [1, 2]), ProviderProtocolError, ("not a JSON object",)),
    ("404 html", raw(404, "<h1>Not found</h1>"), ProviderProtocolError, ("HTTP 404", "not JSON")),
    ("302", raw(302, "", Location="https://elsewhere.test/"), ProviderProtocolError, ("HTTP 302",)),
    (
        "timeout",
        raising(httpx2.ReadTimeout, "The read operation timed out"),
        ProviderUnavailable,
        ("did not answer in time", "ReadTimeout"),
    ),
    (
        "connect error",
        raising(httpx2.ConnectError, "[Errno 111] Connection refused"),
        ProviderUnavailable,
        ("could not be reached", "ConnectError", "Connection refused"),
    ),
    (
        "reset",
        raising(httpx2.RemoteProtocolError, "Server disconnected without sending a response."),
        ProviderUnavailable,
        ("could not be reached", "RemoteProtocolError"),
    ),
    (
        "echoed secrets in description",
        reply(
            400,
            {
                "error": "invalid_grant",
                "error_description": f"Bad token {REFRESH} for secret {CLIENT_SECRET} code {CODE}",
                "hint": f"request was client_secret={CLIENT_SECRET}&refresh_token={REFRESH}&code={CODE}",
            },
        ),
        InvalidGrant,
        ("Bad token ***", "client_secret=***"),
    ),
    (
        "echoed tokens in error field",
        reply(400, {"error": REFRESH, "error_description": f"code_verifier={VERIFIER} access {ACCESS}"}),
        ProviderProtocolError,
        ("HTTP 400", "code_verifier=***"),
    ),
    (
        "secret in exception text",
        raising(httpx2.ConnectError, f"failed while sending refresh_token={REFRESH}&code={CODE}"),
        ProviderUnavailable,
        ("ConnectError",),
    ),
]


@pytest.mark.parametrize("operation", ["refresh", "exchange"])
@pytest.mark.parametrize(
    ("handler", "expected", "fragments"), [case[1:] for case in ERROR_CASES], ids=[c[0] for c in ERROR_CASES]
)
def test_errors_are_typed_and_never_leak_secrets(
    make_oauth: MakeOAuth,
    operation: str,
    handler: Handler,
    expected: type[ProviderError],
    fragments: tuple[str, ...],
) -> None:
    oauth, _ = make_oauth(handler)
    with pytest.raises(ProviderError) as caught:
        if operation == "refresh":
            oauth.refresh(REFRESH)
        else:
            oauth.exchange_code(CODE, code_verifier=VERIFIER)
    exc = caught.value
    assert type(exc) is expected
    for fragment in fragments:
        assert fragment in str(exc)
    assert_no_secrets(exc)
    assert "\n" not in str(exc)


def test_rate_limit_carries_retry_after_seconds(make_oauth: MakeOAuth) -> None:
    for header, seconds in (("30", 30.0), (HTTP_DATE_IN_2_MIN, 120.0), ("soon", None)):
        oauth, _ = make_oauth(reply(429, {}, headers={"Retry-After": header}))
        with pytest.raises(RateLimited) as caught:
            oauth.refresh(REFRESH)
        assert caught.value.retry_after == seconds
        assert caught.value.transient


def test_transport_errors_chain_the_httpx_cause(make_oauth: MakeOAuth) -> None:
    oauth, _ = make_oauth(raising(httpx2.ReadTimeout, "timed out"))
    with pytest.raises(ProviderUnavailable) as caught:
        oauth.refresh(REFRESH)
    assert isinstance(caught.value.__cause__, httpx2.ReadTimeout)
    assert not isinstance(caught.value, httpx2.HTTPError)


def test_long_error_description_is_truncated(make_oauth: MakeOAuth) -> None:
    description = "Something went wrong. " * 100
    oauth, _ = make_oauth(reply(400, {"error": "invalid_request", "error_description": description}))
    with pytest.raises(ProviderProtocolError) as caught:
        oauth.refresh(REFRESH)
    assert len(str(caught.value)) < 400
    assert "…" in str(caught.value)


@pytest.mark.parametrize(
    ("value", "now", "expected"),
    [
        ("30", NOW, 30.0),
        (" 2.5 ", None, 2.5),
        ("-1", NOW, None),
        ("nan", NOW, None),
        (None, NOW, None),
        ("tomorrow-ish", NOW, None),
        (HTTP_DATE_IN_2_MIN, NOW, 120.0),
        (format_datetime(NOW - timedelta(minutes=5), usegmt=True), NOW, 0.0),
        (HTTP_DATE_IN_2_MIN, None, None),
    ],
)
def test_parse_retry_after(value: str | None, now: datetime | None, expected: float | None) -> None:
    assert parse_retry_after(value, now=now) == expected


# --- revoke ----------------------------------------------------------------------------------------------


def test_revoke_posts_form_to_revoke_endpoint(make_oauth: MakeOAuth) -> None:
    oauth, seen = make_oauth(raw(200, "", "text/plain"))
    oauth.revoke(REFRESH)
    (request,) = seen
    assert request.method == "POST"
    assert str(request.url) == f"{OAUTH_URL}/auth/oauth/revoke"
    assert form_of(request) == {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "refresh_token": REFRESH,
    }


def test_revoke_treats_invalid_grant_as_already_revoked(make_oauth: MakeOAuth) -> None:
    oauth, _ = make_oauth(reply(400, {"error": "invalid_grant", "error_description": "Token has been revoked"}))
    oauth.revoke(REFRESH)


@pytest.mark.parametrize(
    ("handler", "expected"),
    [
        (reply(401, {"error": "invalid_client"}), InvalidClient),
        (raw(503, "<html>down</html>"), ProviderUnavailable),
        (reply(429, {}, headers={"Retry-After": "5"}), RateLimited),
        (
            reply(400, {"error": "invalid_request", "hint": "Check the `refresh_token` parameter"}),
            ProviderProtocolError,
        ),
        (raising(httpx2.ReadTimeout, "timed out"), ProviderUnavailable),
    ],
)
def test_revoke_maps_other_failures(make_oauth: MakeOAuth, handler: Handler, expected: type[ProviderError]) -> None:
    oauth, _ = make_oauth(handler)
    with pytest.raises(expected) as caught:
        oauth.revoke(REFRESH)
    assert_no_secrets(caught.value)


# --- values that must not print secrets ------------------------------------------------------------------


def test_oauth_client_repr_hides_the_secret(make_oauth: MakeOAuth) -> None:
    oauth, _ = make_oauth(reply())
    assert CLIENT_SECRET not in repr(oauth)
    assert "client_secret=***" in repr(oauth)


def test_token_set_repr_and_str_hide_tokens() -> None:
    tokens = TokenSet(access_token=ACCESS, refresh_token=REFRESH, expires_at=NOW)
    for text in (repr(tokens), str(tokens), f"{tokens}", repr([tokens])):
        assert ACCESS not in text and REFRESH not in text
        assert "access_token=***" in text and "refresh_token=***" in text
        assert NOW.isoformat() in text
    assert tokens.token_type == "Bearer"


# --- JWT account id and PKCE -----------------------------------------------------------------------------


def test_account_id_from_jwt_reads_acct_claim() -> None:
    assert account_id_from_jwt(ACCESS) == "98765"
    assert account_id_from_jwt(make_jwt({"acct": 4242})) == "4242"


@pytest.mark.parametrize(
    "token",
    [
        "",
        "not-a-jwt",
        REFRESH,
        "a.b.c",
        "x.!!!!.y",
        "a.b",
        ACCESS + ".extra",
        make_jwt({"sub": "1"}),
        make_jwt({"acct": ""}),
        make_jwt({"acct": True}),
        make_jwt({"acct": {"id": 1}}),
        make_jwt([1, 2, 3]),
        "eyJhbGciOiJub25lIn0.bm90IGpzb24.",
    ],
)
def test_account_id_from_jwt_on_junk_is_none(token: str) -> None:
    assert account_id_from_jwt(token) is None


def test_new_pkce_pairs_a_64_char_verifier_with_its_s256_challenge() -> None:
    verifier, challenge = new_pkce()
    assert len(verifier) == 64
    assert set(verifier) <= set(string.ascii_letters + string.digits + "-_")
    assert challenge == s256_challenge(verifier)
    assert "=" not in challenge and len(challenge) == 43
    assert new_pkce()[0] != verifier


def test_s256_challenge_matches_rfc_7636_appendix_b() -> None:
    verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    assert s256_challenge(verifier) == "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"


def test_new_state_is_url_safe_and_unique() -> None:
    states = {new_state() for _ in range(50)}
    assert len(states) == 50
    assert all(len(state) == 43 and set(state) <= set(string.ascii_letters + string.digits + "-_") for state in states)
