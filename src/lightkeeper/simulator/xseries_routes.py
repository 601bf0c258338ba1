"""HTTP face of the X-Series simulator, beside the R-Series routes on the same server and port.

Lightspeed serves X-Series from ``secure.retail.lightspeed.app/connect`` and ``{prefix}.retail.lightspeed.app``;
here one host stands for all of them under ``/x``: a test sets ``LIGHTSPEED_X_CONNECT_URL`` to
``{sim}/x/connect`` and ``LIGHTSPEED_X_BASE_URL`` to ``{sim}/x/{domain_prefix}``. Routes:

- ``GET /x/connect``: the consent page (``xseries_oauth.py``).
- ``POST /x/{prefix}/api/1.0/token``: the token endpoint, fault endpoint ``x_token`` (it also takes faults
  queued for ``token``: see ``faults.py``), slowed by ``token_latency_ms`` after its body is read; anything
  but POST is 405.
- ``/x/{prefix}/api/{rest}``, any method: the API (``xseries_api.py``), fault endpoint ``x_api`` (also takes
  ``api`` faults), slowed by ``api_latency_ms``; logged by ``RequestRecorder``.
- ``/_sim/x/…``: the X-Series knobs (``xseries_knobs.py``; ``SimulatorControl`` wraps them).

There is no revoke route: X-Series documents none, so ``/x/{prefix}/api/1.0/revoke`` is 404.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from lightkeeper.simulator.replies import Reply, SimulatorError
from lightkeeper.simulator.serving import api_latency, serve, sim_of, sleep_ms, to_response
from lightkeeper.simulator.xseries_api import XApiCall

x_router = APIRouter(prefix="/x")
x_knob_router = APIRouter(prefix="/_sim/x")

_NON_POST = ["GET", "PUT", "PATCH", "DELETE"]
_ANY_METHOD = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]


@x_router.get("/connect")
async def connect(request: Request) -> Response:
    return to_response(sim_of(request).x_connect(dict(request.query_params)))


async def _form_fields(request: Request) -> tuple[str, dict[str, str]]:
    """The body's media type (lower case) and its fields when it is a urlencoded form (else none)."""
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    if content_type != "application/x-www-form-urlencoded":
        return content_type, {}
    return content_type, dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))


@x_router.api_route("/{prefix}/api/1.0/token", methods=["POST", *_NON_POST])
async def token(request: Request, prefix: str) -> Response:
    if request.method != "POST":
        body = {"error": "invalid_request", "error_description": "The request method is not allowed."}
        return JSONResponse(body, 405, {"Allow": "POST"})

    async def handle() -> Reply:
        sim = sim_of(request)
        # Read on arrival, before the latency: a client gone meanwhile still has its grant carried out.
        content_type, fields = await _form_fields(request)
        epoch = sim.epoch
        await sleep_ms(sim.config.token_latency_ms)
        return sim.x_token(prefix, fields, content_type=content_type, epoch=epoch)

    return await serve(request, "x_token", handle)


async def _json_body(request: Request) -> object:
    raw = await request.body()
    if not raw.strip():
        return None
    try:
        body: object = json.loads(raw)
    except ValueError:
        return None
    return body


@x_router.api_route("/{prefix}/api/{rest:path}", methods=_ANY_METHOD)
async def api(request: Request, prefix: str, rest: str) -> Response:
    async def handle() -> Reply:
        await api_latency(request)
        query = parse_qsl(request.url.query, keep_blank_values=True)
        authorization = request.headers.get("authorization")
        call = XApiCall(prefix, request.method, rest, query, authorization, await _json_body(request))
        return sim_of(request).x_api(call)

    return await serve(request, "x_api", handle)


# ---------------------------------------------------------------------- knobs


async def _count(request: Request) -> int:
    raw = await request.body()
    try:
        data: Any = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise SimulatorError(400, "body must be JSON") from exc
    count = data.get("count") if isinstance(data, dict) else None
    if isinstance(count, bool) or not isinstance(count, int):
        raise SimulatorError(400, "count must be an integer")
    return count


@x_knob_router.post("/seed")
async def seed_x(request: Request) -> Response:
    """Connected stores in bulk, with their first token pairs (tests skip the consent dance)."""
    return JSONResponse(sim_of(request).seed_x(await _count(request)))


@x_knob_router.get("/stores")
async def x_stores(request: Request) -> Response:
    return JSONResponse(sim_of(request).x_stores())


@x_knob_router.post("/stores/{store}/products")
async def add_products(request: Request, store: str) -> Response:
    return JSONResponse(sim_of(request).add_products(store, await _count(request)))


@x_knob_router.get("/stores/{store}/products/{product_id}")
async def x_product(request: Request, store: str, product_id: str) -> Response:
    return JSONResponse(sim_of(request).x_product(store, product_id))


__all__ = ["x_knob_router", "x_router"]
