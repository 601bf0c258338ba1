"""Fixtures of the replica modules: the database fixtures of the integration suite, and the worker fixtures
that ``test_replicas.py`` defines (kept there; re-exported here so other modules in this folder share them)."""

from __future__ import annotations

from tests.integration.conftest import pg_clones, pg_database_url, pg_template, sqlite_url
from tests.replicas.test_replicas import keeper, start_workers, worker_env

__all__ = ["keeper", "pg_clones", "pg_database_url", "pg_template", "sqlite_url", "start_workers", "worker_env"]
