"""The simulated X-Series OAuth server: the ``/x/connect`` consent page and ``/x/{prefix}/api/1.0/token``.

Stricter than Lightspeed on every point a client can get wrong (see docs/LIGHTSPEED.md, "X-Series"):

- ``connect`` needs a registered client, a registered ``redirect_uri`` and a ``state`` of at least 8
  characters; it redirects with ``code``, ``domain_prefix`` and ``state``. Consent follows the R-Series
  authorize knob (``set_authorize_mode``): approve for a new store or a given existing X-Series store, or deny.
- The token endpoint takes a form body only (a JSON body is ``invalid_request``) with the client credentials
  in it (an ``Authorization: Basic`` header is not read). Codes are single-use, bound to their client, their
  ``redirect_uri`` and their store (the prefix in the URL), and live ``x_code_ttl`` seconds.
- The answer's ``expires`` (unix time) is the truth; ``expires_in`` is off by ``x_expires_in_skew_s``.
- Rotation is strict: an exchanged refresh token is dead at once, and so is the access token issued with it.
  Presenting it again is ``invalid_grant`` counted as reuse, and (``x_reuse_revokes_family``) revokes the
  connection's live pair too. A refresh token unused for more than ``x_refresh_idle_s`` is dead.
- ``x_token_limit_per_min`` limits token requests per store; its 429 carries ``Retry-After`` as an HTTP date.

Times are the store's clock (``Records.account_now``), so ``advance`` and ``advance_all`` move them.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping

from lightkeeper.simulator.clients import find_client, redirect_target
from lightkeeper.simulator.oauth import with_query
from lightkeeper.simulator.records import Account, Client, Records
from lightkeeper.simulator.replies import (
    INVALID_GRANT_DESC,
    Reply,
    http_date,
    invalid_request,
    oauth_error,
    page,
    x_error,
)
from lightkeeper.simulator.xseries_records import DEFAULT_X_SCOPE, XAccessToken, XCode, XRefreshToken, XStore

MIN_STATE = 8
_TOKEN_LIMIT_WINDOW_S = 60.0
_FORM = "application/x-www-form-urlencoded"
_NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}


def xstore_of(account: Account) -> XStore:
    """The account's X-Series part; only ever called on accounts found through ``Records.x.stores``."""
    assert account.xstore is not None
    return account.xstore


