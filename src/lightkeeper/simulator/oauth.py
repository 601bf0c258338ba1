"""The simulated OAuth server: authorize, token (code exchange and refresh), revoke, and the JWTs it issues.

The parts that break naive integrations are modelled on purpose: single-use 60-second codes bound to their
client, redirect URI and PKCE challenge; refresh-token rotation where the previous token stays usable until
the new access token is first used (the grace window), and a replay inside it discards the successor pair;
30-day idle expiry of refresh tokens; revoke ending the whole connection (token family).
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from lightkeeper.simulator.clients import authenticate_client, find_client, redirect_target
from lightkeeper.simulator.records import AccessToken, Account, AuthCode, Client, Records, RefreshToken
from lightkeeper.simulator.replies import (
    ACCESS_DENIED_DESC,
    INVALID_GRANT_DESC,
    Reply,
    SimulatorError,
    invalid_client,
    invalid_refresh_token,
    invalid_request,
    oauth_error,
    page,
)

_GRANT_TYPES = frozenset({"authorization_code", "refresh_token"})


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def with_query(url: str, params: Mapping[str, str]) -> str:
    """Append ``params`` to ``url`` keeping any query the registered redirect already has."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), *params.items()]
    return urlunsplit(parts._replace(query=urlencode(query)))


def _pkce_ok(challenge: str, method: str, verifier: str) -> bool:
    if method == "plain":
        return secrets.compare_digest(challenge, verifier)
    digest = _b64url(hashlib.sha256(verifier.encode("ascii", "replace")).digest())
    return secrets.compare_digest(challenge, digest)


def _jwt(account: Account, client_id: str, scope: str, now: float, ttl: int) -> str:
    """JWT-shaped like Lightspeed's RS256 token; the signature is random (clients must not verify)."""
    header = {"alg": "RS256", "typ": "JWT"}
    claims = {
        "acct": str(account.account_id),
        "sub": "1",  # the approving employee
        "aud": client_id,
        "scope": scope,
        "iat": int(now),
        "nbf": int(now),
        "exp": int(now + ttl),
        "jti": secrets.token_hex(20),
    }
    parts = [json.dumps(header).encode(), json.dumps(claims).encode(), secrets.token_bytes(256)]
    return ".".join(_b64url(p) for p in parts)


def _client_credentials(fields: Mapping[str, str], basic: tuple[str, str] | None) -> tuple[str, str]:
    """HTTP Basic credentials when sent, else the ``client_id``/``client_secret`` body fields."""
    return basic or (fields.get("client_id", ""), fields.get("client_secret", ""))


