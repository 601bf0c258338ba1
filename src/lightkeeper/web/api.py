"""The JSON API under ``/api/``, for the host app's backend. Every route needs a bearer key with its scope
(``auth.ROUTE_SCOPES``: listings ``read``; links and disconnect ``connect``; the token route ``tokens``; the proxy
and stock routes ``proxy``; ``POST /api/refresh`` ``refresh``; ``admin`` has them all).

Errors are ``{"code", "message"}`` with a stable code (see ``errors.py``); no answer ever holds a token
except ``POST /api/connections/{id}/token``, whose whole point is one.
"""

from __future__ import annotations

import logging
import threading
from typing import Annotated, Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from ..connect import LABEL_MAX
from ..keeper import Keeper
from ..store import RunRecord, Trigger
from ..views import ConnectionStatus, ConnectionView, ConnectLinkView, RunStartedView, RunView, TokenView
from .auth import ApiKeyCheck
from .errors import ApiError, ErrorBody

log = logging.getLogger(__name__)

# Ids are 32-bit in the schema: a bigger number is a malformed request (422), not a database error (500).
ConnectionId = Annotated[int, Path(ge=1, le=2**31 - 1, description="A connection id.")]


# PostgreSQL text cannot hold NUL: refuse it as a malformed request (422) instead of failing in the database.
NO_NUL = r"^[^\x00]*$"
USER_ID = r"^[^\x00]*[^\x00\s][^\x00]*$"  # no NUL, and not blank


class ConnectSessionIn(BaseModel):
    user_id: str = Field(min_length=1, max_length=200, pattern=USER_ID, description="The host app's user id.")
    return_to: str | None = Field(
        None, max_length=2000, pattern=NO_NUL, description="Where the page links back to (allow-listed)."
    )
    label: str | None = Field(
        None,
        max_length=LABEL_MAX,
        pattern=NO_NUL,
        description="Whose store the link connects, as the confirm page says it (default: the user id).",
    )
    provider: str | None = Field(
        None,
        max_length=40,
        pattern=r"^[a-z0-9-]+$",
        description="`r-series` or `x-series` (default: the only one configured, else `r-series`).",
    )


class RefreshIn(BaseModel):
    connection_id: int | None = Field(None, ge=1, le=2**31 - 1, description="Only this connection.")


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong API key (`unauthorized`)"},
    403: {"model": ErrorBody, "description": "The key lacks this route's scope (`insufficient_scope`, names it)"},
    422: {"model": ErrorBody, "description": "Malformed request (`validation_error`)"},
    503: {"model": ErrorBody, "description": "API disabled (`api_disabled`) or Lightspeed unavailable"},
}


