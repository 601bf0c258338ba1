"""The async token-request senders (``AiohttpSender``, ``ThreadedSender``) over real HTTP on loopback.

Proves, for both senders where it applies: a refresh through ``OAuthClient.refresh_with`` against the simulator
rotates the pair once (no reuse) and the token works; the request is a form with the client credentials in the
body and our User-Agent; ``budget_s`` is one total deadline, body included; a refused connection and a late
answer are ``ProviderUnavailable`` without secrets in the message; gzip/deflate answers are decoded; a 429's
``Retry-After`` reaches ``RateLimited``; ``limit`` caps the requests in flight; the proxy settings are read from
the environment (and a real forward proxy carries the request); a sender outside ``async with`` refuses to send.
"""

from __future__ import annotations

import asyncio
import gzip
import json
import secrets
import socket
import threading
import time
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import timedelta
from email.utils import format_datetime
from http.client import HTTPConnection
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Literal
from urllib.parse import parse_qs, urlsplit

import httpx2
import pytest

from lightkeeper.clock import Clock, utcnow
from lightkeeper.errors import InvalidClient, ProviderProtocolError, ProviderUnavailable, RateLimited
from lightkeeper.keeper import USER_AGENT
from lightkeeper.lightspeed import OAuthClient, TokenSet
from lightkeeper.lightspeed.oauth import AsyncSender
from lightkeeper.lightspeed.senders import AiohttpSender, ThreadedSender
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from tests.conftest import CLIENT_ID, CLIENT_SECRET, REDIRECT_URI, FakeClock

Kind = Literal["aiohttp", "threaded"]
KINDS: tuple[Kind, ...] = ("aiohttp", "threaded")
TOKEN_PATH = "/auth/oauth/token"
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")
PIECE_S = 0.3


# --- senders and clients -------------------------------------------------------------------------------


@pytest.fixture(autouse=True)
def no_proxy_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback requests go direct whatever the machine's environment says; proxy tests set their own."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture
def http() -> Iterator[httpx2.Client]:
    """The transport ``Keeper`` builds for its ``OAuthClient`` (the one ``ThreadedSender`` sends through)."""
    with httpx2.Client(headers={"User-Agent": USER_AGENT}) as client:
        yield client


def make_oauth(
    http: httpx2.Client,
    url: str,
    *,
    client_secret: str = CLIENT_SECRET,
    timeout_s: float = 10.0,
    clock: Clock = utcnow,
) -> OAuthClient:
    return OAuthClient(
        http=http,
        oauth_url=url,
        client_id=CLIENT_ID,
        client_secret=client_secret,
        redirect_uri=REDIRECT_URI,
        scope="employee:all",
        clock=clock,
        timeout_s=timeout_s,
    )


@asynccontextmanager
async def open_sender(kind: Kind, oauth: OAuthClient, *, limit: int = 4) -> AsyncIterator[AsyncSender]:
    if kind == "aiohttp":
        async with AiohttpSender(user_agent=USER_AGENT, limit=limit) as aiohttp_sender:
            yield aiohttp_sender
    else:
        async with ThreadedSender(oauth, limit=limit) as threaded_sender:
            yield threaded_sender


def refresh(kind: Kind, oauth: OAuthClient, refresh_token: str) -> TokenSet:
    """One refresh through a freshly opened sender of ``kind``, on a loop of its own."""

    async def go() -> TokenSet:
        async with open_sender(kind, oauth) as sender:
            return await oauth.refresh_with(sender, refresh_token)

    return asyncio.run(go())


def long_secret() -> str:
    return secrets.token_urlsafe(48)


def token_json(refresh_token: str = "def50200-new-refresh") -> bytes:
    body = {"token_type": "Bearer", "expires_in": 3600, "access_token": "access-1", "refresh_token": refresh_token}
    return json.dumps(body).encode()


# --- a local server that records what it was sent --------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """One request as the server received it (header names lower-cased)."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def form(self) -> dict[str, list[str]]:
        return parse_qs(self.body.decode("ascii"), keep_blank_values=True, strict_parsing=True)


@dataclass(frozen=True)
class Answer:
    status: int = 200
    headers: tuple[tuple[str, str], ...] = (("Content-Type", "application/json"),)
    body: bytes = b""
    chunked: bool = False


