"""Database fixtures for the integration suite: a migrated SQLite file and a migrated PostgreSQL clone.

PostgreSQL is required, never skipped: CI must prove every store behaviour on both dialects. The schema is
migrated once per session into a template database; each test gets a fast ``CREATE DATABASE ... TEMPLATE``
clone of it, dropped afterwards.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from sqlalchemy.engine import make_url

from lightkeeper.store import Store, make_engine, upgrade

ADMIN_URL = os.environ.get("LIGHTKEEPER_TEST_PG", "postgresql://postgres@127.0.0.1:5432/postgres")


def _url_with_database(name: str) -> str:
    """The admin URL pointed at another database, in plain ``postgresql://`` form."""
    url = make_url(ADMIN_URL).set(drivername="postgresql", database=name)
    return url.render_as_string(hide_password=False)


@contextmanager
def _admin() -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    """An autocommit connection to the admin database, or a test failure that says how to fix it."""
    try:
        conn = psycopg.connect(
            _url_with_database(make_url(ADMIN_URL).database or "postgres"), autocommit=True, connect_timeout=5
        )
    except psycopg.OperationalError as exc:
        shown = make_url(ADMIN_URL).render_as_string(hide_password=True)
        pytest.fail(
            f"PostgreSQL is not reachable at {shown} ({exc}). The integration suite needs it: start PostgreSQL "
            "or point LIGHTKEEPER_TEST_PG at an admin URL (e.g. postgresql://postgres@127.0.0.1:5432/postgres).",
            pytrace=False,
        )
    with conn:
        yield conn


def _create_database(name: str, *, template: str | None = None) -> None:
    query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template is not None:
        query = sql.SQL("{} TEMPLATE {}").format(query, sql.Identifier(template))
    with _admin() as conn:
        conn.execute(query)


def _drop_database(name: str) -> None:
    with _admin() as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@contextmanager
def _pg_database(*, template: str | None) -> Iterator[str]:
    """A throwaway database (a clone of ``template``, or empty), dropped on exit; yields its URL."""
    name = f"lk_t_{secrets.token_hex(6)}"
    _create_database(name, template=template)
    try:
        yield _url_with_database(name)
    finally:
        _drop_database(name)


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """Name of a PostgreSQL database migrated to head once per session: the template of every clone."""
    name = f"lk_tpl_{os.getpid()}_{secrets.token_hex(4)}"
    _create_database(name)
    try:
        engine = make_engine(_url_with_database(name))
        try:
            upgrade(engine)
        finally:
            engine.dispose()  # a template must have no open connections when it is cloned
        yield name
    finally:
        _drop_database(name)


@pytest.fixture
def pg_database_url(pg_template: str) -> Iterator[str]:
    """A migrated PostgreSQL database of this test's own (a clone of the template)."""
    with _pg_database(template=pg_template) as url:
        yield url


@pytest.fixture
def pg_empty_database_url() -> Iterator[str]:
    """An empty PostgreSQL database (no schema, no alembic_version) of this test's own."""
    with _pg_database(template=None) as url:
        yield url


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