class OAuthServer:
    """``/auth/oauth/*`` over shared ``Records``; the caller holds the state lock."""

    def __init__(self, records: Records) -> None:
        self._records = records

    # ------------------------------------------------------------ authorize

    def set_authorize_mode(self, mode: str, account_id: str | None = None) -> None:
        """Approve or deny consent; approvals go to ``account_id`` when given, else to a new account."""
        if mode not in {"approve", "deny"}:
            raise SimulatorError(400, "mode must be 'approve' or 'deny'")
        wanted: int | None = None
        if account_id is not None:
            # An X-Series store may be named by its domain prefix too (X-Series consent reads the same knob).
            wanted = int(account_id) if account_id.isdigit() else self._records.x.stores.get(account_id)
            if wanted is None:
                raise SimulatorError(400, "account_id must be an account number or an X-Series domain prefix")
        self._records.authorize_mode = mode
        self._records.authorize_account = wanted

    def authorize(self, params: Mapping[str, str]) -> Reply:
        """Auto-approve (or deny) an authorization request; approval creates a new merchant account."""
        client = find_client(self._records, params.get("client_id", ""))
        if client is None:
            return page(400, "Unknown client_id.")
        sent = params.get("redirect_uri") or None
        target = redirect_target(client, sent)
        if isinstance(target, Reply):
            # Never redirect to an unregistered URI (RFC 6749 4.1.2.1, 10.6): show an error page.
            return target
        return self._authorize_redirect(client, target, sent, params)

    def _authorize_redirect(self, client: Client, target: str, sent: str | None, params: Mapping[str, str]) -> Reply:
        state = {"state": params["state"]} if "state" in params else {}
        error = self._authorize_error(params)
        if error is not None:
            return Reply(302, headers={"Location": with_query(target, {**error, **state})})
        account = self._consenting_account()
        code = AuthCode(
            code="def50200" + secrets.token_hex(96),
            account_id=account.account_id,
            client_id=client.client_id,
            scope=params.get("scope", ""),
            redirect_uri=sent,
            delivered_to=target,
            challenge=params.get("code_challenge") or None,
            challenge_method=params.get("code_challenge_method") or "plain",
            issued_at=self._records.account_now(account),
        )
        self._records.codes[code.code] = code
        return Reply(302, headers={"Location": with_query(target, {"code": code.code, **state})})

    def _authorize_error(self, params: Mapping[str, str]) -> dict[str, str] | None:
        if params.get("response_type") != "code":
            return {"error": "unsupported_response_type", "error_description": "Only response_type=code."}
        method = params.get("code_challenge_method")
        if method is not None and method not in {"S256", "plain"}:
            return {
                "error": "invalid_request",
                "error_description": "code_challenge_method must be S256 or plain",
            }
        if self._records.authorize_mode == "deny":
            return {"error": "access_denied", "error_description": ACCESS_DENIED_DESC}
        return None

    def _consenting_account(self) -> Account:
        wanted = self._records.accounts.get(self._records.authorize_account or -1)
        # An X-Series store never gets an R-Series connection: consent then goes to a new R-Series account.
        if wanted is not None and wanted.xstore is None:
            return wanted
        return self._records.new_account()

    # ---------------------------------------------------------------- token

    def token(
        self,
        fields: Mapping[str, str],
        *,
        json_body: bool,
        basic: tuple[str, str] | None,
        received_at: float,
    ) -> Reply:
        """``POST /auth/oauth/token`` for both grants. ``basic`` is HTTP Basic client auth, if sent;
        ``received_at`` is when the request arrived (the clock's monotonic seconds)."""
        grant_type = fields.get("grant_type", "")
        if grant_type == "refresh_token":
            self._records.refresh_times.append(received_at)
        if not grant_type:
            return invalid_request("grant_type")
        if grant_type not in _GRANT_TYPES:
            return oauth_error(
                400,
                "unsupported_grant_type",
                "The authorization grant type is not supported by the authorization server.",
                "Check that all required parameters have been provided",
            )
        client_id, secret = _client_credentials(fields, basic)
        if not client_id:
            return invalid_request("client_id")
        client = authenticate_client(self._records, client_id, secret)
        if client is None:
            return invalid_client()
        if grant_type == "authorization_code":
            return self._exchange_code(client, fields)
        return self._refresh_grant(client, fields, json_body=json_body)

    def _code_failed(self, code: AuthCode | None, hint: str) -> Reply:
        self._records.stats["invalid_grant"] += 1
        if code is not None:
            self._records.accounts[code.account_id].counters.invalid_grant += 1
        return oauth_error(400, "invalid_grant", INVALID_GRANT_DESC, hint)

    def _exchange_code(self, client: Client, fields: Mapping[str, str]) -> Reply:
        value = fields.get("code", "")
        if not value:
            return invalid_request("code")
        code = self._records.codes.get(value)
        if code is None:
            return self._code_failed(None, "Cannot decrypt the authorization code")
        problem = self._code_problem(code, client, fields)
        if problem == "code_verifier":
            return invalid_request("code_verifier")
        if problem is not None:
            return self._code_failed(code, problem)
        code.used = True
        self._records.stats["code_exchanges"] += 1
        account = self._records.accounts[code.account_id]
        family = secrets.token_hex(8)
        return self.issue_pair(account, client.client_id, code.scope, family, parent=None)

    def _code_problem(self, code: AuthCode, client: Client, fields: Mapping[str, str]) -> str | None:
        """Why this exchange must fail (an invalid_grant hint), or None when it may proceed."""
        if code.client_id != client.client_id:
            return "Authorization code was not issued to this client"
        if code.used:
            return "Authorization code has been revoked"
        issued_for = self._records.accounts[code.account_id]
        if self._records.account_now(issued_for) > code.issued_at + self._records.config.code_ttl:
            return "Authorization code has expired"
        sent = fields.get("redirect_uri") or None
        # RFC 6749 4.1.3: required and identical when authorize carried one; if sent anyway, it must be
        # where the code went, and still registered.
        if (code.redirect_uri is not None or sent is not None) and sent != code.delivered_to:
            return "Invalid redirect URI"
        if sent is not None and client.redirect_uris and sent not in client.redirect_uris:
            return "Invalid redirect URI"
        return _verifier_problem(code, fields)

    def _refresh_failed(self, token: RefreshToken | None) -> Reply:
        self._records.stats["invalid_grant"] += 1
        if token is not None:
            self._records.accounts[token.account_id].counters.invalid_grant += 1
        return invalid_refresh_token()

    def _note_reuse(self, token: RefreshToken | None) -> None:
        """Count a refresh token presented after its one exchange, whatever the answer will be.

        ``child`` is set by the first exchange and never cleared, so it marks "already exchanged"
        whether the token is still in its grace window or revoked since.
        """
        if token is not None and token.child is not None:
            self._records.stats["reuse"] += 1
            self._records.accounts[token.account_id].counters.reuse += 1

    def _refresh_grant(self, client: Client, fields: Mapping[str, str], *, json_body: bool) -> Reply:
        presented = self._records.refresh_tokens.get(fields.get("refresh_token", ""))
        self._note_reuse(presented)
        if json_body and "scope" in fields:
            # Reproduces the 2026 report: JSON body + scope on refresh -> invalid_grant.
            return self._refresh_failed(presented)
        return self._refresh(client, fields)

    def _refresh(self, client: Client, fields: Mapping[str, str]) -> Reply:
        value = fields.get("refresh_token", "")
        if not value:
            return invalid_request("refresh_token")
        old = self._records.refresh_tokens.get(value)
        if old is None or old.client_id != client.client_id or not self._records.refresh_alive(old):
            return self._refresh_failed(old)
        if old.child is not None:
            # Refresh with the previous token while its successor is unused (e.g. the client lost the
            # response): the successor pair is discarded, so only the newest pair is ever valid.
            self._records.stats["refreshes_in_grace"] += 1
            self._records.revoke_pair(old.child)
        if old.parent is not None:
            # Using this token proves the client has it: its predecessor's grace ends.
            self._records.refresh_tokens[old.parent].revoked = True
        account = self._records.accounts[old.account_id]
        self._records.stats["refreshes"] += 1
        account.counters.refreshes += 1
        return self.issue_pair(account, client.client_id, old.scope, old.family, parent=old)

    def issue_pair(
        self, account: Account, client_id: str, scope: str, family: str, parent: RefreshToken | None
    ) -> Reply:
        """A new access/refresh pair in ``family``, answered as the token endpoint answers it."""
        now = self._records.account_now(account)
        ttl = self._records.config.access_token_ttl
        access_value = _jwt(account, client_id, scope, now, ttl)
        refresh_value = "def50" + secrets.token_hex(160)
        self._records.access_tokens[access_value] = AccessToken(
            access_value, account.account_id, client_id, refresh_value, now + ttl
        )
        self._records.refresh_tokens[refresh_value] = RefreshToken(
            refresh_value,
            account.account_id,
            client_id,
            scope,
            family,
            now,
            access_value,
            parent=None if parent is None else parent.token,
        )
        if parent is not None:
            parent.child = refresh_value
        body = {
            "token_type": "Bearer",
            "expires_in": ttl,
            "access_token": access_value,
            "refresh_token": refresh_value,
        }
        return Reply(200, body, {"Cache-Control": "no-store", "Pragma": "no-cache"})

    # --------------------------------------------------------------- revoke

    def revoke(self, fields: Mapping[str, str], *, basic: tuple[str, str] | None) -> Reply:
        """``POST /auth/oauth/revoke``: ends the whole connection the token belongs to."""
        client_id, secret = _client_credentials(fields, basic)
        if not client_id:
            return invalid_request("client_id")
        client = authenticate_client(self._records, client_id, secret)
        if client is None:
            return invalid_client()
        value = fields.get("refresh_token") or fields.get("token") or ""
        if not value:
            return invalid_request("refresh_token")
        family = self._family_of(value, client.client_id)
        if family is not None:
            # The whole family, not just this token: a predecessor still in its grace window
            # would otherwise keep a "disconnected" connection alive.
            self._revoke_family(family)
        self._records.stats["revokes"] += 1
        return Reply(200, {})

    def _family_of(self, value: str, client_id: str) -> str | None:
        refresh = self._records.refresh_tokens.get(value)
        access = self._records.access_tokens.get(value)
        if refresh is None and access is not None:
            refresh = self._records.refresh_tokens[access.refresh_token]
        if refresh is None or refresh.client_id != client_id:
            return None  # RFC 7009: unknown tokens are answered 200 all the same
        return refresh.family

    def _revoke_family(self, family: str) -> None:
        for token in self._records.refresh_tokens.values():
            if token.family == family:
                self._records.revoke_pair(token.token)


def _verifier_problem(code: AuthCode, fields: Mapping[str, str]) -> str | None:
    """PKCE (RFC 7636): ``"code_verifier"`` when one is due but missing, a hint when it does not match."""
    if code.challenge is None:
        return None
    verifier = fields.get("code_verifier", "")
    if not verifier:
        return "code_verifier"
    if not _pkce_ok(code.challenge, code.challenge_method, verifier):
        return "Failed to verify `code_verifier`."
    return None


__all__ = ["OAuthServer", "with_query"]
