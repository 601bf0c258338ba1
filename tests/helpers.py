"""Helpers for tests: settings for a test Keeper, and driving the OAuth flow like a browser would."""

from __future__ import annotations

from datetime import timedelta
from urllib.parse import parse_qsl, urlsplit

import httpx2

from lightkeeper import Keeper, Settings, load_settings
from lightkeeper.config import REQUIRE_ALL
from lightkeeper.store import ConnectionRecord, Store

from .conftest import CLIENT_ID, CLIENT_SECRET

TEST_KEY = "q83vEjRWeJq8gwZ4g5yqyM2Q6dgLRW2XOcVb0DEqq0c="  # test-only key, 32 bytes base64


def make_env(database_url: str, simulator_url: str, **extra: str) -> dict[str, str]:
    env = {
        "LIGHTSPEED_CLIENT_ID": CLIENT_ID,
        "LIGHTSPEED_CLIENT_SECRET": CLIENT_SECRET,
        "TOKEN_ENCRYPTION_KEY": TEST_KEY,
        "DATABASE_URL": database_url,
        "LIGHTSPEED_OAUTH_URL": simulator_url,
        "LIGHTSPEED_API_URL": simulator_url,
        "LIGHTSPEED_REDIRECT_URI": "http://127.0.0.1:8000/oauth/callback",
        "REFRESH_DELAY_MS": "0",
    }
    return env | extra


def make_settings(database_url: str, simulator_url: str, **extra: str) -> Settings:
    return load_settings(env=make_env(database_url, simulator_url, **extra), require=REQUIRE_ALL)


def query(url: str) -> dict[str, str]:
    return dict(parse_qsl(urlsplit(url).query))


def authorize(authorize_url: str) -> dict[str, str]:
    """What Lightspeed sends back to the callback: the simulator auto-approves."""
    response = httpx2.get(authorize_url, follow_redirects=False, timeout=10)
    assert response.status_code == 302, response.text
    return query(response.headers["location"])


def connect(keeper: Keeper, user_id: str) -> ConnectionRecord:
    """The whole connect flow without a browser: link → start → consent → callback."""
    link = keeper.connect.create_link(user_id)
    started = keeper.connect.start(query(link.url)["session"])
    return keeper.connect.complete(authorize(started.authorize_url), browser_token=started.browser_token)


def age_heartbeat(store: Store, run_id: int, age: timedelta) -> None:
    """Make a run's last heartbeat ``age`` old by the database's clock, as if its workers died then."""
    from sqlalchemy import update

    from lightkeeper.store import dialect
    from lightkeeper.store.schema import runs

    with store.engine.begin() as conn:
        stale = dialect.now_plus(conn, -age.total_seconds())
        conn.execute(update(runs).where(runs.c.id == run_id).values(heartbeat_at=stale))
