"""The providers a deployment uses, built from its settings (``lightspeed.providers`` is the seam).

A provider is in use when its client id is set (R-Series also when no provider's is, as before X-Series). Each
configured provider gets its own pacer for token requests: Lightspeed limits each OAuth client on its own, so
each client has its own slot row and ``Retry-After`` hold, shared by every process of the deployment. Its API
requests are paced where R-Series' buckets live (``lightkeeper_api_buckets``), each store's window in a row of
its own.
"""

from __future__ import annotations

import httpx2

from .clock import Clock
from .config import CLIENT_ID, X_CLIENT_ID, Settings
from .lightspeed import ApiClient, OAuthClient
from .lightspeed.pacing import Pacer
from .lightspeed.providers import Provider, Providers
from .lightspeed.rseries import R_SERIES, RSeries
from .lightspeed.window_pacing import WindowPacer
from .lightspeed.xseries import X_SERIES, XSeries
from .store import Store

#: Every provider lightkeeper knows, in the order pages and runs list them, with the setting that turns it on.
KNOWN = {R_SERIES: CLIENT_ID, X_SERIES: X_CLIENT_ID}


def in_use(settings: Settings) -> list[str]:
    """The names of the providers whose client id is set (R-Series when none is), in ``KNOWN`` order."""
    used = {R_SERIES: settings.uses_r_series, X_SERIES: settings.uses_x_series}
    return [name for name in KNOWN if used[name]]


def build_providers(
    settings: Settings, *, http: httpx2.Client, oauth: OAuthClient, api: ApiClient, clock: Clock
) -> Providers:
    """The configured providers; R-Series speaks through the keeper's own ``oauth`` and ``api`` clients."""
    chosen: list[Provider] = []
    if settings.uses_r_series:
        chosen.append(
            RSeries(
                oauth=oauth, api=api, client_id=settings.lightspeed_client_id, oauth_url=settings.lightspeed_oauth_url
            )
        )
    if settings.uses_x_series:
        chosen.append(
            XSeries(
                http=http,
                client_id=settings.lightspeed_x_client_id,
                client_secret=settings.lightspeed_x_client_secret.get_secret_value(),
                redirect_uri=settings.x_redirect_uri,
                connect_url=settings.lightspeed_x_connect_url,
                base_url=settings.lightspeed_x_base_url,
                clock=clock,
                timeout_s=settings.http_timeout_s,
                max_wait_s=settings.proxy_max_wait_s,
                # Every process of the deployment books a store's window in the same row, beside the buckets.
                pacing=WindowPacer(api.pacer.rows, client_id=settings.lightspeed_x_client_id),
            )
        )
    return Providers(chosen, known=KNOWN)


def oauth_client(settings: Settings, *, http: httpx2.Client, clock: Clock) -> OAuthClient:
    """R-Series' OAuth client (``/auth/oauth/*``), over the keeper's ``httpx2.Client``."""
    return OAuthClient(
        http=http,
        oauth_url=settings.lightspeed_oauth_url,
        client_id=settings.lightspeed_client_id,
        client_secret=settings.lightspeed_client_secret.get_secret_value(),
        redirect_uri=settings.lightspeed_redirect_uri,
        scope=settings.lightspeed_scope,
        clock=clock,
        timeout_s=settings.http_timeout_s,
    )


def build_pacers(settings: Settings, store: Store, providers: Providers) -> dict[str, Pacer]:
    """One token-request pacer per configured provider: R-Series keeps the slot row it always had."""
    interval_s = settings.refresh_delay_ms / 1000
    return {name: Pacer(interval_s, store.pacing, name=provider.slots) for name, provider in providers.items()}


__all__ = ["KNOWN", "build_pacers", "build_providers", "in_use", "oauth_client"]
