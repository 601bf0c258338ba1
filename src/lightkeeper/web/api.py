"""The JSON API under ``/api/``, for the host app's backend. Every route needs the bearer key.

Errors are ``{"code", "message"}`` with a stable code (see ``errors.py``); no answer ever holds a token
except ``POST /api/connections/{id}/token``, whose whole point is one.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from ..connect import LABEL_MAX
from ..keeper import Keeper
from ..store import ConnectionRecord, RunRecord, Trigger
from .auth import ApiKeyCheck
from .errors import ApiError, ErrorBody

StatusName = Literal["connected", "expired", "error", "disconnected"]
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


class ConnectSessionOut(BaseModel):
    url: str = Field(description="One-time link, valid for an hour: hand it to the user.")
    expires_at: datetime


class ConnectionOut(BaseModel):
    id: int
    user_id: str
    account_id: str
    account_name: str | None
    status: StatusName
    token_expires_at: datetime | None
    last_token_refresh_at: datetime | None
    last_error: str | None
    consecutive_failures: int
    next_attempt_at: datetime | None


class TokenOut(BaseModel):
    access_token: str = Field(description="Valid for at least TOKEN_REFRESH_LEEWAY_S.")
    expires_at: datetime
    account_id: str


class RefreshIn(BaseModel):
    connection_id: int | None = Field(None, ge=1, le=2**31 - 1, description="Only this connection.")


class RefreshOut(BaseModel):
    run_id: int


class RunOut(BaseModel):
    run_id: int
    job_name: str
    trigger: str
    status: str
    connection_id: int | None
    started_at: datetime | None
    finished_at: datetime | None
    total: int
    refreshed: int
    expired: int
    errors: int
    skipped: int
    message: str | None


ERRORS: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorBody, "description": "Missing or wrong API key (`unauthorized`)"},
    422: {"model": ErrorBody, "description": "Malformed request (`validation_error`)"},
    503: {"model": ErrorBody, "description": "API disabled (`api_disabled`) or Lightspeed unavailable"},
}


def router(keeper: Keeper) -> APIRouter:
    api = APIRouter(prefix="/api", tags=["api"], dependencies=[Depends(authorize(keeper))], responses=ERRORS)
    not_found: dict[int | str, dict[str, Any]] = {404: {"model": ErrorBody, "description": "`connection_not_found`"}}

    @api.post("/connect-sessions", response_model=ConnectSessionOut, status_code=201)
    def create_connect_session(body: ConnectSessionIn) -> ConnectSessionOut:
        """A one-time connect link for a user; ``return_to`` must be on the allow-list."""
        _check_return_to(keeper, body.return_to)
        link = keeper.connect.create_link(body.user_id, return_to=body.return_to, label=body.label)
        return ConnectSessionOut(url=link.url, expires_at=link.expires_at)

    @api.get("/connections", response_model=list[ConnectionOut])
    def list_connections(
        user_id: Annotated[str | None, Query(max_length=200, pattern=NO_NUL)] = None, status: StatusName | None = None
    ) -> list[dict[str, Any]]:
        """Connections, optionally of one user and/or in one status."""
        return [record.public() for record in keeper.store.connections.iter(user_id=user_id, status=status)]

    @api.get("/connections/{connection_id}", response_model=ConnectionOut, responses=not_found)
    def get_connection(connection_id: ConnectionId) -> dict[str, Any]:
        return _connection(keeper, connection_id).public()

    @api.delete("/connections/{connection_id}", response_model=ConnectionOut, responses=not_found)
    def delete_connection(connection_id: ConnectionId) -> dict[str, Any]:
        """Disconnect: revoke at Lightspeed, delete the stored tokens, status ``disconnected``."""
        _connection(keeper, connection_id)
        return keeper.disconnect(connection_id).public()

    @api.post(
        "/connections/{connection_id}/token",
        response_model=TokenOut,
        responses=not_found | {409: {"model": ErrorBody, "description": "`connection_expired`"}},
    )
    async def fresh_token(connection_id: ConnectionId) -> JSONResponse:
        """A valid access token, refreshed first if it expires within the leeway (single-flight)."""
        # The hot route: host apps call it before every Lightspeed request. A valid token costs one indexed
        # read and a decrypt (~0.2 ms on SQLite), done on the event loop; only a refresh, which may wait on
        # Lightspeed or on another refresher, goes to a worker thread. The ready JSONResponse skips
        # FastAPI's model validation, which for this route would be another thread hop.
        grant = keeper.tokens.current(connection_id)
        if grant is None:
            grant = await run_in_threadpool(keeper.fresh_token, connection_id)
        body = TokenOut(access_token=grant.access_token, expires_at=grant.expires_at, account_id=grant.account_id)
        return JSONResponse(body.model_dump(mode="json"))

    @api.post(
        "/refresh",
        response_model=RefreshOut,
        status_code=202,
        responses=not_found | {409: {"model": ErrorBody, "description": "`connection_expired`: reconnect first"}},
    )
    def trigger_refresh(body: Annotated[RefreshIn | None, Body()] = None) -> RefreshOut:
        """Start a refresh run now (all connections, or one); it goes on in the background."""
        run = keeper.runs.begin(trigger=Trigger.API, connection_id=body.connection_id if body else None)
        threading.Thread(target=_execute, args=(keeper, run), name=f"run-{run.id}", daemon=True).start()
        return RefreshOut(run_id=run.id)

    @api.get("/runs", response_model=list[RunOut])
    def list_runs(limit: Annotated[int, Query(ge=1, le=1000)] = 20) -> list[dict[str, Any]]:
        """The job history, newest first, as ``lightkeeper runs --json`` prints it."""
        return [run.public() for run in keeper.run_history(limit=limit)]

    return api


# Only so that /openapi.json declares the bearer scheme; ``ApiKeyCheck`` does the (constant-time) comparison.
_BEARER = HTTPBearer(auto_error=False, scheme_name="apiKey", description="`Authorization: Bearer $LIGHTKEEPER_API_KEY`")


def authorize(keeper: Keeper) -> Any:
    """The API's dependency: declares the key in the schema and checks it again, in case a route is ever
    served without ``ApiKeyMiddleware`` (which refuses such requests before their body is read)."""
    guard = ApiKeyCheck(keeper.settings)

    # async: it does no I/O, and a sync dependency would cost every API call a thread-pool hop.
    async def check(
        request: Request, _declared: Annotated[HTTPAuthorizationCredentials | None, Security(_BEARER)] = None
    ) -> None:
        refusal = guard.refusal(request.headers, request.client.host if request.client else None)
        if refusal is not None:
            raise refusal

    return check


def _connection(keeper: Keeper, connection_id: int) -> ConnectionRecord:
    record = keeper.store.connections.get(connection_id)
    if record is None:
        raise ApiError(404, "connection_not_found", f"there is no connection {connection_id}")
    return record


def _check_return_to(keeper: Keeper, return_to: str | None) -> None:
    if return_to is None:
        return
    try:
        parts = urlsplit(return_to)
    except ValueError:  # e.g. "http://[" (a malformed IPv6 host)
        raise ApiError(422, "validation_error", "return_to is not a valid URL") from None
    origin = f"{parts.scheme.lower()}://{parts.netloc.lower()}"
    if parts.scheme not in ("http", "https") or origin not in keeper.settings.return_to_origins:
        raise ApiError(422, "validation_error", "return_to is not on the allow-list (LIGHTKEEPER_RETURN_TO_ORIGINS)")


def _execute(keeper: Keeper, run: RunRecord) -> None:
    try:
        keeper.runs.execute(run)
    except Exception:  # recorded on the run; a background thread has nobody else to tell
        import logging

        logging.getLogger(__name__).exception("background run %s failed", run.id)


__all__ = ["router"]