Reply = Callable[[Seen], Answer]


@dataclass
class Local:
    url: str
    seen: list[Seen]


def _handler(reply: Reply, seen: list[Seen]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            request = Seen("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body)
            seen.append(request)
            self._answer(reply(request))

        def _answer(self, answer: Answer) -> None:
            self.send_response(answer.status)
            for name, value in answer.headers:
                self.send_header(name, value)
            self.send_header("Connection", "close")
            if answer.chunked:
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                for i in range(0, len(answer.body), 16):
                    piece = answer.body[i : i + 16]
                    self.wfile.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")
            else:
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

        def log_message(self, *_args: object) -> None:
            pass

    return Handler


@contextmanager
def serving(handler: type[BaseHTTPRequestHandler]) -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


@contextmanager
def local_server(reply: Reply) -> Iterator[Local]:
    seen: list[Seen] = []
    with serving(_handler(reply, seen)) as url:
        yield Local(url, seen)


# --- a refresh against the simulator; what goes over the wire ---------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_refresh_rotates_the_pair_once_at_the_simulator(
    kind: Kind, sim: SimulatorControl, simulator_server: SimulatorServer, http: httpx2.Client
) -> None:
    pair = sim.seed(1)[0]
    oauth = make_oauth(http, simulator_server.url)

    tokens = refresh(kind, oauth, pair["refresh_token"])

    assert isinstance(tokens, TokenSet)
    assert tokens.refresh_token != pair["refresh_token"] and tokens.access_token != pair["access_token"]
    stats = sim.stats()
    assert (stats["refreshes"], stats["reuse"], stats["invalid_client"], stats["invalid_grant"]) == (1, 0, 0, 0)
    account = http.get(
        f"{simulator_server.url}/API/V3/Account.json", headers={"Authorization": f"Bearer {tokens.access_token}"}
    )
    assert account.status_code == 200 and account.json()["Account"]["accountID"] == str(pair["account_id"])


@pytest.mark.parametrize("kind", KINDS)
def test_the_simulator_checks_the_client_secret_the_sender_puts_in_the_body(
    kind: Kind, sim: SimulatorControl, simulator_server: SimulatorServer, http: httpx2.Client
) -> None:
    pair = sim.seed(1)[0]
    wrong = long_secret()
    oauth = make_oauth(http, simulator_server.url, client_secret=wrong)

    with pytest.raises(InvalidClient) as caught:
        refresh(kind, oauth, pair["refresh_token"])

    assert wrong not in str(caught.value) and pair["refresh_token"] not in str(caught.value)
    assert sim.stats()["refreshes"] == 0 and sim.stats()["invalid_client"] == 1


@pytest.mark.parametrize("kind", KINDS)
def test_the_request_is_a_form_with_the_credentials_in_the_body_and_our_user_agent(
    kind: Kind, http: httpx2.Client
) -> None:
    refresh_token = "def50200" + secrets.token_hex(32)
    with local_server(lambda _seen: Answer(body=token_json())) as server:
        tokens = refresh(kind, make_oauth(http, server.url), refresh_token)

    assert tokens.refresh_token == "def50200-new-refresh"
    [request] = server.seen
    assert (request.method, request.path) == ("POST", TOKEN_PATH)
    assert request.headers["user-agent"] == USER_AGENT
    assert request.headers["content-type"].split(";")[0] == "application/x-www-form-urlencoded"
    assert request.headers["accept"] == "application/json"
    assert "authorization" not in request.headers  # client credentials go in the body, never HTTP Basic
    assert request.form() == {
        "client_id": [CLIENT_ID],
        "client_secret": [CLIENT_SECRET],
        "grant_type": ["refresh_token"],
        "refresh_token": [refresh_token],
    }


# --- one total deadline --------------------------------------------------------------------------------


class _Trickle(BaseHTTPRequestHandler):
    """Headers after one pause, then a JSON body 8 bytes per pause: never silent for long, ~3.3 s in all."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(PIECE_S)
        body = token_json("r")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for i in range(0, len(body), 8):
                self.wfile.write(body[i : i + 8])
                self.wfile.flush()
                time.sleep(PIECE_S)
        except OSError:
            pass  # the client gave up at its deadline

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def trickle_url() -> Iterator[str]:
    with serving(_Trickle) as url:
        yield url


@pytest.mark.parametrize("kind", KINDS)
def test_a_trickling_answer_is_cut_off_at_the_total_deadline(kind: Kind, trickle_url: str, http: httpx2.Client) -> None:
    secret, refresh_token = long_secret(), "def50200" + secrets.token_hex(64)
    oauth = make_oauth(http, trickle_url, client_secret=secret, timeout_s=1.0)

    started = time.monotonic()
    with pytest.raises(ProviderUnavailable, match="did not answer in time") as caught:
        refresh(kind, oauth, refresh_token)
    elapsed = time.monotonic() - started

    # The headers came at 0.3 s and each piece within 0.3 s: only a deadline over the body too stops it at 1 s.
    assert 0.9 <= elapsed < 1.0 + 2 * PIECE_S
    assert secret not in str(caught.value) and refresh_token not in str(caught.value)


def test_the_whole_trickling_answer_is_read_when_it_fits_the_budget(trickle_url: str, http: httpx2.Client) -> None:
    oauth = make_oauth(http, trickle_url, timeout_s=10.0)
    started = time.monotonic()
    tokens = refresh("aiohttp", oauth, "def50200-old")
    assert tokens.refresh_token == "r" and tokens.access_token == "access-1"
    assert time.monotonic() - started >= 3 * PIECE_S  # it really waited for the trickle


# --- no answer at all ----------------------------------------------------------------------------------


def closed_port_url() -> str:
    """A loopback port nothing listens on (bound, then closed: the kernel refuses connections to it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}"


@pytest.mark.parametrize("kind", KINDS)
def test_a_refused_connection_is_unavailable_and_names_no_secret(kind: Kind, http: httpx2.Client) -> None:
    secret, refresh_token = long_secret(), "def50200" + secrets.token_hex(64)
    oauth = make_oauth(http, closed_port_url(), client_secret=secret, timeout_s=5.0)

    with pytest.raises(ProviderUnavailable, match="could not be reached during the token refresh") as caught:
        refresh(kind, oauth, refresh_token)

    shown = f"{caught.value} {caught.value!r} {caught.value.__cause__}"
    assert secret not in shown and refresh_token not in shown


# --- compressed answers --------------------------------------------------------------------------------

Compress = Callable[[bytes], bytes]
ENCODINGS: dict[str, Compress] = {"gzip": gzip.compress, "deflate": zlib.compress}


@pytest.mark.parametrize("chunked", [False, True], ids=["length", "chunked"])
@pytest.mark.parametrize("encoding", sorted(ENCODINGS))
@pytest.mark.parametrize("kind", KINDS)
def test_a_compressed_answer_is_decoded_and_parsed(
    kind: Kind, encoding: str, chunked: bool, http: httpx2.Client
) -> None:
    headers = (("Content-Type", "application/json"), ("Content-Encoding", encoding))
    answer = Answer(headers=headers, body=ENCODINGS[encoding](token_json("def50200-zipped")), chunked=chunked)
    with local_server(lambda _seen: answer) as server:
        tokens = refresh(kind, make_oauth(http, server.url), "def50200-old")

    [request] = server.seen
    assert encoding in request.headers["accept-encoding"]  # a real server compresses only when asked
    assert (tokens.refresh_token, tokens.access_token) == ("def50200-zipped", "access-1")


@pytest.mark.parametrize("kind", ["aiohttp", "threaded"])
def test_an_answer_that_is_not_the_gzip_it_claims_is_a_protocol_error(kind: Kind, http: httpx2.Client) -> None:
    headers = (("Content-Type", "application/json"), ("Content-Encoding", "gzip"))
    answer = Answer(headers=headers, body=b"this is not gzip")
    with local_server(lambda _seen: answer) as server, pytest.raises(ProviderProtocolError, match="could not be read"):
        refresh(kind, make_oauth(http, server.url), "def50200-old")


# --- rate limited --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("form", ["seconds", "http-date"])
def test_a_429_with_retry_after_is_rate_limited_with_its_wait(
    kind: Kind, form: str, http: httpx2.Client, clock: FakeClock
) -> None:
    retry_after = "7" if form == "seconds" else format_datetime(clock() + timedelta(seconds=7), usegmt=True)
    body = json.dumps({"error": "rate_limited"}).encode()
    headers = (("Content-Type", "application/json"), ("Retry-After", retry_after))
    answer = Answer(status=429, headers=headers, body=body)
    with local_server(lambda _seen: answer) as server, pytest.raises(RateLimited, match="HTTP 429") as caught:
        refresh(kind, make_oauth(http, server.url, clock=clock), "def50200-old")

    assert caught.value.retry_after == 7.0
    assert len(server.seen) == 1  # a sender never retries by itself: that is retry_once_after's job


# --- limit --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_concurrent_refreshes_share_one_sender_up_to_its_limit(
    kind: Kind, sim: SimulatorControl, simulator_server: SimulatorServer, http: httpx2.Client
) -> None:
    sim.configure(token_latency_ms=200)
    pairs = sim.seed(6)
    oauth = make_oauth(http, simulator_server.url)

    async def go() -> list[TokenSet]:
        async with open_sender(kind, oauth, limit=3) as sender:
            return await asyncio.gather(*(oauth.refresh_with(sender, p["refresh_token"]) for p in pairs))

    started = time.monotonic()
    tokens = asyncio.run(go())
    elapsed = time.monotonic() - started

    assert len({t.refresh_token for t in tokens}) == 6
    assert (sim.stats()["refreshes"], sim.reuse()) == (6, 0)
    assert elapsed >= 2 * 0.2  # six requests, three at a time: two rounds of the provider's latency