class XOAuthServer:
    """``/x/connect`` and ``/x/{prefix}/api/1.0/token`` over shared ``Records``; the caller holds the lock."""

    def __init__(self, records: Records) -> None:
        self._records = records

    def store(self, prefix: str) -> Account | None:
        account_id = self._records.x.stores.get(prefix)
        return None if account_id is None else self._records.accounts[account_id]

    # -------------------------------------------------------------- connect

    def connect(self, params: Mapping[str, str]) -> Reply:
        """The consent page, answered at once as the authorize knob says (approve or deny)."""
        client = find_client(self._records, params.get("client_id", ""))
        if client is None:
            return page(400, "Unknown client_id.")
        sent = params.get("redirect_uri") or None
        if sent is None:
            return page(400, "A redirect_uri is required.")
        target = redirect_target(client, sent)
        if isinstance(target, Reply):
            return target
        state = params.get("state", "")
        if len(state) < MIN_STATE:
            return page(400, f"A state of at least {MIN_STATE} characters is required.")
        if params.get("response_type") != "code":
            return _redirect(target, {"error": "unsupported_response_type", "state": state})
        if self._records.authorize_mode == "deny":
            return _redirect(target, {"error": "access_denied", "state": state})
        account = self._consenting_store()
        code = XCode(
            code=secrets.token_urlsafe(32),
            account_id=account.account_id,
            client_id=client.client_id,
            redirect_uri=target,
            scope=params.get("scope") or DEFAULT_X_SCOPE,
            issued_at=self._records.account_now(account),
        )
        self._records.x.codes[code.code] = code
        prefix = xstore_of(account).domain_prefix
        return _redirect(target, {"code": code.code, "domain_prefix": prefix, "state": state})

    def _consenting_store(self) -> Account:
        wanted = self._records.accounts.get(self._records.authorize_account or -1)
        # An R-Series account never gets an X-Series connection: consent then goes to a new store.
        if wanted is not None and wanted.xstore is not None:
            return wanted
        return self._records.new_xstore()

    # ---------------------------------------------------------------- token

    def token(self, prefix: str, fields: Mapping[str, str], *, content_type: str) -> Reply:
        """``POST /x/{prefix}/api/1.0/token``; ``content_type`` is the request's media type, lower case."""
        account = self.store(prefix)
        if account is None:
            return x_error(404, "not_found", "No store has this domain prefix.")
        limited = self._token_limited(account)
        if limited is not None:
            return limited
        if content_type != _FORM:
            return oauth_error(400, "invalid_request", f"The body must be {_FORM}.", "Send a form body")
        grant_type = fields.get("grant_type", "")
        if not grant_type:
            return invalid_request("grant_type")
        if grant_type not in {"authorization_code", "refresh_token"}:
            return oauth_error(400, "unsupported_grant_type", "The authorization grant type is not supported.")
        client = self._client(fields)
        if client is None:
            return oauth_error(401, "invalid_client", "Client authentication failed")
        if grant_type == "authorization_code":
            return self._exchange_code(account, client, fields)
        return self._refresh(account, client, fields)

    def _client(self, fields: Mapping[str, str]) -> Client | None:
        client = find_client(self._records, fields.get("client_id", ""))
        if client is None or not secrets.compare_digest(client.client_secret, fields.get("client_secret", "")):
            self._records.stats["x_invalid_client"] += 1
            return None
        return client

    def _token_limited(self, account: Account) -> Reply | None:
        """A 429 when the store had ``x_token_limit_per_min`` token requests in the last 60 s, else None (the
        request is counted). Refused requests do not count."""
        limit = self._records.config.x_token_limit_per_min
        if limit is None:
            return None
        store, now = xstore_of(account), self._records.account_now(account)
        arrivals = store.token_arrivals
        while arrivals and arrivals[0] <= now - _TOKEN_LIMIT_WINDOW_S:
            arrivals.popleft()
        if len(arrivals) < limit:
            arrivals.append(now)
            return None
        self._records.stats["x_token_rate_limited"] += 1
        store.token_rate_limited += 1
        # The oldest of the last ``limit`` leaves the window then; the date is rounded up to the second.
        free_at = arrivals[len(arrivals) - limit] + _TOKEN_LIMIT_WINDOW_S
        return x_error(429, "rate_limited", "Too many token requests.", {"Retry-After": http_date(free_at)})

    def _grant_failed(self, account: Account, hint: str) -> Reply:
        self._records.stats["x_invalid_grant"] += 1
        account.counters.invalid_grant += 1
        return oauth_error(400, "invalid_grant", INVALID_GRANT_DESC, hint)

    def _exchange_code(self, account: Account, client: Client, fields: Mapping[str, str]) -> Reply:
        value, redirect_uri = fields.get("code", ""), fields.get("redirect_uri", "")
        if not value:
            return invalid_request("code")
        if not redirect_uri:
            return invalid_request("redirect_uri")
        code = self._records.x.codes.get(value)
        problem = self._code_problem(account, client, code, redirect_uri)
        if problem is not None or code is None:
            return self._grant_failed(account, problem or "Unknown authorization code")
        code.used = True
        self._records.stats["x_code_exchanges"] += 1
        return self.issue_pair(account, client.client_id, code.scope, secrets.token_hex(8))

    def _code_problem(self, account: Account, client: Client, code: XCode | None, redirect_uri: str) -> str | None:
        if code is None:
            return "Unknown authorization code"
        if code.client_id != client.client_id:
            return "Authorization code was not issued to this client"
        if code.account_id != account.account_id:
            return "Authorization code was issued for another store"
        if code.used:
            return "Authorization code has been used"
        if self._records.account_now(account) > code.issued_at + self._records.config.x_code_ttl:
            return "Authorization code has expired"
        if redirect_uri != code.redirect_uri:
            return "Invalid redirect URI"
        return None

    def _refresh(self, account: Account, client: Client, fields: Mapping[str, str]) -> Reply:
        value = fields.get("refresh_token", "")
        if not value:
            return invalid_request("refresh_token")
        old = self._records.x.refresh_tokens.get(value)
        if old is None or old.account_id != account.account_id or old.client_id != client.client_id:
            return self._grant_failed(account, "Unknown refresh token")
        if old.exchanged:
            self._note_reuse(account, old)
            return self._grant_failed(account, "Refresh token has already been used")
        idle = self._records.account_now(account) - old.issued_at
        if old.revoked or account.revoked or idle > self._records.config.x_refresh_idle_s:
            return self._grant_failed(account, "Refresh token has expired or been revoked")
        old.exchanged = True
        self._records.x_revoke_pair(old.token)
        self._records.stats["x_refreshes"] += 1
        account.counters.refreshes += 1
        return self.issue_pair(account, client.client_id, old.scope, old.family)

    def _note_reuse(self, account: Account, token: XRefreshToken) -> None:
        """An exchanged refresh token came back: count it, and (by default) end its connection's live pair."""
        self._records.stats["x_reuse"] += 1
        account.counters.reuse += 1
        if not self._records.config.x_reuse_revokes_family:
            return
        for other in self._records.x.refresh_tokens.values():
            if other.family == token.family and not other.revoked:
                self._records.x_revoke_pair(other.token)
                self._records.stats["x_family_revocations"] += 1

    def issue_pair(self, account: Account, client_id: str, scope: str, family: str) -> Reply:
        """A new pair for the store, answered as the token endpoint answers it. Both tokens are opaque."""
        now = self._records.account_now(account)
        config = self._records.config
        expires = math.floor(now + config.x_access_token_ttl)
        access_value, refresh_value = secrets.token_urlsafe(32), secrets.token_urlsafe(40)
        self._records.x.access_tokens[access_value] = XAccessToken(
            access_value, account.account_id, client_id, refresh_value, expires
        )
        self._records.x.refresh_tokens[refresh_value] = XRefreshToken(
            refresh_value, account.account_id, client_id, scope, family, now, access_value
        )
        body = {
            "access_token": access_value,
            "token_type": "Bearer",
            "expires": expires,
            "expires_in": config.x_access_token_ttl + config.x_expires_in_skew_s,
            "refresh_token": refresh_value,
            "domain_prefix": xstore_of(account).domain_prefix,
            "scope": scope,
        }
        return Reply(200, body, dict(_NO_STORE))


def _redirect(target: str, params: Mapping[str, str]) -> Reply:
    return Reply(302, headers={"Location": with_query(target, params)})


__all__ = ["MIN_STATE", "XOAuthServer", "xstore_of"]
