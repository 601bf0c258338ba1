"""What the X-Series suite shares: the settings that point a keeper at the simulator's ``/x`` mode, seeding X-Series
connections without the consent dance, a recording transport, and readings of the database and the simulator.

The simulator's X-Series mode checks clients against the same registry as R-Series (``simulator/clients.py``),
and ``seed_x`` issues its pairs to the configured client: X-Series here uses the R-Series test client's id and
secret. Each provider still has its own pacing row (``refresh:x-series``) and ``Retry-After`` hold.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx2
from sqlalchemy import select, update

from lightkeeper import Keeper
from lightkeeper.lightspeed import TokenSet
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store.schema import connections as connections_table
from tests.conftest import CLIENT_ID, CLIENT_SECRET

X_SERIES = "x-series"
R_SERIES = "r-series"


def x_env(simulator_url: str, **extra: str) -> dict[str, str]:
    """The settings that turn X-Series on against the simulator (add to ``tests.helpers.make_env``)."""
    return {
        "LIGHTSPEED_X_CLIENT_ID": CLIENT_ID,
        "LIGHTSPEED_X_CLIENT_SECRET": CLIENT_SECRET,
        "LIGHTSPEED_X_CONNECT_URL": f"{simulator_url}/x/connect",
        "LIGHTSPEED_X_BASE_URL": f"{simulator_url}/x/{{domain_prefix}}",
    } | extra


#: What turns R-Series off (``make_env`` sets its credentials): a deployment of X-Series only.
NO_R_SERIES = {"LIGHTSPEED_CLIENT_ID": "", "LIGHTSPEED_CLIENT_SECRET": ""}


def seed_x_connections(keeper: Keeper, sim: SimulatorControl, count: int, *, user_prefix: str = "x") -> list[int]:
    """``count`` connected X-Series stores (new simulator stores with their first pairs), stored as the callback
    stores them: account id = domain prefix, strict rotation, expiry from the answer's ``expires``."""
    ids = []
    for number, pair in enumerate(sim.seed_x(count), start=1):
        expires_at = datetime.fromtimestamp(int(pair["expires"]), UTC)
        tokens = TokenSet(access_token=pair["access_token"], refresh_token=pair["refresh_token"], expires_at=expires_at)
        ids.append(
            keeper.store.connections.upsert_connected(
                user_id=f"{user_prefix}-{number}",
                account_id=str(pair["domain_prefix"]),
                account_name=pair.get("name"),
                encrypt=_sealer(keeper, tokens),
                expires_at=expires_at,
                now=keeper.clock(),
                provider=X_SERIES,
                strict_rotation=True,
            )
        )
    return ids


def _sealer(keeper: Keeper, tokens: TokenSet) -> Callable[[int], tuple[str, str]]:
    return lambda connection_id: keeper.vault.seal_pair(connection_id, tokens)


def set_row(keeper: Keeper, connection_id: int, **values: object) -> None:
    """Change a connection row directly (test set-up only)."""
    with keeper.store.engine.begin() as conn:
        conn.execute(update(connections_table).where(connections_table.c.id == connection_id).values(**values))


def versions(keeper: Keeper) -> dict[int, int]:
    c = connections_table.c
    with keeper.store.engine.connect() as conn:
        return {row.id: row.token_version for row in conn.execute(select(c.id, c.token_version))}


def statuses(keeper: Keeper) -> dict[int, str]:
    return {record.id: record.status.value for record in keeper.connections()}


def status_counts(keeper: Keeper) -> Counter[str]:
    return Counter(statuses(keeper).values())


def connection_rows(keeper: Keeper) -> int:
    with keeper.store.engine.connect() as conn:
        return len(conn.execute(select(connections_table.c.id)).all())


def events_of(keeper: Keeper, connection_id: int) -> list[dict[str, Any]]:
    """The webhook events about one connection, oldest first, as their receiver would get them."""
    bodies = [json.loads(event.body) for event in reversed(keeper.events(limit=500))]
    return [body for body in bodies if body["connection_id"] == connection_id]


def x_refreshes(sim: SimulatorControl) -> dict[str, int]:
    """Real refreshes per X-Series store (domain prefix), as the simulator counted them."""
    return {prefix: int(entry["refreshes"]) for prefix, entry in sim.stats()["x_per_store"].items()}


def r_refreshes(sim: SimulatorControl) -> dict[str, int]:
    """Real refreshes per R-Series account, as the simulator counted them."""
    x_accounts = {str(store["account_id"]) for store in sim.x_stores()}
    per_account = sim.stats()["per_account"]
    return {account: int(entry["refreshes"]) for account, entry in per_account.items() if account not in x_accounts}


def live_x_refresh_tokens(server: SimulatorServer, prefix: str) -> list[str]:
    """The store's refresh tokens X-Series would still exchange (neither exchanged nor revoked)."""
    state = server.state
    with state._lock:
        records = state._records
        account_id = records.x.stores[prefix]
        return [
            token.token
            for token in records.x.refresh_tokens.values()
            if token.account_id == account_id and not (token.exchanged or token.revoked)
        ]


def holds_the_live_pair(keeper: Keeper, server: SimulatorServer, connection_id: int) -> bool:
    """Whether the stored refresh token is the one X-Series still honours for the store, and the only one."""
    record = keeper.connection(connection_id)
    return live_x_refresh_tokens(server, record.account_id) == [keeper.vault.refresh_token(record)]


def reuse_both(sim: SimulatorControl) -> tuple[int, int]:
    """(R-Series reuse, X-Series reuse): refresh tokens presented again after their one exchange."""
    stats = sim.stats()
    return int(stats["reuse"]), int(stats["x_reuse"])


@dataclass(frozen=True)
class Sent:
    """One request as it left the keeper: when (``time.monotonic()``, the simulator's clock too), how, where."""

    at: float
    method: str
    url: str

    @property
    def path(self) -> str:
        return httpx2.URL(self.url).path


@dataclass
class RecordingTransport(httpx2.BaseTransport):
    """The real transport, with every request that leaves the keeper recorded before it is sent."""

    inner: httpx2.BaseTransport = field(default_factory=httpx2.HTTPTransport)
    sent: list[Sent] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    #: The ``Retry-After`` of every 429 the keeper received, as written.
    retry_afters: list[str] = field(default_factory=list)

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        with self._lock:
            self.sent.append(Sent(time.monotonic(), request.method, str(request.url)))
        response = self.inner.handle_request(request)
        if response.status_code == 429:
            with self._lock:
                self.retry_afters.append(response.headers.get("Retry-After", ""))
        return response

    def close(self) -> None:
        self.inner.close()

    def token_requests(self, *, x_series: bool) -> list[Sent]:
        """The token requests sent so far: X-Series' (``/x/{prefix}/api/1.0/token``) or R-Series'."""
        suffix = "/api/1.0/token" if x_series else "/auth/oauth/token"
        with self._lock:
            return [sent for sent in self.sent if sent.path.endswith(suffix)]


__all__ = [
    "NO_R_SERIES",
    "R_SERIES",
    "X_SERIES",
    "RecordingTransport",
    "Sent",
    "connection_rows",
    "events_of",
    "holds_the_live_pair",
    "live_x_refresh_tokens",
    "r_refreshes",
    "reuse_both",
    "seed_x_connections",
    "set_row",
    "status_counts",
    "statuses",
    "versions",
    "x_env",
    "x_refreshes",
]
