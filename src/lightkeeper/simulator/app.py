"""HTTP face of the simulator: thin routes that translate between requests and ``SimulatorState``.

Provider routes mimic Lightspeed (``/auth/oauth/*``, ``/API/V3/*``); knobs live under ``/_sim/`` and
need no auth. Handlers are async so injected latency (``asyncio.sleep``) lets many slow requests
overlap, as they would against the real provider.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import socket
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from lightkeeper.simulator.config import SimulatorConfig
from lightkeeper.simulator.replies import Reply, SimulatorError
from lightkeeper.simulator.state import SimulatorState

Handler = Callable[[], Awaitable[Reply]]

oauth_router = APIRouter()
api_router = APIRouter()
knob_router = APIRouter(prefix="/_sim")

# Token and revoke answer 405 invalid_request to anything but POST, like the real server.
_NON_POST = ["GET", "PUT", "PATCH", "DELETE"]


def create_app(config: SimulatorConfig | None = None, *, state: SimulatorState | None = None) -> FastAPI:
    """Build the simulator app. Pass ``state`` to share it with the caller (``SimulatorServer`` does)."""
    if config is not None and state is not None:
        raise ValueError("pass either config or state, not both")
    app = FastAPI(title="Lightspeed R-Series simulator", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.simulator = state or SimulatorState(config)
    app.include_router(oauth_router)
    app.include_router(api_router)
    app.include_router(knob_router)
    app.add_exception_handler(SimulatorError, _simulator_error)
    return app


def _sim(request: Request) -> SimulatorState:
    return cast(SimulatorState, request.app.state.simulator)


async def _simulator_error(request: Request, exc: Exception) -> Response:
    error = cast(SimulatorError, exc)
    return JSONResponse({"error": error.message}, error.status)


# ------------------------------------------------------------------ plumbing


def _to_response(reply: Reply) -> Response:
    if isinstance(reply.body, dict):
        return JSONResponse(reply.body, reply.status, reply.headers)
    if reply.body is None:
        return Response(b"", reply.status, reply.headers)
    return Response(reply.body, reply.status, reply.headers, media_type=reply.media_type)


async def _sleep_ms(milliseconds: float) -> None:
    if milliseconds > 0:
        await asyncio.sleep(milliseconds / 1000)


async def _hold(sim: SimulatorState, seconds: float) -> None:
    """Sleep up to ``seconds``, but wake early on reset/clear-faults/shutdown so tests never hang."""
    generation = sim.wake_generation
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while sim.wake_generation == generation and (left := deadline - loop.time()) > 0:
        await asyncio.sleep(min(0.05, left))


class _TruncatedResponse(Response):
    """Promises a body it never sends: uvicorn then closes the connection mid-response."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"64")]})


async def _reset_connection(request: Request) -> Response:
    """Drop the TCP connection with an RST before any byte of the response is written.

    ASGI has no "abort" message, so this reaches uvicorn's transport through the bound ``receive``
    (``RequestResponseCycle.receive``). SO_LINGER 0 turns the close into a reset. Where that is not
    available (another server), fall back to a truncated response, which the client also sees as a
    broken connection (uvicorn logs "ASGI callable returned without completing response").
    """
    transport = getattr(getattr(request.receive, "__self__", None), "transport", None)
    if transport is None or not hasattr(transport, "abort"):
        return _TruncatedResponse()
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    # Let uvicorn's connection_lost run: it marks the request disconnected, so the response below is
    # silently dropped instead of being logged as an application error.
    await asyncio.sleep(0.01)
    return Response(b"", 500)


async def _serve(request: Request, endpoint: str, handler: Handler) -> Response:
    """Run ``handler`` unless a fault is queued for ``endpoint`` (kinds: see ``faults.py``).

    A "timeout" or "stall_after_issue" fault still runs the handler (a refresh really rotates the tokens)
    and then holds the answer: the lost-response case that the grace window exists for. "no_expires_in"
    also runs it, then trims the answer.
    """
    sim = _sim(request)
    fault = sim.begin(endpoint)
    if fault is None:
        return _to_response(await handler())
    if fault.runs_handler:
        reply = fault.alter(await handler())
        if fault.holds:
            await _hold(sim, fault.seconds)
        return _to_response(reply)
    if fault.kind == "reset":
        return await _reset_connection(request)
    return _to_response(fault.reply())


