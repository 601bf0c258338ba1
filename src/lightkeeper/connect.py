"""The OAuth connect flow: one-time connect links, state + PKCE, and the callback that stores tokens.

A link is single use and lasts an hour; the OAuth state it starts is single use, bound to the link's user
and lasts ten minutes. A bad callback changes nothing (invariant 6). The new pair is committed before its
access token is used for the account lookup (invariant 2).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from urllib.parse import urlencode

from .clock import Clock
from .crypto import TokenCipher
from .errors import ConnectFlowError, InvalidClient, InvalidGrant, LightkeeperError, ProviderError
from .lightspeed import Account, ApiClient, OAuthClient, TokenSet, account_id_from_jwt, new_pkce, new_state
from .store import ConnectionRecord, ConnectSession, Rejection, Store
from .vault import TokenVault

log = logging.getLogger(__name__)

LINK_TTL = timedelta(hours=1)
BROWSER_TTL = timedelta(hours=1)
STATE_TTL = timedelta(minutes=10)
START_PATH = "/connect-lightspeed/start"

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
}


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
        oauth: OAuthClient,
        api: ApiClient,
        clock: Clock,
        public_url: str,
    ) -> None:
        self.store, self.oauth, self.api, self.clock = store, oauth, api, clock
        self._cipher = cipher
        self._vault = vault
        self.public_url = public_url.rstrip("/")

    # -- links ---------------------------------------------------------------------------------------
    def create_link(self, user_id: str, *, return_to: str | None = None) -> ConnectLink:
        """A one-time URL that sends ``user_id`` to Lightspeed's consent page."""
        if not user_id.strip():
            raise ConnectFlowError("a user id is required", code="validation_error")
        token, now = secrets.token_urlsafe(32), self.clock()
        expires_at = now + LINK_TTL
        self.store.sessions.create_session(
            token_hash=digest(token), user_id=user_id, return_to=return_to, now=now, expires_at=expires_at
        )
        return ConnectLink(f"{self.public_url}{START_PATH}?{urlencode({'session': token})}", expires_at)

    def start(self, session_token: str) -> StartedSession:
        """Use a link: it opens a browser session and leads to Lightspeed's consent page."""
        browser_token, now = secrets.token_urlsafe(32), self.clock()
        browser_expires_at = now + BROWSER_TTL
        session = self.store.sessions.consume_session(
            digest(session_token), now, browser_hash=digest(browser_token), browser_expires_at=browser_expires_at
        )
        if isinstance(session, Rejection):
            code, message = _LINK_REJECTIONS[session]
            raise ConnectFlowError(message, code=code)
        authorize_url = self.authorize_url(session.user_id, session_id=session.id)
        return StartedSession(session.user_id, authorize_url, browser_token, browser_expires_at, session.return_to)

    def browser_session(self, browser_token: str) -> ConnectSession | None:
        """The user behind a browser cookie, while its session lasts."""
        return self.store.sessions.browser_session(digest(browser_token), self.clock()) if browser_token else None

    @staticmethod
    def csrf_token(browser_token: str) -> str:
        """Bound to the cookie's secret, so a page of another site cannot know it."""
        return hmac.new(browser_token.encode(), b"lightkeeper-csrf", hashlib.sha256).hexdigest()

    def check_csrf(self, browser_token: str, submitted: str) -> None:
        if not submitted or not hmac.compare_digest(self.csrf_token(browser_token), submitted):
            raise ConnectFlowError("This form has expired. Reload the page and try again.", code="csrf_failed",
                                   status=403)  # fmt: skip

    def authorize_url(self, user_id: str, *, session_id: int | None = None) -> str:
        """Record a fresh state + PKCE verifier for ``user_id`` and build the authorize URL."""
        state, (verifier, challenge), now = new_state(), new_pkce(), self.clock()
        state_hash = digest(state)
        self.store.sessions.create_state(
            state_hash=state_hash,
            user_id=user_id,
            session_id=session_id,
            code_verifier=self._cipher.encrypt_text(verifier, context=f"oauth_state:{state_hash}"),
            now=now,
            expires_at=now + STATE_TTL,
        )
        return self.oauth.authorize_url(state=state, code_challenge=challenge)

    # -- callback ------------------------------------------------------------------------------------
    def complete(self, params: Mapping[str, str]) -> ConnectionRecord:
        """Handle ``/oauth/callback``: check the state, exchange the code, store the tokens."""
        state = params.get("state", "")
        if params.get("error"):
            if state:  # burn the state: a denied attempt cannot be replayed into a success
                self.store.sessions.consume_state(digest(state), self.clock())
            raise _denied(params["error"])
        if not state:
            raise ConnectFlowError(
                "The sign-in response has no state, so it cannot be trusted. Start again.", code="state_missing"
            )
        user_id, verifier = self._consume_state(state)
        code = params.get("code", "")
        if not code:
            raise ConnectFlowError("Lightspeed sent no authorization code. Start again.", code="code_missing")
        tokens = self._exchange(code, verifier)
        return self._store_connection(user_id, tokens)

    def _consume_state(self, state: str) -> tuple[str, str]:
        state_hash = digest(state)
        found = self.store.sessions.consume_state(state_hash, self.clock())
        if isinstance(found, Rejection):
            code, message = _STATE_REJECTIONS[found]
            raise ConnectFlowError(message, code=code)
        verifier = self._cipher.decrypt_text(found.code_verifier, context=f"oauth_state:{state_hash}")
        return found.user_id, verifier

    def _exchange(self, code: str, verifier: str) -> TokenSet:
        try:
            return self.oauth.exchange_code(code, code_verifier=verifier)
        except InvalidGrant as exc:
            raise ConnectFlowError(
                "Lightspeed refused the authorization code (it is valid once, for 60 seconds). Start again.",
                code="exchange_failed",
            ) from exc
        except InvalidClient as exc:
            raise ConnectFlowError(
                "Lightspeed rejected this app's credentials. The app's operator must fix its configuration; "
                "retrying will not help.",
                code="client_misconfigured",
                status=502,
            ) from exc
        except ProviderError as exc:
            raise ConnectFlowError(
                "Lightspeed could not complete the sign-in right now. Please try again in a minute.",
                code="provider_unavailable",
                status=502,
            ) from exc

    def _store_connection(self, user_id: str, tokens: TokenSet) -> ConnectionRecord:
        account_id = account_id_from_jwt(tokens.access_token) or self._lookup(tokens).account_id
        now = self.clock()
        connection_id = self.store.connections.upsert_connected(
            user_id=user_id,
            account_id=account_id,
            account_name=None,
            encrypt=lambda cid: self._vault.seal_pair(cid, tokens),
            expires_at=tokens.expires_at,
            now=now,
        )
        self._name_account(connection_id, tokens)  # only now is the new access token used
        record = self.store.connections.get(connection_id)
        assert record is not None
        log.info("connection %s: account %s connected for user %s", connection_id, account_id, user_id)
        return record

    def _lookup(self, tokens: TokenSet) -> Account:
        try:
            return self.api.account(tokens.access_token)
        except ProviderError as exc:
            raise ConnectFlowError(
                "Lightspeed did not say which account this is. Please try again in a minute.",
                code="provider_unavailable",
                status=502,
            ) from exc

    def _name_account(self, connection_id: int, tokens: TokenSet) -> None:
        try:
            account = self.api.account(tokens.access_token)
        except LightkeeperError as exc:  # the connection works; the name can wait for a later look-up
            log.warning("connection %s: account name look-up failed: %s", connection_id, exc)
            return
        self.store.connections.set_account_name(connection_id, account.name, self.clock())


def _denied(error: str) -> ConnectFlowError:
    if error == "access_denied":
        return ConnectFlowError(
            "Access was not granted in Lightspeed, so nothing was connected. You can try again any time.",
            code="access_denied",
        )
    return ConnectFlowError(
        f"Lightspeed answered with an error ({error[:60]}); nothing was connected.", code="authorization_error"
    )


__all__ = [
    "BROWSER_TTL",
    "LINK_TTL",
    "START_PATH",
    "STATE_TTL",
    "ConnectLink",
    "ConnectService",
    "StartedSession",
    "digest",
]
