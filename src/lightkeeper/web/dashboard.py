"""The operator dashboard at ``/dashboard``: connections by status, the ones that need their merchant, a chart
of refresh outcomes, the runs and the webhook outbox.

Who may see it is ``dashboard_auth``'s decision. Every form POSTs with a CSRF token bound to the visitor's
cookie (the session's, or before sign-in the form cookie's) and to the form's purpose. "Create connect link"
mints on POST only and shows the link once, on the answer to that POST: the link is never logged, never
put in a URL, and the page is not cached (``no-store``, as every page here).
"""

from __future__ import annotations

import logging
import secrets
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from markupsafe import Markup

from ..connect import fit_label
from ..errors import ConnectionNotFound
from ..keeper import Keeper
from ..store import ConnectionRecord, EventRecord, RunRecord, Status
from ..views import ConnectionView, EventView, RunView
from .auth import client_host
from .chart import outcome_chart
from .dashboard_auth import (
    COOKIE_PATH,
    FORM_COOKIE,
    SESSION_COOKIE,
    SESSION_TTL,
    Access,
    DashboardAuth,
    Visitor,
)
from .templating import templates

log = logging.getLogger(__name__)

LOGIN_PURPOSE, LINK_PURPOSE, LOGOUT_PURPOSE = "dashboard-login", "dashboard-link", "dashboard-logout"
HISTORY_DAYS = 14
RUNS_SHOWN = 20
EVENTS_SHOWN = 50
#: Connections listed per status that needs attention; the counts above the lists are always complete.
LISTED = 50
_ATTENTION = (Status.EXPIRED, Status.ERROR)
_REFUSALS = {
    Access.OFF: (
        503,
        "The dashboard is off",
        "Set LIGHTKEEPER_API_KEY or an admin key in LIGHTKEEPER_API_KEYS to use it (or LIGHTKEEPER_DEV=1 locally).",
    ),
    Access.NO_SCOPE: (403, "This key cannot open the dashboard", "The dashboard needs a key with the admin scope."),
    Access.NOT_LOCAL: (
        403,
        "The dashboard answers this machine only",
        "Without LIGHTKEEPER_API_KEY (LIGHTKEEPER_DEV=1) it answers this machine only, not through a proxy.",
    ),
}


def router(keeper: Keeper) -> APIRouter:
    board = APIRouter(include_in_schema=False)
    # Sign-outs and wrong keys live in the database: every replica behind a load balancer shares them.
    auth = DashboardAuth(keeper.settings, keeper.clock, keeper.dashboard_state())
    pages = _Pages(keeper, auth)

    @board.get("/dashboard", response_class=HTMLResponse)
    def dashboard(request: Request) -> Response:
        """The dashboard for a signed-in browser, a bearer key or a dev run; else the login form."""
        visitor = auth.visitor(request)
        if visitor.access.allowed:
            return pages.board(request, visitor)
        response = pages.refusal(request, visitor) or pages.login(
            request, status=_LOGIN_STATUS.get(visitor.access, 200)
        )
        if visitor.access is Access.BAD_SESSION:  # malformed, forged, ended or of a removed key: forget it
            response.delete_cookie(
                SESSION_COOKIE, path=COOKIE_PATH, secure=auth.secure, httponly=True, samesite="strict"
            )
        return response

    @board.post("/dashboard/login")
    def login(request: Request, key: Annotated[str, Form()] = "", csrf: Annotated[str, Form()] = "") -> Response:
        """Sign in with a key that has the admin scope: a session cookie, then back to the dashboard (303)."""
        visitor = auth.visitor(request)
        if (refused := pages.refusal(request, visitor)) is not None:
            return refused
        keeper.check_csrf(request.cookies.get(FORM_COOKIE, ""), csrf, purpose=LOGIN_PURPOSE)
        return pages.sign_in(request, key) if auth.needs_key else _back()

    @board.post("/dashboard/logout")
    def logout(request: Request, csrf: Annotated[str, Form()] = "") -> Response:
        """End this browser's session, on the server too: a copy of its cookie is refused from now on."""
        visitor = auth.visitor(request)
        if visitor.access is Access.SESSION:
            keeper.check_csrf(visitor.form_secret, csrf, purpose=LOGOUT_PURPOSE)
            auth.end_session(visitor.form_secret)
            log.info("dashboard sign-out of key %r from %s", visitor.key_name, client_host(request.scope))
        response = _back()
        response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, secure=auth.secure, httponly=True, samesite="strict")
        return response

    @board.post("/dashboard/links", response_class=HTMLResponse)
    def create_link(
        request: Request, connection_id: Annotated[int, Form(ge=1, le=2**31 - 1)], csrf: Annotated[str, Form()] = ""
    ) -> Response:
        """Mint a one-time connect link for a connection's user and show it, once."""
        visitor = auth.visitor(request)
        if not visitor.access.allowed:
            return pages.refusal(request, visitor) or pages.login(request, status=401)
        keeper.check_csrf(visitor.form_secret, csrf, purpose=LINK_PURPOSE)
        return pages.minted(request, connection_id)

    return board