# --- proxies -------------------------------------------------------------------------------------------

PROXY = "http://proxy.example.test:3128"
OAUTH = "http://cloud.lightspeedapp.test/auth/oauth/token"


def test_http_proxy_is_used_for_an_http_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    assert AiohttpSender(user_agent=USER_AGENT, limit=1)._proxy_for(OAUTH) == PROXY


def test_each_scheme_takes_its_own_proxy_and_all_proxy_is_the_fallback(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    monkeypatch.setenv("HTTPS_PROXY", "http://secure-proxy.test:8443")
    sender = AiohttpSender(user_agent=USER_AGENT, limit=1)
    assert sender._proxy_for("https://cloud.lightspeedapp.test/auth/oauth/token") == "http://secure-proxy.test:8443"
    monkeypatch.delenv("HTTP_PROXY")
    monkeypatch.setenv("ALL_PROXY", "http://every-proxy.test:1080")
    assert AiohttpSender(user_agent=USER_AGENT, limit=1)._proxy_for(OAUTH) == "http://every-proxy.test:1080"


@pytest.mark.parametrize(
    "no_proxy", ["lightspeedapp.test", ".lightspeedapp.test", "other.test, cloud.lightspeedapp.test", "*"]
)
def test_no_proxy_covering_the_host_means_no_proxy(monkeypatch: pytest.MonkeyPatch, no_proxy: str) -> None:
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    monkeypatch.setenv("NO_PROXY", no_proxy)
    assert AiohttpSender(user_agent=USER_AGENT, limit=1)._proxy_for(OAUTH) is None


def test_no_proxy_for_another_host_leaves_the_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HTTP_PROXY", PROXY)
    monkeypatch.setenv("NO_PROXY", "example.com,localhost")
    assert AiohttpSender(user_agent=USER_AGENT, limit=1)._proxy_for(OAUTH) == PROXY


def test_without_proxy_settings_there_is_no_proxy() -> None:
    sender = AiohttpSender(user_agent=USER_AGENT, limit=1)
    assert sender._proxy_for(OAUTH) is None and sender._proxy_for("https://x.test/") is None


def _forward_proxy(seen: list[Seen]) -> type[BaseHTTPRequestHandler]:
    """A plain-HTTP forward proxy: takes absolute-URI POSTs, records them, and passes them to the origin."""

    class Proxy(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            seen.append(Seen("POST", self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            target = urlsplit(self.path)  # absolute: http://host:port/path
            forwarded = {k: v for k, v in self.headers.items() if k.lower() not in {"connection", "proxy-connection"}}
            origin = HTTPConnection(target.hostname or "", target.port or 80, timeout=5)
            try:
                origin.request("POST", target.path, body=body, headers=forwarded)
                answer = origin.getresponse()
                content = answer.read()
                self.send_response(answer.status)
                for name, value in answer.getheaders():
                    if name.lower() not in {"connection", "transfer-encoding", "content-length"}:
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(content)))
                self.end_headers()
                self.wfile.write(content)
            finally:
                origin.close()

        def log_message(self, *_args: object) -> None:
            pass

    return Proxy


@pytest.mark.parametrize("bypass", [False, True], ids=["through-proxy", "no-proxy"])
def test_a_request_goes_through_the_proxy_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, http: httpx2.Client, bypass: bool
) -> None:
    proxied: list[Seen] = []
    with local_server(lambda _seen: Answer(body=token_json())) as origin, serving(_forward_proxy(proxied)) as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy)
        if bypass:
            monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        tokens = refresh("aiohttp", make_oauth(http, origin.url), "def50200-old")

    assert tokens.refresh_token == "def50200-new-refresh"
    [arrived] = origin.seen
    assert arrived.form()["client_secret"] == [CLIENT_SECRET]
    assert arrived.headers["user-agent"] == USER_AGENT
    if bypass:
        assert proxied == []
    else:
        [through] = proxied
        assert through.path == f"{origin.url}{TOKEN_PATH}"  # the absolute URI only a proxy is sent
        assert through.body == arrived.body