def _method_not_allowed() -> Response:
    body = {
        "error": "invalid_request",
        "error_description": "The request method is not allowed.",
        "hint": "Use POST",
    }
    return JSONResponse(body, 405, {"Allow": "POST"})


async def _oauth_fields(request: Request) -> tuple[dict[str, str], bool]:
    """Form (urlencoded or multipart) or JSON body as strings; the flag says it was JSON."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if content_type == "application/json":
        try:
            data = json.loads(raw or b"null")
        except ValueError:
            return {}, True
        if not isinstance(data, dict):
            return {}, True
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in data.items() if v is not None}, True
    if content_type == "multipart/form-data":
        form = await request.form()
        return {k: v for k, v in form.items() if isinstance(v, str)}, False
    return dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True)), False


def _basic_auth(request: Request) -> tuple[str, str] | None:
    """HTTP Basic client credentials, if the client authenticated that way."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    client_id, sep, secret = decoded.partition(":")
    return (client_id, secret) if sep else None


# --------------------------------------------------------------- OAuth routes


@oauth_router.get("/auth/oauth/authorize")
async def authorize(request: Request) -> Response:
    return _to_response(_sim(request).authorize(dict(request.query_params)))


@oauth_router.api_route("/auth/oauth/token", methods=["POST", *_NON_POST])
async def token(request: Request) -> Response:
    if request.method != "POST":
        return _method_not_allowed()
    received_at = time.monotonic()  # before the latency: when the client sent it

    async def handle() -> Reply:
        sim = _sim(request)
        # The body is read on arrival, before the latency: a client that hangs up (or is killed) while the
        # provider works still has its grant carried out, as at Lightspeed. Reading it after the delay let a
        # disconnect cancel the rotation: kinder than the provider.
        fields, is_json = await _oauth_fields(request)
        epoch = sim.epoch
        await _sleep_ms(sim.config.token_latency_ms)
        return sim.token(fields, json_body=is_json, basic=_basic_auth(request), received_at=received_at, epoch=epoch)

    return await _serve(request, "token", handle)


@oauth_router.api_route("/auth/oauth/revoke", methods=["POST", *_NON_POST])
async def revoke(request: Request) -> Response:
    if request.method != "POST":
        return _method_not_allowed()

    async def handle() -> Reply:
        # Not slowed by token_latency_ms: that knob models slow token grants only.
        fields, _ = await _oauth_fields(request)
        return _sim(request).revoke(fields, basic=_basic_auth(request))

    return await _serve(request, "revoke", handle)


# ----------------------------------------------------------------- API routes

_ITEM_PATH = "/API/V3/Account/{account_id}/Item/{item_id}.json"


@api_router.get("/API/V3/Account.json")
async def account_json(request: Request) -> Response:
    async def handle() -> Reply:
        sim = _sim(request)
        await _sleep_ms(sim.config.api_latency_ms)
        return sim.api_account(request.headers.get("authorization"))

    return await _serve(request, "api", handle)


@api_router.get(_ITEM_PATH)
async def get_item(request: Request, account_id: str, item_id: str) -> Response:
    async def handle() -> Reply:
        sim = _sim(request)
        await _sleep_ms(sim.config.api_latency_ms)
        relations = request.query_params.get("load_relations")
        return sim.api_get_item(request.headers.get("authorization"), account_id, item_id, relations)

    return await _serve(request, "api", handle)


@api_router.put(_ITEM_PATH)
async def put_item(request: Request, account_id: str, item_id: str) -> Response:
    async def handle() -> Reply:
        sim = _sim(request)
        await _sleep_ms(sim.config.api_latency_ms)
        try:
            body: object = json.loads(await request.body())
        except ValueError:
            body = None  # answered 400 by the state, after the bucket is charged
        return sim.api_put_item(request.headers.get("authorization"), account_id, item_id, body)

    return await _serve(request, "api", handle)


# ---------------------------------------------------------------------- knobs


async def _knob_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise SimulatorError(400, "body must be JSON") from exc
    if not isinstance(data, dict):
        raise SimulatorError(400, "body must be a JSON object")
    return data