class _Pages:
    """The dashboard's answers, each a template with its context."""

    def __init__(self, keeper: Keeper, auth: DashboardAuth) -> None:
        self.keeper, self.auth = keeper, auth

    def board(self, request: Request, visitor: Visitor) -> Response:
        cookie = request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(32)
        # Signed in: the forms bind to the session. A dev run's (and a script's) bind to the form cookie.
        secret = visitor.form_secret if visitor.access is Access.SESSION else cookie
        context = _overview(self.keeper) | {
            "access": visitor.access.value,
            "link_csrf": self.keeper.csrf_token(secret, purpose=LINK_PURPOSE),
            "logout_csrf": self.keeper.csrf_token(secret, purpose=LOGOUT_PURPOSE),
        }
        return self._with_form_cookie(request, templates.TemplateResponse(request, "dashboard.html", context), cookie)

    def login(self, request: Request, *, status: int = 200, error: str | None = None) -> Response:
        cookie = request.cookies.get(FORM_COOKIE) or secrets.token_urlsafe(32)
        context = {"csrf": self.keeper.csrf_token(cookie, purpose=LOGIN_PURPOSE), "error": error}
        response = templates.TemplateResponse(request, "dashboard_login.html", context, status_code=status)
        return self._with_form_cookie(request, response, cookie)

    def refusal(self, request: Request, visitor: Visitor) -> Response | None:
        """The page of a dashboard that is off or not for this client, or of a client that must wait; None when
        the login form applies."""
        if visitor.access is Access.THROTTLED:
            return self.throttled(request, visitor.retry_after or 1)
        if visitor.access not in _REFUSALS:
            return None
        status, title, message = _REFUSALS[visitor.access]
        return self.message(request, status, title, message)

    def message(self, request: Request, status: int, title: str, message: str) -> Response:
        context = {"title": title, "message": message}
        return templates.TemplateResponse(request, "dashboard_message.html", context, status_code=status)

    def throttled(self, request: Request, retry_after: int) -> Response:
        error = f"Too many wrong keys. Wait {retry_after} s and try again."
        response = self.login(request, status=429, error=error)
        response.headers["Retry-After"] = str(retry_after)
        return response

    def sign_in(self, request: Request, key: str) -> Response:
        address = client_host(request.scope) or "an unknown address"
        tried = self.auth.attempt(address, key, how="sign-in")  # logs every refusal, never the key
        if tried.refused == "throttled":
            return self.throttled(request, tried.retry_after or 1)
        if tried.refused == "no_scope":
            return self.login(request, status=403, error="That key has no admin scope: it cannot open the dashboard.")
        if tried.key is None:
            return self.login(request, status=401, error="That is not the API key.")
        log.info("dashboard sign-in with key %r from %s", tried.key.name, address)
        response = _back()
        self._set_cookie(response, SESSION_COOKIE, self.auth.new_session(tried.key))
        return response

    def minted(self, request: Request, connection_id: int) -> Response:
        try:
            record = self.keeper.connection(connection_id)
        except ConnectionNotFound:
            return self.message(request, 404, "No such connection", f"There is no connection {connection_id}.")
        # The link reconnects the same platform: an X-Series store gets X-Series' consent page.
        link = self.keeper.create_link(record.user_id, label=fit_label(record.account_name), provider=record.provider)
        log.info("dashboard: connect link created for connection %s", connection_id)  # never the link
        context = {"url": link.url, "expires_at": _when(link.expires_at), "connection": _row(record)}
        return templates.TemplateResponse(request, "dashboard_link.html", context, status_code=201)

    def _with_form_cookie(self, request: Request, response: Response, cookie: str) -> Response:
        if cookie != request.cookies.get(FORM_COOKIE):
            self._set_cookie(response, FORM_COOKIE, cookie)
        return response

    def _set_cookie(self, response: Response, name: str, value: str) -> None:
        max_age = int(SESSION_TTL.total_seconds())
        secure = self.auth.secure
        response.set_cookie(name, value, max_age, path=COOKIE_PATH, secure=secure, httponly=True, samesite="strict")


