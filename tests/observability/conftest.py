"""Fixtures for the observability tests: the web app (tests/web), the CLI harness (tests/acceptance), the
database fixtures (tests/integration), and reading Prometheus samples."""

from __future__ import annotations

from collections.abc import Mapping

import httpx2
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.conftest import backend, cli, lk_database_url  # noqa: F401 (fixtures reused by name)
from tests.integration.conftest import (  # noqa: F401
    database_url,
    make_keeper,
    pg_clones,
    pg_database_url,
    pg_empty_database_url,
    pg_template,
    sqlite_url,
)
from tests.web.conftest import app_server, serve_app  # noqa: F401

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    """Every sample of a Prometheus text page, keyed by name and labels."""
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(url: str, key: str | None = None) -> Samples:
    """``url``'s samples; ``key`` for the app port's ``/metrics``, which needs one with the ``read`` scope."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    response = httpx2.get(url, headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    return parse(response.text)


def sample(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def local(name: str, labels: Mapping[str, str] | None = None) -> float:
    """A sample of this process's default registry (0 when absent), for counting deltas."""
    return REGISTRY.get_sample_value(name, dict(labels or {})) or 0.0
