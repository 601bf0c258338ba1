"""Lightspeed Retail (R-Series) OAuth 2.0: authorize URL, code exchange, refresh and revoke.

The caller hands in the ``httpx2.Client`` (the transport seam) and the clock; this module keeps no state
between calls and knows nothing of where tokens are stored. Bodies are always form-encoded and a refresh never
sends ``scope``: Lightspeed has answered ``invalid_grant`` to JSON bodies carrying a scope (docs/LIGHTSPEED.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import ClassVar, Protocol
from urllib.parse import urlencode

import httpx2

from lightkeeper.clock import Clock
from lightkeeper.errors import InvalidGrant
from lightkeeper.lightspeed.deadline import post_within
from lightkeeper.lightspeed.error_mapping import check_oauth_response, translate_transport_errors
from lightkeeper.lightspeed.token_response import parse_token_response
from lightkeeper.lightspeed.tokens import TokenSet

_AUTHORIZE_PATH = "/auth/oauth/authorize"
_TOKEN_PATH = "/auth/oauth/token"
_REVOKE_PATH = "/auth/oauth/revoke"
_JSON = {"Accept": "application/json"}


class OAuthClient:
    """Talks to Lightspeed's ``/auth/oauth/*`` endpoints for one OAuth client registration."""

    def __init__(
        self,
        *,
        http: httpx2.Client,
        oauth_url: str,
        client_id: str,
        client_secret: str,
        redirect_uri: str,
        scope: str,
        clock: Clock,
        timeout_s: float = 20.0,
    ) -> None:
        self._http = http
        self._oauth_url = oauth_url.rstrip("/")
        self._client_id = client_id
        self._client_secret = client_secret
        self._redirect_uri = redirect_uri
        self._scope = scope
        self._clock = clock
        #: HTTP_TIMEOUT_S: the total deadline of one token request (see ``deadline``).
        self.timeout_s = timeout_s

    def __repr__(self) -> str:
        return (
            f"OAuthClient(oauth_url={self._oauth_url!r}, client_id={self._client_id!r}, client_secret=***, "
            f"redirect_uri={self._redirect_uri!r}, scope={self._scope!r})"
        )

    def authorize_url(self, *, state: str, code_challenge: str) -> str:
        """Where to send the merchant to grant access (PKCE S256, with our redirect URI and state)."""
        params = {
            "response_type": "code",
            "client_id": self._client_id,
            "scope": self._scope,
            "state": state,
            "redirect_uri": self._redirect_uri,
            "code_challenge": code_challenge,
            "code_challenge_method": "S256",
        }
        return f"{self._oauth_url}{_AUTHORIZE_PATH}?{urlencode(params)}"

    def exchange_code(self, code: str, *, code_verifier: str) -> TokenSet:
        """Trade an authorization code (valid 60 s, single use) for the first token pair."""
        # The same redirect_uri as the authorize request, or the server refuses (RFC 6749 §4.1.3).
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "code_verifier": code_verifier,
            "redirect_uri": self._redirect_uri,
        }
        request = self._token_request(form, action="code exchange", previous=None, sent=(code, code_verifier))
        return request.parse(self.send(request))

    def refresh(self, refresh_token: str) -> TokenSet:
        """Trade a refresh token for a new pair; the caller must store the new pair before using it."""
        request = self.refresh_request(refresh_token)
        return request.parse(self.send(request))

    async def refresh_with(self, sender: AsyncSender, refresh_token: str) -> TokenSet:
        """``refresh``, sent from an event loop by ``sender`` (a refresh run's; see ``senders``)."""
        request = self.refresh_request(refresh_token)
        return request.parse(await sender.send(request))

    def refresh_request(self, refresh_token: str) -> TokenRequest:
        form = {"grant_type": "refresh_token", "refresh_token": refresh_token}
        return self._token_request(form, action="token refresh", previous=refresh_token, sent=(refresh_token,))

    def revoke(self, refresh_token: str) -> None:
        """Kill a refresh token and its access token; a token that is already dead counts as revoked."""
        sent = (self._client_secret, refresh_token)
        response = self._post(_REVOKE_PATH, {"refresh_token": refresh_token}, action="token revocation", sent=sent)
        try:
            check_oauth_response(response, action="token revocation", now=self._clock(), redact=sent)
        except InvalidGrant:
            return  # invalid_grant: nothing left to revoke, which is what the caller wanted

    def send(self, request: TokenRequest) -> httpx2.Response:
        """Send a token request with this client's ``httpx2.Client``, within its total deadline."""
        with translate_transport_errors(request.action, redact=request.redact):
            return post_within(self._http, request.url, data=request.form, headers=_JSON, budget_s=request.budget_s)

    def _token_request(
        self, form: dict[str, str], *, action: str, previous: str | None, sent: tuple[str, ...]
    ) -> TokenRequest:
        # Read the clock before sending: the token's lifetime cannot start earlier, so expires_at errs early.
        return TokenRequest(
            url=f"{self._oauth_url}{_TOKEN_PATH}",
            form={"client_id": self._client_id, "client_secret": self._client_secret, **form},
            action=action,
            previous=previous,
            redact=(self._client_secret, *sent),
            budget_s=self.timeout_s,
            now=self._clock(),
        )

    def _post(self, path: str, form: dict[str, str], *, action: str, sent: tuple[str, ...]) -> httpx2.Response:
        # data= sends application/x-www-form-urlencoded, the one encoding Lightspeed reliably accepts.
        body = {"client_id": self._client_id, "client_secret": self._client_secret, **form}
        with translate_transport_errors(action, redact=sent):
            return self._http.post(f"{self._oauth_url}{path}", data=body, headers=_JSON)


@dataclass(frozen=True)
class TokenRequest:
    """One POST to the token endpoint, whoever sends it, and how to read its answer.

    ``form`` is sent form-encoded (the one encoding Lightspeed reliably accepts) with ``Accept: application/
    json``; the whole request must end within ``budget_s`` (``HTTP_TIMEOUT_S``: a lease must outlive it).
    """

    url: str
    form: dict[str, str] = field(repr=False)
    action: str
    previous: str | None = field(repr=False)
    redact: tuple[str, ...] = field(repr=False)
    budget_s: float
    now: datetime
    #: The answer's field holding the access token's expiry as a unix time, for a provider that sends one.
    expires_field: str | None = None

    headers: ClassVar[dict[str, str]] = _JSON

    def body(self) -> bytes:
        """The form, encoded as ``httpx2`` encodes ``data=`` (``application/x-www-form-urlencoded``)."""
        return urlencode(self.form).encode("ascii")

    def parse(self, response: httpx2.Response) -> TokenSet:
        return parse_token_response(
            response,
            now=self.now,
            previous_refresh_token=self.previous,
            action=self.action,
            redact=self.redact,
            expires_field=self.expires_field,
        )


class AsyncSender(Protocol):
    """Sends a ``TokenRequest`` from an event loop; raises only ``ProviderError``s (``senders``)."""

    async def send(self, request: TokenRequest) -> httpx2.Response: ...


__all__ = ["AsyncSender", "OAuthClient", "TokenRequest"]
