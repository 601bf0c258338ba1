"""compose.yaml as a user copies it (scripts/test-deploy runs it with an overlay that changes networking and
commands, so what the file itself promises is checked here): PostgreSQL with a named volume and a health
check, a one-shot ``migrate`` the others wait for, one ``serve``, two ``worker``s with a metrics port, secrets
from ``.env``, and stop grace periods that outlast a refresh's worst case under the settings' defaults."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightkeeper.config import Settings

ROOT = Path(__file__).resolve().parents[2]
LIGHTKEEPER_SERVICES = ("migrate", "serve", "worker")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    document = yaml.safe_load((ROOT / "compose.yaml").read_text())  # the `<<: *lightkeeper` merges resolved
    assert isinstance(document, dict)
    return document


def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = compose["services"]
    assert set(found) == {"postgres", *LIGHTKEEPER_SERVICES}, sorted(found)
    return dict(found)


def seconds(duration: str) -> float:
    """A compose duration ("90s", "1m30s", "2m") in seconds."""
    parts = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:(\d+)s)?(?:(\d+)ms)?", str(duration))
    assert parts and any(parts.groups()), f"not a compose duration: {duration!r}"
    h, m, s, ms = (int(part or 0) for part in parts.groups())
    return h * 3600 + m * 60 + s + ms / 1000


def refresh_worst_case_s() -> float:
    """2 x HTTP_TIMEOUT_S + REFRESH_MAX_RETRY_AFTER_S with lightkeeper's defaults (as README and units say)."""
    fields = Settings.model_fields
    return 2 * float(fields["http_timeout_s"].default) + float(fields["refresh_max_retry_after_s"].default)


def test_seconds_reads_compose_durations() -> None:
    assert [seconds(text) for text in ("90s", "1m30s", "2m", "1h", "500ms")] == [90, 90, 120, 3600, 0.5]


def test_postgres_keeps_its_data_in_a_named_volume_and_has_a_health_check(compose: dict[str, Any]) -> None:
    postgres = services(compose)["postgres"]
    mounts = [str(volume).split(":") for volume in postgres["volumes"]]
    assert ["pgdata", "/var/lib/postgresql/data"] in mounts, mounts
    assert "pgdata" in (compose.get("volumes") or {}), "pgdata is not a named volume (top-level volumes:)"
    test = postgres["healthcheck"]["test"]
    assert test[0] in ("CMD", "CMD-SHELL") and "pg_isready" in " ".join(test[1:]), test
    assert "${POSTGRES_PASSWORD" in postgres["environment"]["POSTGRES_PASSWORD"]


def test_migrate_is_a_one_shot_db_upgrade_once_postgres_is_healthy(compose: dict[str, Any]) -> None:
    migrate = services(compose)["migrate"]
    assert migrate["command"] == ["db", "upgrade"]
    assert migrate["restart"] == "no", "a one-shot must not be restarted after it exits 0"
    assert migrate["depends_on"] == {"postgres": {"condition": "service_healthy"}}


@pytest.mark.parametrize("name", ["serve", "worker"])
def test_serve_and_worker_start_only_after_migrate_succeeded(compose: dict[str, Any], name: str) -> None:
    service = services(compose)[name]
    assert service["depends_on"] == {"migrate": {"condition": "service_completed_successfully"}}


def test_one_serve_and_two_workers_each_with_a_metrics_port(compose: dict[str, Any]) -> None:
    found = services(compose)
    assert found["serve"]["command"][0] == "serve" and "replicas" not in found["serve"].get("deploy", {})
    worker = found["worker"]
    assert worker["command"][0] == "worker" and "--metrics-port" in worker["command"], worker["command"]
    assert worker["deploy"]["replicas"] == 2


@pytest.mark.parametrize("name", LIGHTKEEPER_SERVICES)
def test_secrets_come_from_the_env_file_and_the_database_from_postgres(compose: dict[str, Any], name: str) -> None:
    service = services(compose)[name]
    env_file = service["env_file"]
    assert ".env" in ([env_file] if isinstance(env_file, str) else env_file), env_file
    assert service["environment"]["DATABASE_URL"].startswith("postgresql://lightkeeper:${POSTGRES_PASSWORD")
    secrets = {"TOKEN_ENCRYPTION_KEY", "LIGHTSPEED_CLIENT_SECRET", "LIGHTKEEPER_API_KEY"}
    assert not secrets & set(service["environment"]), "a secret written into compose.yaml instead of .env"


@pytest.mark.parametrize("name", ["serve", "worker"])
def test_sigterm_is_given_longer_than_a_refresh_can_take(compose: dict[str, Any], name: str) -> None:
    grace = seconds(services(compose)[name]["stop_grace_period"])
    worst = refresh_worst_case_s()
    assert grace > worst, f"{name}: stop_grace_period {grace:g} s, but one refresh may take {worst:g} s"
