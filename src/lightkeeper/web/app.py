"""The FastAPI app: the connect flow's pages, health and metrics.

Each route is a thin shell over ``Keeper``: it parses, calls one service, renders. Sync routes run in
FastAPI's thread pool, which is where blocking database and Lightspeed calls belong.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.templating import Jinja2Templates
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from .. import __version__
from ..errors import ConnectFlowError, LightkeeperError
from ..keeper import Keeper
from ..store import current_revision, head_revision

log = logging.getLogger(__name__)
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))

_TITLES = {
    "access_denied": "Access not granted",
    "link_expired": "This link has expired",
    "link_used": "This link was already used",
    "link_invalid": "This link is not valid",
    "provider_unavailable": "Lightspeed is not answering",
    "client_misconfigured": "This app is misconfigured",
    "exchange_failed": "Sign-in could not be completed",
}


def create_app(keeper: Keeper) -> FastAPI:
    app = FastAPI(title="lightkeeper", version=__version__, summary="Keeps Lightspeed connections alive.")
    app.state.keeper = keeper
    app.add_exception_handler(ConnectFlowError, _connect_flow_error)  # type: ignore[arg-type]
    _routes(app, keeper)
    return app


def _routes(app: FastAPI, keeper: Keeper) -> None:
    @app.get("/connect-lightspeed/start", include_in_schema=False)
    def start(session: str = "") -> Response:
        """A one-time connect link: use it and send the merchant to Lightspeed's consent page."""
        if not session:
            raise ConnectFlowError("This connect link is incomplete. Ask the app for a new one.", code="link_invalid")
        _user, authorize_url = keeper.connect.start(session)
        return RedirectResponse(authorize_url, status_code=302)

    @app.get("/oauth/callback", include_in_schema=False, response_class=HTMLResponse)
    def callback(request: Request) -> Response:
        """Lightspeed sends the merchant back here with ``code`` and ``state`` (or ``error``)."""
        record = keeper.connect.complete(dict(request.query_params))
        return templates.TemplateResponse(request, "connected.html", {"connection": record.public()})

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """Database reachable and migrations current: 200; otherwise 503."""
        return _health(keeper)

    @app.get("/metrics", include_in_schema=False)
    def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)


def _health(keeper: Keeper) -> JSONResponse:
    try:
        current = current_revision(keeper.store.engine)
    except Exception as exc:  # any database failure is "unhealthy", said in one line
        log.warning("health check: database unreachable: %s", type(exc).__name__)
        return JSONResponse({"status": "unavailable", "database": "unreachable"}, status_code=503)
    head = head_revision()
    body: dict[str, Any] = {"status": "ok", "database": "ok", "schema": current}
    if current != head:
        body.update(status="unavailable", database="schema behind", expected_schema=head)
        return JSONResponse(body, status_code=503)
    return JSONResponse(body)


def _connect_flow_error(request: Request, exc: ConnectFlowError) -> Response:
    log.info("connect flow refused (%s) on %s", exc.code, request.url.path)
    title = _TITLES.get(exc.code, "This sign-in cannot be used")
    context = {"title": title, "message": str(exc), "code": exc.code}
    return templates.TemplateResponse(request, "error.html", context, status_code=exc.status)


__all__ = ["LightkeeperError", "create_app"]
