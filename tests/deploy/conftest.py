"""Fixtures for the deployment tests: the CLI harness of tests/acceptance (``lightkeeper`` in subprocesses)."""

from __future__ import annotations

from tests.acceptance.conftest import backend, cli, lk_database_url  # noqa: F401 (fixtures reused by name)
