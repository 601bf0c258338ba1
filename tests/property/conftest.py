"""Fixtures of the property suite: the web app over loopback (tests/web) on the integration databases."""

from __future__ import annotations

from tests.integration.conftest import (  # noqa: F401 (fixtures reused by name)
    database_url,
    pg_clones,
    pg_database_url,
    pg_template,
    sqlite_url,
)
from tests.web.conftest import app_server, serve_app  # noqa: F401 (fixtures reused by name)
