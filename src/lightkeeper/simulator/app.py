"""HTTP face of the simulator: thin routes that translate between requests and ``SimulatorState``.

Provider routes mimic Lightspeed (``/auth/oauth/*``, ``/API/V3/*``); knobs live under ``/_sim/`` and
need no auth. Handlers are async so injected latency (``asyncio.sleep``) lets many slow requests
overlap, as they would against the real provider; how an answer is delivered (faults, holds, streamed
bodies) lives in ``serving.py``. Every ``/API/V3`` request is logged on arrival by
``RequestRecorder`` (``recorder.py``) before any route sees it; a catch-all route answers the paths
Lightspeed does not have, after charging them like any call. X-Series routes (``/x/…``, and their knobs
under ``/_sim/x/``) live in ``xseries_routes.py`` and are mounted here, on the same app and port.
"""

from __future__ import annotations

import base64
import binascii
import json
import time
from typing import Any, cast
from urllib.parse import parse_qsl

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, Response

from lightkeeper.simulator.config import SimulatorConfig
from lightkeeper.simulator.recorder import RequestRecorder
from lightkeeper.simulator.replies import Reply, SimulatorError
from lightkeeper.simulator.serving import api_latency, serve, sim_of, sleep_ms, to_response
from lightkeeper.simulator.state import SimulatorState
from lightkeeper.simulator.xseries_routes import x_knob_router, x_router

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
    app.include_router(x_router)
    app.include_router(x_knob_router)
    app.add_middleware(RequestRecorder, state=app.state.simulator)
    app.add_exception_handler(SimulatorError, _simulator_error)
    return app


async def _simulator_error(request: Request, exc: Exception) -> Response:
    error = cast(SimulatorError, exc)
    return JSONResponse({"error": error.message}, error.status)


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
    return to_response(sim_of(request).authorize(dict(request.query_params)))


@oauth_router.api_route("/auth/oauth/token", methods=["POST", *_NON_POST])
async def token(request: Request) -> Response:
    if request.method != "POST":
        return _method_not_allowed()
    received_at = time.monotonic()  # before the latency: when the client sent it

    async def handle() -> Reply:
        sim = sim_of(request)
        # The body is read on arrival, before the latency: a client that hangs up (or is killed) while the
        # provider works still has its grant carried out, as at Lightspeed. Reading it after the delay let a
        # disconnect cancel the rotation: kinder than the provider.
        fields, is_json = await _oauth_fields(request)
        epoch = sim.epoch
        await sleep_ms(sim.config.token_latency_ms)
        return sim.token(fields, json_body=is_json, basic=_basic_auth(request), received_at=received_at, epoch=epoch)

    return await serve(request, "token", handle)


@oauth_router.api_route("/auth/oauth/revoke", methods=["POST", *_NON_POST])
async def revoke(request: Request) -> Response:
    if request.method != "POST":
        return _method_not_allowed()

    async def handle() -> Reply:
        # Not slowed by token_latency_ms: that knob models slow token grants only.
        fields, _ = await _oauth_fields(request)
        return sim_of(request).revoke(fields, basic=_basic_auth(request))

    return await serve(request, "revoke", handle)


# ----------------------------------------------------------------- API routes

_ITEM_PATH = "/API/V3/Account/{account_id}/Item/{item_id}.json"
_ITEMS_PATH = "/API/V3/Account/{account_id}/Item.json"
# Every method the catch-all answers (404 after charging, like any call).
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


def _bearer(request: Request) -> str | None:
    return request.headers.get("authorization")


async def _json_body(request: Request) -> object:
    """The request body as JSON, or None (answered 400 by the state, after the bucket is charged)."""
    try:
        body: object = json.loads(await request.body())
    except ValueError:
        return None
    return body


@api_router.api_route("/API/V3/Account.json", methods=["GET", "HEAD"])
async def account_json(request: Request) -> Response:
    async def handle() -> Reply:
        await api_latency(request)
        return sim_of(request).api_account(_bearer(request))

    return await serve(request, "api", handle)