def router(keeper: Keeper) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["api"], dependencies=[Depends(authorize(keeper))], responses=ERRORS)
    not_found: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "`connection_not_found`"}}
    settings = keeper.settings
    return_to_origins = settings.return_to_origins

    @api.post("/connect-sessions", response_model=ConnectLinkView, status_code=201)
    def create_connect_session(body: ConnectSessionIn) -> ConnectLinkView:
        """A one-time connect link for a user; ``return_to`` must be on the allow-list."""
        _check_return_to(return_to_origins, body.return_to)
        link = keeper.create_link(body.user_id, return_to=body.return_to, label=body.label, provider=body.provider)
        return ConnectLinkView.model_validate(link)

    @api.get("/connections", response_model=list[ConnectionView])
    def list_connections(
        user_id: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None,
        status: ConnectionStatus | None = None,
    ) -> list[ConnectionView]:
        """Connections, optionally of one user and/or in one status."""
        return [ConnectionView.model_validate(record) for record in keeper.connections(user_id=user_id, status=status)]

    @api.get("/connections/{connection_id}", response_model=ConnectionView, responses=not_found)
    def get_connection(connection_id: ConnectionId) -> ConnectionView:
        return ConnectionView.model_validate(keeper.connection(connection_id))

    @api.delete("/connections/{connection_id}", response_model=ConnectionView, responses=not_found)
    def delete_connection(connection_id: ConnectionId) -> ConnectionView:
        """Disconnect: revoke at Lightspeed, delete the stored tokens, status ``disconnected``."""
        return ConnectionView.model_validate(keeper.disconnect(connection_id))

    @api.post(
        "/connections/{connection_id}/token",
        response_model=TokenView,
        responses=not_found | {409: {"model": ErrorBody, "description": "`connection_expired`"}},
    )
    async def fresh_token(connection_id: ConnectionId) -> JSONResponse:
        """A valid access token, refreshed first if it expires within the leeway (single-flight)."""
        # The hot route: host apps call it before every Lightspeed request. A valid token costs one indexed
        # read and a decrypt (~0.2 ms on SQLite), done on the event loop; only a refresh, which may wait on
        # Lightspeed or on another refresher, goes to a worker thread. The ready JSONResponse skips
        # FastAPI's model validation, which for this route would be another thread hop.
        grant = keeper.current_token(connection_id)
        if grant is None:
            grant = await run_in_threadpool(keeper.fresh_token, connection_id)
        return JSONResponse(TokenView.model_validate(grant).document())

    @api.post(
        "/refresh",
        response_model=RunStartedView,
        status_code=202,
        responses=not_found | {409: {"model": ErrorBody, "description": "`connection_expired`: reconnect first"}},
    )
    def trigger_refresh(body: Annotated[RefreshIn | None, Body()] = None) -> RunStartedView:
        """Start a refresh run now (all connections, or one); it goes on in the background."""
        run = keeper.begin_run(trigger=Trigger.API, connection_id=body.connection_id if body else None)
        threading.Thread(target=_execute, args=(keeper, run), name=f"run-{run.id}", daemon=True).start()
        return RunStartedView(run_id=run.id)

    @api.get("/runs", response_model=list[RunView])
    def list_runs(limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> list[RunView]:
        """The job history, newest first, as ``lightkeeper runs --json`` prints it."""
        return [RunView.model_validate(run) for run in keeper.run_history(limit=limit)]

    return api


# Only so that /openapi.json declares the bearer scheme; ``ApiKeyCheck`` does the (constant-time) comparison.
_BEARER = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="`Authorization: Bearer <key>`: `LIGHTKEEPER_API_KEY`, or a key of `LIGHTKEEPER_API_KEYS` with the "
    "route's scope",
)


def authorize(keeper: Keeper) -> Any:
    """The API's dependency: declares the key in the schema and checks it (and its scope) again, in case a
    route is ever served without ``ApiKeyMiddleware`` (which refuses such requests before their body is read)."""
    guard = ApiKeyCheck(keeper.settings)

    # async: it does no I/O, and a sync dependency would cost every API call a thread-pool hop.
    async def check(
        request: Request, _declared: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None
    ) -> None:
        client = request.client.host if request.client else None
        decision = guard.decide(request.method, request.scope["path"], request.headers, client)
        if decision.error is not None:
            raise decision.error

    return check


def _check_return_to(allowed: frozenset[str], return_to: str | None) -> None:
    if return_to is None:
        return
    try:
        parts = urlsplit(return_to)
    except ValueError:  # e.g. "http://[" (a malformed IPv6 host)
        raise ApiError(422, "validation_error", "return_to is not a valid URL") from None
    origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    if parts.scheme not in ("http", "https") or origin not in allowed:
        raise ApiError(422, "validation_error", "return_to is not on the allow-list (LIGHTKEEPER_RETURN_TO_ORIGINS)")


def _execute(keeper: Keeper, run: RunRecord) -> None:
    try:
        keeper.execute_run(run)
    except Exception:  # recorded on the run; a background thread has nobody else to tell
        log.exception("background run %s failed", run.id)


__all__ = ["router"]
