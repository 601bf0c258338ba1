"""Database fixtures for the integration suite: a migrated SQLite file and a migrated PostgreSQL clone.

PostgreSQL is required, never skipped: CI must prove every store behaviour on both dialects. The schema is
migrated once per session into a template database; each test gets its own ``CREATE DATABASE ... TEMPLATE``
clone of it. A clone costs a few hundred milliseconds of fsync, so a small pool makes the next clones while
tests run and drops used ones off the tests' path.
"""

from __future__ import annotations

import os
import secrets
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import httpx2
import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from lightkeeper import Keeper
from lightkeeper.clock import Clock
from lightkeeper.simulator import SimulatorControl, SimulatorServer
from lightkeeper.store import Store, make_engine, upgrade
from tests.helpers import make_settings

KeeperFactory = Callable[..., Keeper]

ADMIN_URL = os.environ.get("LIGHTKEEPER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")
CLONES_AHEAD = 4


def _url_with_database(name: str) -> str:
    """The admin URL pointed at another database, in plain ``postgresql://`` form."""
    url = make_url(ADMIN_URL).set(drivername="postgresql", database=name)
    return url.render_as_string(hide_password=False)


@contextmanager
def _admin() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the admin database, or a test failure that says how to fix it."""
    admin_db = make_url(ADMIN_URL).database or "postgres"
    try:
        conn = psycopg.connect(_url_with_database(admin_db), autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as exc:
        reason = str(exc).strip()
    else:
        with conn:
            yield conn
        return
    shown = make_url(ADMIN_URL).render_as_string(hide_password=True)
    pytest.fail(  # outside the except block, so the report is this message and not a chained traceback
        f"PostgreSQL is not reachable at {shown} ({reason}). The integration suite needs it: start "
        "PostgreSQL or set LIGHTKEEPER_TEST_PG to an admin URL "
        "(default postgresql://postgres@127.0.0.1:5432/postgres).",
        pytrace=False,
    )


def _create_database(name: str, *, template: str | None = None) -> str:
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    with _admin() as conn:
        conn.execute(query)
    return name


def _drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def _new_name() -> str:
    return f"lk_t_{secrets.token_hex(6)}"


class ClonePool:
    """Clones of the template made a few at a time ahead of need; used clones are dropped in the background."""

    def __init__(self, template: str, ahead: int = CLONES_AHEAD) -> None:
        self._template = template
        self._executor = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="pg-clone")
        self._ready: deque[Future[str]] = deque(self._make() for _ in range(ahead))

    def _make(self) -> Future[str]:
        return self._executor.submit(_create_database, _new_name(), template=self._template)

    def take(self) -> str:
        ready = self._ready.popleft()
        self._ready.append(self._make())
        return ready.result()

    def give_back(self, name: str) -> None:
        self._executor.submit(_drop_database, name)

    def close(self) -> None:
        """Drop the unused clones and wait for every drop, so the template can go too."""
        for ready in self._ready:
            if not ready.cancel() and ready.exception() is None:
                self._executor.submit(_drop_database, ready.result())
        self._executor.shutdown(wait=True)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Name of a PostgreSQL database migrated to head once per session: the template of every clone."""
    name = _create_database(f"lk_tpl_{os.getpid()}_{secrets.token_hex(4)}")
    try:
        engine = make_engine(_url_with_database(name))
        try:
            upgrade(engine)
        finally:
            engine.dispose()  # a template must have no open connections when it is cloned
        yield name
    finally:
        _drop_database(name)


@pytest.fixture(scope="session")
def pg_clones(pg_template: str) -> Iterator[ClonePool]:
    pool = ClonePool(pg_template)
    try:
        yield pool
    finally:
        pool.close()


@pytest.fixture
def pg_database_url(pg_clones: ClonePool) -> Iterator[str]:
    """A migrated PostgreSQL database of this test's own (a clone of the template), dropped after."""
    name = pg_clones.take()
    try:
        yield _url_with_database(name)
    finally:
        pg_clones.give_back(name)


@pytest.fixture
def pg_empty_database_url() -> Iterator[str]:
    """An empty PostgreSQL database (no tables, no alembic_version) of this test's own, dropped after."""
    name = _create_database(_new_name())
    try:
        yield _url_with_database(name)
    finally:
        _drop_database(name)


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A migrated SQLite file of this test's own."""
    url = f"sqlite:///{tmp_path}/lk.db"
    engine = make_engine(url)
    try:
        upgrade(engine)
    finally:
        engine.dispose()
    return url


@pytest.fixture(params=["sqlite", "postgresql"], ids=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A migrated database of this test's own, once per dialect."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_database_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    """The store over ``database_url``, closed after the test."""
    store = Store.from_url(database_url)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def make_keeper(database_url: str, simulator_server: SimulatorServer, sim: SimulatorControl) -> Iterator[KeeperFactory]:
    """``make_keeper(transport=None, clock=None, **env)``: Keepers on this test's database and the simulator,
    each built as a separate process would build it (its own owner id, engine and HTTP client); closed after."""
    opened: list[Keeper] = []

    def factory(transport: httpx2.BaseTransport | None = None, clock: Clock | None = None, **env: str) -> Keeper:
        settings = make_settings(database_url, simulator_server.url, **env)
        keeper = Keeper(settings, transport=transport, **({"clock": clock} if clock else {}))
        opened.append(keeper)
        return keeper

    yield factory
    for keeper in opened:
        keeper.close()
