"""Pure checks of the deployment files (no containers: scripts/test-deploy builds and runs them)."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from .test_compose_file import refresh_worst_case_s

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def test_the_dockerfiles_version_is_the_packages() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    declared = set(re.findall(r"^ARG LIGHTKEEPER_VERSION=(\S+)$", DOCKERFILE, flags=re.M))
    assert declared == {version}, f"Dockerfile says {declared}, pyproject.toml {version}: update the Dockerfile"


def test_the_image_is_built_as_the_issue_says() -> None:
    stages = re.findall(r"^FROM (.+)$", DOCKERFILE, flags=re.M)
    assert stages == ["debian:bookworm-slim AS builder", "debian:bookworm-slim"]
    assert 'ENTRYPOINT ["lightkeeper"]' in DOCKERFILE
    assert 'CMD ["serve", "--host", "0.0.0.0", "--port", "8000"]' in DOCKERFILE
    assert re.search(r"^USER 10001:10001$", DOCKERFILE, flags=re.M)
    assert re.search(r"^VOLUME /data$", DOCKERFILE, flags=re.M)
    assert "HEALTHCHECK" in DOCKERFILE


def test_no_build_time_or_secret_variable_in_the_images_environment() -> None:
    env_lines = re.findall(r"^ENV ((?:.*\\\n)*.*)$", DOCKERFILE, flags=re.M)
    names = re.findall(r"([A-Z_]+)=", " ".join(env_lines))
    assert names, "no ENV found"
    forbidden = [name for name in names if name.startswith(("PIP_", "TOKEN_", "LIGHTSPEED_", "LIGHTKEEPER_API"))]
    assert not forbidden, forbidden
    assert "/etc/pip.conf" not in DOCKERFILE and "ca-certificates.crt" not in DOCKERFILE


def test_the_units_wait_longer_than_a_refresh_can_take() -> None:
    worst = refresh_worst_case_s()  # compose.yaml's stop_grace_period: tests/deploy/test_compose_file.py
    for unit in ("lightkeeper-serve.service", "lightkeeper-worker@.service"):
        text = (ROOT / "deploy/systemd" / unit).read_text()
        assert int(re.search(r"^TimeoutStopSec=(\d+)$", text, flags=re.M)[1]) > worst  # type: ignore[index]
        for setting in ("ProtectSystem=strict", "NoNewPrivileges=yes", "PrivateTmp=yes", "Restart=on-failure"):
            assert re.search(rf"^{re.escape(setting)}$", text, flags=re.M), (unit, setting)