# --- outside ``async with`` ----------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_a_sender_outside_its_async_with_refuses_to_send(kind: Kind, http: httpx2.Client) -> None:
    with local_server(lambda _seen: Answer(body=token_json())) as server:
        oauth = make_oauth(http, server.url)
        sender: AiohttpSender | ThreadedSender = (
            AiohttpSender(user_agent=USER_AGENT, limit=1) if kind == "aiohttp" else ThreadedSender(oauth, limit=1)
        )

        async def before_during_after() -> TokenSet:
            with pytest.raises(RuntimeError, match="outside its 'async with' block"):
                await sender.send(oauth.refresh_request("def50200-old"))
            async with sender:
                tokens = await oauth.refresh_with(sender, "def50200-old")
            with pytest.raises(RuntimeError, match="outside its 'async with' block"):
                await sender.send(oauth.refresh_request("def50200-old"))
            return tokens

        assert asyncio.run(before_during_after()).refresh_token == "def50200-new-refresh"

    assert len(server.seen) == 1  # only the request made inside the block left


class _Silent(BaseHTTPRequestHandler):
    """Reads the request, then never answers (until the test ends)."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        time.sleep(8)

    def log_message(self, *_args: object) -> None:
        pass


@pytest.mark.parametrize("kind", KINDS)
def test_a_deadline_of_five_seconds_or_more_ends_when_it_says(kind: Kind, http: httpx2.Client) -> None:
    """aiohttp rounds timeouts of 5 s or more up to the next whole second unless told not to: a budget of 5.05 s
    took 5.85 s, and a request sent with exactly HTTP_TIMEOUT_S of lease left outlived its lease."""
    with serving(_Silent) as url:
        oauth = make_oauth(http, url, timeout_s=5.05)
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="did not answer in time"):
            refresh(kind, oauth, "def50200-old")
        elapsed = time.monotonic() - started
    # The deadline plus slack for a busy machine: rounded up, it would have ended at 6 s.
    assert 5.05 <= elapsed <= 5.05 + 0.5, elapsed


class _Drip(BaseHTTPRequestHandler):
    """Headers at once, then the body a byte at a time with pauses just inside any read timeout of 2.5 s."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        body = token_json("r")
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        try:
            for i in range(len(body)):
                self.wfile.write(body[i : i + 1])
                self.wfile.flush()
                time.sleep(2.4)
        except OSError:
            pass  # the client gave up at its deadline

    def log_message(self, *_args: object) -> None:
        pass


@pytest.mark.parametrize("kind", KINDS)
def test_a_body_dripping_within_the_read_timeout_still_ends_at_the_deadline(kind: Kind, http: httpx2.Client) -> None:
    """httpx2 fixes its read timeout when the body starts: a 3 s budget with a dripping body ended after 5.4 s."""
    with serving(_Drip) as url:
        oauth = make_oauth(http, url, timeout_s=3.0)
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="did not answer in time"):
            refresh(kind, oauth, "def50200-old")
        elapsed = time.monotonic() - started
    assert 3.0 <= elapsed <= 3.0 + 0.5, elapsed  # not the 5.4 s of a read timeout fixed when the body starts