@api_router.api_route("/API/V3/Account/{account_id}.json", methods=["GET", "HEAD"])
async def one_account_json(request: Request, account_id: str) -> Response:
    async def handle() -> Reply:
        await api_latency(request)
        return sim_of(request).api_account(_bearer(request), account_id)

    return await serve(request, "api", handle)


@api_router.api_route(_ITEMS_PATH, methods=["GET", "HEAD"])
async def list_items(request: Request, account_id: str) -> Response:
    """One cursor page; ``next``/``previous`` are complete URLs on the request's own base URL."""

    async def handle() -> Reply:
        await api_latency(request)
        base = str(request.base_url).rstrip("/") + request.url.path
        query = parse_qsl(request.url.query, keep_blank_values=True)
        return sim_of(request).api_list_items(_bearer(request), account_id, base, query)

    return await serve(request, "api", handle)


@api_router.post(_ITEMS_PATH)
async def create_item(request: Request, account_id: str) -> Response:
    async def handle() -> Reply:
        await api_latency(request)
        return sim_of(request).api_create_item(_bearer(request), account_id, await _json_body(request))

    return await serve(request, "api", handle)


@api_router.api_route(_ITEM_PATH, methods=["GET", "HEAD"])
async def get_item(request: Request, account_id: str, item_id: str) -> Response:
    async def handle() -> Reply:
        await api_latency(request)
        relations = request.query_params.get("load_relations")
        return sim_of(request).api_get_item(_bearer(request), account_id, item_id, relations)

    return await serve(request, "api", handle)


@api_router.put(_ITEM_PATH)
async def put_item(request: Request, account_id: str, item_id: str) -> Response:
    async def handle() -> Reply:
        await api_latency(request)
        return sim_of(request).api_put_item(_bearer(request), account_id, item_id, await _json_body(request))

    return await serve(request, "api", handle)


@api_router.delete(_ITEM_PATH)
async def archive_item(request: Request, account_id: str, item_id: str) -> Response:
    async def handle() -> Reply:
        await api_latency(request)
        return sim_of(request).api_archive_item(_bearer(request), account_id, item_id)

    return await serve(request, "api", handle)


@api_router.api_route("/API/V3/{rest:path}", methods=_ANY_METHOD)
async def api_other(request: Request, rest: str) -> Response:
    """Any other path (or a method a known path lacks): authenticated, charged, then 404 (or 403)."""

    async def handle() -> Reply:
        await api_latency(request)
        body = await _json_body(request) if request.method in {"POST", "PUT"} else None
        return sim_of(request).api_other(_bearer(request), request.method, request.url.path, body)

    return await serve(request, "api", handle)


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
    return JSONResponse(sim_of(request).stats())


@knob_router.get("/refresh-times")
async def refresh_times(request: Request) -> Response:
    return JSONResponse({"refresh_times": sim_of(request).refresh_times()})


@knob_router.post("/reset")
async def reset(request: Request) -> Response:
    sim_of(request).reset()
    return JSONResponse({})


@knob_router.get("/config")
async def get_config(request: Request) -> Response:
    return JSONResponse(sim_of(request).get_config())


@knob_router.post("/config")
async def set_config(request: Request) -> Response:
    return JSONResponse(sim_of(request).update_config(await _knob_body(request)))


@knob_router.post("/authorize-mode")
async def authorize_mode(request: Request) -> Response:
    body = await _knob_body(request)
    mode, account_id = _str_field(body, "mode") or "", _str_field(body, "account_id", required=False)
    sim_of(request).set_authorize_mode(mode, account_id)
    return JSONResponse({"mode": mode, "account_id": account_id})


@knob_router.get("/faults")
async def list_faults(request: Request) -> Response:
    return JSONResponse(sim_of(request).faults())


@knob_router.post("/faults")
async def add_fault(request: Request) -> Response:
    return JSONResponse(sim_of(request).add_fault(await _knob_body(request)))


@knob_router.delete("/faults")
async def clear_faults(request: Request) -> Response:
    sim_of(request).clear_faults()
    return JSONResponse({"faults": []})


