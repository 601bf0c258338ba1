"""The FastAPI app: merchant pages, the JSON API, health and metrics.

Routes are thin shells over ``Keeper``. They are sync, so FastAPI runs them in its thread pool, which is
where blocking database and Lightspeed calls belong.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import Depends, FastAPI
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ..keeper import Keeper
from ..version import __version__
from . import api, dashboard, errors, pages, proxy_api, stock_api
from .auth import ApiKeyCheck, ApiKeyMiddleware
from .headers import SecurityHeadersMiddleware
from .limits import BodyLimitMiddleware
from .request_metrics import RequestMetricsMiddleware

DESCRIPTION = """Keeps Lightspeed Retail OAuth connections alive.

Every `/api/` route needs `Authorization: Bearer <key>` with the route's scope (`LIGHTKEEPER_API_KEY` has them
all; keys of `LIGHTKEEPER_API_KEYS` have theirs; a key without it gets 403 `insufficient_scope`). Errors are JSON
`{"code", "message"}` with a stable `code`. Times are RFC 3339 in UTC with microseconds:
`2026-11-30T18:00:00.000000Z`, as `lightkeeper … --json` prints them."""


def create_app(keeper: Keeper) -> FastAPI:
    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        yield
        await keeper.proxy.upstream.aclose()  # the proxy's connections belong to this event loop

    # The interactive docs load scripts from a CDN on this origin (where operators paste keys): off unless asked.
    docs = keeper.settings.lightkeeper_docs
    app = FastAPI(
        title="lightkeeper",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
    )
    app.state.keeper = keeper
    errors.install(app)
    app.include_router(pages.router(keeper))
    app.include_router(dashboard.router(keeper))
    app.include_router(api.router(keeper))
    app.include_router(stock_api.router(keeper, Depends(api.authorize(keeper))), responses=api.ERRORS)
    app.include_router(proxy_api.router(keeper, Depends(api.authorize(keeper))), responses=api.ERRORS)
    # Outermost last: headers go on every answer, the key is checked before the body is read or counted.
    app.add_middleware(BodyLimitMiddleware, settings=keeper.settings)
    app.add_middleware(ApiKeyMiddleware, check=ApiKeyCheck(keeper.settings))
    # The confirm page's form leads to the consent page of the link's provider: each one in use is allowed.
    origins = [origin for provider in keeper.providers.values() for origin in provider.form_origins()]
    app.add_middleware(SecurityHeadersMiddleware, settings=keeper.settings, form_origins=origins)
    app.add_middleware(RequestMetricsMiddleware)  # outermost: sees every final status

    @app.get("/healthz", tags=["ops"], responses={503: {"description": "A check failed (named in `checks`)"}})
    def healthz() -> JSONResponse:
        """Each check by name (`database` reachable, `migrations` current, `scheduler` loop alive): 200 when
        all pass, 503 otherwise. A process without a scheduler reports it "not running here"."""
        health = keeper.health()
        return JSONResponse(health.document(), status_code=200 if health.ok else 503)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        # Needs a key with the ``read`` scope (ApiKeyMiddleware); ``worker --metrics-port`` serves its own port.
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return app


__all__ = ["create_app"]
