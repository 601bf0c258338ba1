"""Our errors as HTTP answers: JSON ``{"code", "message"}`` under ``/api/``, friendly pages elsewhere."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..errors import (
    ConfigError,
    ConnectFlowError,
    ConnectionExpired,
    ConnectionNotFound,
    DecryptError,
    LightkeeperError,
    ProviderError,
    RateLimited,
    StockUnsupported,
)
from .templating import templates

log = logging.getLogger(__name__)

_TITLES = {
    "access_denied": "Access not granted",
    "link_expired": "This link has expired",
    "link_used": "This link was already used",
    "link_invalid": "This link is not valid",
    "provider_unavailable": "Lightspeed is not answering",
    "client_misconfigured": "This app is misconfigured",
    "exchange_failed": "Sign-in could not be completed",
    "session_required": "Please open your connect link again",
    "csrf_failed": "This form has expired",
    "bad_request": "Something is missing",
    "not_found": "Page not found",
    "method_not_allowed": "Page not found",
    "browser_mismatch": "This sign-in belongs to another browser",
    "authorization_error": "Lightspeed did not connect",
    "state_invalid": "Sign-in could not be completed",
    "state_used": "Sign-in could not be completed",
    "state_expired": "Sign-in could not be completed",
    "state_missing": "Sign-in could not be completed",
    "code_missing": "Sign-in could not be completed",
    "payload_too_large": "This request is too large",
}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}


class ErrorBody(BaseModel):
    code: str
    message: str


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.headers = headers or {}


def _classify(exc: LightkeeperError) -> ApiError:
    """Status and stable code for each of our errors."""
    if isinstance(exc, ConnectionNotFound):
        return ApiError(404, "connection_not_found", str(exc))
    if isinstance(exc, ConnectionExpired):
        return ApiError(409, "connection_expired", str(exc))
    if isinstance(exc, RateLimited):
        return ApiError(503, "rate_limited", str(exc))
    if isinstance(exc, ProviderError):
        return ApiError(503, "provider_unavailable", str(exc))
    if isinstance(exc, StockUnsupported):
        return ApiError(400, "stock_unsupported", str(exc))
    if isinstance(exc, (ConfigError, DecryptError)):
        return ApiError(500, "configuration_error", str(exc))
    if isinstance(exc, ConnectFlowError):
        return ApiError(flow_status(exc), exc.code, str(exc))
    return ApiError(500, "internal_error", "an unexpected error happened; see the service log")


#: The HTTP status of each connect-flow refusal (the flow itself knows nothing of HTTP); others are 400.
_FLOW_STATUS = {
    "session_required": 401,
    "csrf_failed": 403,
    "browser_mismatch": 403,
    "connection_not_found": 404,
    "client_misconfigured": 502,
    "provider_unavailable": 502,
}


def flow_status(exc: ConnectFlowError) -> int:
    return _FLOW_STATUS.get(exc.code, 400)


def json_error(error: ApiError) -> JSONResponse:
    # RFC 6750: a 401 says which scheme it wants.
    headers = {"WWW-Authenticate": "Bearer"} if error.status == 401 else {}
    headers |= error.headers
    return JSONResponse({"code": error.code, "message": error.message}, status_code=error.status, headers=headers)


def page_error(request: Request, status: int, code: str, message: str) -> Response:
    """The friendly page for a merchant; machines get JSON under /api/."""
    title = _TITLES.get(code, "This page cannot be shown")
    context = {"title": title, "message": message, "code": code}
    return templates.TemplateResponse(request, "error.html", context, status_code=status)


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


def install(app: FastAPI) -> None:
    @app.exception_handler(ApiError)
    def api_error(_request: Request, exc: ApiError) -> Response:
        return json_error(exc)

    @app.exception_handler(ConnectFlowError)
    def connect_flow_error(request: Request, exc: ConnectFlowError) -> Response:
        if _is_api(request):
            return json_error(_classify(exc))
        log.info("connect flow refused (%s) on %s", exc.code, request.url.path)
        return page_error(request, flow_status(exc), exc.code, str(exc))

    @app.exception_handler(LightkeeperError)
    def lightkeeper_error(request: Request, exc: LightkeeperError) -> Response:
        error = _classify(exc)
        if error.status >= 500:
            log.warning("%s %s: %s", request.method, request.url.path, exc)
        return json_error(error)

    @app.exception_handler(RequestValidationError)
    def validation_error(request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        if not _is_api(request):
            return page_error(request, 400, "bad_request", "This request is incomplete. Go back and try again.")
        return json_error(ApiError(422, "validation_error", f"{where}: {first.get('msg', 'invalid request')}"))

    @app.exception_handler(StarletteHTTPException)
    def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        if request.url.path.startswith(("/connect-lightspeed", "/oauth/")):
            return page_error(request, exc.status_code, code, "There is nothing here. Open the link the app gave you.")
        return json_error(ApiError(exc.status_code, code, str(exc.detail)))

    @app.exception_handler(Exception)
    def unexpected(request: Request, exc: Exception) -> Response:
        # Called by Starlette outside any ``except`` block: pass the exception, or the log shows "NoneType: None".
        log.error("unexpected error on %s %s", request.method, request.url.path, exc_info=exc)
        return json_error(ApiError(500, "internal_error", "an unexpected error happened; see the service log"))


__all__ = ["ApiError", "ErrorBody", "install", "json_error", "page_error"]
