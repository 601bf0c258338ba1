"""The merchant's pages: the one-time link's confirm page, the OAuth callback, and ``/connect-lightspeed``.

Opening a link (GET) shows a confirm page and changes nothing: link scanners and chat previews fetch
every link, and must not use it up. The page's one button POSTs it back; that uses the link and opens a
browser session (an HttpOnly, SameSite=Lax cookie; Lax, not Strict, because Lightspeed's redirect back to
the callback is a cross-site top-level navigation, which must carry it). The callback proceeds only with
the cookie its OAuth state was issued to.

Every form carries a CSRF token derived from a cookie's secret: the confirm form from a cookie of its own
(there is no session yet), the others from the session cookie. No page ever shows a token.
"""

from __future__ import annotations

import secrets
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from ..connect import START_PATH
from ..errors import ConnectFlowError, ConnectionNotFound, ProviderError
from ..keeper import Keeper
from ..store import ConnectionRecord, ConnectSession, Status
from ..views import ConnectionView
from .templating import templates

COOKIE = "lightkeeper_session"
#: Set by the confirm page, for its form's CSRF token only: a site cannot make a browser use a link.
CONFIRM_COOKIE = "lightkeeper_confirm"
COOKIE_MAX_AGE_S = 3600

_STATUS_WORDS = {
    Status.CONNECTED: "Connected",
    Status.EXPIRED: "Expired: reconnect needed",
    Status.ERROR: "Error",
    Status.DISCONNECTED: "Disconnected",
}
_FLASH = {"disconnected": "Disconnected from Lightspeed.", "connected": "Connected to Lightspeed."}


def router(keeper: Keeper) -> APIRouter:
    pages = APIRouter(include_in_schema=False)
    settings = keeper.settings
    # Secure cookies whenever the public URL is https (a local http run could not send them back).
    secure = settings.public_url.startswith("https://")

    # HEAD too: link checkers ask for headers only, and must get the same harmless answer.
    @pages.api_route("/connect-lightspeed/start", methods=["GET", "HEAD"], response_class=HTMLResponse)
    def confirm(request: Request, session: str = "") -> Response:
        """A one-time connect link: a page naming the app and whose store, with one button; uses nothing."""
        link = keeper.preview_link(_link_token(session))
        cookie = request.cookies.get(CONFIRM_COOKIE) or secrets.token_urlsafe(32)
        context = {
            "app_name": settings.lightkeeper_app_name,
            "label": link.label or link.user_id,
            "session": session,
            "csrf": keeper.csrf_token(cookie, purpose=keeper.confirm_purpose(session)),
            "expires_at": _when(link.expires_at),
            "provider_title": keeper.providers.title(link.provider),
        }
        response = templates.TemplateResponse(request, "confirm.html", context)
        if cookie != request.cookies.get(CONFIRM_COOKIE):
            _set_cookie(response, CONFIRM_COOKIE, cookie, secure=secure, path=START_PATH)
        return response

    @pages.post("/connect-lightspeed/start")
    def start(request: Request, session: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = "") -> Response:
        """The confirm page's button: use the link, open the browser session, go to Lightspeed (303)."""
        token = _link_token(session)
        keeper.check_csrf(request.cookies.get(CONFIRM_COOKIE, ""), csrf, purpose=keeper.confirm_purpose(token))
        started = keeper.start_connect(token)
        response = RedirectResponse(started.authorize_url, status_code=303)
        _set_cookie(response, COOKIE, started.browser_token, secure=secure)
        response.delete_cookie(CONFIRM_COOKIE, path=START_PATH)
        return response

    @pages.get("/oauth/callback", response_class=HTMLResponse)
    def callback(request: Request) -> Response:
        """Lightspeed sends the merchant back here with ``code`` and ``state`` (or ``error``)."""
        record = keeper.complete_connect(dict(request.query_params), browser_token=request.cookies.get(COOKIE, ""))
        session = _require_session(request, keeper)  # the one the state was issued to, checked above
        name = record.account_name or f"account {record.account_id}"
        return _page(request, keeper, session, flash=f"Connected: {name}.")

    @pages.get("/connect-lightspeed", response_class=HTMLResponse)
    def page(request: Request, done: str = "") -> Response:
        """The merchant's connections, with Connect, Disconnect and Reconnect."""
        return _page(request, keeper, _require_session(request, keeper), flash=_FLASH.get(done))

    @pages.post("/connect-lightspeed/connect")
    def connect_again(
        request: Request,
        csrf: Annotated[str, Form()] = "",
        provider: Annotated[str | None, Form(max_length=40, pattern=r"^[a-z0-9-]+$")] = None,
    ) -> Response:
        """Start the OAuth flow again for the session's user (Connect, or Reconnect on the card's platform)."""
        session = _require_session(request, keeper)
        keeper.check_csrf(request.cookies.get(COOKIE, ""), csrf)
        url = keeper.authorize_url(session.user_id, session_id=session.id, provider=provider)
        return RedirectResponse(url, status_code=303)

    @pages.post("/connect-lightspeed/disconnect")
    def disconnect(
        request: Request, connection_id: Annotated[int, Form(ge=1, le=2**31 - 1)], csrf: Annotated[str, Form()] = ""
    ) -> Response:
        """Revoke at Lightspeed, delete the stored tokens, show the connection as disconnected."""
        session = _require_session(request, keeper)
        keeper.check_csrf(request.cookies.get(COOKIE, ""), csrf)
        record = _find(keeper, connection_id)
        if record is None or record.user_id != session.user_id:
            raise ConnectFlowError("That connection is not yours to disconnect.", code="connection_not_found")
        try:
            keeper.disconnect(connection_id)
        except ProviderError as exc:
            raise ConnectFlowError(
                "Lightspeed could not be reached, so nothing was changed. Please try again.",
                code="provider_unavailable",
            ) from exc
        return RedirectResponse("/connect-lightspeed?done=disconnected", status_code=303)

    return pages


