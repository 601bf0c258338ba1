"""The provider seam: what differs between Lightspeed's retail platforms, behind one interface.

R-Series (``rseries``) and X-Series (``xseries``, formerly Vend) each implement ``Provider``: the authorize URL
and the callback's parameters, the token endpoint and its answer, how an account is identified and named, and
the refresh policy (``strict_rotation``: X-Series revokes a refresh token the moment it issues the next, with no
grace window). What is the same for every provider stays shared beside them: deadlines (``deadline``), senders,
redaction, error mapping, pacing slots. Adding a platform means one module implementing ``Provider``, its
settings, and its simulator mode; ``Providers`` is where the keeper finds them, by the name stored on each
connection.

The API proxy and the Python client's verbs ask the provider too: where a confined path goes (``proxy_url``),
how an answer names its next page (``page_links`` for the proxy's ``Link``, ``next_page`` and ``records_key`` for
``paginate``), and how its API is paced (``api_pacing``: R-Series' leaky bucket, X-Series' fixed window, both
shared by every process through the database).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol

import httpx2

from lightkeeper.errors import ConfigError
from lightkeeper.lightspeed.api_pacing import ApiPacing
from lightkeeper.lightspeed.oauth import AsyncSender, TokenRequest
from lightkeeper.lightspeed.tokens import TokenSet

#: Query parameters of an API call: a mapping, or a query string as a page link gives it.
Params = dict[str, str] | str | None


class Provider(Protocol):
    """One Lightspeed platform, for one OAuth client registration."""

    #: Stored on each connection: ``r-series``, ``x-series``.
    name: str
    #: What people call it: "Lightspeed R-Series".
    title: str
    #: The provider revokes a refresh token as it issues the next (no grace window).
    strict_rotation: bool
    #: The OAuth client id: pacing slots and Retry-After holds are per client.
    client_id: str
    #: The row of ``lightkeeper_pacing`` its token requests take their slots from.
    slots: str

    def authorize_url(self, *, state: str, code_challenge: str) -> str:
        """Where the merchant grants access; ``state`` comes back on the callback."""
        ...

    def form_origins(self) -> tuple[str, ...]:
        """Origins the confirm page's form may lead to (its ``form-action`` policy)."""
        ...

    def callback_account(self, params: Mapping[str, str]) -> str | None:
        """The account the callback names (X-Series' ``domain_prefix``), checked before anything is sent;
        None when the provider's callback names none. Raises ``ConnectFlowError`` for one that is not valid."""
        ...

    def exchange_code(self, code: str, *, code_verifier: str, account: str | None) -> TokenSet:
        """The first pair for an authorization code (``account``: what ``callback_account`` returned)."""
        ...

    def identify(self, tokens: TokenSet, account: str | None) -> str:
        """The account id a new pair belongs to (the callback's, the token's, or the API's word)."""
        ...

    def account_name(self, tokens: TokenSet, account_id: str) -> str:
        """The account's name as the merchant knows it (one API call with the new access token)."""
        ...

    def refresh_request(self, refresh_token: str, account_id: str) -> TokenRequest:
        """The token request trading ``refresh_token`` of ``account_id`` for a new pair (sent by anyone)."""
        ...

    def send(self, request: TokenRequest) -> httpx2.Response:
        """Send a token request within its total deadline."""
        ...

    def refresh(self, refresh_token: str, account_id: str) -> TokenSet:
        """``refresh_request`` sent here and now; the caller stores the new pair before using it."""
        ...

    async def refresh_with(self, sender: AsyncSender, refresh_token: str, account_id: str) -> TokenSet:
        """``refresh`` from an event loop, through a run's ``sender``."""
        ...

    def revoke(self, refresh_token: str, account_id: str) -> bool:
        """Kill the pair at the provider; False when the provider has no way to (X-Series documents none)."""
        ...

    def check_stock(self, record: ConnectionRecordLike) -> None:
        """Nothing when ``update-stock`` (R-Series' Item API) can set this connection's stock; ``InputError``
        saying what to use instead otherwise."""
        ...

    # -- the API, for the proxy and the client's verbs -----------------------------------------------------
    @property
    def api_pacing(self) -> ApiPacing[Any]:
        """How the API's limits are booked before each request and corrected by each answer (every process)."""
        ...

    def proxy_url(self, account_id: str, confined: str) -> str:
        """The URL (without its query) a path relative to the account stands for, once ``forwarding.confine``
        has passed it; ``InvalidPath`` for one this provider's API does not serve (nothing is sent)."""
        ...

    def page_links(self, body: bytes, *, account_id: str, path: str, query: str, proxy_base: str) -> str | None:
        """An RFC 8288 ``Link`` value for the pages a JSON answer to ``path?query`` names, as proxy URLs under
        ``proxy_base``; None when it names none."""
        ...

    def api_request(
        self, method: str, path: str, access_token: str, account_id: str, *, params: Params = None, json: Any = None
    ) -> dict[str, Any]:
        """One paced request to a path relative to the account (confined as the proxy's); the answer's JSON
        object. ``AccessDenied`` on a 401 (the caller refreshes and retries)."""
        ...

    def next_page(self, body: dict[str, Any], account_id: str, path: str, params: Params) -> tuple[str, Params] | None:
        """The page after the answer ``body`` to ``path`` with ``params``, as (path, params); None on the last."""
        ...

    def records_key(self, path: str) -> str:
        """Where a collection page of ``path`` holds its records (``Item`` for ``Item.json``; ``data``)."""
        ...


class ConnectionRecordLike(Protocol):
    """What a provider reads of a stored connection (``store.ConnectionRecord``; ``lightspeed`` knows no store)."""

    @property
    def id(self) -> int: ...

    @property
    def account_id(self) -> str: ...


class Providers(Mapping[str, Provider]):
    """The providers a deployment uses (those whose client id is set), by name, in a stable order."""

    def __init__(self, providers: list[Provider], *, known: Mapping[str, str]) -> None:
        self._by_name = {provider.name: provider for provider in providers}
        #: Every provider lightkeeper knows, configured or not: name -> its client id setting.
        self._known = dict(known)

    def __getitem__(self, name: str) -> Provider:
        found = self._by_name.get(name)
        if found is not None:
            return found
        if name in self._known:
            raise ConfigError(f"{name} is not configured: set {self._known[name]} (and its secret)")
        raise ConfigError(f"unknown provider {name!r}: one of {', '.join(self._known)}")

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_name)

    def __len__(self) -> int:
        return len(self._by_name)

    @property
    def known(self) -> tuple[str, ...]:
        return tuple(self._known)

    def default(self) -> Provider:
        """The provider a connect link goes to when none is named: the only one configured, else R-Series'
        (the first known)."""
        if len(self._by_name) == 1:
            return next(iter(self._by_name.values()))
        return self[next(iter(self._known))]

    def title(self, name: str) -> str:
        """What people call the provider ("Lightspeed X-Series"); its name when it is not configured here."""
        found = self._by_name.get(name)
        return found.title if found is not None else name

    def check(self, name: str) -> str:
        """``name`` if it is a known provider, else ``ConfigError`` naming the known ones."""
        if name not in self._known:
            raise ConfigError(f"unknown provider {name!r}: one of {', '.join(self._known)}")
        return name


__all__ = ["ConnectionRecordLike", "Params", "Provider", "Providers"]
