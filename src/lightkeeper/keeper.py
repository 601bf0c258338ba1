"""``Keeper``: the services of lightkeeper wired together from settings.

The CLI, the web app and library users all start here. Everything with a side effect (HTTP transport,
clock, database) can be handed in, which is how tests run the real code against fakes at the seams.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from datetime import timedelta
from types import TracebackType

import httpx2

from . import __version__
from .client import Lightspeed, LightspeedSession
from .clock import Clock, utcnow
from .config import Settings
from .connect import ConnectService
from .crypto import TokenCipher
from .errors import ConnectionNotFound
from .lightspeed import ApiClient, OAuthClient
from .refresh import (
    AccessGrant,
    Pacer,
    ProgressCallback,
    Refresher,
    RunExecutor,
    RunOptions,
    TokenProvider,
    stale_after_s,
)
from .store import ConnectionRecord, RunRecord, Status, Store, Trigger, ensure_current, sqlite_path
from .vault import TokenVault

USER_AGENT = f"lightkeeper/{__version__} (+https://github.com/lightkeeper)"


def worker_id() -> str:
    """Names this process in leases and run records: host, pid and a random suffix."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Keeper:
    """lightkeeper's services for one process. Use as a context manager, or call ``close``."""

    def __init__(
        self,
        settings: Settings,
        *,
        store: Store | None = None,
        transport: httpx2.BaseTransport | None = None,
        clock: Clock = utcnow,
        owner: str | None = None,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self.owner = owner or worker_id()
        self.store = store or Store.from_url(settings.database_url)
        self.cipher = TokenCipher.from_settings(settings)
        self.http = httpx2.Client(
            transport=transport, timeout=settings.http_timeout_s, headers={"User-Agent": USER_AGENT}
        )
        self.oauth = OAuthClient(
            http=self.http,
            oauth_url=settings.lightspeed_oauth_url,
            client_id=settings.lightspeed_client_id,
            client_secret=settings.lightspeed_client_secret.get_secret_value(),
            redirect_uri=settings.lightspeed_redirect_uri,
            scope=settings.lightspeed_scope,
            clock=clock,
            timeout_s=settings.http_timeout_s,
        )
        self.api = ApiClient(http=self.http, api_url=settings.lightspeed_api_url)
        self.vault = TokenVault(self.cipher)
        self.connect = ConnectService(
            store=self.store,
            cipher=self.cipher,
            vault=self.vault,
            oauth=self.oauth,
            api=self.api,
            clock=clock,
            public_url=settings.public_url,
        )
        self.refresher = Refresher(
            store=self.store,
            vault=self.vault,
            oauth=self.oauth,
            # One spacing for every process sharing the database: Lightspeed limits the client as a whole.
            pacer=Pacer(settings.refresh_delay_ms / 1000, self.store.pacing),
            clock=clock,
            owner=self.owner,
            lease=timedelta(seconds=settings.refresh_lease_s),
            max_retry_after=settings.refresh_max_retry_after_s,
            http_timeout=settings.http_timeout_s,
        )
        self.tokens = TokenProvider(
            self.refresher,
            leeway=timedelta(seconds=settings.token_refresh_leeway_s),
            wait=timedelta(seconds=settings.token_wait_s),
        )
        self.runs = RunExecutor(
            self.refresher,
            RunOptions(
                concurrency=settings.refresh_concurrency,
                heartbeat=timedelta(seconds=settings.run_heartbeat_s),
                stale_after=timedelta(seconds=stale_after_s(settings.run_heartbeat_s)),
            ),
        )

    def fresh_token(self, connection_id: int) -> AccessGrant:
        """An access token valid for at least ``TOKEN_REFRESH_LEEWAY_S``, refreshed first if needed."""
        return self.tokens.fresh_token(connection_id)

    def lightspeed(self, connection_id: int) -> LightspeedSession:
        """The connection's Lightspeed API client, for ``with`` or ``async with``."""
        return LightspeedSession(Lightspeed(self.tokens, self.api, connection_id))

    async def afresh_token(self, connection_id: int) -> AccessGrant:
        """``fresh_token`` for asyncio code."""
        return await asyncio.to_thread(self.fresh_token, connection_id)

    def disconnect(self, connection_id: int) -> ConnectionRecord:
        """Revoke at Lightspeed, forget the tokens, mark ``disconnected``. If Lightspeed cannot be told,
        nothing changes (a ProviderError says why); an already dead token counts as revoked."""
        record = self.store.connections.get(connection_id)
        if record is None:
            raise ConnectionNotFound(f"there is no connection {connection_id}")
        if record.status is not Status.DISCONNECTED:
            with self.tokens.leased(connection_id) as lease:
                if lease.record.refresh_token is not None:
                    self.oauth.revoke(self.vault.refresh_token(lease.record))
                self.store.connections.disconnect(connection_id, lease_token=lease.token, now=self.clock())
        return self.store.connections.get(connection_id) or record

    def ensure_schema(self, *, auto_create: bool = True) -> None:
        """Create a brand-new SQLite file's schema; refuse a database behind the code's migrations."""
        is_file = sqlite_path(self.settings.database_url) is not None
        ensure_current(self.store.engine, auto_create=auto_create and is_file)

    # -- the operations the CLI and the web app share ------------------------------------------------
    def refresh(
        self,
        *,
        trigger: str = Trigger.MANUAL,
        connection_id: int | None = None,
        progress: ProgressCallback | None = None,
    ) -> RunRecord:
        return self.runs.run(trigger=trigger, connection_id=connection_id, progress=progress)

    def connections(self, *, user_id: str | None = None, status: str | None = None) -> list[ConnectionRecord]:
        return self.store.connections.list(user_id=user_id, status=status)

    def run_history(self, *, limit: int = 20) -> list[RunRecord]:
        self.runs.interrupt_stale()
        return self.store.runs.list(limit=limit)

    def refreshable_count(self) -> int:
        return sum(self.store.connections.count(status=s) for s in ("connected", "error"))

    def close(self) -> None:
        self.http.close()
        self.store.close()

    def __enter__(self) -> Keeper:
        return self

    def __exit__(
        self, _type: type[BaseException] | None, _exc: BaseException | None, _tb: TracebackType | None
    ) -> None:
        self.close()


__all__ = ["USER_AGENT", "Keeper", "worker_id"]
