"""The Lightspeed provider: OAuth client, API client, token values and PKCE helpers.

Raises only ``lightkeeper.errors.ProviderError`` subclasses (never httpx2's or aiohttp's), knows nothing of the
database, and takes its ``httpx2.Client`` and clock from the caller; a refresh run sends its token requests
through a ``senders`` sender on its own event loop.
"""

from __future__ import annotations

from lightkeeper.lightspeed.api import ApiClient
from lightkeeper.lightspeed.oauth import AsyncSender, OAuthClient, TokenRequest
from lightkeeper.lightspeed.pkce import new_pkce, new_state
from lightkeeper.lightspeed.senders import AiohttpSender, ThreadedSender
from lightkeeper.lightspeed.tokens import Account, TokenSet, account_id_from_jwt

__all__ = [
    "Account",
    "AiohttpSender",
    "ApiClient",
    "AsyncSender",
    "OAuthClient",
    "ThreadedSender",
    "TokenRequest",
    "TokenSet",
    "account_id_from_jwt",
    "new_pkce",
    "new_state",
]
