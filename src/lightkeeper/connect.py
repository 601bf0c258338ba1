"""The OAuth connect flow: one-time connect links, state + PKCE, and the callback that stores tokens.

A link lasts an hour. Opening it (GET) only shows a confirm page; the page's CSRF-protected POST uses it
up, opens a browser session (a cookie) and leads to Lightspeed, so a mail scanner that fetches every link
cannot burn it. The OAuth state it starts is single use, lasts ten minutes and is bound to that browser
session: a callback proceeds only with the cookie the state was issued to, so an attacker's state cannot
connect a victim's store to the attacker's user (RFC 6749 §10.12, RFC 9700 §4.7). A bad callback changes
nothing (invariant 6). The new pair is committed before its access token is used for the account lookup
(invariant 2).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from .clock import Clock
from .crypto import TokenCipher, verifier_context
from .errors import ConnectFlowError, InvalidClient, InvalidGrant, LightkeeperError, ProviderError
from .lightspeed import TokenSet, new_pkce, new_state
from .lightspeed.providers import Provider, Providers
from .store import ConnectionRecord, ConnectSession, OAuthState, Rejection, Store
from .vault import TokenVault

log = logging.getLogger(__name__)

LINK_TTL = timedelta(hours=1)
BROWSER_TTL = timedelta(hours=1)
STATE_TTL = timedelta(minutes=10)
START_PATH = "/connect-lightspeed/start"
LABEL_MAX = 200

_LINK_REJECTIONS = {
    Rejection.UNKNOWN: ("link_invalid", "This connect link is not valid. Ask the app for a new one."),
    Rejection.USED: ("link_used", "This connect link was already used. Ask the app for a new one."),
    Rejection.EXPIRED: ("link_expired", "This connect link has expired. Ask the app for a new one."),
}
_STATE_REJECTIONS = {
    Rejection.UNKNOWN: ("state_invalid", "This sign-in response was not started here (unknown state). Start again."),
    Rejection.USED: ("state_used", "This sign-in response was already used. Start again from a new connect link."),
    Rejection.EXPIRED: (
        "state_expired",
        "This sign-in took too long and expired. Start again from a new connect link.",
    ),
    Rejection.FOREIGN: (
        "browser_mismatch",
        "This sign-in was not started in this browser (or its session has ended), so nothing was connected. "
        "Open the connect link from the app again, in this browser.",
    ),
}
# RFC 6749 §4.1.2.1: the codes Lightspeed may send back, each with our own words. The ``error`` text in
# the URL is never shown: anybody can craft a callback URL, and a page must not repeat what it says.
_RETRY = "Nothing was connected. Please try again in a minute."
_MISCONFIGURED = (
    "Lightspeed did not accept this app's sign-in request, so nothing was connected. "
    "The app's operator must fix its configuration."
)
#: The OAuth error codes a callback URL may carry, in fixed words (never the URL's own text). They arrive in a
#: URL anyone can forge, so each is the request's fault (400), even "Lightspeed is busy" (authorization_unavailable).
_AUTHORIZATION_ERRORS = {
    "access_denied": (
        "access_denied",
        "Access was not granted in Lightspeed, so nothing was connected. You can try again any time.",
    ),
    "invalid_request": ("authorization_error", _MISCONFIGURED),
    "unauthorized_client": ("authorization_error", _MISCONFIGURED),
    "unsupported_response_type": ("authorization_error", _MISCONFIGURED),
    "invalid_scope": ("authorization_error", _MISCONFIGURED),
    "server_error": ("authorization_unavailable", f"Lightspeed had a problem with this sign-in. {_RETRY}"),
    "temporarily_unavailable": ("authorization_unavailable", f"Lightspeed is busy right now. {_RETRY}"),
}
_UNKNOWN_ERROR = (
    "authorization_error",
    "Lightspeed answered with an error, so nothing was connected. Start again from a new connect link.",
)


@dataclass(frozen=True)
class ConnectLink:
    url: str
    expires_at: datetime


@dataclass(frozen=True)
class StartedSession:
    """A link just used: where to send the merchant, and the browser session it opens."""

    user_id: str
    authorize_url: str
    browser_token: str
    browser_expires_at: datetime
    return_to: str | None


def digest(secret: str) -> str:
    """What we store instead of a link token or state."""
    return hashlib.sha256(secret.encode()).hexdigest()


class ConnectService:
    def __init__(
        self,
        *,
        store: Store,
        cipher: TokenCipher,
        vault: TokenVault,
        providers: Providers,
        clock: Clock,
        public_url: str,
    ) -> None:
        self.store, self.providers, self.clock = store, providers, clock
        self._cipher = cipher
        self._vault = vault
        self.public_url = public_url.rstrip("/")

    # -- links ---------------------------------------------------------------------------------------
    def create_link(
        self, user_id: str, *, return_to: str | None = None, label: str | None = None, provider: str | None = None
    ) -> ConnectLink:
        """A one-time URL that sends ``user_id`` to the consent page of ``provider`` (default: the only one
        configured, else R-Series), via a confirm page naming ``label`` (the host app's words for whose store
        this is; default: the user id). ``ConfigError`` for a provider that is not configured."""
        if not user_id.strip():
            raise ConnectFlowError("a user id is required", code="validation_error")
        label = _check_label(label)
        chosen = self._provider(provider)
        token, now = secrets.token_urlsafe(32), self.clock()
        expires_at = now + LINK_TTL
        self.store.sessions.create_session(
            token_hash=digest(token),
            user_id=user_id,
            return_to=return_to,
            label=label,
            now=now,
            expires_at=expires_at,
            provider=chosen.name,
        )
        return ConnectLink(f"{self.public_url}{START_PATH}?{urlencode({'session': token})}", expires_at)

    def _provider(self, name: str | None) -> Provider:
        if name is None:
            return self.providers.default()
        try:
            return self.providers[name]
        except LightkeeperError as exc:  # unknown, or not configured here
            raise ConnectFlowError(str(exc), code="provider_not_configured") from exc

    def preview(self, session_token: str) -> ConnectSession:
        """What the confirm page shows about a link; changes nothing (scanners and previews GET links)."""
        found = self.store.sessions.peek_session(digest(session_token), self.clock())
        if isinstance(found, Rejection):
            raise _link_refused(found)
        return found

    def start(self, session_token: str) -> StartedSession:
        """Use a link (the confirm page's POST): it opens a browser session and leads to Lightspeed."""
        browser_token, now = secrets.token_urlsafe(32), self.clock()
        browser_expires_at = now + BROWSER_TTL
        session = self.store.sessions.consume_session(
            digest(session_token), now, browser_hash=digest(browser_token), browser_expires_at=browser_expires_at
        )
        if isinstance(session, Rejection):
            raise _link_refused(session)
        authorize_url = self.authorize_url(session.user_id, session_id=session.id, provider=session.provider)
        return StartedSession(session.user_id, authorize_url, browser_token, browser_expires_at, session.return_to)

    def browser_session(self, browser_token: str) -> ConnectSession | None:
        """The user behind a browser cookie, while its session lasts."""
        return self.store.sessions.browser_session(digest(browser_token), self.clock()) if browser_token else None

    @staticmethod
    def csrf_token(cookie: str, *, purpose: str = "session") -> str:
        """Bound to a cookie's secret, so a page of another site cannot know it; ``purpose`` keeps the
        token of one form from passing for another's."""
        return hmac.new(cookie.encode(), f"lightkeeper-csrf:{purpose}".encode(), hashlib.sha256).hexdigest()

    def check_csrf(self, cookie: str, submitted: str, *, purpose: str = "session") -> None:
        expected = self.csrf_token(cookie, purpose=purpose) if cookie else ""
        if not expected or not submitted or not hmac.compare_digest(expected.encode(), submitted.encode()):
            raise ConnectFlowError("This form has expired. Reload the page and try again.", code="csrf_failed")

    @staticmethod
    def confirm_purpose(session_token: str) -> str:
        """The CSRF purpose of one link's confirm form: its token passes for no other link."""
        return f"confirm:{digest(session_token)}"

    def authorize_url(self, user_id: str, *, session_id: int, provider: str | None = None) -> str:
        """Record a fresh state + PKCE verifier for ``user_id`` and build ``provider``'s authorize URL (default:
        the session's provider)."""
        chosen = self._provider(provider or self._session_provider(session_id))
        state, (verifier, challenge), now = new_state(), new_pkce(), self.clock()
        state_hash = digest(state)
        self.store.sessions.create_state(
            state_hash=state_hash,
            user_id=user_id,
            session_id=session_id,
            code_verifier=self._cipher.encrypt_text(verifier, context=verifier_context(state_hash)),
            now=now,
            expires_at=now + STATE_TTL,
            provider=chosen.name,
        )
        return chosen.authorize_url(state=state, code_challenge=challenge)

    def _session_provider(self, session_id: int) -> str:
        found = self.store.sessions.session_provider(session_id)
        return found if found is not None else self.providers.default().name

    # -- callback ------------------------------------------------------------------------------------
    def complete(self, params: Mapping[str, str], *, browser_token: str) -> ConnectionRecord:
        """Handle ``/oauth/callback``: check the state and that ``browser_token`` (the callback's cookie)
        is the session it was issued to, exchange the code, store the tokens."""
        state = params.get("state", "")
        if params.get("error"):
            if state:  # burn our own state: a denied attempt cannot be replayed into a success
                with contextlib.suppress(ConnectFlowError):
                    self._consume_state(state, browser_token)
            raise _denied(params["error"])
        if not state:
            raise ConnectFlowError(
                "The sign-in response has no state, so it cannot be trusted. Start again.", code="state_missing"
            )
        provider, account, (user_id, verifier) = self._use_state(state, browser_token, params)
        code = params.get("code", "")
        if not code:
            raise ConnectFlowError("Lightspeed sent no authorization code. Start again.", code="code_missing")
        tokens = self._exchange(provider, code, verifier, account)
        return self._store_connection(user_id, provider, tokens, account)

    def _use_state(
        self, state: str, browser_token: str, params: Mapping[str, str]
    ) -> tuple[Provider, str | None, tuple[str, str]]:
        """The provider that issued the state, the account its callback names (checked before the state is used,
        so a crafted one changes nothing), and the state's user and verifier."""
        found = self._peek_state(state, browser_token)
        provider = self._state_provider(found)
        account = provider.callback_account(params)  # X-Series' domain_prefix: refused before anything is sent
        return provider, account, self._consume_state(state, browser_token)

    def _peek_state(self, state: str, browser_token: str) -> OAuthState:
        found = self.store.sessions.peek_state(digest(state), self.clock())
        if not isinstance(found, Rejection) and not self._same_browser(found.session_id, browser_token):
            found = Rejection.FOREIGN  # left unused: a stranger cannot burn the rightful browser's sign-in
        if isinstance(found, Rejection):
            code, message = _STATE_REJECTIONS[found]
            raise ConnectFlowError(message, code=code)
        return found

    def _state_provider(self, found: OAuthState) -> Provider:
        try:
            return self.providers[found.provider]
        except LightkeeperError as exc:  # configured when the flow started, no longer
            raise ConnectFlowError(
                "This app no longer connects to this Lightspeed platform, so nothing was connected.",
                code="client_misconfigured",
            ) from exc

    def _consume_state(self, state: str, browser_token: str) -> tuple[str, str]:
        """The state's user and PKCE verifier, once, and only for the browser session it was issued to."""
        state_hash, now = digest(state), self.clock()
        found = self.store.sessions.peek_state(state_hash, now)
        if not isinstance(found, Rejection) and not self._same_browser(found.session_id, browser_token):
            found = Rejection.FOREIGN  # left unused: a stranger cannot burn the rightful browser's sign-in
        if not isinstance(found, Rejection):
            found = self.store.sessions.consume_state(state_hash, now)  # atomic: one callback wins
        if isinstance(found, Rejection):
            code, message = _STATE_REJECTIONS[found]
            raise ConnectFlowError(message, code=code)
        verifier = self._cipher.decrypt_text(found.code_verifier, context=verifier_context(state_hash))
        return found.user_id, verifier

    def _same_browser(self, session_id: int | None, browser_token: str) -> bool:
        session = self.browser_session(browser_token)
        return session_id is not None and session is not None and session.id == session_id

    def _exchange(self, provider: Provider, code: str, verifier: str, account: str | None) -> TokenSet:
        try:
            return provider.exchange_code(code, code_verifier=verifier, account=account)
        except InvalidGrant as exc:
            raise ConnectFlowError(
                "Lightspeed refused the authorization code (it is valid once, for a short time). Start again.",
                code="exchange_failed",
            ) from exc
        except InvalidClient as exc:
            raise ConnectFlowError(
                "Lightspeed rejected this app's credentials. The app's operator must fix its configuration; "
                "retrying will not help.",
                code="client_misconfigured",
            ) from exc
        except ProviderError as exc:
            raise ConnectFlowError(
                "Lightspeed could not complete the sign-in right now. Please try again in a minute.",
                code="provider_unavailable",
            ) from exc

    def _store_connection(
        self, user_id: str, provider: Provider, tokens: TokenSet, account: str | None
    ) -> ConnectionRecord:
        account_id = self._identify(provider, tokens, account)
        now = self.clock()
        connection_id = self.store.connections.upsert_connected(
            user_id=user_id,
            account_id=account_id,
            account_name=None,
            encrypt=lambda cid: self._vault.seal_pair(cid, tokens),
            expires_at=tokens.expires_at,
            now=now,
            provider=provider.name,
            strict_rotation=provider.strict_rotation,
        )
        self._name_account(connection_id, provider, tokens, account_id)  # only now is the new access token used
        record = self.store.connections.get(connection_id)
        assert record is not None
        log.info(
            "connection %s: %s account %s connected for user %s", connection_id, provider.name, account_id, user_id
        )
        return record

    def _identify(self, provider: Provider, tokens: TokenSet, account: str | None) -> str:
        try:
            return provider.identify(tokens, account)
        except ProviderError as exc:
            raise ConnectFlowError(
                "Lightspeed did not say which account this is. Please try again in a minute.",
                code="provider_unavailable",
            ) from exc

    def _name_account(self, connection_id: int, provider: Provider, tokens: TokenSet, account_id: str) -> None:
        try:
            name = provider.account_name(tokens, account_id)
        except LightkeeperError as exc:  # the connection works; the name can wait for a later look-up
            log.warning("connection %s: account name look-up failed: %s", connection_id, exc)
            return
        self.store.connections.set_account_name(connection_id, name, self.clock())


def _denied(error: str) -> ConnectFlowError:
    """Fixed words for the OAuth error code; never the text of the URL."""
    code, message = _AUTHORIZATION_ERRORS.get(error, _UNKNOWN_ERROR)
    return ConnectFlowError(message, code=code)


def _link_refused(rejection: Rejection) -> ConnectFlowError:
    code, message = _LINK_REJECTIONS[rejection]
    return ConnectFlowError(message, code=code)


def fit_label(text: str | None) -> str | None:
    """A label from Lightspeed's words (an account name may be longer than ``LABEL_MAX``): shortened to fit, with
    an ellipsis, and without NUL, so that minting a link for it never fails."""
    if text is None:
        return None
    cleaned = text.replace("\x00", "").strip()
    return cleaned if len(cleaned) <= LABEL_MAX else cleaned[: LABEL_MAX - 1].rstrip() + "\u2026"


def _check_label(label: str | None) -> str | None:
    """The label as stored: stripped, None when blank; refused when too long or holding NUL."""
    if label is None or not label.strip():
        return None
    if len(label) > LABEL_MAX or "\x00" in label:
        raise ConnectFlowError(f"a label is at most {LABEL_MAX} characters and holds no NUL", code="validation_error")
    return label.strip()


__all__ = [
    "BROWSER_TTL",
    "LABEL_MAX",
    "LINK_TTL",
    "START_PATH",
    "STATE_TTL",
    "ConnectLink",
    "ConnectService",
    "StartedSession",
    "digest",
    "fit_label",
]
