"""The FastAPI app: merchant pages, the JSON API, health and metrics.

Routes are thin shells over ``Keeper``. They are sync, so FastAPI runs them in its thread pool, which is
where blocking database and Lightspeed calls belong.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..keeper import Keeper
from ..store import head_revision
from ..version import __version__
from . import api, errors, pages, stock_api
from .auth import ApiKeyCheck, ApiKeyMiddleware
from .headers import SecurityHeadersMiddleware
from .limits import BodyLimitMiddleware

log = logging.getLogger(__name__)

DESCRIPTION = """Keeps Lightspeed Retail OAuth connections alive.

Every `/api/` route needs `Authorization: Bearer $LIGHTKEEPER_API_KEY`. Errors are JSON
`{"code", "message"}` with a stable `code`. Times are RFC 3339 in UTC with microseconds:
`2026-11-30T18:00:00.000000Z`, as `lightkeeper … --json` prints them."""


def create_app(keeper: Keeper) -> FastAPI:
    app = FastAPI(title="lightkeeper", version=__version__, description=DESCRIPTION)
    app.state.keeper = keeper
    errors.install(app)
    app.include_router(pages.router(keeper))
    app.include_router(api.router(keeper))
    app.include_router(stock_api.router(keeper, Depends(api.authorize(keeper))), responses=api.ERRORS)
    # Outermost last: headers go on every answer, the key is checked before the body is read or counted.
    app.add_middleware(BodyLimitMiddleware, settings=keeper.settings)
    app.add_middleware(ApiKeyMiddleware, check=ApiKeyCheck(keeper.settings))
    app.add_middleware(SecurityHeadersMiddleware, settings=keeper.settings)

    @app.get("/healthz", tags=["ops"], responses={503: {"description": "Database unreachable or schema not current"}})
    def healthz() -> JSONResponse:
        """Database reachable and migrations current: 200; otherwise 503."""
        return _health(keeper)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


def _health(keeper: Keeper) -> JSONResponse:
    try:
        current = keeper.schema_revision()
    except Exception as exc:  # any database failure is "unhealthy", said in one line
        log.warning("health check: database unreachable: %s", type(exc).__name__)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    head = head_revision()
    body: dict[str, Any] = {"status": "ok", "database": "ok", "schema": current}
    if current != head:
        body.update(status="unavailable", database="schema behind", expected_schema=head)
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


__all__ = ["create_app"]