def _str_field(body: dict[str, Any], name: str, *, required: bool = True) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str):
        raise SimulatorError(400, f"{name} must be a string")
    return value


@knob_router.get("/stats")
async def stats(request: Request) -> Response:
    return JSONResponse(_sim(request).stats())


@knob_router.get("/refresh-times")
async def refresh_times(request: Request) -> Response:
    return JSONResponse({"refresh_times": _sim(request).refresh_times()})


@knob_router.post("/reset")
async def reset(request: Request) -> Response:
    _sim(request).reset()
    return JSONResponse({})


@knob_router.get("/config")
async def get_config(request: Request) -> Response:
    return JSONResponse(_sim(request).get_config())


@knob_router.post("/config")
async def set_config(request: Request) -> Response:
    return JSONResponse(_sim(request).update_config(await _knob_body(request)))


@knob_router.post("/authorize-mode")
async def authorize_mode(request: Request) -> Response:
    body = await _knob_body(request)
    mode, account_id = _str_field(body, "mode") or "", _str_field(body, "account_id", required=False)
    _sim(request).set_authorize_mode(mode, account_id)
    return JSONResponse({"mode": mode, "account_id": account_id})


@knob_router.get("/faults")
async def list_faults(request: Request) -> Response:
    return JSONResponse(_sim(request).faults())


@knob_router.post("/faults")
async def add_fault(request: Request) -> Response:
    return JSONResponse(_sim(request).add_fault(await _knob_body(request)))


@knob_router.delete("/faults")
async def clear_faults(request: Request) -> Response:
    _sim(request).clear_faults()
    return JSONResponse({"faults": []})


@knob_router.post("/clients")
async def register_client(request: Request) -> Response:
    body = await _knob_body(request)
    client_id, secret = _str_field(body, "client_id") or "", _str_field(body, "client_secret") or ""
    redirect_uri = _str_field(body, "redirect_uri", required=False)
    return JSONResponse(_sim(request).register_client(client_id, secret, redirect_uri))


@knob_router.post("/redirect-uris")
async def register_redirect_uri(request: Request) -> Response:
    """Register one more redirect URI for a client (default: the configured one) until the next reset."""
    body = await _knob_body(request)
    uri, client_id = _str_field(body, "redirect_uri") or "", _str_field(body, "client_id", required=False)
    return JSONResponse(_sim(request).register_redirect_uri(uri, client_id))


@knob_router.get("/accounts")
async def accounts(request: Request) -> Response:
    return JSONResponse(_sim(request).accounts())


@knob_router.get("/accounts/{account_id}")
async def account(request: Request, account_id: str) -> Response:
    return JSONResponse(_sim(request).account(account_id))


@knob_router.post("/seed")
async def seed(request: Request) -> Response:
    """Authorized accounts in bulk, with their first token pairs (benchmarks skip the consent dance)."""
    count = (await _knob_body(request)).get("count")
    if not isinstance(count, int):
        raise SimulatorError(400, "count must be an integer")
    return JSONResponse(_sim(request).seed(count))


@knob_router.post("/accounts/{account_id}/revoke")
async def revoke_account(request: Request, account_id: str) -> Response:
    return JSONResponse(_sim(request).revoke_account(account_id))


@knob_router.post("/accounts/{account_id}/advance")
async def advance_account(request: Request, account_id: str) -> Response:
    seconds = (await _knob_body(request)).get("seconds")
    return JSONResponse(_sim(request).advance_account(account_id, cast(float, seconds)))


@knob_router.post("/clock/advance")
async def advance_all(request: Request) -> Response:
    seconds = (await _knob_body(request)).get("seconds")
    return JSONResponse(_sim(request).advance_all(cast(float, seconds)))


@knob_router.post("/accounts/{account_id}/expire-access-tokens")
async def expire_access_tokens(request: Request, account_id: str) -> Response:
    return JSONResponse(_sim(request).expire_access_tokens(account_id))


@knob_router.get("/accounts/{account_id}/items/{item_id}")
async def stored_item(request: Request, account_id: str, item_id: str) -> Response:
    return JSONResponse(_sim(request).item(account_id, item_id))


__all__ = ["create_app"]