@knob_router.post("/clients")
async def register_client(request: Request) -> Response:
    body = await _knob_body(request)
    client_id, secret = _str_field(body, "client_id") or "", _str_field(body, "client_secret") or ""
    redirect_uri = _str_field(body, "redirect_uri", required=False)
    return JSONResponse(sim_of(request).register_client(client_id, secret, redirect_uri))


@knob_router.post("/redirect-uris")
async def register_redirect_uri(request: Request) -> Response:
    """Register one more redirect URI for a client (default: the configured one) until the next reset."""
    body = await _knob_body(request)
    uri, client_id = _str_field(body, "redirect_uri") or "", _str_field(body, "client_id", required=False)
    return JSONResponse(sim_of(request).register_redirect_uri(uri, client_id))


@knob_router.get("/api-headers")
async def api_headers(request: Request) -> Response:
    return JSONResponse({"headers": sim_of(request).api_headers()})


@knob_router.post("/api-headers")
async def set_api_headers(request: Request) -> Response:
    """``{"headers": {name: value} | [[name, value], …]}``: added to every API answer until the next reset."""
    headers = (await _knob_body(request)).get("headers")
    return JSONResponse({"headers": sim_of(request).set_api_headers(headers)})


@knob_router.delete("/api-headers")
async def clear_api_headers(request: Request) -> Response:
    return JSONResponse({"headers": sim_of(request).set_api_headers([])})


@knob_router.get("/accounts")
async def accounts(request: Request) -> Response:
    return JSONResponse(sim_of(request).accounts())


@knob_router.get("/accounts/{account_id}")
async def account(request: Request, account_id: str) -> Response:
    return JSONResponse(sim_of(request).account(account_id))


@knob_router.post("/seed")
async def seed(request: Request) -> Response:
    """Authorized accounts in bulk, with their first token pairs (benchmarks skip the consent dance)."""
    count = (await _knob_body(request)).get("count")
    if not isinstance(count, int):
        raise SimulatorError(400, "count must be an integer")
    return JSONResponse(sim_of(request).seed(count))


@knob_router.post("/accounts/{account_id}/revoke")
async def revoke_account(request: Request, account_id: str) -> Response:
    return JSONResponse(sim_of(request).revoke_account(account_id))


@knob_router.post("/accounts/{account_id}/advance")
async def advance_account(request: Request, account_id: str) -> Response:
    seconds = (await _knob_body(request)).get("seconds")
    return JSONResponse(sim_of(request).advance_account(account_id, cast(float, seconds)))


@knob_router.post("/clock/advance")
async def advance_all(request: Request) -> Response:
    seconds = (await _knob_body(request)).get("seconds")
    return JSONResponse(sim_of(request).advance_all(cast(float, seconds)))


@knob_router.post("/accounts/{account_id}/expire-access-tokens")
async def expire_access_tokens(request: Request, account_id: str) -> Response:
    return JSONResponse(sim_of(request).expire_access_tokens(account_id))


@knob_router.post("/accounts/{account_id}/items")
async def add_items(request: Request, account_id: str) -> Response:
    """``count`` more stocked items for the account (a 250-item collection to page through)."""
    count = (await _knob_body(request)).get("count")
    if isinstance(count, bool) or not isinstance(count, int):
        raise SimulatorError(400, "count must be an integer")
    return JSONResponse(sim_of(request).add_items(account_id, count))


@knob_router.get("/requests")
async def requests_log(request: Request) -> Response:
    """What reached /API/V3, oldest first (the last 2,000), tokens redacted: see ``requestlog.py``.
    ``?body_digests=1`` adds each body's ``body_sha256``."""
    digests = request.query_params.get("body_digests", "") in {"1", "true"}
    return JSONResponse({"requests": sim_of(request).requests(body_digests=digests)})


@knob_router.delete("/requests")
async def clear_requests(request: Request) -> Response:
    sim_of(request).clear_requests()
    return JSONResponse({"requests": []})


@knob_router.get("/accounts/{account_id}/items/{item_id}")
async def stored_item(request: Request, account_id: str, item_id: str) -> Response:
    return JSONResponse(sim_of(request).item(account_id, item_id))


__all__ = ["create_app"]