def _page(request: Request, keeper: Keeper, session: ConnectSession, *, flash: str | None) -> Response:
    token = request.cookies.get(COOKIE, "")
    context: dict[str, Any] = {
        "user_id": session.user_id,
        "connections": [_view(keeper, record) for record in keeper.connections(user_id=session.user_id)],
        "csrf": keeper.csrf_token(token) if token else "",
        "flash": flash,
        "return_to": session.return_to,
    }
    return templates.TemplateResponse(request, "connect.html", context)


def _find(keeper: Keeper, connection_id: int) -> ConnectionRecord | None:
    try:
        return keeper.connection(connection_id)
    except ConnectionNotFound:
        return None  # answered like another user's: the page does not tell which ids exist


def _view(keeper: Keeper, record: ConnectionRecord) -> dict[str, Any]:
    public = ConnectionView.model_validate(record).model_dump()
    public["provider_title"] = keeper.providers.title(record.provider)
    public["last_token_refresh_at"] = _when(record.last_token_refresh_at)
    public["token_expires_at"] = _when(record.token_expires_at)
    public["status_words"] = _STATUS_WORDS[record.status]
    public["can_disconnect"] = record.status in (Status.CONNECTED, Status.ERROR, Status.EXPIRED)
    public["needs_reconnect"] = record.status in (Status.EXPIRED, Status.DISCONNECTED)
    return public


def _when(value: datetime | None) -> str | None:
    """2026-11-27 08:36 UTC: what a person reads, not a log line."""
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else None


def _session(request: Request, keeper: Keeper) -> ConnectSession | None:
    return keeper.browser_session(request.cookies.get(COOKIE, ""))


def _require_session(request: Request, keeper: Keeper) -> ConnectSession:
    session = _session(request, keeper)
    if session is None:
        raise ConnectFlowError(
            "Your session has ended. Open the connect link from the app again.", code="session_required"
        )
    return session


def _link_token(session: str) -> str:
    if not session:
        raise ConnectFlowError("This connect link is incomplete. Ask the app for a new one.", code="link_invalid")
    return session


def _set_cookie(response: Response, name: str, value: str, *, secure: bool, path: str = "/") -> None:
    response.set_cookie(name, value, max_age=COOKIE_MAX_AGE_S, httponly=True, samesite="lax", secure=secure, path=path)


__all__ = ["CONFIRM_COOKIE", "COOKIE", "router"]