#: The status of the login form for a visitor who is not (or no longer) signed in.
_LOGIN_STATUS = {Access.SIGN_IN: 200, Access.BAD_SESSION: 401, Access.WRONG_KEY: 401}


def _overview(keeper: Keeper) -> dict[str, Any]:
    """What the dashboard shows: counts, the connections that need their merchant, outcomes, runs, outbox."""
    counts = keeper.status_counts()
    chart = outcome_chart(keeper.outcome_history(days=HISTORY_DAYS), ident="outcomes")
    return {
        "counts": [(status.value, n) for status, n in counts.items()],
        "attention": [_row(record) for status in _ATTENTION for record in _listed(keeper, status)],
        "more": {status.value: n - LISTED for status, n in counts.items() if n > LISTED},
        "chart": Markup(chart),  # every text in it is escaped by chart.py
        "history_days": HISTORY_DAYS,
        "runs": [_run(run) for run in keeper.run_history(limit=RUNS_SHOWN)],
        "events": [_event(event) for event in keeper.events(limit=EVENTS_SHOWN)],
    }


def _listed(keeper: Keeper, status: Status) -> list[ConnectionRecord]:
    return keeper.connections(status=status.value, limit=LISTED)


def _row(record: ConnectionRecord) -> dict[str, Any]:
    row = ConnectionView.model_validate(record).model_dump()
    row["last_token_refresh_at"] = _when(record.last_token_refresh_at)
    return row


def _run(record: RunRecord) -> dict[str, Any]:
    row = RunView.model_validate(record).model_dump()
    row["started_at"] = _when(row["started_at"])
    row["duration"] = _duration(record.started_at, record.finished_at)
    return row


def _event(record: EventRecord) -> dict[str, Any]:
    row = EventView.model_validate(record).model_dump()
    for name in ("created_at", "next_attempt_at", "delivered_at"):
        row[name] = _when(row[name])
    return row


def _duration(started: datetime | None, finished: datetime | None) -> str:
    """How long a run took, as a person reads it: 850 ms, 4.2 s, 3 min 05 s, 2 h 03 min."""
    if started is None or finished is None:
        return "-"
    seconds = max((finished - started).total_seconds(), 0.0)
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(int(seconds), 60)
    return f"{minutes} min {rest:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


def _when(value: datetime | None) -> str | None:
    return value.strftime("%Y-%m-%d %H:%M UTC") if value else None


def _back() -> RedirectResponse:
    return RedirectResponse("/dashboard", status_code=303)


__all__ = ["LINK_PURPOSE", "LOGIN_PURPOSE", "LOGOUT_PURPOSE", "router"]
